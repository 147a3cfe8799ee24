"""The recommendation service through FastAPI's test client against a real SQLite file (and
PostgreSQL when ``POLYREC_TEST_POSTGRES_URL`` is set): recommendations equal the library's,
fallbacks, events, forget requests, security, bad inputs, ANN recall."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import torch
from helpers import ServeClients, save_run

from polyrec.data.synthetic import make_synthetic
from polyrec.errors import PolyrecError
from polyrec.models.base import Recommender
from polyrec.models.classic.bpr import BPRMF
from polyrec.models.classic.ease import EASE
from polyrec.unlearn.base import Unlearned

fastapi = pytest.importorskip("fastapi")
faiss = pytest.importorskip("faiss")
from fastapi.testclient import TestClient  # noqa: E402

from polyrec.serve.app import create_app  # noqa: E402
from polyrec.serve.retrieval import AnnIndex, EmbeddingRetriever, Retriever, build_retriever  # noqa: E402
from polyrec.serve.service import ServeConfig  # noqa: E402
from polyrec.serve.store import Store, metadata  # noqa: E402

torch.set_num_threads(1)
KEY = "test-key-0123456789abcdef"
AUTH = {"X-API-Key": KEY}
PG_URL = os.environ.get("POLYREC_TEST_POSTGRES_URL")


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data():
    return make_synthetic(80, 50, 1200, seed=0)


@pytest.fixture(scope="module")
def bpr_run(data, tmp_path_factory) -> Path:
    model = BPRMF(factors=8, epochs=5, batch_size=256, lr=0.01).fit(data)
    return save_run(model, data, tmp_path_factory.mktemp("bpr"))


@pytest.fixture(scope="module")
def ease_run(data, tmp_path_factory) -> Path:
    return save_run(EASE(l2=10.0).fit(data), data, tmp_path_factory.mktemp("ease"))


@pytest.fixture(params=["sqlite"] + (["postgres"] if PG_URL else []))
def db_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'serve.db'}"
        return
    assert PG_URL is not None
    engine = sa.create_engine(PG_URL)
    metadata.drop_all(engine)
    engine.dispose()
    yield PG_URL


@pytest.fixture
def make_client(db_url, bpr_run, tmp_path):
    clients = ServeClients(tmp_path, KEY)
    yield lambda runs=None, **options: clients(runs or [bpr_run], db=db_url, **options)
    clients.close()


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


def _service(client: TestClient):
    return client.app.state.service


def _items(body) -> list[str]:
    return [it["item_id"] for it in body["items"]]


# ---------------------------------------------------------------------- recommendations
def test_health_describes_models_and_store(client):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["n_items"] == 50
    assert body["models"][0]["retrieval"] == "faiss"
    assert body["unlearner"] == "mask-only"


def test_known_user_gets_the_models_top_k(client, bpr_run):
    model = Recommender.load(bpr_run / "model")
    want = model.recommend([3], k=5)
    body = client.get("/recommendations/3", params={"k": 5}).json()
    assert body["source"] == "model" and not body["cold_start"]
    assert _items(body) == [str(i) for i in want["item"]]
    np.testing.assert_allclose([it["score"] for it in body["items"]], want["score"], rtol=1e-4)
    assert all(it["title"] for it in body["items"])


def test_unknown_user_gets_popularity_flagged_cold_start(client, data):
    body = client.get("/recommendations/nobody", params={"k": 4}).json()
    assert body["cold_start"] and body["source"] == "popularity"
    order = np.argsort(-data.item_popularity, kind="stable")[:4]
    assert _items(body) == [str(i) for i in data.item_ids.to_external(order)]


def test_new_user_with_events_is_served_from_their_history(client):
    client.post("/events", json={"user_id": "newbie", "item_id": "7"}, headers=AUTH)
    body = client.get("/recommendations/newbie", params={"k": 5}).json()
    assert body["source"] == "history" and not body["cold_start"]
    assert "7" not in _items(body)


def test_adhoc_history_filters_and_ignored_items(client):
    body = client.post(
        "/recommendations",
        json={
            "history": ["1", "2", "no-such-item"],
            "k": 5,
            "preference": "something for the gym",
            "filters": {"exclude_items": ["3"], "attributes": {"category": "fitness"}},
        },
    ).json()
    assert body["source"] == "history" and body["ignored_history"] == ["no-such-item"]
    assert body["preference_used"] is False  # no loaded model reads preference text
    titles = [it["title"] for it in body["items"]]
    assert titles and all("fitness" in t for t in titles)
    assert not {"1", "2", "3"} & set(_items(body))
    title = titles[0]
    by_title = {"history": ["1"], "k": 5, "filters": {"attributes": {"title": title}}}
    assert [
        it["title"] for it in client.post("/recommendations", json=by_title).json()["items"]
    ] == [title]


def test_similar_items_equal_the_models(client, bpr_run):
    want = Recommender.load(bpr_run / "model").similar_items([4], k=5)
    body = client.get("/items/4/similar", params={"k": 5}).json()
    assert _items(body) == [str(i) for i in want["item"]]


def test_exact_model_without_embeddings_and_two_stage_rerank(make_client, bpr_run, ease_run):
    ease = Recommender.load(ease_run / "model")
    solo = make_client(runs=[ease_run])
    assert solo.get("/health").json()["models"][0]["retrieval"] == "exact"
    body = solo.get("/recommendations/5", params={"k": 5}).json()
    assert _items(body) == [str(i) for i in ease.recommend([5], k=5)["item"]]
    # EASE's score of a history is the sum of B's rows: the ad-hoc path reproduces it
    hist = solo.post("/recommendations", json={"history": ["1", "2"], "k": 3}).json()
    scores = ease.weights[[1, 2]].sum(0)
    scores[[1, 2]] = -np.inf
    assert _items(hist) == [str(i) for i in np.argsort(-scores, kind="stable")[:3]]

    both = make_client(runs=[bpr_run, ease_run], ranker=ease_run, candidates=20)
    body = both.get("/recommendations/5", params={"k": 5}).json()
    assert body["reranked"] and len(body["models"]) == 3
    got = [it["score"] for it in body["items"]]
    assert got == sorted(got, reverse=True)


# ---------------------------------------------------------------------- events
def test_events_single_batch_and_idempotency(client):
    store = _service(client).store
    one = {"user_id": "u1", "item_id": "1", "idempotency_key": "a"}
    assert client.post("/events", json=one, headers=AUTH).json() == {"stored": 1, "duplicates": 0}
    assert client.post("/events", json=one, headers=AUTH).json() == {"stored": 0, "duplicates": 1}
    batch = {"events": [{"user_id": "u1", "item_id": str(i), "type": "view"} for i in range(5)]}
    headers = AUTH | {"Idempotency-Key": "batch-1"}
    assert client.post("/events", json=batch, headers=headers).json()["stored"] == 5
    assert client.post("/events", json=batch, headers=headers).json() == {
        "stored": 0,
        "duplicates": 5,
    }
    iso = {"user_id": 2, "item_id": 3, "timestamp": "2024-01-01T00:00:00Z"}
    assert client.post("/events", json=iso, headers=AUTH).status_code == 200
    assert store.count_events() == 7 and store.count_events(user_id="2") == 1


def test_bad_inputs_get_4xx_and_lose_nothing(client):
    client.post(
        "/events",
        json={"events": [{"user_id": "keep", "item_id": str(i)} for i in range(3)]},
        headers=AUTH,
    )
    store = _service(client).store
    bad = [
        ("get", "/recommendations/3?k=100000", None, {}, 422),
        ("get", "/recommendations/3?k=-1", None, {}, 422),
        ("get", "/recommendations/3?k=abc", None, {}, 422),
        ("get", "/items/no-such-item/similar", None, {}, 404),
        ("get", "/nowhere", None, {}, 404),
        ("post", "/recommendations", {"history": "1,2"}, {}, 422),
        ("post", "/recommendations", {"history": [], "k": 0}, {}, 422),
        ("post", "/recommendations", {"history": [], "surprise": 1}, {}, 422),
        ("post", "/recommendations", {"filters": {"attributes": {"colour": "red"}}}, {}, 422),
        ("post", "/events", {"user_id": "x", "item_id": "1"}, {}, 401),
        ("post", "/events", {"user_id": "x", "item_id": "1"}, {"X-API-Key": "wrong" * 5}, 403),
        ("post", "/events", {"user_id": "x", "item_id": "nope"}, AUTH, 422),
        ("post", "/events", {"user_id": ["x"], "item_id": "1"}, AUTH, 422),
        ("post", "/events", {"user_id": "x", "item_id": "1", "type": "DROP TABLE"}, AUTH, 422),
        ("post", "/events", {"events": []}, AUTH, 422),
        ("post", "/events", {"user_id": "x", "item_id": "1", "timestamp": "nan"}, AUTH, 422),
        ("post", "/events", {"user_id": "x", "item_id": "1", "timestamp": "inf"}, AUTH, 422),
        ("post", "/events", {"user_id": "x\u0000y", "item_id": "1"}, AUTH, 422),
        ("get", "/recommendations/a%00b", None, {}, 422),
        (
            "post",
            "/events",
            {"events": [{"user_id": "x", "item_id": "1"}, {"user_id": "x", "item_id": "?"}]},
            AUTH,
            422,
        ),
        ("post", "/forget", {"kind": "user"}, AUTH, 422),
        ("post", "/forget", {"kind": "items", "item_ids": ["nope"]}, AUTH, 422),
        ("post", "/forget", {"kind": "user", "user_id": "keep"}, {}, 401),
        ("get", "/forget/unknown", None, AUTH, 404),
    ]
    for method, path, body, headers, code in bad:
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == code, (path, body, response.text)
        assert response.json()["error"], path
    malformed = client.post(
        "/events", content=b'{"user_id": ', headers=AUTH | {"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["error"]
    huge = client.post(
        "/events", content=b"x" * (5 * 2**20), headers=AUTH | {"Content-Type": "application/json"}
    )
    assert huge.status_code == 413
    chunks = (b"x" * 2**20 for _ in range(5))  # no Content-Length: counted as it streams
    streamed = client.post(
        "/events", content=chunks, headers=AUTH | {"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413 and "larger than" in streamed.json()["error"]
    assert store.count_events() == 3 and store.count_events(user_id="keep") == 3


def test_api_keys_are_stored_hashed(client, db_url):
    if not db_url.startswith("sqlite"):
        pytest.skip("reads the SQLite file")
    path = db_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        rows = conn.execute("select key_hash from api_keys").fetchall()
    assert rows == [(hashlib.sha256(KEY.encode()).hexdigest(),)]
    assert KEY.encode() not in Path(path).read_bytes()
    assert (
        client.post(
            "/events",
            json={"user_id": "b", "item_id": "1"},
            headers={"Authorization": f"Bearer {KEY}"},
        ).status_code
        == 200
    )


def test_cors_is_off_unless_origins_are_given(make_client):
    preflight = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"}
    off = make_client().options("/events", headers=preflight)
    assert "access-control-allow-origin" not in off.headers
    on = make_client(cors_origins=["https://elsewhere.example"]).options(
        "/events", headers=preflight
    )
    assert on.headers["access-control-allow-origin"] == "https://elsewhere.example"


def test_metrics_are_prometheus_text(client):
    client.get("/recommendations/3")
    client.get("/recommendations/someone-new")
    text = client.get("/metrics").text
    assert (
        'polyrec_requests_total{method="GET",route="/recommendations/{user_id}",status="200"} 2.0'
        in text
    )
    assert "polyrec_request_seconds_bucket" in text and "polyrec_cold_start_total 1.0" in text


# ---------------------------------------------------------------------- forget
def test_forget_user_removes_masks_and_survives_restart(make_client):
    client = make_client()
    client.post("/events", json={"user_id": "3", "item_id": "9"}, headers=AUTH)
    response = client.post("/forget", json={"kind": "user", "user_id": "3"}, headers=AUTH)
    assert response.status_code == 202
    record = response.json()
    assert record["removed_events"] == 1
    assert _service(client).store.count_events(user_id="3") == 0
    body = client.get("/recommendations/3").json()
    assert body["cold_start"] and body["source"] == "popularity"
    _service(client).jobs.wait()
    status = client.get(f"/forget/{record['request_id']}", headers=AUTH).json()
    assert status["status"] == "masked" and "unchanged" in status["message"]
    restarted = make_client()
    assert restarted.get("/recommendations/3").json()["cold_start"]


def test_forget_items_masks_them_everywhere(client):
    top = _items(client.get("/recommendations/3", params={"k": 3}).json())
    client.post("/events", json={"user_id": "z", "item_id": top[0]}, headers=AUTH)
    response = client.post("/forget", json={"kind": "items", "item_ids": [top[0]]}, headers=AUTH)
    assert response.json()["removed_events"] == 1
    for user in ("3", "nobody", "z"):
        assert top[0] not in _items(client.get(f"/recommendations/{user}?k=50").json())
    history = client.post("/recommendations", json={"history": [top[0], "2"], "k": 50}).json()
    assert top[0] not in _items(history) and history["ignored_history"] == [top[0]]
    similar = client.get("/items/2/similar", params={"k": 49}).json()
    assert top[0] not in _items(similar)
    assert client.get(f"/items/{top[0]}/similar").status_code == 404
    event = client.post("/events", json={"user_id": "z", "item_id": top[0]}, headers=AUTH)
    assert event.status_code == 422 and "forgotten" in event.json()["error"]


def test_forget_interactions_drops_the_learned_profile(client, data):
    first = int(data.items[data.users == 5][0])
    client.post("/events", json={"user_id": "5", "item_id": "1"}, headers=AUTH)
    body = {"kind": "interactions", "user_id": "5", "item_ids": [str(first), "1"]}
    assert client.post("/forget", json=body, headers=AUTH).json()["removed_events"] == 1
    rec = client.get("/recommendations/5", params={"k": 50}).json()
    assert rec["source"] == "history"
    assert not {str(first), "1"} & set(_items(rec))
    body = {"user_id": "5", "history": ["2"], "k": 50, "filters": {"exclude_seen": False}}
    adhoc = client.post("/recommendations", json=body).json()
    assert len(_items(adhoc)) == 50 - 2 and not {str(first), "1"} & set(_items(adhoc))


def test_an_unlearned_run_serves_without_its_forgotten_items(make_client, data, tmp_path):
    """A run written by unlearning blocks items by -inf scores: the service serves the inner
    model (full lists, no NaN user vectors) and masks those items on every path."""
    model = BPRMF(factors=8, epochs=5, batch_size=256, lr=0.01).fit(data)
    blocked = data.item_ids.to_internal([0, 1, 2])
    run = save_run(Unlearned.wrap(model, blocked), data, tmp_path / "unlearned")
    gone = {"0", "1", "2"}
    for index in ("auto", "exact"):
        client = make_client([run], index=index)
        rec = client.get("/recommendations/3", params={"k": 20}).json()
        assert rec["source"] == "model" and len(_items(rec)) == 20
        assert not gone & set(_items(rec))
        history = client.post("/recommendations", json={"history": ["5", "6"], "k": 40}).json()
        assert len(_items(history)) == 40 and not gone & set(_items(history))
        similar = client.get("/items/5/similar", params={"k": 40}).json()
        assert not gone & set(_items(similar))
        event = client.post("/events", json={"user_id": "z", "item_id": "1"}, headers=AUTH)
        assert event.status_code == 422 and "forgotten" in event.json()["error"]
    sim = Unlearned.wrap(model, blocked).similar_items([5], k=49)["item"].tolist()
    assert not {0, 1, 2} & set(sim)


def test_unlearner_hook_runs_as_a_job_and_swaps_the_models(make_client, ease_run):
    calls = []

    def unlearner(record, upto):
        calls.append((record.id, [r.id for r in upto]))
        if record.kind == "items":
            raise RuntimeError("boom")
        return [ease_run]

    client = make_client(unlearner=unlearner)
    assert _service(client).describe()["models"][0]["name"].startswith("bpr:")
    ok = client.post("/forget", json={"kind": "user", "user_id": "1"}, headers=AUTH).json()
    bad = client.post("/forget", json={"kind": "items", "item_ids": ["2"]}, headers=AUTH).json()
    _service(client).jobs.wait()
    first, second = ok["request_id"], bad["request_id"]
    assert calls == [(first, [first]), (second, [first, second])]
    done = client.get(f"/forget/{first}", headers=AUTH).json()
    assert done["status"] == "unlearned" and done["message"] == f"serving {ease_run}"
    assert client.get("/health").json()["models"][0]["name"].startswith("ease:")
    failed = client.get(f"/forget/{second}", headers=AUTH).json()
    assert failed["status"] == "failed" and "boom" in failed["message"]
    # the swap rebuilt the masks from every request: both still hold on the new model
    rec = _items(client.get("/recommendations/3", params={"k": 40}).json())
    assert "2" not in rec
    assert client.get("/recommendations/1").json()["source"] == "popularity"


def test_serve_unlearn_retrains_the_served_run_cumulatively(tmp_path, db_url):
    """--unlearn retrain: a forget request reaches the served model (retrained on the data
    less every request so far), and a restart serves the latest unlearned run at once."""
    from polyrec.experiment import run_experiment
    from polyrec.serve.unlearning import RunUnlearner

    options = {"n_users": 60, "n_items": 40, "n_interactions": 700}
    run = tmp_path / "bpr"
    overrides = {"dataset_options": options, "epochs": 2, "factors": 8}
    run_experiment("bpr", "synthetic", overrides=overrides, out_dir=run, progress=False)
    clients = ServeClients(tmp_path, KEY)
    with pytest.raises(PolyrecError, match="unknown unlearning method 'forget'"):
        RunUnlearner([run], "forget", tmp_path / "unlearned")
    unlearner = RunUnlearner([run], "retrain", tmp_path / "unlearned")

    def trained(service, user=None, item=None) -> int:  # training interactions served
        m = service.models[0]
        seen = m.model.seen
        if user is not None:
            return seen[m.users[user]].nnz
        return seen[:, int(m.from_service[service.catalogue.index([item])[0]])].nnz

    try:
        client = clients([run], db=db_url, unlearner=unlearner)
        service = _service(client)
        item = str(service.models[0].model.item_ids.external[0])
        assert trained(service, user="3") > 0 and trained(service, item=item) > 0
        first = client.post("/forget", json={"kind": "user", "user_id": "3"}, headers=AUTH)
        service.jobs.wait()
        done = client.get(f"/forget/{first.json()['request_id']}", headers=AUTH).json()
        assert done["status"] == "unlearned", done
        assert trained(service, user="3") == 0  # retrained without user 3
        second = client.post("/forget", json={"kind": "items", "item_ids": [item]}, headers=AUTH)
        service.jobs.wait()
        assert trained(service, item=item) == 0
        assert trained(service, user="3") == 0  # the first request still holds
        assert item not in _items(client.get("/recommendations/5", params={"k": 40}).json())
        latest = tmp_path / "unlearned" / second.json()["request_id"] / f"0-{run.name}"
        assert service.models[0].name == f"bpr:{latest.name}" and latest.is_dir()
        clients.close()
        restarted = _service(clients([run], db=db_url, unlearner=unlearner))
        restarted.jobs.wait()
        assert restarted.models[0].name == f"bpr:{latest.name}"
        assert trained(restarted, item=item) == 0 and trained(restarted, user="3") == 0
    finally:
        clients.close()


# ---------------------------------------------------------------------- retrieval
def test_ann_recall_vs_exact_is_measured():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    queries = rng.normal(size=(100, 16)).astype(np.float32)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :20]
    recalls = {}
    for kind, nprobe in (("hnsw", 16), ("ivf", 4), ("ivf", 10_000)):
        index = AnnIndex(vectors, kind, recall_queries=queries, recall_k=20, nprobe=nprobe)
        got = [index.search(q, 20).items for q in queries]
        manual = np.mean([len(np.intersect1d(g, e)) / 20 for g, e in zip(got, exact, strict=True)])
        assert index.info.recall == pytest.approx(manual)
        recalls[kind, nprobe] = index.info.recall
    assert recalls["hnsw", 16] > 0.9
    # probing every list is exhaustive; few lists lose neighbours (random data, no clusters)
    assert recalls["ivf", 10_000] == 1.0 > recalls["ivf", 4] > 0
    assert AnnIndex(vectors, "auto", ann_threshold=5000).kind == "exact"
    assert AnnIndex(vectors, "auto", ann_threshold=1000).kind == "hnsw"
    allowed = np.zeros(3000, bool)
    allowed[::7] = True
    assert set(AnnIndex(vectors, "hnsw").search(queries[0], 10, allowed).items) <= set(
        np.flatnonzero(allowed)
    )


def test_retriever_choice_and_user_vectors(bpr_run, ease_run):
    bpr = Recommender.load(bpr_run / "model")
    retriever = build_retriever(bpr, "hnsw")
    assert isinstance(retriever, EmbeddingRetriever)
    with torch.inference_mode():
        want = bpr.score(np.arange(len(bpr.user_ids))).numpy()
    np.testing.assert_allclose(
        retriever.user_vectors @ bpr._item_embeddings().numpy().T, want, atol=1e-4
    )
    assert type(build_retriever(Recommender.load(ease_run / "model"))) is Retriever
    with pytest.raises(PolyrecError, match="no inner-product item embeddings"):
        build_retriever(Recommender.load(ease_run / "model"), "ivf")


def test_hnsw_service_reports_recall(make_client):
    client = make_client(index="hnsw")
    info = client.get("/health").json()["models"][0]
    assert info["user_index"]["kind"] == "hnsw" and 0 < info["user_index"]["recall_vs_exact"] <= 1
    assert "polyrec_ann_recall" in client.get("/metrics").text
    assert len(client.get("/recommendations/3", params={"k": 5}).json()["items"]) == 5


def test_users_endpoint_hides_forgotten_users(client):
    first = client.get("/users", params={"limit": 3}).json()["users"]
    assert first == ["0", "1", "2"]
    client.post("/forget", json={"kind": "user", "user_id": "1"}, headers=AUTH)
    assert client.get("/users", params={"limit": 3}).json()["users"] == ["0", "2", "3"]


def test_serve_command_rejects_a_bad_index(bpr_run):
    import typer
    from typer.testing import CliRunner

    from polyrec.serve.cli import serve

    app = typer.Typer()
    app.command()(serve)
    result = CliRunner().invoke(app, [str(bpr_run), "--index", "kdtree"])
    assert isinstance(result.exception, PolyrecError)
    assert "--index must be" in str(result.exception)


def test_bad_config_is_a_clear_error(tmp_path, bpr_run):
    with pytest.raises(PolyrecError, match="does not exist"):
        create_app(ServeConfig(runs=[tmp_path / "missing"], db=f"sqlite:///{tmp_path}/x.db"))
    with pytest.raises(PolyrecError, match="at least 16"):
        Store(f"sqlite:///{tmp_path}/y.db").add_api_key("short")
