"""Semantic IDs, TIGER, preferences, Mender and the preference-discerning benchmark, on tiny
synthetic data (no download: a tiny random sentence encoder and a tiny random GPT-2 are built
here)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_SEQ2SEQ

from polyrec.data.sequences import PAD, merge_interactions
from polyrec.data.split import leave_one_out
from polyrec.data.synthetic import make_synthetic
from polyrec.errors import PolyrecError
from polyrec.features.text import embed_item_texts
from polyrec.models.generative.benchmark import (
    build_benchmark,
    combined_recall,
    invert,
    positive_candidates,
    rank_metrics,
    steering_partner,
)
from polyrec.models.generative.decoding import finish_beams
from polyrec.models.generative.mender import Mender, MenderTok
from polyrec.models.generative.preferences import (
    ExtractiveGenerator,
    ItemReview,
    LLMGenerator,
    OpenAIChatGenerator,
    PreferenceGenerator,
    is_negative,
    parse_preferences,
    user_preferences,
    window_prompt,
)
from polyrec.models.generative.semantic_ids import (
    RQVAEConfig,
    SemanticIdMap,
    add_collision_level,
    codebook_report,
    kmeans,
    train_rqvae,
)
from polyrec.models.generative.tiger import TIGER, prefix_examples

TINY = {**TINY_SEQ2SEQ, "epochs": 3}


@pytest.fixture(scope="module")
def data():
    return leave_one_out(make_synthetic(40, 30, 400, n_categories=4, seed=0))


@pytest.fixture(scope="module")
def tiger(data) -> TIGER:
    torch.set_num_threads(1)
    return TIGER(TINY).fit(data.train)


# ---------------------------------------------------------------------- semantic IDs
def test_kmeans_recovers_separated_clusters() -> None:
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = centers.repeat_interleave(20, 0) + 0.1 * torch.randn(60, 2, generator=gen)
    _, assign = kmeans(x, 3, generator=gen)
    groups = assign.view(3, 20)
    assert all(len(set(g.tolist())) == 1 for g in groups)
    assert len({int(g[0]) for g in groups}) == 3


def test_rqvae_reconstruction_improves_and_codes_have_shape() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 12))[rng.integers(0, 8, 256)] + 0.1 * rng.normal(size=(256, 12))
    cfg = RQVAEConfig(
        levels=2, codebook_size=8, latent_dim=4, hidden=(16,), epochs=25, batch_size=64, lr=0.01
    )
    result = train_rqvae(x.astype(np.float32), cfg)
    recon = [h["recon"] for h in result.history]
    assert recon[-1] < 0.7 * recon[0]
    assert result.codes.shape == (256, 2)
    assert result.codes.min() >= 0 and result.codes.max() < 8


def test_dead_codes_are_reset() -> None:
    x = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)  # 3 distinct points, 16 codes
    cfg = RQVAEConfig(
        levels=1,
        codebook_size=16,
        latent_dim=2,
        hidden=(8,),
        epochs=3,
        batch_size=30,
        standardize=False,
    )
    result = train_rqvae(x, cfg)
    assert result.history[0]["reset"] >= 13  # at most 3 codes can be used


def test_collision_level_is_deterministic_and_unique() -> None:
    codes = np.array([[0, 1], [0, 1], [2, 3], [0, 1], [2, 3]])
    full = add_collision_level(codes)
    assert full[:, -1].tolist() == [0, 1, 0, 2, 1]  # numbered in item order within a group
    assert len(np.unique(full, axis=0)) == len(full)
    np.testing.assert_array_equal(add_collision_level(codes), full)


def test_codebook_report_by_hand() -> None:
    codes = np.array([[0, 1], [0, 1], [2, 3], [0, 2]])
    rep = codebook_report(codes, codebook_size=4)
    assert rep["usage"] == [0.5, 0.75]
    assert rep["collision_rate"] == 0.5
    assert rep["unique_fraction"] == 0.75
    assert rep["max_collisions"] == 2
    assert rep["prefix_sizes"] == [2, 3]


def test_semantic_id_map_round_trip_and_invalid_ids() -> None:
    rng = np.random.default_rng(1)
    codes = add_collision_level(rng.integers(0, 3, size=(40, 2)))
    id_map = SemanticIdMap(codes)
    items = rng.permutation(40)
    np.testing.assert_array_equal(id_map.items_of(id_map.ids_of(items)), items)
    assert id_map.items_of(np.array([[2, 2, 99], [-1, 0, 0]])).tolist() == [-1, -1]
    back = SemanticIdMap.from_state({k: torch.as_tensor(v) for k, v in id_map.state().items()})
    np.testing.assert_array_equal(back.codes, codes)
    assert back.vocab == id_map.vocab
    with pytest.raises(PolyrecError, match="not unique"):
        SemanticIdMap(np.array([[0, 1], [0, 1]]))


def test_finish_beams_ranks_valid_items_before_invalid_beams() -> None:
    """Unconstrained decoding may emit an ID that is no item: it takes no rank."""
    id_map = SemanticIdMap(np.array([[0, 0], [1, 1], [0, 1]]))
    codes = np.array([[[1, 0], [1, 1], [9, 9], [0, 1]]])  # beams 0 and 2 are no item
    items, log_probs = finish_beams(codes, np.array([[-0.1, -0.5, -0.7, -0.9]]), id_map, k=5)
    assert items.tolist() == [[1, 2, -1, -1, -1]]
    assert log_probs[0, :2].tolist() == [-0.5, -0.9] and np.isneginf(log_probs[0, 2:]).all()


def test_trie_allows_exactly_the_prefixes_of_real_ids() -> None:
    rng = np.random.default_rng(2)
    codes = add_collision_level(rng.integers(0, 4, size=(25, 2)))
    id_map = SemanticIdMap(codes)
    for depth in range(id_map.depth):
        prefixes = list(itertools.product(*(range(v) for v in id_map.vocab[:depth])))
        keys = torch.from_numpy(
            id_map.pack(np.array(prefixes, np.int64).reshape(len(prefixes), depth))
        )
        allowed = id_map.allowed(keys, depth).numpy()
        real = {tuple(r) for r in codes[:, : depth + 1].tolist()}
        for p, row in zip(prefixes, allowed, strict=True):
            assert {t for t in range(id_map.vocab[depth]) if row[t]} == {
                t for t in range(id_map.vocab[depth]) if (*p, t) in real
            }


# ---------------------------------------------------------------------- TIGER
def test_prefix_examples_by_hand() -> None:
    ds = make_synthetic(3, 20, 18, min_history=5, seed=3)
    users, hist, targets = prefix_examples(ds, max_len=3)
    seqs = ds.sequences
    u0 = seqs.items[seqs.indptr[0] : seqs.indptr[1]]
    rows = np.flatnonzero(users == 0)
    assert len(rows) == len(u0) - 1
    assert hist[rows[0]].tolist() == [0, 0, u0[0] + 1]
    assert hist[rows[3]].tolist() == (u0[1:4] + 1).tolist()
    assert targets[rows].tolist() == u0[1:].tolist()


def test_tiger_loss_decreases(tiger: TIGER) -> None:
    losses = [h["loss"] for h in tiger.history]
    assert losses[-1] < losses[0]


def test_constrained_beam_search_never_yields_an_invalid_id(tiger: TIGER) -> None:
    users = np.arange(40)
    tiger.reset_invalid_count()
    items, scores = tiger.generate(tiger.histories[users], users, beams=8)
    assert tiger.invalid_id_rate == 0.0
    assert (items >= 0).all() and np.isfinite(scores).all()
    assert all(len(set(row)) == len(row) for row in items.tolist())  # k distinct items
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    tiger.reset_invalid_count()
    free, free_scores = tiger.generate(tiger.histories[users], users, constrained=False)
    generated = np.isfinite(free_scores)
    assert (free[generated] >= 0).all()  # invalid IDs are dropped, and counted
    assert tiger.invalid_id_rate >= 0.0


def test_beam_search_equals_brute_force_when_beams_cover_the_catalogue(tiger: TIGER) -> None:
    users = np.arange(6)
    hist = tiger.histories[users]
    items, scores = tiger.generate(hist, users, beams=tiger.n_items)
    exact = tiger.log_likelihood(hist, np.arange(tiger.n_items), users).numpy()
    order = np.argsort(-exact, axis=1, kind="stable")
    np.testing.assert_array_equal(items[:, :10], order[:, :10])
    np.testing.assert_allclose(
        scores[:, :10], np.take_along_axis(exact, order, 1)[:, :10], atol=1e-4
    )
    np.testing.assert_allclose(np.exp(exact).sum(1), 1.0, atol=1e-4)  # a distribution on items


def test_score_places_beams_and_minus_inf_elsewhere(tiger: TIGER) -> None:
    scores = tiger.score(np.arange(5))
    finite = torch.isfinite(scores).sum(1)
    assert (finite == tiger.config.beams).all()
    recs = tiger.recommend(tiger.user_ids.external[:3], k=5, exclude_seen=False)
    assert recs.groupby("user")["item"].nunique().eq(5).all()


def test_save_load_keeps_scores_and_mapping(tiger: TIGER, tmp_path: Path) -> None:
    tiger.save(tmp_path / "m")
    back = TIGER.load(tmp_path / "m")
    np.testing.assert_array_equal(back.id_map.codes, tiger.id_map.codes)
    torch.testing.assert_close(back.score(np.arange(5)), tiger.score(np.arange(5)))


def test_precomputed_semantic_ids_must_cover_the_catalogue(data) -> None:
    model = TIGER(TINY)
    model.use_semantic_ids(SemanticIdMap(add_collision_level(np.zeros((5, 1), np.int64))))
    with pytest.raises(PolyrecError, match="cover 5 items"):
        model.fit(data.train)


def test_unknown_item_vectors_is_a_clear_error(data) -> None:
    with pytest.raises(PolyrecError, match="item vectors"):
        TIGER({**TINY, "item_features": "vector:nope"}).fit(data.train)


# ---------------------------------------------------------------------- preferences
def test_extractive_generator_writes_both_polarities() -> None:
    window = [
        ItemReview("gentle face wash", "skincare", "I love it, so gentle", 5.0),
        ItemReview("citrus perfume", "fragrance", "Terrible smell, I regret buying this", 1.0),
        ItemReview("nail kit", "", "It is okay", 3.0),
        ItemReview("hair oil bottle", "", "great, my hair is soft", None),
    ]
    prefs = ExtractiveGenerator().generate(window)
    assert prefs == ["Prefers hair oil bottle", "Avoid fragrance", "Prefers skincare"]
    assert [is_negative(p) for p in prefs] == [False, True, False]
    assert ExtractiveGenerator(max_preferences=1).generate(window) == ["Prefers hair oil bottle"]


def test_parse_preferences_json_and_lines() -> None:
    answer = '{"instructions": ["Prefers matte lipstick", "Avoid strong scents", "x", "x"]}'
    assert parse_preferences(answer) == ["Prefers matte lipstick", "Avoid strong scents", "x"]
    assert parse_preferences("- Likes soft brushes\n2. Avoid glitter\n\n", limit=1) == [
        "Likes soft brushes"
    ]


class _Counting(PreferenceGenerator):
    calls = 0

    @property
    def name(self) -> str:
        return "counting"

    def generate(self, window):
        type(self).calls += 1
        return [f"Prefers item {len(window)}"]


def test_user_preferences_per_step_and_shared_cache(tmp_path: Path) -> None:
    ds = make_synthetic(4, 20, 24, min_history=5, seed=4)
    cache = tmp_path / "prefs.jsonl"
    table = user_preferences(ds, _Counting(), window=3, last_n=None, cache_path=cache)
    n_steps = ds.n_interactions
    assert _Counting.calls == n_steps
    assert table.at(0, 0) == ["Prefers item 1"] and table.at(0, 4) == ["Prefers item 3"]
    assert table.accumulated(0, 4) == ["Prefers item 1", "Prefers item 2", "Prefers item 3"]
    lines = [json.loads(x) for x in cache.read_text().splitlines()]
    assert len(lines) == n_steps and {"user", "step", "preferences"} <= set(lines[0])
    again = user_preferences(ds, _Counting(), window=3, last_n=None, cache_path=cache)
    assert _Counting.calls == n_steps  # all read from the cache
    assert again.prefs == table.prefs


def test_llm_generator_with_a_tiny_random_model() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = '[UNK] { } [ ] " : , instructions prefers avoid soft scent love it title review'
    vocab = {w: i for i, w in enumerate(words.split())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(vocab), n_embd=16, n_layer=1, n_head=2, n_positions=512)
    )
    gen = LLMGenerator(model, tokenizer, max_new_tokens=8)
    window = [ItemReview("soft brush", "", "love it", 5.0)]
    assert '"review": "love it"' in gen.prompt(window)
    prefs = gen.generate(window)
    assert isinstance(prefs, list) and len(prefs) <= 5
    assert all(isinstance(p, str) and p for p in prefs)


class _StubChat:
    """A local OpenAI-compatible endpoint: records each request and answers with the next
    canned ``(status, body, delay_seconds)``."""

    def __init__(self, replies: list[tuple[int, str, float]]) -> None:
        self.replies = list(replies)
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stub.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
                )
                status, text, delay = stub.replies.pop(0)
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(text.encode())

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> _StubChat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _chat_reply(content) -> str:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})


WINDOW = [ItemReview("soft brush", "", "love it", 5.0), ItemReview("perfume", "", "awful", 1.0)]


def test_openai_generator_request_and_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYREC_TEST_KEY", "sk-test")
    answer = json.dumps({"instructions": ["Prefers soft brushes", "Avoid perfume", *"abcd"]})
    with _StubChat([(200, _chat_reply(f"```json\n{answer}\n```"), 0.0)]) as stub:
        gen = OpenAIChatGenerator(
            stub.url, "tiny-chat", api_key_env="POLYREC_TEST_KEY", temperature=0.6, max_tokens=77
        )
        prefs = gen.generate(WINDOW)
    assert prefs == ["Prefers soft brushes", "Avoid perfume", "a", "b", "c"]  # at most 5
    (req,) = stub.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-test"
    assert req["body"] == {
        "model": "tiny-chat",
        "messages": [{"role": "user", "content": window_prompt(WINDOW)}],
        "temperature": 0.6,
        "max_tokens": 77,
    }
    assert "sk-test" not in gen.name


def test_openai_generator_without_key_and_line_replies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLYREC_TEST_KEY", raising=False)
    with _StubChat([(200, _chat_reply("- Likes soft brushes\n2. Avoid glitter\n"), 0.0)]) as stub:
        prefs = OpenAIChatGenerator(stub.url, "m", api_key_env="POLYREC_TEST_KEY").generate(WINDOW)
    assert prefs == ["Likes soft brushes", "Avoid glitter"]
    assert "Authorization" not in stub.requests[0]["headers"]


def test_openai_generator_retries_transient_errors() -> None:
    ok = _chat_reply('{"instructions": ["Prefers soft brushes"]}')
    with _StubChat([(503, '{"error": "busy"}', 0.0), (429, "", 0.0), (200, ok, 0.0)]) as stub:
        gen = OpenAIChatGenerator(stub.url, "m", retries=2, backoff=0.01)
        assert gen.generate(WINDOW) == ["Prefers soft brushes"]
    assert len(stub.requests) == 3


@pytest.mark.parametrize(
    ("replies", "match", "calls"),
    [
        ([(400, '{"error": {"message": "bad model"}}', 0.0)], r"HTTP 400 .*bad model", 1),
        ([(500, "oops", 0.0)] * 2, r"HTTP 500 .*oops \(after 2 attempts\)", 2),
        ([(200, "<html>not json</html>", 0.0)], r"malformed reply '<html>not json", 1),
        ([(200, '{"choices": []}', 0.0)], "malformed reply", 1),
        ([(200, _chat_reply(None), 0.0)], "no text content", 1),
        ([(200, _chat_reply("late"), 0.6), (200, _chat_reply("late"), 0.6)], "timed out", 2),
    ],
)
def test_openai_generator_errors_are_one_line(replies, match, calls) -> None:
    with _StubChat(replies) as stub:
        gen = OpenAIChatGenerator(stub.url, "m", timeout=0.3, retries=1, backoff=0.01)
        with pytest.raises(PolyrecError, match=match) as info:
            gen.generate(WINDOW)
    assert "\n" not in str(info.value)
    assert len(stub.requests) == calls


def test_openai_generator_rejects_non_http_urls() -> None:
    with pytest.raises(PolyrecError, match="http"):
        OpenAIChatGenerator("file:///etc/passwd", "m")


# ---------------------------------------------------------------------- Mender
def test_mender_fits_follows_context_and_round_trips(data, tmp_path: Path) -> None:
    from test_text_features import tiny_sentence_model

    encoder = tiny_sentence_model(tmp_path / "enc")
    model = Mender({**TINY, "preference_model": encoder, "epochs": 2}).fit(data.train)
    assert model.pref_texts and all(p.startswith(("Prefers", "Avoid")) for p in model.pref_texts)
    assert model._train_prefs.shape[0] == len(prefix_examples(data.train, 5)[0])
    users = np.arange(4)
    hist = model.histories[users]
    a, sa = model.generate_with_preferences(hist, [["Prefers red"]] * 4, users)
    _, sb = model.generate_with_preferences(hist, [["Avoid soft brush"]] * 4, users)
    assert (a >= 0).all() and model.invalid_id_rate == 0.0
    assert np.abs(sa - sb).max() > 0  # the preference is in the encoder context
    model.set_preference_context(users, [["Prefers red"]] * 4)
    torch.testing.assert_close(
        model.score(users)[0, a[0]], torch.from_numpy(sa[0].astype(np.float32))
    )
    model.save(tmp_path / "m")
    back = Mender.load(tmp_path / "m")
    assert back.pref_texts == model.pref_texts
    torch.testing.assert_close(back.score(users), model.score(users))


def test_mender_emb_reads_embedded_preferences_and_history_only(data, tmp_path: Path) -> None:
    """The paper's Mender-Emb: the decoder's memory is one linear map of the frozen embeddings
    of the preferences and of the history items, with no encoder and no order."""
    from test_text_features import tiny_sentence_model

    from polyrec.features.text import embed_item_texts

    encoder = tiny_sentence_model(tmp_path / "enc")
    model = Mender({**TINY, "preference_model": encoder, "epochs": 1}).fit(data.train)
    net = model.module
    assert not hasattr(net, "encoder")
    hist = model.histories[:3]
    prefix = model.embed_preferences(["Prefers red"])[None].expand(3, -1, -1)
    with torch.no_grad():
        memory, keys = net.encode(model._encoder_tokens(hist, None), prefix)
    fields = model.config.text_fields
    items = torch.from_numpy(embed_item_texts(data.train, encoder, fields=fields, progress=False))
    for r in range(3):
        real = torch.from_numpy(hist[r][hist[r] != PAD] - 1)
        with torch.no_grad():
            expected = net.pref_proj(torch.cat([prefix[r], items[real]]))
        torch.testing.assert_close(memory[r][keys[r, 0, 0]], expected)
    backwards = hist.copy()
    for r in range(3):  # the same items in reverse order
        real = backwards[r] != PAD
        backwards[r, real] = backwards[r, real][::-1]
    prefs = [["Prefers red"]] * 3
    _, sa = model.generate_with_preferences(hist, prefs)
    _, sb = model.generate_with_preferences(backwards, prefs)
    np.testing.assert_allclose(np.sort(sa, 1), np.sort(sb, 1), atol=1e-5)


def test_mender_context_has_no_user_token_by_default(data, tmp_path: Path) -> None:
    from test_text_features import tiny_sentence_model

    encoder = tiny_sentence_model(tmp_path / "enc")
    config = {k: v for k, v in TINY.items() if k != "n_user_tokens"}
    model = Mender({**config, "preference_model": encoder, "epochs": 1}).fit(data.train)
    assert model.config.n_user_tokens == 0 and TIGER().config.n_user_tokens == 2000
    hist, prefs = model.histories[:4], [["Prefers red"]] * 4
    _, own = model.generate_with_preferences(hist, prefs, np.arange(4))
    _, other = model.generate_with_preferences(hist, prefs, np.arange(4, 8))
    np.testing.assert_array_equal(own, other)  # the user's identity does not reach the model


def test_mender_training_contexts_sentiment_pairs_and_accumulated(data, tmp_path: Path) -> None:
    from test_text_features import tiny_sentence_model

    torch.set_num_threads(1)
    encoder = tiny_sentence_model(tmp_path / "enc")
    cfg = {**TINY, "preference_model": encoder, "epochs": 1}
    extra = {"sentiment_pairs": True, "steering_pairs": True, "accumulated_fraction": 1.0}
    model = Mender({**cfg, **extra})
    model.fit(data.train)
    users, _, targets = prefix_examples(data.train, 5)
    n = len(users)
    lengths = np.diff(data.train.sequences.indptr)
    flat = np.arange(lengths.sum())
    pos = flat - np.repeat(data.train.sequences.indptr[:-1], lengths)
    steps, interaction = pos[pos >= 1], data.train.order[flat[pos >= 1]]
    table = model.preferences
    rows, ctx, sign = model._train_rows, model._train_prefs, model._train_sign
    items = model._train_items
    assert (rows[:n] == np.arange(n)).all() and (sign[:n] == 1).all()
    assert (items[:n] == targets).all()
    # each row's context: one positive preference written before its target (never from the
    # target's own review), or its inverted negative when all were negative
    for r in range(n):
        before = table.at(users[r], steps[r] - 1)
        got = _texts(model, ctx[r])
        assert got == [] if not before else got[0] in positive_candidates(before)
    # sentiment pairs: twins over one negatively reviewed row, "Prefers X" then "Avoid X"
    pairs = np.flatnonzero(sign < 0)
    assert len(pairs) > 0 and pairs[-1] == n + 2 * len(pairs) - 1
    for k in pairs.tolist():
        r = rows[k]
        assert rows[k - 1] == r and sign[k - 1] == 1 and items[k] == items[k - 1] == targets[r]
        (neg,), (pos_text,) = _texts(model, ctx[k]), _texts(model, ctx[k - 1])
        assert is_negative(neg) and pos_text == invert(neg)
        assert neg in table.at(users[r], steps[r])  # written with the item's own review
        assert data.train.ratings[interaction[r]] <= 2
    # steering pairs: per target item two crosswise examples per axis (fine, coarse): a row's
    # history with another item and that item's matched preference
    steer = np.arange(n + 2 * len(pairs), len(rows))
    with_pref = [r for r in range(n) if ctx[r, 0] >= 0]
    assert len(steer) == 2 * 2 * len(np.unique(targets[with_pref]))
    matched_of = {int(targets[r]): ctx[r, 0] for r in reversed(with_pref)}  # first row per item
    for k in steer.tolist():
        assert items[k] != targets[rows[k]] and sign[k] == 1
        assert ctx[k, 0] == matched_of[int(items[k])]
    # accumulated_fraction 1: every row trains on everything accumulated before its target;
    # the pairs keep their single preference
    batch = model._example_context(np.arange(len(rows)), np.random.default_rng(0))
    assert (batch["sign"].numpy() == sign).all()
    limit = batch["prefix"].shape[1]
    for r in range(n):
        want = table.accumulated(users[r], steps[r] - 1)[:limit]
        assert [model.pref_texts[i] for i in model._train_accumulated[r] if i >= 0][:limit] == want
    acc = torch.from_numpy(model._train_accumulated[:n, :limit])
    torch.testing.assert_close(
        batch["prefix"][:n], model.pref_rows[acc.clamp_min(0)] * (acc >= 0)[..., None]
    )
    torch.testing.assert_close(
        batch["prefix"][n:, 0], model.pref_rows[torch.from_numpy(ctx[n:, 0])]
    )
    assert batch["prefix_mask"][n:, 1:].all()


def test_negative_examples_take_the_unlikelihood_loss() -> None:
    torch.manual_seed(0)
    model = TIGER(TINY).fit(make_synthetic(20, 15, 150, seed=0))
    net = model.train_module.eval()
    tokens = torch.from_numpy(model.histories[:4])
    codes = torch.from_numpy(model.id_map.ids_of(np.arange(4)))
    with torch.no_grad():
        memory, mask = net.encode(tokens)
        logits = net.teacher_forced(memory, mask, codes[:, None])
        p = torch.stack(
            [
                lg[:, 0].softmax(-1).gather(1, codes[:, d, None])[:, 0]
                for d, lg in enumerate(logits)
            ],
            1,
        )
        sign = torch.tensor([1, -1, 1, -1])
        want = torch.where(sign[:, None] > 0, -p.log(), -(1 - p).log()).mean()
        torch.testing.assert_close(net(tokens, codes, sign=sign), want)
        torch.testing.assert_close(net(tokens, codes), -p.log().mean())
        torch.testing.assert_close(net(tokens, codes, sign=torch.ones(4)), -p.log().mean())


class _Recording(ExtractiveGenerator):
    """The extractive generator, recording the review of every item of every window it reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reviews: set[str] = set()

    def generate_many(self, windows):
        self.reviews.update(w.review for window in windows for w in window)
        return super().generate_many(windows)


@pytest.fixture(scope="module")
def tagged():
    """Leave-one-out synthetic data whose reviews name their interaction (``ref<k>``: no
    sentiment word, so the same preferences), to see which interactions a generator read."""
    ds = make_synthetic(40, 30, 400, n_categories=4, seed=0)
    frame = ds.interaction_data.assign(
        review=[f"{r} ref{k}" for k, r in enumerate(ds.interaction_data["review"])]
    )
    return leave_one_out(
        ds.with_interactions(
            users=ds.users,
            items=ds.items,
            timestamps=ds.timestamps,
            ratings=ds.ratings,
            interaction_data=frame,
        )
    )


def _texts(model: Mender, row: np.ndarray) -> list[str]:
    return [model.pref_texts[i] for i in row if i >= 0]


def _around_validation(split) -> tuple[np.ndarray, list[list[str]], list[list[str]]]:
    """Validation users, the preferences written just before their validation item (the window
    ends at the last training item: the benchmark's choice for the test item) and those
    written with it (the window ends at the validation item)."""
    known = merge_interactions(split.train, split.valid)
    table = user_preferences(known, ExtractiveGenerator(), window=5, last_n=2)
    users = split.valid.users
    steps = (np.diff(known.sequences.indptr)[users] - 1).tolist()
    before = [table.at(u, s - 1) for u, s in zip(users.tolist(), steps, strict=True)]
    at = [table.at(u, s) for u, s in zip(users.tolist(), steps, strict=True)]
    return users, before, at


@pytest.mark.parametrize("cls", [Mender, MenderTok])
def test_mender_validates_on_the_preference_matched_to_the_validation_item(
    cls, tagged, tmp_path: Path
) -> None:
    from test_text_features import tiny_sentence_model

    torch.set_num_threads(1)
    encoder = tiny_sentence_model(tmp_path / "enc")
    gen = _Recording()
    model = cls({**TINY, "preference_model": encoder, "epochs": 2, "eval_every": 1}, generator=gen)
    seen: list[np.ndarray] = []
    model.epoch_callbacks.append(lambda entry: seen.append(model.user_context.copy()))
    model.fit(tagged.train, tagged.valid)
    assert len(seen) == 2 and all("valid" in h for h in model.history)
    assert all((c == seen[0]).all() for c in seen)
    validating = seen[0]

    users, before_valid, at_valid = _around_validation(tagged)
    item_emb = embed_item_texts(
        tagged.train, encoder, fields=model.config.text_fields, progress=False
    )
    samples = build_benchmark(
        users,
        tagged.valid.items,
        before_valid,
        [[]] * len(users),
        item_emb,
        lambda texts: embed_item_texts(texts, encoder, progress=False),
    )["recommendation"]
    expected = {s.history_user: s.preferences for s in samples}
    assert len(expected) > len(users) // 2
    for u in users.tolist():
        assert _texts(model, validating[u]) == expected.get(u, [])
    # the validation item's own review never reaches its context: what is written with it
    # differs from what was written before it for some users
    assert any(b != a for b, a in zip(before_valid, at_valid, strict=True))
    # serving: every preference at the last known step (the validation item's); users without
    # a validation item keep their last training step's
    train_last = np.diff(tagged.train.sequences.indptr) - 1
    for u, prefs in zip(users.tolist(), at_valid, strict=True):
        assert _texts(model, model.user_context[u]) == prefs[:5]
    for u in np.setdiff1d(tagged.train.active_users, users).tolist():
        assert _texts(model, model.user_context[u]) == model.preferences.at(u, int(train_last[u]))
    assert (model.user_context != validating).any()
    # fit read training and validation reviews only, never a test one
    assert set(tagged.valid.interaction_data["review"]) <= gen.reviews
    assert gen.reviews.isdisjoint(tagged.test.interaction_data["review"])


def test_mender_fit_cut_short_keeps_the_serving_context(tagged, tmp_path: Path) -> None:
    from test_text_features import tiny_sentence_model

    encoder = tiny_sentence_model(tmp_path / "enc")
    model = Mender({**TINY, "preference_model": encoder, "epochs": 3, "eval_every": 1})

    def stop(entry):
        raise KeyboardInterrupt  # like the benchmark's wall-clock alarm, mid-training

    model.epoch_callbacks.append(stop)
    with pytest.raises(KeyboardInterrupt):
        model.fit(tagged.train, tagged.valid)
    users, _, at_valid = _around_validation(tagged)
    for u, prefs in zip(users.tolist(), at_valid, strict=True):
        assert _texts(model, model.user_context[u]) == prefs[:5]


# ---------------------------------------------------------------------- benchmark
def test_steering_partners_on_a_ten_item_toy_case() -> None:
    angles = np.linspace(0, np.pi, 10)  # item k at angle k*pi/9 on the unit circle
    emb = np.stack([np.cos(angles), np.sin(angles)], 1)
    targets = np.array([0, 1, 5, 9, 6])
    fine = steering_partner(targets, emb, coarse=False)
    coarse = steering_partner(targets, emb, coarse=True)
    # hand-computed: nearest other item / farthest item among the samples' targets
    assert fine.tolist() == [1, 0, 4, 4, 2]
    assert coarse.tolist() == [3, 3, 0, 0, 0]
    assert steering_partner(np.array([4, 4]), emb, coarse=False).tolist() == [-1, -1]


def test_build_benchmark_axes_by_hand() -> None:
    emb = np.eye(3, dtype=np.float32)
    vecs = {
        "Prefers a": emb[0],
        "Avoid a": 2 * emb[0],  # closer to item 0 than "Prefers a", but negative: never matched
        "Avoid b": emb[1],
        "Prefers b": emb[1],
        "Prefers c": emb[2],
    }
    samples = build_benchmark(
        users=np.array([0, 1]),
        targets=np.array([0, 1]),
        preferences=[["Prefers c", "Avoid a", "Prefers a"], ["Avoid b"]],
        accumulated=[["Prefers a", "Prefers c", "Avoid b"], ["Avoid b"]],
        item_emb=emb,
        embed=lambda texts: np.stack([vecs[t] for t in texts]),
    )
    rec = samples["recommendation"]
    # user 1 has only a negative preference: its inverted form is matched (official rule)
    assert [(s.history_user, s.preferences, s.target) for s in rec] == [
        (0, ["Prefers a"], 0),
        (1, ["Prefers b"], 1),
    ]
    sent = samples["sentiment"]
    assert [(s.preferences, s.avoid) for s in sent] == [
        (["Prefers a"], ["Avoid a"]),
        (["Prefers b"], ["Avoid b"]),
    ]
    assert [(s.history_user, s.preferences, s.target) for s in samples["fine"]] == [
        (0, ["Prefers b"], 1),
        (1, ["Prefers a"], 0),
    ]
    assert samples["consolidation"][0].preferences == ["Prefers a", "Prefers c", "Avoid b"]
    assert invert("Avoid strong scents") == "Prefers strong scents"
    assert invert("Prefers matte") == "Avoid matte"


def test_rank_metrics_and_combined_recall_by_hand() -> None:
    ranked = np.array([[3, 1, 2], [5, 6, 7], [9, -1, -1]])
    targets = np.array([1, 4, 9])
    m = rank_metrics(ranked, targets, ks=(1, 3))
    assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@3"] == pytest.approx(2 / 3)
    assert m["ndcg@3"] == pytest.approx((1 / np.log2(3) + 1.0) / 3)
    neg = np.array([[0, 0, 1], [4, 0, 0], [0, 0, 0]])
    c = combined_recall(ranked, neg, targets, ks=(3,))
    assert c["combined_recall@3"] == pytest.approx(1 / 3)  # sample 0 fails the negative side
