"""Text-conditioned ``POST /recommendations``: a preference read by a tiny Mender, a search
query answered by a tiny UniMP, through FastAPI's test client (flags, equality with the
models' own decoding, masks on these paths, fallbacks, bad text)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_SEQ2SEQ, TINY_UNIMP, ServeClients, save_run

from polyrec.data.synthetic import make_synthetic
from polyrec.models.base import Recommender
from polyrec.models.classic.bpr import BPRMF
from polyrec.models.generative.mender import Mender
from polyrec.models.unified import UniMP

fastapi = pytest.importorskip("fastapi")
pytest.importorskip("faiss")
pytest.importorskip("sentence_transformers")

from polyrec.serve.retrieval import split_preferences  # noqa: E402

torch.set_num_threads(1)
KEY = "test-key-0123456789abcdef"
AUTH = {"X-API-Key": KEY}
MENDER = {**TINY_SEQ2SEQ, "epochs": 2}
UNIMP = {**TINY_UNIMP, "steps_per_epoch": 4}


@pytest.fixture(scope="module")
def data():
    return make_synthetic(40, 30, 400, n_categories=4, seed=0)


@pytest.fixture(scope="module")
def mender_run(data, tmp_path_factory) -> Path:
    from test_text_features import tiny_sentence_model

    encoder = tiny_sentence_model(tmp_path_factory.mktemp("encoder"))
    model = Mender({**MENDER, "preference_model": encoder}).fit(data)
    return save_run(model, data, tmp_path_factory.mktemp("mender"))


@pytest.fixture(scope="module")
def unimp_run(data, tmp_path_factory) -> Path:
    return save_run(UniMP(UNIMP).fit(data), data, tmp_path_factory.mktemp("unimp"))


@pytest.fixture(scope="module")
def bpr_run(data, tmp_path_factory) -> Path:
    model = BPRMF(factors=8, epochs=3, batch_size=256, lr=0.01).fit(data)
    return save_run(model, data, tmp_path_factory.mktemp("bpr"))


@pytest.fixture
def make_client(tmp_path):
    clients = ServeClients(tmp_path, KEY)
    yield clients
    clients.close()


def _items(body) -> list[str]:
    return [it["item_id"] for it in body["items"]]


def _scores(body) -> np.ndarray:
    return np.array([it["score"] for it in body["items"]])


def _post(client, **body):
    response = client.post("/recommendations", json=body)
    assert response.status_code == 200, response.text
    return response.json()


# ---------------------------------------------------------------------- preference (Mender)
def test_preference_conditions_mender_like_the_model_and_is_flagged(make_client, mender_run):
    client = make_client([mender_run])
    assert client.get("/health").json()["models"][0]["text"] == ["preference"]
    model = Recommender.load(mender_run / "model")
    user = 3
    plain = _post(client, user_id=str(user), k=8)
    assert plain["preference_used"] is False and plain["source"] == "model"
    assert _items(plain) == _items(client.get(f"/recommendations/{user}?k=8").json())
    seen = set(model.seen.indices[model.seen.indptr[user] : model.seen.indptr[user + 1]].tolist())
    bodies = {}
    for pref in ("Prefers fragrance. Avoid makeup", "Prefers haircare"):
        body = bodies[pref] = _post(client, user_id=str(user), k=8, preference=pref)
        assert body["preference_used"] is True and body["query_used"] is False
        # the model's own decoding over the whole catalogue, seen items removed
        items, scores = model.generate_with_preferences(
            model.histories[[user]],
            [split_preferences(pref, 5)],
            np.array([user]),
            beams=model.n_items,
        )
        keep = [i for i, it in enumerate(items[0]) if it >= 0 and it not in seen][:8]
        assert _items(body) == [str(i) for i in items[0][keep]]
        np.testing.assert_allclose(_scores(body), scores[0][keep], rtol=1e-5)
    a, b = (dict(zip(_items(x), _scores(x), strict=True)) for x in bodies.values())
    assert a != b  # the preference is in the model's context
    # without a preference, the user's own context from training (a beam of MENDER["beams"])
    assert dict(zip(_items(plain), _scores(plain), strict=True)) != a


def test_preference_after_an_adhoc_history_and_alone(make_client, mender_run):
    client = make_client([mender_run])
    body = _post(client, history=["1", "2"], k=10, preference="Prefers skincare")
    assert body["preference_used"] and body["source"] == "history"
    assert not {"1", "2"} & set(_items(body)) and len(body["items"]) == 10
    # a new user with no history still gets preference-conditioned results
    alone = _post(client, user_id="stranger", k=5, preference="Prefers skincare")
    assert alone["preference_used"] and not alone["cold_start"] and len(alone["items"]) == 5
    # punctuation alone is no preference: ignored, not an error
    empty = _post(client, user_id="stranger", k=5, preference=" ;. ")
    assert not empty["preference_used"] and empty["cold_start"]


def test_split_preferences():
    assert split_preferences("Prefers red.  Avoid soft brush;\nlikes x!?", 5) == [
        "Prefers red",
        "Avoid soft brush",
        "likes x",
    ]
    assert split_preferences("a. b. c", 2) == ["a", "b"] and split_preferences("..", 3) == []


# ---------------------------------------------------------------------- search (UniMP)
def test_query_is_answered_by_the_search_model_alone(make_client, unimp_run, bpr_run):
    client = make_client([bpr_run, unimp_run])
    model = Recommender.load(unimp_run / "model")
    unimp_name = client.get("/health").json()["models"][1]["name"]
    bodies = []
    for query in ("fragrance sampler", "quiet haircare set"):
        body = _post(client, history=["1", "4"], k=6, query=query)
        assert body["query_used"] and not body["preference_used"]
        assert body["models"] == [unimp_name]  # models ignoring the query do not retrieve
        want = model.search(query, [1, 4], k=model.n_items)
        want = want[~want["item"].isin([1, 4])].head(6)
        assert _items(body) == [str(i) for i in want["item"]]
        np.testing.assert_allclose(_scores(body), want["score"], rtol=1e-5)
        bodies.append(body)
    assert not np.allclose(_scores(bodies[0]), _scores(bodies[1]))
    # a known user: the query with their stored interleaved history
    known = _post(client, user_id="3", k=6, query="fragrance sampler")
    assert known["query_used"] and known["source"] == "model"
    tokens = model.tokenizer.encode(["fragrance sampler"])[0]
    items, _ = model.search_internal(np.array([3]), [tokens], beams=model.n_items)
    seen = set(model.seen.indices[model.seen.indptr[3] : model.seen.indptr[4]].tolist())
    assert _items(known) == [str(i) for i in items[0] if i >= 0 and i not in seen][:6]
    # without a query both models retrieve and nothing is flagged
    plain = _post(client, history=["1", "4"], k=6, preference="Prefers fragrance")
    assert len(plain["models"]) == 2 and not plain["query_used"] and not plain["preference_used"]


def test_text_without_a_capable_model_is_ignored_and_flagged_false(make_client, bpr_run):
    client = make_client([bpr_run])
    plain = _post(client, history=["1", "2"], k=5)
    texted = _post(client, history=["1", "2"], k=5, preference="Prefers red", query="red brush")
    assert not texted["preference_used"] and not texted["query_used"]
    assert _items(texted) == _items(plain)


# ---------------------------------------------------------------------- masks and bad text
def test_forgotten_items_and_users_never_come_back_on_text_paths(
    make_client, mender_run, unimp_run
):
    client = make_client([mender_run, unimp_run])
    pref = {"preference": "Prefers fragrance"}
    query = {"query": "fragrance sampler"}
    first = _post(client, user_id="3", k=5, **pref)
    top = _items(first)[:2] + _items(_post(client, history=["1"], k=5, **query))[:2]
    forget = {"kind": "items", "item_ids": sorted(set(top))}
    assert client.post("/forget", json=forget, headers=AUTH).status_code == 202
    filters = {"exclude_items": ["0"], "attributes": {"category": "fragrance"}}
    requests = [
        {"user_id": "3", **pref},
        {"user_id": "3", **query},
        {"history": ["1", top[0]], **pref},
        {"history": ["1"], **query},
        {"history": ["1"], "filters": filters, **pref},
        {"history": ["1"], "filters": filters, **query},
    ]
    fragrance = set(
        client.app.state.service.catalogue.ids[
            client.app.state.service.catalogue.matching({"category": "fragrance"})
        ]
    )
    for request in requests:
        body = _post(client, k=30, **request)
        assert body["preference_used"] or body["query_used"], request
        got = set(_items(body))
        assert got and not got & set(top), request
        if "filters" in request:
            assert "0" not in got and "1" not in got and got <= fragrance
    # a forgotten user: served as new, from the text alone
    client.post("/forget", json={"kind": "user", "user_id": "3"}, headers=AUTH)
    body = _post(client, user_id="3", k=10, **pref)
    assert body["source"] == "history" and body["preference_used"]
    assert not set(_items(body)) & set(top)


def test_bad_text_is_a_422_never_a_500(make_client, mender_run, unimp_run):
    client = make_client([mender_run, unimp_run])
    bad = [
        {"preference": "x" * 2001},
        {"query": "x" * 2001},
        {"query": ["red"]},
        {"preference": {"text": "red"}},
        {"query": True},
        {"preference": "ok", "prefrence": "typo"},
    ]
    for body in bad:
        response = client.post("/recommendations", json={"user_id": "3", **body})
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]
    odd = ["x" * 2000, "🙂 ünïcode ½ \u0000", "   ", "a" * 50 + " " + "b" * 50]
    for text in odd:
        for field in ("preference", "query"):
            response = client.post("/recommendations", json={"user_id": "3", field: text})
            assert response.status_code == 200, (field, text[:20], response.text)
