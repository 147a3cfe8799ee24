"""Forget requests, the unlearning methods and the forget/retain evaluation."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from polyrec.data.synthetic import make_synthetic
from polyrec.errors import PolyrecError
from polyrec.eval import evaluate
from polyrec.features.matrix import attach_features
from polyrec.models.classic.bpr import BPRMF
from polyrec.models.graph.lightgcn import LightGCN
from polyrec.models.graph.ngcf import NGCF
from polyrec.models.multimodal.freedom import FREEDOM
from polyrec.models.multimodal.vbpr import VBPR
from polyrec.unlearn import SISA, ForgetRequest, apply_request, unlearn
from polyrec.unlearn.base import Unlearned
from polyrec.unlearn.evaluate import roc_auc, unlearning_report
from polyrec.unlearn.mmrecun import reverse_bpr_loss

torch.set_num_threads(1)
FAST = {"epochs": 3, "batch_size": 256, "progress": False, "early_stopping": None}


@pytest.fixture(scope="module")
def train():
    ds = make_synthetic(50, 30, 700, seed=2)
    rng = np.random.default_rng(0)
    return attach_features(ds, {"text": rng.normal(size=(ds.n_items, 4)).astype(np.float32)})


def _items_of(model, users):
    return set(model.recommend(users, k=30, exclude_seen=False)["item"])


# ----------------------------------------------------------------------------- requests
def test_request_validation_and_file_round_trip(train, tmp_path):
    with pytest.raises(PolyrecError, match="empty forget request"):
        ForgetRequest()
    with pytest.raises(PolyrecError, match="unknown user"):
        apply_request(train, ForgetRequest(users=("nobody",)))
    u, i = train.user_ids.external[0], train.item_ids.external[0]
    seen = set(zip(train.users.tolist(), train.items.tolist(), strict=False))
    j = next(j for j in range(train.n_items) if (0, j) not in seen)
    with pytest.raises(PolyrecError, match="not in the training data"):
        apply_request(train, ForgetRequest(interactions=((u, train.item_ids.external[j]),)))
    with pytest.raises(PolyrecError, match="modality 'image'"):
        apply_request(train, ForgetRequest(modality="image"))
    req = ForgetRequest(users=(u,), items=(i,), modality="text")
    path = tmp_path / "forget.json"
    path.write_text(json.dumps(req.to_dict()))
    assert ForgetRequest.from_file(path) == req
    pairs = tmp_path / "forget.csv"
    pairs.write_text("user,item\n7,0205616461\n")  # an ASIN: its leading zero is the id
    assert ForgetRequest.from_file(pairs).interactions == (("7", "0205616461"),)


def test_apply_request_splits_retain_and_forget(train):
    item = int(np.bincount(train.items).argmax())
    req = ForgetRequest(items=(train.item_ids.external[item],))
    applied = apply_request(train, req)
    assert applied.forget.n_interactions == int((train.items == item).sum())
    assert applied.retain.n_interactions + applied.forget.n_interactions == len(train)
    assert not (applied.retain.items == item).any()
    assert not applied.retain.item_vectors["text"][item].any()  # feature row wiped
    assert train.item_vectors["text"][item].any()  # the original is untouched


# ----------------------------------------------------------------------------- MMRecUn
def test_reverse_bpr_gradient_pushes_forget_positives_down():
    user = torch.tensor([1.0, 0.5], requires_grad=True)
    pos = torch.tensor([0.8, 0.2], requires_grad=True)
    neg = torch.tensor([0.1, 0.3], requires_grad=True)
    before = float((user @ pos - user @ neg).detach())
    for _ in range(50):
        loss = reverse_bpr_loss((user * pos).sum().unsqueeze(0), (user * neg).sum().unsqueeze(0))
        loss.backward()
        with torch.no_grad():
            for p in (user, pos, neg):
                p -= 0.1 * p.grad
                p.grad = None
    after = float(user @ pos - user @ neg)
    assert before > 0 > after  # the forgotten item now ranks below the negative


def _sample_interactions(train, n, seed=0):
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(train), n, replace=False)
    u = train.user_ids.to_external(train.users[rows])
    i = train.item_ids.to_external(train.items[rows])
    return tuple(zip(u.tolist(), i.tolist(), strict=True))


def test_mmrecun_lowers_forget_scores_and_purges_masks(train):
    pairs = _sample_interactions(train, 20)
    model = BPRMF({**FAST, "epochs": 10, "lr": 0.01}).fit(train)
    req = ForgetRequest(interactions=pairs)
    applied = apply_request(train, req)
    fu, fi = applied.forget.users, applied.forget.items
    before = model.score(fu)[np.arange(len(fu)), fi].mean()
    out = unlearn(model, train, req, "mmrecun", epochs=3, alpha=0.9)
    after = out.score(fu)[np.arange(len(fu)), fi].mean()
    assert after < before
    assert out.seen[fu, fi].sum() == 0  # no forgotten pair is masked as "seen" any more
    assert out.seen.nnz == applied.retain.binary_csr.nnz


@pytest.mark.parametrize("method", ["retrain", "finetune", "mmrecun"])
@pytest.mark.parametrize("cls", [LightGCN, FREEDOM])
def test_forgotten_items_never_recommended_and_caches_rebuilt(train, method, cls):
    opts = {**FAST, "modalities": ["text"]} if cls is FREEDOM else FAST
    model = cls(opts).fit(train)
    item = int(np.bincount(train.items).argmax())
    req = ForgetRequest(items=(train.item_ids.external[item],))
    out = unlearn(model, train, req, method, **({} if method == "retrain" else {"epochs": 1}))
    assert isinstance(out, Unlearned)
    assert train.item_ids.external[item] not in _items_of(out, train.user_ids.external[:20])
    inner = out.inner
    assert inner.seen[:, item].nnz == 0
    # the propagation graph holds no edge of the forgotten item
    adj = inner.module.full_graph if cls is FREEDOM else inner.module.graph
    dense = torch.sparse_csr_tensor(adj.crow, adj.col, adj.values, adj.shape).to_dense()
    assert not dense[:, train.n_users + item].any()
    if cls is FREEDOM:  # the frozen item graph was rebuilt from the wiped features
        ig = inner.module.item_graph
        ig_dense = torch.sparse_csr_tensor(ig.crow, ig.col, ig.values, ig.shape).to_dense()
        assert not ig_dense[item].any() and not ig_dense[:, item].any()


def test_rebind_wipes_forgotten_feature_rows(train):
    from polyrec.unlearn.base import rebind

    model = FREEDOM({**FAST, "modalities": ["text"]}).fit(train)
    assert model.module.features["text"][2].any()
    rebind(model, apply_request(train, ForgetRequest(items=(train.item_ids.external[2],))))
    assert not model.module.features["text"][2].any()
    assert not model._features["text"][2].any()


def test_unlearned_model_round_trips(train, tmp_path):

    model = BPRMF(FAST).fit(train)
    req = ForgetRequest(items=(train.item_ids.external[0],))
    out = unlearn(model, train, req, "finetune", epochs=1)
    loaded = Unlearned.load(out.save(tmp_path / "m"))
    torch.testing.assert_close(loaded.score([0, 1]), out.score([0, 1]))
    assert torch.isinf(loaded.score([0])[0, 0])


def test_modality_request_drops_the_modality(train):
    model = VBPR({**FAST, "modalities": ["text", "latent"]}).fit(train)
    out = unlearn(model, train, ForgetRequest(modality="latent"), "finetune", epochs=1)
    assert out.config.modalities == ["text"]
    gold = unlearn(model, train, ForgetRequest(modality="latent"), "retrain")
    assert gold.config.modalities == ["text"]


# ----------------------------------------------------------------------------- SISA
def test_sisa_retrains_only_affected_shards(train):
    sisa = SISA(base="bpr", base_config=FAST, n_shards=4, partition="user").fit(train)
    before = [id(m) for m in sisa.shards]
    user = train.user_ids.external[3]
    shard = int(sisa.shard_of(np.array([3]), np.array([0]), train.n_items)[0])
    unlearn(sisa, train, ForgetRequest(users=(user,)), "sisa")
    assert sisa.last_retrained == [shard]
    after = [id(m) for m in sisa.shards]
    assert [b != a for b, a in zip(before, after, strict=True)] == [s == shard for s in range(4)]
    assert sisa.seen[3].nnz == 0
    assert sisa.score([0, 1]).shape == (2, train.n_items)


def test_sisa_item_request_on_a_feature_model_retrains_every_shard(train):
    """Every shard learned from a forgotten item's features, not only those holding its
    interactions: SISA's exactness needs them all retrained."""
    cfg = {**FAST, "modalities": ["text"]}
    sisa = SISA(base="vbpr", base_config=cfg, n_shards=3, partition="user").fit(train)
    item = int(np.bincount(train.items).argmin())  # a rare item: not in every shard
    held = np.unique(
        sisa.shard_of(
            train.users[train.items == item], train.items[train.items == item], train.n_items
        )
    )
    assert len(held) < 3
    unlearn(sisa, train, ForgetRequest(items=(train.item_ids.external[item],)), "sisa")
    assert sisa.last_retrained == [0, 1, 2]
    plain = SISA(base="bpr", base_config=FAST, n_shards=3, partition="user").fit(train)
    unlearn(plain, train, ForgetRequest(items=(train.item_ids.external[item],)), "sisa")
    assert plain.last_retrained == held.tolist()


def test_sisa_interaction_partition_averages_shards(train):
    sisa = SISA(base="bpr", base_config=FAST, n_shards=2, partition="interaction").fit(train)
    expected = (sisa.shards[0].score([5]) + sisa.shards[1].score([5])) / 2
    torch.testing.assert_close(sisa.score([5]), expected)
    with pytest.raises(PolyrecError, match="needs a model trained with sisa"):
        unlearn(BPRMF(FAST).fit(train), train, ForgetRequest(users=(0,)), "sisa")


# ----------------------------------------------------------------------------- evaluation
def test_roc_auc_matches_definition():
    assert roc_auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert roc_auc(np.array([1.0]), np.array([1.0])) == 0.5
    assert roc_auc(np.array([1.0, 3.0]), np.array([2.0])) == 0.5


def test_unlearning_report_against_gold(train):
    from polyrec.data.split import ratio_split

    split = ratio_split(train, test=0.2, seed=0)
    train, test = split.train, split.test
    pairs = _sample_interactions(train, 30, seed=1)
    req = ForgetRequest(interactions=pairs)
    applied = apply_request(train, req)
    gold = unlearn(BPRMF(FAST).fit(train), train, req, "retrain")
    g = unlearning_report(gold, applied, test, seconds=2.0)
    assert {"retain_recall@20", "forget_recall@20", "mia_auc"} <= set(g)
    out = unlearn(BPRMF(FAST).fit(train), train, req, "mmrecun", epochs=1)
    r = unlearning_report(out, applied, test, seconds=1.0, gold=g)
    assert r["speedup_vs_gold"] == 2.0
    assert 0 <= r["forget_mean_percentile_rank"] <= 1
    assert r["retain_recall_vs_gold"] == pytest.approx(
        r["retain_recall@20"] / g["retain_recall@20"]
    )


@pytest.mark.parametrize("cls", [BPRMF, LightGCN, NGCF, FREEDOM, VBPR])
def test_mmrecun_redraws_forgotten_users_from_the_initialisation(train, cls):
    opts = {**FAST, "seed": 4, **({"modalities": ["text"]} if cls in (VBPR, FREEDOM) else {})}
    model = cls(opts).fit(train)
    torch.manual_seed(4)
    initial = model._build(model.dims).state_dict()  # the rows training started from
    trained = {name: model.module.state_dict()[name].clone() for name in cls.user_tables}
    forgotten = list(range(10, 30))
    request = ForgetRequest(users=tuple(train.user_ids.to_external(np.array(forgotten)).tolist()))
    out = unlearn(model, train, request, "mmrecun", epochs=1)
    state = out.module.state_dict()
    for name in cls.user_tables:
        new, start = state[name][forgotten], initial[name][forgotten]
        # neither the trained rows nor the (item-correlated) starting rows, but a fresh draw
        # of the same distribution
        assert not torch.allclose(new, start) and not torch.allclose(new, trained[name][forgotten])
        assert float(new.std()) == pytest.approx(float(start.std()), rel=0.25)
        assert float(new.abs().max()) <= float(initial[name][: train.n_users].abs().max()) * 1.5
        # retained users keep their trained rows up to the unlearning steps
        assert not torch.allclose(state[name][[0, 1]], initial[name][[0, 1]])


def test_mmrecun_stops_once_forgotten_pairs_are_recalled_like_held_out_ones(train):
    from polyrec.data.split import ratio_split

    split = ratio_split(train, test=0.2, seed=0)
    pairs = _sample_interactions(split.train, 40, seed=3)
    req = ForgetRequest(interactions=pairs)
    base = BPRMF({**FAST, "epochs": 10, "lr": 0.01}).fit(split.train)
    capped = unlearn(copy.deepcopy(base), split.train, req, "mmrecun", epochs=20, lr=0.03)
    ruled = unlearn(
        copy.deepcopy(base), split.train, req, "mmrecun", epochs=20, lr=0.03, reference=split.test
    )
    assert ruled.history[-1]["stopped_by_rule"] and not capped.history[-1]["stopped_by_rule"]
    assert ruled.history[-1]["unlearning_batches"] < capped.history[-1]["unlearning_batches"]
    applied = apply_request(split.train, req)
    users = np.intersect1d(applied.forget.users, split.test.users)
    exclude = [applied.retain.binary_csr]

    def recall(model, data):
        result = evaluate(
            model,
            data,
            exclude=exclude,
            ks=(20,),
            metrics=("recall",),
            users=users,
            beyond=False,
        )
        return result.summary["recall@20"]

    assert recall(ruled, applied.forget) <= recall(ruled, split.test)
    with pytest.raises(PolyrecError, match="reference must share"):
        unlearn(
            copy.deepcopy(base), split.train, req, "mmrecun", reference=make_synthetic(5, 5, 20)
        )
