"""Long-sequence CTR: sample builder, readers, metrics, DIN/SIM/TWIN/DARE, analysis, CLI."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import yaml
from helpers import benchmark_script
from typer.testing import CliRunner

from polyrec.data.ctr import (
    BehaviorLog,
    CTRProtocol,
    build_ctr_samples,
    read_taobao_userbehavior,
    read_tmall,
)
from polyrec.data.sampling import PopularityNegativeSampler
from polyrec.data.synthetic import make_synthetic
from polyrec.errors import PolyrecError
from polyrec.eval.ctr_metrics import auc, ctr_metrics, gauc, logloss, per_user_auc
from polyrec.models.ranking.analysis import (
    gradient_conflict,
    search_recall,
    search_timing,
    target_in_history,
)
from polyrec.models.ranking.base import CTRRanker, get_ranker_class, masked_softmax, topk_search
from polyrec.models.ranking.cli import ctr_app
from polyrec.models.ranking.experiment import CTRDataConfig, ctr_run_config, load_log

torch.set_num_threads(1)
MODELS = ["nohist", "din", "sim", "twin", "dare"]
SMALL = {"item_dim": 4, "category_dim": 4, "mlp": [8], "batch_size": 64, "epochs": 1}
PROTOCOL = CTRProtocol(min_events=20, max_len=12, n_train=5, train_stride=2, neg_ratio=2)


def taste_log(n_users: int = 40, n_events: int = 30, seed: int = 0) -> BehaviorLog:
    """Users who mostly click items of one favourite category: history predicts the target."""
    rng = np.random.default_rng(seed)
    n_items, n_cats = 120, 6
    item_cat = np.arange(n_items) % n_cats
    fav = rng.integers(0, n_cats, n_users)
    users = np.repeat(np.arange(n_users), n_events)
    same = rng.random(len(users)) < 0.9
    cat = np.where(same, fav[users], rng.integers(0, n_cats, len(users)))
    items = cat + n_cats * rng.integers(0, n_items // n_cats, len(users))
    times = np.tile(np.arange(n_events) * 600.0, n_users) + 1e9
    return BehaviorLog.from_arrays(users, items, times, item_cat[items], name="taste")


@pytest.fixture(scope="module")
def data():
    return build_ctr_samples(taste_log(), PROTOCOL)


# --------------------------------------------------------------------------------- metrics
def test_auc_hand_computed_with_ties():
    # pairs (pos, neg): (.9,.9) tie -> 1/2, (.9,.1) 1, (.2,.9) 0, (.2,.1) 1 -> 2.5 / 4
    assert auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.9, 0.2, 0.1])) == pytest.approx(0.625)
    assert auc(np.array([0, 1]), np.array([0.3, 0.7])) == 1.0
    assert auc(np.array([1, 0]), np.array([0.5, 0.5])) == 0.5


def test_gauc_weighted_by_impressions_and_skips_one_class_users():
    users = np.array([0, 0, 0, 1, 1, 2, 2])
    labels = np.array([1, 0, 0, 1, 0, 1, 1])
    scores = np.array([0.9, 0.5, 0.95, 0.1, 0.2, 0.3, 0.4])
    # user 0: pos .9 beats .5, loses to .95 -> 1/2 (3 impressions); user 1: 0 (2); user 2 skipped
    assert gauc(users, labels, scores) == pytest.approx((0.5 * 3 + 0.0 * 2) / 5)
    u, values, weights = per_user_auc(users, labels, scores)
    assert u.tolist() == [0, 1] and values.tolist() == [0.5, 0.0] and weights.tolist() == [3, 2]


def test_logloss_hand_computed_and_clipped():
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert logloss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(expected)
    assert math.isfinite(logloss(np.array([1, 0]), np.array([0.0, 1.0])))


def test_metrics_match_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y, s = rng.integers(0, 2, 500), np.round(rng.random(500), 1)  # many ties
    users = rng.integers(0, 30, 500)
    assert auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    assert logloss(y, s) == pytest.approx(sk.log_loss(y, np.clip(s, 1e-7, 1 - 1e-7)), abs=1e-9)
    u, values, _ = per_user_auc(users, y, s)
    for user, value in zip(u, values, strict=True):
        m = users == user
        assert value == pytest.approx(sk.roc_auc_score(y[m], s[m]), abs=1e-12)


def test_metric_errors_are_clear():
    with pytest.raises(PolyrecError, match="positive and one negative"):
        auc(np.array([1, 1]), np.array([0.1, 0.2]))
    with pytest.raises(PolyrecError, match="0 or 1"):
        auc(np.array([2, 0]), np.array([0.1, 0.2]))
    with pytest.raises(PolyrecError, match="entries"):
        ctr_metrics(np.array([0]), np.array([1, 0]), np.array([0.1, 0.2]))


# ---------------------------------------------------------------------------------- samples
def test_history_strictly_before_target_time():
    # user 0: events j = 0..7 on item 100 + j; events 5 and 6 share a timestamp. User 1 only
    # adds other items, so user 0 has unseen items to draw negatives from.
    times = np.array([0, 10, 20, 30, 40, 50, 50, 60, 0, 1, 2], dtype=float)
    users = np.array([0] * 8 + [1] * 3)
    items = np.array([*range(100, 108), 200, 201, 202])
    log = BehaviorLog.from_arrays(users, items, times)
    proto = CTRProtocol(min_events=5, max_len=3, n_train=2, train_stride=1, neg_ratio=1)
    d = build_ctr_samples(log, proto)

    def external(split):
        b = split.batch()
        ext = log.item_ids[b["hist_item"].numpy() - 1]
        return np.where(b["hist_mask"].numpy(), ext, -1)

    for split in (d.train, d.valid, d.test):
        ext = external(split)
        hist_times = np.where(ext >= 0, times[np.clip(ext - 100, 0, 7)], -np.inf)
        assert (hist_times < split.time[:, None]).all()
    # valid target = event 6 at t=50: event 5 (also t=50) must not be in its history
    assert external(d.valid)[0].tolist() == [102, 103, 104]
    # test target = event 7 at t=60: the last 3 events before it
    assert external(d.test)[0].tolist() == [104, 105, 106]
    # train targets are events 5 then 4
    assert external(d.train)[0].tolist() == [102, 103, 104]
    assert external(d.train)[2].tolist() == [101, 102, 103]
    assert set(log.item_ids[d.test.item[d.test.label == 0] - 1]) <= {200, 201, 202}


def test_dare_split_positions_and_negative_labels(data):
    proto = PROTOCOL
    n_users = 40
    k = 1 + proto.neg_ratio
    assert len(data.test) == n_users * k and len(data.valid) == n_users * k
    assert len(data.train) == n_users * proto.n_train * k
    assert data.test.label.reshape(-1, k).tolist() == [[1, 0, 0]] * n_users
    # the test target is each user's last event; its history ends right before it
    assert (data.test.hist_end[::k] == np.arange(1, n_users + 1) * 30 - 1).all()
    # negatives are items the user never interacted with
    log = data.test.log
    for u, item in zip(
        data.train.user[data.train.label == 0], data.train.item[data.train.label == 0], strict=True
    ):
        user_items = log.items[u * 30 : (u + 1) * 30]
        assert item not in user_items


def test_padding_left_and_masked():
    times = np.arange(7, dtype=float)
    users = np.array([0] * 6 + [1])  # user 1 adds an item user 0 never saw (for negatives)
    log = BehaviorLog.from_arrays(users, np.arange(7), times, np.arange(7) % 2)
    d = build_ctr_samples(
        log, CTRProtocol(min_events=5, max_len=8, n_train=2, train_stride=1, neg_ratio=1)
    )
    b = d.test.batch()
    assert b["hist_mask"][0].tolist() == [False] * 3 + [True] * 5
    assert (b["hist_item"][0, :3] == 0).all() and (b["hist_time"][0, :3] == 0).all()
    assert (b["hist_time"][0, 3:] >= 1).all()
    # target = event 5 at t=5: events 0..4 lie 5..1 seconds before it
    assert b["hist_delta"][0, 3:].tolist() == [5.0, 4.0, 3.0, 2.0, 1.0]


def test_target_in_history_flags_repeats_within_the_window():
    # user 0 views items 1, 2, 3, 1, 4, 2: the test target (item 2) repeats event 1, the
    # validation target (item 4) is new; with max_len 2 the train target (item 1, event 3)
    # sees only items 2, 3 and is not flagged although item 1 is older in the log
    times = np.arange(8, dtype=float)
    users = np.array([0] * 6 + [1] * 2)
    log = BehaviorLog.from_arrays(users, np.array([1, 2, 3, 1, 4, 2, 8, 9]), times)
    proto = CTRProtocol(min_events=5, max_len=2, n_train=1, train_stride=1, neg_ratio=1)
    d = build_ctr_samples(log, proto)
    assert target_in_history(d.test).tolist() == [False, False]
    assert target_in_history(d.train).tolist() == [False, False]
    proto_wide = CTRProtocol(min_events=5, max_len=8, n_train=1, train_stride=1, neg_ratio=1)
    wide = build_ctr_samples(log, proto_wide)
    # positives first, then the negative (never an item the user saw)
    assert target_in_history(wide.test).tolist() == [True, False]
    assert target_in_history(wide.valid).tolist() == [False, False]
    assert target_in_history(wide.train).tolist() == [True, False]


def test_repeat_breakdown_splits_the_positives_against_every_negative():
    bench_ctr = benchmark_script("bench_ctr")
    labels = [1, 1, 1, 0, 0]
    repeat = np.array([True, False, False, False, False])
    res = {
        "dare": {"test_labels": labels, "test_scores": {"scores": [[0.9, 0.6, 0.2, 0.5, 0.1]]}},
        "dare_att64": {
            "test_labels": labels,
            "test_scores": {"scores": [[0.4, 0.6, 0.7, 0.5, 0.1], [0.8, 0.3, 0.3, 0.5, 0.1]]},
        },
    }
    out = bench_ctr.repeat_breakdown(res, repeat)
    assert out["repeat_share_of_positives"] == pytest.approx(1 / 3)
    # repeat positive vs the negatives 0.5, 0.1: 1.0 | seeds 0.5 and 1.0 at width 64
    assert out["repeat"] == pytest.approx({"dare": 1.0, "dare_att64": 0.75})
    # new positives (0.6, 0.2) vs (0.5, 0.1): 3 of 4 pairs | seeds 1.0 and 0.5
    assert out["new"] == pytest.approx({"dare": 0.75, "dare_att64": 0.75})


def test_best_validation_widths_compare_runs_of_one_model_and_objective():
    bench_ctr = benchmark_script("bench_ctr")
    labels = [1, 1, 0, 0]
    now = {"aux_loss": True, "time_in_representation": True}

    def run(dim: int, cfg: dict | None, scores: list[float]) -> dict:
        return {
            "model": "dare",
            "params": {"attention_dim": dim},
            "model_config": cfg,
            "test_labels": labels,
            "test_scores": {"scores": [scores]},
        }

    res = {
        "dare": run(16, now, [0.9, 0.4, 0.5, 0.1]),
        "dare_att64": run(64, now, [0.9, 0.6, 0.5, 0.1]),
        "dare_old": run(16, None, [0.9, 0.8, 0.5, 0.1]),  # before the options: never picked
        "dare_noaux": run(16, {"aux_loss": False}, [0.9, 0.8, 0.5, 0.1]),
    }
    valid = {"dare": 0.7, "dare_att64": 0.7, "dare_old": 0.9, "dare_noaux": 0.9}
    table = {
        name: {
            "seeds": [0],
            "valid_auc_mean": v,
            "auc": {"mean": bench_ctr.auc(labels, res[name]["test_scores"]["scores"][0])},
        }
        for name, v in valid.items()
    }
    assert bench_ctr.objective(res["dare_old"]) == (False, False)
    out = bench_ctr.best_validation_widths(res, table)
    assert out["configs"] == {"16": "dare", "64": "dare_att64"}
    assert out["auc_diff_points"] == pytest.approx(-25.0)


def test_negative_sampler_frequency_proportional():
    freq = np.array([0.0, 1.0, 2.0, 7.0, 10.0])
    seen = sp.csr_matrix(([1.0], ([0], [4])), shape=(1, 5))  # user 0 saw item 4: never drawn
    sampler = PopularityNegativeSampler(seen, popularity=freq)
    negs = sampler.sample(np.zeros(20_000, int), 1, rng=np.random.default_rng(0)).ravel()
    counts = np.bincount(negs, minlength=5)
    assert counts[0] == 0 and counts[4] == 0
    assert counts[1:4] / counts[1:4].sum() == pytest.approx([0.1, 0.2, 0.7], abs=0.015)


def test_protocol_errors():
    with pytest.raises(ValueError, match="min_events"):
        CTRProtocol(min_events=20, n_train=19, train_stride=5)
    with pytest.raises(PolyrecError, match="no user has"):
        build_ctr_samples(taste_log(n_events=10), PROTOCOL)


def test_readers(tmp_path: Path):
    tb = tmp_path / "UserBehavior.csv"
    tb.write_text("1,10,5,pv,100\n1,11,6,buy,90\n2,10,5,cart,95\n2,12,5,pv,96\n")
    log = read_taobao_userbehavior(tb)
    assert log.n_users == 2 and log.n_items == 3 and log.n_categories == 2
    assert log.item_ids.tolist() == [10, 11, 12] and log.items.tolist() == [1, 2, 1, 3]
    assert read_taobao_userbehavior(tb, behaviors=["pv"]).n_items == 2
    with pytest.raises(PolyrecError, match="unknown Taobao behavior"):
        read_taobao_userbehavior(tb, behaviors=["click"])
    tm = tmp_path / "user_log_format1.csv"
    tm.write_text(
        "user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type\n"
        "7,1,3,0,0,1111,0\n7,2,3,0,0,1110,2\n7,3,4,0,0,1111,0\n"
    )
    tlog = read_tmall(tm)
    # same-day events keep file order one second apart; 11-10 is a day earlier
    assert np.diff(tlog.timestamps[[1, 0, 2]]).tolist() == [86_400.0, 1.0]
    assert read_tmall(tm, actions=[2]).n_items == 1


def test_reader_errors_are_one_line_with_the_file_line(tmp_path: Path):
    tb = tmp_path / "UserBehavior.csv"
    tb.write_text("1,10,5,pv,100\n1,11,6,buy,90,extra\n")
    with pytest.raises(PolyrecError, match=r"UserBehavior.csv:2: .*Expected 5 fields") as bad:
        read_taobao_userbehavior(tb)
    assert "\n" not in str(bad.value)
    tm = tmp_path / "user_log_format1.csv"
    header = "user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type\n"
    tm.write_text(header + "7,1,3,0,0,1111,1\n7,2,3,0,0,1111,0\n7,3,4,0,0,1399,0\n")
    with pytest.raises(PolyrecError, match=r"user_log_format1.csv:4: time_stamp 1399 is not"):
        read_tmall(tm, actions=[0])
    tm.write_text(header + "7,1,3,0,0,1111,0\n7,2,3,0,0,,0\n")
    with pytest.raises(PolyrecError, match=r"user_log_format1.csv:3: time_stamp is missing"):
        read_tmall(tm)


def test_from_dataset_uses_category_column():
    ds = make_synthetic(20, 50, 800, reviews=False, min_history=25, seed=0)
    log = BehaviorLog.from_dataset(ds, "category")
    assert len(log.users) == len(ds.users) and 1 < log.n_categories <= 10
    with pytest.raises(PolyrecError, match="no item_data column"):
        BehaviorLog.from_dataset(ds, "colour")


# ------------------------------------------------------------------------------ components
def test_topk_search_returns_true_topk_and_never_padding():
    scores = torch.tensor([[0.1, 5.0, 0.3, 9.0, 2.0], [4.0, 1.0, 3.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False, True], [True, True, True, False, False]])
    idx, real = topk_search(scores, mask, 2)
    assert set(idx[0].tolist()) == {1, 4} and set(idx[1].tolist()) == {0, 2}
    assert real.all()
    idx, real = topk_search(scores, mask, 4)
    assert real[1].tolist() == [True, True, True, False]  # only 3 real behaviours in row 1
    assert masked_softmax(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool)).sum() == 0


@pytest.mark.parametrize("name", MODELS)
def test_padding_does_not_change_scores(name, data):
    torch.manual_seed(0)
    model = get_ranker_class(name)(SMALL)
    model.dims = data.dims
    model.net = model._build(model.dims)
    batch = data.test.batch(np.arange(12))
    batch["hist_mask"][:, :5] = False  # pretend the first 5 slots are padding
    before = model.predict_logits(batch)
    noisy = dict(batch)
    for key, high in (("hist_item", 100), ("hist_cat", 6), ("hist_time", 30)):
        noisy[key] = batch[key].clone()
        noisy[key][:, :5] = torch.randint(1, high, (12, 5))
    assert torch.allclose(before, model.predict_logits(noisy), atol=1e-6)


@pytest.mark.parametrize("name", ["din", "sim", "dare"])
def test_shared_history_scores_like_repeated_history(name, data):
    # serving path: one user's history (batch 1) against many candidates
    model = get_ranker_class(name)(SMALL, **({"mode": "soft"} if name == "sim" else {}))
    model.dims = data.dims
    model.net = model._build(model.dims)
    batch = data.test.batch(np.arange(9))
    shared = {k: (v[:1] if k.startswith("hist_") else v) for k, v in batch.items()}
    repeated = {k: (v[:1].expand(9, -1) if k.startswith("hist_") else v) for k, v in batch.items()}
    assert torch.allclose(model.predict_logits(shared), model.predict_logits(repeated), atol=1e-5)
    if name == "sim":
        assert torch.allclose(
            model.net.aux_logits(shared), model.net.aux_logits(repeated), atol=1e-5
        )


def test_dare_tables_receive_separate_gradients(data):
    torch.manual_seed(0)
    dare = get_ranker_class("dare")(SMALL, attention_dim=2)
    dare.dims = data.dims
    net = dare._build(dare.dims)
    assert net.attention is not net.representation
    assert net.attention.item.weight.shape[1] == 2 and net.representation.item.weight.shape[1] == 4
    batch = data.train.batch(np.arange(32))
    # the attention scores depend on the attention tables only
    net.attention_scores(batch).sum().backward()
    assert net.attention.item.weight.grad.abs().sum() > 0
    assert net.time.weight.grad.abs().sum() > 0
    assert net.representation.item.weight.grad is None
    assert net.representation_time.weight.grad is None and net.target_time.grad is None
    net.zero_grad(set_to_none=True)
    # with the attention weights fixed, the output depends on the representation tables only
    scores = net.attention_scores(batch).detach()
    net.attention_scores = lambda b: scores  # type: ignore[method-assign]
    net.loss(batch).backward()
    assert net.representation.item.weight.grad.abs().sum() > 0
    assert net.representation_time.weight.grad.abs().sum() > 0
    assert net.target_time.grad.abs().sum() > 0
    assert net.attention.item.weight.grad is None and net.time.weight.grad is None
    # TWIN has one set of tables for both
    tnet = get_ranker_class("twin")(SMALL)._build(data.dims)
    assert tnet.attention is tnet.representation
    assert tnet.representation_time is tnet.time and tnet.target_time is tnet.time_query


@pytest.mark.parametrize("time_in_representation", [True, False])
def test_representation_carries_the_interval_as_the_repository_concat_mode(
    data, time_in_representation
):
    net = get_ranker_class("dare")(
        SMALL, attention_dim=2, time_dim=3, time_in_representation=time_in_representation
    )._build(data.dims)
    batch = data.test.batch(np.arange(5))
    target, hist = net.represent(batch)
    items = net.representation(batch["hist_item"], batch["hist_cat"])
    if not time_in_representation:
        assert hist.shape[-1] == target.shape[-1] == net.representation.dim
        assert torch.equal(hist, items)
        return
    assert hist.shape[-1] == target.shape[-1] == net.representation.dim + 3
    assert torch.equal(hist[..., :-3], items)
    assert torch.equal(hist[..., -3:], net.representation_time(batch["hist_time"]))
    # every target's interval is 0: one learned vector
    assert torch.equal(target[:, -3:], net.target_time.expand(5, -1))
    # the padding bucket (and the service's unknown interval) is a zero vector
    assert net.representation_time.weight[0].abs().sum() == 0 == net.time.weight[0].abs().sum()


@pytest.mark.parametrize("aux_loss", [True, False])
def test_auxiliary_loss_trains_the_attention_of_every_behaviour(data, aux_loss):
    """The repository's auxiliary loss attends over the whole history: every behaviour's
    attention embedding gets a gradient, not only the top-k the search selected."""
    torch.manual_seed(0)
    net = get_ranker_class("dare")(SMALL, top_k=3, attention_dim=2, aux_loss=aux_loss)._build(
        data.dims
    )
    net.train()
    batch = data.train.batch(np.arange(1))
    hist = batch["hist_item"][0][batch["hist_mask"][0]]
    assert len(hist.unique()) > 3 + 1
    net.loss(batch).backward()
    rows = (net.attention.item.weight.grad.abs().sum(1) > 0).nonzero().ravel()
    trained = set(rows.tolist())
    assert set(hist.tolist()) <= trained if aux_loss else len(trained) <= 3 + 1
    net.eval()
    assert net._logits(batch)[1] is None  # scoring never runs the auxiliary tower


def test_consistent_search_keeps_the_top_attention_scores(data):
    model = get_ranker_class("dare")(SMALL, top_k=3, attention_dim=2)
    net = model._build(data.dims)
    batch = data.test.batch(np.arange(20))
    scores = net.attention_scores(batch).detach()
    idx, real = net.select(batch)
    for row in range(20):
        valid = scores[row][batch["hist_mask"][row]]
        best = valid.topk(3).values
        assert real[row].all()
        assert torch.allclose(scores[row, idx[row]].sort().values, best.sort().values)


def test_sim_hard_search_picks_recent_same_category(data):
    model = get_ranker_class("sim")(SMALL, top_k=3)
    model.dims = data.dims
    model.net = model._build(model.dims)
    batch = data.test.batch(np.arange(30))
    idx, real = model.net.select(batch)
    cats = batch["hist_cat"].gather(1, idx)
    target = batch["category"][:, None].expand_as(cats)
    assert (cats[real] == target[real]).all()
    same = (batch["hist_cat"] == batch["category"][:, None]) & batch["hist_mask"]
    for row in range(30):
        expected = same[row].nonzero().ravel()[-3:].tolist()
        assert sorted(idx[row][real[row]].tolist()) == expected


@pytest.mark.parametrize("name", ["din", "dare"])
def test_loss_decreases_and_learns_a_tiny_problem(name, data):
    params = {**SMALL, "epochs": 8, "lr": 0.02} | ({"attention_dim": 4} if name == "dare" else {})
    model = get_ranker_class(name)(params)
    model.fit(data, validate=False)
    losses = [h["loss"] for h in model.history]
    assert losses[-1] < losses[0]
    assert model.evaluate(data.test)["auc"] > 0.7


def test_save_load_round_trip(tmp_path: Path, data):
    model = get_ranker_class("dare")(SMALL, attention_dim=2).fit(data)
    model.save(tmp_path / "m")
    loaded = CTRRanker.load(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    np.testing.assert_allclose(loaded.predict_proba(data.test), model.predict_proba(data.test))
    with pytest.raises(PolyrecError, match="not a saved CTR ranker"):
        CTRRanker.load(tmp_path)
    with pytest.raises(PolyrecError, match="not fitted"):
        get_ranker_class("din")().predict_proba(data.test)


def test_unknown_model_and_config_key():
    with pytest.raises(PolyrecError, match="unknown CTR model"):
        get_ranker_class("deepfm")
    with pytest.raises(PolyrecError, match="unknown key 'attention_dim'"):
        get_ranker_class("twin")(attention_dim=8)


def test_search_recall_and_timing(data):
    model = get_ranker_class("sim")(SMALL, top_k=3)
    model.dims = data.dims
    model.net = model._build(model.dims)
    assert search_recall(model, data.test) == pytest.approx(1.0)  # hard search: by construction
    timing = search_timing(model, history_len=50, n_candidates=20, repeats=2)
    assert timing["search_ms_per_1k"] > 0 and timing["score_ms_per_1k"] > 0
    din = get_ranker_class("din")(SMALL)
    din.net = din._build(data.dims)
    with pytest.raises(PolyrecError, match="no search stage"):
        search_recall(din, data.test)


# ------------------------------------------------------------------------------------- CLI
def test_cli_train_writes_record(tmp_path: Path):
    log = taste_log(n_users=12, n_events=22)
    rows = [
        f"{u},{log.item_ids[i - 1]},{log.category_ids[c - 1]},pv,{int(t)}"
        for u, i, c, t in zip(log.users, log.items, log.categories, log.timestamps, strict=True)
    ]
    (tmp_path / "ub.csv").write_text("\n".join(rows) + "\n")
    cfg = {
        "model": "dare",
        "params": {**SMALL, "attention_dim": 2},
        "seeds": [0, 1],
        "data": {"format": "taobao", "path": "ub.csv", "protocol": PROTOCOL.model_dump()},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    args = ["train", str(tmp_path / "c.yaml"), "--out", str(out), "--data-dir", str(tmp_path)]
    result = CliRunner().invoke(ctr_app, [*args, "--set", "params.top_k=3"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "record.json").read_text())
    assert set(record["metrics"]["test"]) >= {"auc", "gauc", "logloss", "search_recall"}
    assert record["config"]["params"]["top_k"] == 3
    assert len(json.loads((out / "metrics.json").read_text())["runs"]) == 2
    assert (out / "model" / "ranker.pt").is_file()
    again = CliRunner().invoke(ctr_app, args)
    assert again.exit_code != 0 and isinstance(again.exception, PolyrecError)


def test_polyrec_train_dispatches_rankers_to_the_ctr_protocol(tmp_path: Path):
    from polyrec.cli import app

    out = tmp_path / "din"
    args = ["train", "din", "-d", "synthetic", "-o", str(out), "--seed", "3"]
    sets = ["epochs=1", "item_dim=4", "category_dim=4", "mlp=[8]", "data.protocol.min_events=30"]
    sets += ["data.protocol.max_len=10", "data.protocol.n_train=4"]
    result = CliRunner().invoke(app, [*args, *(a for s in sets for a in ("--set", s))])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "record.json").read_text())
    assert record["model"] == "din" and record["dataset"] == "synthetic"
    assert set(record["metrics"]["test"]) == {"auc", "gauc", "logloss"}
    assert record["config"]["seeds"] == [3] and record["config"]["params"]["epochs"] == 1
    assert record["protocol"]["max_len"] == 10 and (out / "model" / "ranker.pt").is_file()


def test_data_options_generate_long_synthetic_histories():
    opts = {"n_users": 6, "n_items": 400, "n_interactions": 2400, "min_history": 150}
    log = load_log(CTRDataConfig(format="dataset", path="synthetic", options=opts))
    counts = np.unique(log.users, return_counts=True)[1]
    assert len(counts) == 6 and counts.min() > 140  # repeated pairs are dropped
    with pytest.raises(PolyrecError, match="takes no options"):
        load_log(CTRDataConfig(format="dataset", path="ml-100k", options={"n_users": 6}))


def test_ctr_run_config_needs_data_and_reads_item_categories():
    with pytest.raises(PolyrecError, match="needs --dataset"):
        ctr_run_config("dare")
    cfg = ctr_run_config("dare", dataset="synthetic", overrides={"top_k": 5, "seeds": [1, 2]})
    assert cfg.params == {"top_k": 5} and cfg.seeds == [1, 2] and cfg.data.format == "dataset"
    ds = make_synthetic(n_users=20, n_items=30, seed=0)
    log = BehaviorLog.from_dataset(ds, "category")
    back = log.to_dataset("x")
    assert back.n_interactions == ds.n_interactions and back.item_data is not None
    again = BehaviorLog.from_dataset(back, "category")
    np.testing.assert_array_equal(again.categories, log.categories)
    np.testing.assert_array_equal(again.item_ids[again.items - 1], log.item_ids[log.items - 1])


REAL_DATA = os.environ.get("POLYREC_DATA_DIR")


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_DATA, reason="POLYREC_DATA_DIR is not set")
def test_real_taobao_head_samples():
    path = Path(REAL_DATA) / "taobao_userbehavior_head" / "UserBehavior_head.csv"
    log = read_taobao_userbehavior(path)
    assert (log.n_users, log.n_items, len(log.users)) == (814, 55_233, 84_287)
    proto = CTRProtocol(min_events=60, max_len=100, n_train=40, train_stride=1)
    d = build_ctr_samples(log, proto)
    assert len(d.test) == 501 * 3 and len(d.train) == 501 * 40 * 3
    for split in (d.train, d.valid, d.test):
        b = split.batch(np.arange(0, len(split), 7))
        assert (b["hist_delta"][b["hist_mask"]] > 0).all()  # strictly before the target


def test_gradient_conflict_on_shared_and_decoupled_tables(data):
    twin = get_ranker_class("twin")(SMALL)
    twin.dims, twin.net = data.dims, twin._build(data.dims)
    out = gradient_conflict(twin, data.train, n_batches=2, batch_size=32)
    assert out["rows"] > 0 and out["norm_ratio"] > 0 and -1 <= out["mean_cosine"] <= 1
    assert 0 <= out["conflict_share"] <= 1 and twin.net.stop_gradient is None
    dare = get_ranker_class("dare")(SMALL, attention_dim=4)
    dare.dims, dare.net = data.dims, dare._build(data.dims)
    out = gradient_conflict(dare, data.train, n_batches=2, batch_size=32)
    assert out["rows"] > 0 and "mean_cosine" not in out  # two tables of equal width
