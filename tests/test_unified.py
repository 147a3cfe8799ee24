"""UniMP-style unified model: history schema, serialisation, prompts, decoding, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import TINY_UNIMP

from polyrec.data.interleaved import InterleavedLog
from polyrec.data.sequences import merge_interactions
from polyrec.data.split import leave_one_out
from polyrec.data.synthetic import make_synthetic
from polyrec.errors import PolyrecError
from polyrec.models.unified import UniMP
from polyrec.models.unified.evaluate import evaluate_tasks, ranking_metrics, text_metrics
from polyrec.models.unified.network import ScratchBackbone, UnifiedLM
from polyrec.models.unified.prompts import training_batch
from polyrec.models.unified.tokens import SPECIAL_ID, TASKS, HistorySerializer, TextTokenizer

torch.set_num_threads(1)

TINY = {**TINY_UNIMP, "max_explanation_tokens": 10, "steps_per_epoch": 2}


@pytest.fixture(scope="module")
def data():
    ds = make_synthetic(n_users=30, n_items=24, n_interactions=260, seed=3)
    return ds, leave_one_out(ds)


@pytest.fixture(scope="module")
def model(data):
    _, split = data
    return UniMP(TINY).fit(split.train, split.valid)


def test_event_log_records_round_trip(data):
    ds, split = data
    log = InterleavedLog.from_dataset(ds)
    back = InterleavedLog.from_records(log.to_records())
    np.testing.assert_array_equal(back.indptr, log.indptr)
    np.testing.assert_array_equal(back.items, log.items)
    np.testing.assert_array_equal(back.ratings, log.ratings)
    assert back.reviews.tolist() == log.reviews.tolist()
    first = log.events(0)[0]
    assert first.rating in {1.0, 2.0, 3.0, 4.0, 5.0} and first.review
    merged = InterleavedLog.from_dataset(merge_interactions(split.train, split.valid, split.test))
    assert merged.to_records() == log.to_records()


def test_history_serialization_round_trips(model, data):
    ds, _ = data
    log = InterleavedLog.from_dataset(ds)
    full = HistorySerializer(
        model.vocab, model.id_map, model.tokenizer, model.item_text, max_review_tokens=100
    )
    events = full.events(log)
    for user in (0, 5, 17):
        ids, feats = events.span(int(log.indptr[user]), int(log.indptr[user + 1]))
        parsed = full.parse(ids)
        original = log.events(user)
        assert [e.item for e in parsed] == [e.item for e in original]
        assert [e.rating for e in parsed] == [e.rating for e in original]
        assert [e.review for e in parsed] == [model.tokenizer.normalize(e.review) for e in original]
        # one soft-token slot per event, holding that event's item
        assert (feats[ids == SPECIAL_ID["[FEAT]"]] - 1).tolist() == [e.item for e in original]


def _mutate_from(log: InterleavedLog, start: int, stop: int, keep_item: bool) -> InterleavedLog:
    items, ratings, reviews = log.items.copy(), log.ratings.copy(), log.reviews.copy()
    if not keep_item:
        items[start:stop] = (items[start:stop] + 7) % (items.max() + 1)
    ratings[start:stop] = 6 - ratings[start:stop]
    reviews[start:stop] = "completely different words here"
    return InterleavedLog(log.indptr, items, ratings, reviews)


@pytest.mark.parametrize("task", TASKS)
def test_prompts_never_see_the_target(model, data, task):
    _, split = data
    log = InterleavedLog.from_dataset(split.train)
    user = int(np.argmax(np.diff(log.indptr)))
    lo, hi = int(log.indptr[user]), int(log.indptr[user + 1])
    position = lo + 3
    # the target event and everything after it change; only the fields the task's input
    # legitimately reads (the candidate or searched item) stay
    changed = _mutate_from(log, position, hi, keep_item=task != "next")
    base = model.example(
        task, log, model.serializer.events(log), position, np.random.default_rng(0)
    )
    other = model.example(
        task, changed, model.serializer.events(changed), position, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(base.prompt, other.prompt)
    assert base.prompt[-1] == SPECIAL_ID["[ANS]"]
    assert not np.array_equal(base.target, other.target) or task in ("search",)
    if task in ("next", "search"):
        target = model.id_map.ids_of([log.items[position]])[0]
        np.testing.assert_array_equal(base.target - np.asarray(model.vocab.sid_offsets), target)
    # the history part holds exactly the max_len events before the target
    sep = int(np.flatnonzero(base.prompt == SPECIAL_ID["[SEP]"])[0])
    n_events = int((base.prompt[:sep] == SPECIAL_ID["[ITEM]"]).sum())
    assert n_events == min(3, model.config.max_len)


def test_constrained_beam_search_yields_valid_items(model, data):
    ds, _ = data
    users = np.arange(ds.n_users)
    items, log_probs = model.next_items(users, beams=10)
    assert items.shape == (ds.n_users, 10)
    assert ((items >= 0) & (items < ds.n_items)).all()
    assert all(len(set(row)) == len(row) for row in items.tolist())
    assert (np.diff(log_probs, axis=1) <= 1e-6).all()
    # more beams than items: every item once, then empty slots
    items, log_probs = model.next_items(users[:2], beams=ds.n_items + 5)
    assert sorted(items[0][: ds.n_items].tolist()) == list(range(ds.n_items))
    assert (items[:, ds.n_items :] == -1).all() and np.isneginf(log_probs[:, ds.n_items :]).all()
    # probabilities over the whole catalogue sum to one (trie-renormalised)
    assert np.exp(log_probs[:, : ds.n_items]).sum(1) == pytest.approx([1.0, 1.0], abs=1e-4)


def test_recommend_search_rating_explain_api(model, data):
    ds, _ = data
    recs = model.recommend([0, 1], k=5)
    assert len(recs) == 10 and set(recs["rank"]) == set(range(1, 6))
    found = model.search("skincare kit", history=[1, 2, 3], k=4)
    assert list(found["rank"]) == [1, 2, 3, 4] and found["item"].isin(range(ds.n_items)).all()
    assert len(model.search("anything", k=3)) == 3
    ratings = model.predict_rating(list(range(10)), list(range(10)))
    assert ratings.shape == (10,) and ((ratings >= 1.0) & (ratings <= 5.0)).all()
    texts = model.explain([0, 1], [2, 3])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    with pytest.raises(PolyrecError, match="unknown item"):
        model.search("kit", history=[999])


def test_rating_head_stays_in_range_for_extreme_weights(model):
    net = model.module
    saved = net.out_bias.detach().clone()
    try:
        with torch.no_grad():
            net.out_bias[model.vocab.rating_offset] = 1e4  # all mass on the lowest level
        low = model.rating_internal(np.arange(5), np.arange(5))
        with torch.no_grad():
            net.out_bias[model.vocab.rating_offset] = -1e4
            net.out_bias[model.vocab.rating_offset + 4] = 1e4
        high = model.rating_internal(np.arange(5), np.arange(5))
    finally:
        with torch.no_grad():
            net.out_bias.copy_(saved)
    np.testing.assert_allclose(low, 1.0)
    np.testing.assert_allclose(high, 5.0)


@pytest.mark.parametrize("task", TASKS)
def test_tiny_model_overfits_twenty_examples(model, data, task):
    _, split = data
    log = InterleavedLog.from_dataset(split.train)
    events = model.serializer.events(log)
    rng = np.random.default_rng(1)
    positions = [
        p
        for p in range(len(log.items))
        if p > log.indptr[np.searchsorted(log.indptr, p, side="right") - 1]
    ][:20]
    batch = training_batch([model.example(task, log, events, p, rng) for p in positions], {})
    torch.manual_seed(0)
    groups = model.module.output_groups
    backbone = type(model.module.backbone)(32, 2, 1, 64, 0.0, 512)
    net = UnifiedLM(model.vocab.size, backbone, model.module.features, groups)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = None
    for _ in range(100):
        loss = net(batch["ids"], batch["feats"], batch["targets"], batch["weights"])
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        mask = batch["ids"] != 0
        pos = (mask.long().cumsum(1) - 1).clamp_min(0)
        states, _ = net.run(batch["ids"], batch["feats"], mask, pos)
        at = batch["targets"] >= 0
        goal = batch["targets"][at]
        accuracy = (net.group_logits(states[at], goal).argmax(-1) == goal).float().mean()
    assert float(loss.detach()) < 0.1 * first
    assert float(accuracy) >= 0.98  # teacher-forced accuracy within each target's group


def test_save_load_round_trip(model, tmp_path):
    model.save(tmp_path / "m")
    loaded = UniMP.load(tmp_path / "m")
    assert isinstance(loaded, UniMP)
    users = np.arange(6)
    np.testing.assert_array_equal(loaded.next_items(users)[0], model.next_items(users)[0])
    np.testing.assert_allclose(
        loaded.rating_internal(users, users), model.rating_internal(users, users)
    )
    assert loaded.explain_internal(users[:2], users[:2]) == model.explain_internal(
        users[:2], users[:2]
    )


def test_evaluate_tasks_reports_every_task(model, data):
    _, split = data
    res = evaluate_tasks(model, split.test, ks=(5, 10))
    assert set(res) == set(TASKS)
    assert 0 <= res["next"]["ndcg@10"] <= res["next"]["recall@10"] <= 1
    assert res["rating"]["rmse"] >= res["rating"]["mae"] >= 0
    assert 0 <= res["explanation"]["rouge_l"] <= 1 and res["explanation"]["n"] > 0


def test_tokenizer_is_a_transformers_tokenizer(model):
    hf = model.tokenizer.as_transformers()
    text = "I love it, excellent quality"
    ids = model.tokenizer.encode([text])[0]
    assert hf(text, add_special_tokens=False)["input_ids"] == ids
    assert model.tokenizer.normalize(text) == "i love it, excellent quality"
    assert hf.decode(ids) == model.tokenizer.decode(ids)


def test_tokenizer_training_is_deterministic(data):
    # the WordPiece trainer gave another vocabulary on each call (huggingface/tokenizers#1794)
    ds, _ = data
    texts = [*map(str, ds.item_titles()), *map(str, ds.interaction_data["review"])]
    assert len({TextTokenizer.train(texts, 200).json for _ in range(6)}) == 1


def test_metric_helpers_on_tiny_cases():
    found = np.array([[3, 1, 2], [0, 1, 2], [5, 6, 7]])
    m = ranking_metrics(found, np.array([1, 0, 9]), ks=(1, 2))
    assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@2"] == pytest.approx(2 / 3)
    assert m["ndcg@2"] == pytest.approx((1 / np.log2(3) + 1) / 3)
    same = text_metrics(["i love it a lot today"], ["i love it a lot today"])
    assert same["bleu4"] == pytest.approx(100.0) and same["rouge_l"] == pytest.approx(1.0)
    assert text_metrics(["x y"], ["a b c d"])["rouge_l"] == 0.0


def test_missing_task_data_is_a_clear_error(data):
    _, split = data
    no_ratings = split.train.with_interactions(
        users=split.train.users, items=split.train.items, timestamps=split.train.timestamps
    )
    with pytest.raises(PolyrecError, match="task 'rating' needs explicit ratings"):
        UniMP(TINY).fit(no_ratings)
    with pytest.raises(PolyrecError, match="unknown tasks"):
        UniMP(TINY, tasks={"next": 1.0, "images": 1.0})
    with pytest.raises(PolyrecError, match="at least one task"):
        UniMP(TINY, tasks={"next": 0.0})
    with pytest.raises(PolyrecError, match="validates task 'next', which has weight 0"):
        UniMP(TINY, tasks={"rating": 1.0}, early_stopping="ndcg@10").fit(split.train, split.valid)


@pytest.mark.parametrize(
    ("task", "metric"),
    [
        ("search", "search_ndcg@10"),
        ("rating", "rating_neg_rmse"),
        ("explanation", "explanation_rouge_l"),
    ],
)
def test_single_task_model_early_stops_on_its_own_task(data, task, metric):
    _, split = data
    model = UniMP(TINY, tasks={task: 1.0}, epochs=2, eval_every=1, early_stopping=metric)
    model.fit(split.train, split.valid)
    valid = [h["valid"] for h in model.history]
    assert len(valid) == 2 and all(metric in v for v in valid)
    assert model.best_epoch == 1 + int(np.argmax([v[metric] for v in valid]))
    if task == "rating":  # the negated RMSE of the ratings the model predicts
        assert valid[-1][metric] < 0 and valid[-1]["rating_neg_mae"] < 0
    model.set_histories(split.train)  # what it validated with: the same number again
    again = evaluate_tasks(model, split.valid, tasks=[task], ks=(10, 20))[task]
    name = metric.removeprefix(f"{task}_").removeprefix("neg_")
    assert again[name] == pytest.approx(abs(valid[model.best_epoch - 1][metric]))


def test_multi_task_early_stopping_on_the_geometric_mean_of_every_task(data):
    _, split = data
    model = UniMP(TINY, epochs=2, eval_every=1, early_stopping="tasks_geomean@10")
    model.fit(split.train, split.valid)
    for entry in model.history:
        v = entry["valid"]
        heads = [v["ndcg@10"], v["search_ndcg@10"], -1 / v["rating_neg_rmse"]]
        heads.append(v["explanation_rouge_l"])
        assert v["tasks_geomean@10"] == pytest.approx(np.prod(heads) ** 0.25)
    geomeans = [h["valid"]["tasks_geomean@10"] for h in model.history]
    assert model.best_epoch == 1 + int(np.argmax(geomeans))
    one = UniMP(TINY, tasks={"rating": 1.0}, epochs=1, early_stopping="tasks_geomean@10")
    one.fit(split.train, split.valid)  # one task: its own headline, 1 / RMSE
    v = one.history[0]["valid"]
    assert v["tasks_geomean@10"] == pytest.approx(-1 / v["rating_neg_rmse"])


def test_hugging_face_backbone_from_a_local_tiny_gpt2(data, tmp_path):
    from transformers import GPT2Config, GPT2Model

    _, split = data
    cfg = GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=256, vocab_size=8)
    GPT2Model(cfg).save_pretrained(tmp_path / "gpt2-tiny")
    m = UniMP(TINY, backbone=str(tmp_path / "gpt2-tiny"), max_review_tokens=2, max_len=2)
    m.fit(split.train)
    items, _ = m.next_items(np.arange(4))
    assert ((items >= 0) & (items < split.train.n_items)).all()
    assert len(m.explain_internal(np.arange(2), np.arange(2))) == 2
    with pytest.raises(PolyrecError, match="not available offline"):
        UniMP(TINY, backbone=str(tmp_path / "missing")).fit(split.train)


def _backbones(tmp_path):
    from transformers import GPT2Config, GPT2Model

    from polyrec.models.unified.network import HFBackbone, ScratchBackbone

    GPT2Model(
        GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=64, vocab_size=8)
    ).save_pretrained(tmp_path / "g")
    return [ScratchBackbone(16, 2, 2, 32, 0.0, 64), HFBackbone(str(tmp_path / "g"))]


def test_cached_decoding_equals_full_recompute(tmp_path):
    torch.manual_seed(0)
    for backbone in _backbones(tmp_path):
        net = UnifiedLM(30, backbone, torch.randn(5, 4)).eval()
        ids = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8]])
        feats = torch.zeros_like(ids)
        feats[1, 2] = 3
        mask = ids != 0
        pos = (mask.long().cumsum(1) - 1).clamp_min(0)
        with torch.no_grad():
            full, _ = net.run(ids, feats, mask, pos)
            _, cache = net.run(ids[:, :5], feats[:, :5], mask[:, :5], pos[:, :5], use_cache=True)
            # each row's cache used by two "beams", then the remaining 3 tokens at once
            rep = net.backbone.repeat_cache(cache, 2)
            tail, _ = net.run(
                ids[:, 5:].repeat_interleave(2, 0),
                feats[:, 5:].repeat_interleave(2, 0),
                mask.repeat_interleave(2, 0),
                pos[:, 5:].repeat_interleave(2, 0),
                rep,
                use_cache=True,
            )
        real = mask[:, 5:].repeat_interleave(2, 0)
        torch.testing.assert_close(
            tail[real], full[:, 5:].repeat_interleave(2, 0)[real], atol=1e-5, rtol=1e-4
        )


def test_scratch_backbone_positions_start_at_token_scale():
    # N(0, 1) position embeddings (PyTorch's default) would drown 0.02-scale token embeddings
    torch.manual_seed(0)
    backbone = ScratchBackbone(32, 2, 1, 64, 0.0, 128)
    net = UnifiedLM(50, backbone, torch.randn(5, 4))
    assert abs(float(backbone.position.weight.detach().std()) - 0.02) < 0.005
    assert abs(float(net.token.weight.detach().std()) - 0.02) < 0.005


def test_training_loss_normalises_each_target_within_its_output_group(model):
    vocab = model.vocab
    groups = torch.from_numpy(vocab.output_groups())
    # rating tokens, each depth's ID codes and text + [EOS] are separate groups
    assert len(set(groups[vocab.rating_offset : vocab.sid_offsets[0]].tolist())) == 1
    sid_groups = {int(groups[lo]) for lo in vocab.sid_offsets}
    assert len(sid_groups) == len(vocab.sid_offsets)
    assert groups[SPECIAL_ID["[EOS]"]] == groups[vocab.text_offset] == groups[-1]
    torch.manual_seed(0)
    net = UnifiedLM(vocab.size, ScratchBackbone(16, 2, 1, 32, 0.0, 64), torch.randn(5, 4), groups)
    ids = torch.tensor([[1, 2, 3, vocab.sid_offsets[1] + 2]])
    target = vocab.sid_offsets[1] + 1
    targets = torch.tensor([[-1, -1, target, -1]])
    loss = net(ids, torch.zeros_like(ids), targets, torch.ones(1))
    with torch.no_grad():
        mask = ids != 0
        states, _ = net.run(ids, torch.zeros_like(ids), mask, torch.arange(4)[None])
        logits = net.logits(states[0, 2])
    lo, n = vocab.sid_offsets[1], vocab.sid_vocab[1]
    expected = -torch.log_softmax(logits[lo : lo + n], -1)[target - lo]
    torch.testing.assert_close(loss, expected)
