"""A CTR ranker (DIN, DARE) as the service's second stage behind a tiny BPR retriever:
re-ranked order equals the ranker's own predicted CTR, unknown candidates keep their order,
forgotten users and items never reach it, and ranker directories are found or rejected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import ServeClients

from polyrec.data.ctr import BehaviorLog, CTRProtocol, build_ctr_samples
from polyrec.data.synthetic import make_synthetic
from polyrec.errors import PolyrecError
from polyrec.models.base import Recommender
from polyrec.models.classic.bpr import BPRMF
from polyrec.models.ranking.base import ITEMS_FILE, CTRRanker, get_ranker_class

pytest.importorskip("fastapi")
pytest.importorskip("faiss")


torch.set_num_threads(1)
KEY = "test-key-0123456789abcdef"
AUTH = {"X-API-Key": KEY}
SMALL = {"item_dim": 4, "category_dim": 4, "mlp": [8], "batch_size": 64, "epochs": 1}
PROTOCOL = CTRProtocol(min_events=5, max_len=40, n_train=2, train_stride=1, neg_ratio=2)
CANDIDATES = 20


@pytest.fixture(scope="module")
def data():
    return make_synthetic(80, 50, 1200, seed=0)


@pytest.fixture(scope="module")
def bpr_run(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("bpr")
    BPRMF(factors=8, epochs=5, batch_size=256, lr=0.01).fit(data).save(run / "model")
    assert data.item_data is not None
    pd.DataFrame(
        {"item": data.item_ids.external, "title": data.item_data["title"].to_numpy()}
    ).to_parquet(run / "items.parquet", index=False)
    return run


@pytest.fixture(scope="module")
def log(data) -> BehaviorLog:
    """The CTR log of the same interactions, without items 0, 5, 10, ... (unknown to it)."""
    full = BehaviorLog.from_dataset(data, category="category")
    keep = full.item_ids[full.items - 1] % 5 != 0
    return BehaviorLog.from_arrays(
        full.user_ids[full.users[keep]],
        full.item_ids[full.items[keep] - 1],
        full.timestamps[keep],
        full.category_ids[full.categories[keep] - 1],
    )


@pytest.fixture(scope="module", params=["din", "dare"])
def ranker_run(request, log, tmp_path_factory) -> Path:
    """A ``polyrec ctr train``-shaped run: the ranker in ``model/`` with its items."""
    ranker = get_ranker_class(request.param)(
        {**SMALL, "top_k": 8} if request.param == "dare" else SMALL
    )
    ranker.fit(build_ctr_samples(log, PROTOCOL), validate=False)
    run = tmp_path_factory.mktemp(request.param)
    ranker.save(run / "model")
    return run


@pytest.fixture
def make_client(tmp_path, bpr_run):
    clients = ServeClients(tmp_path, KEY)
    yield lambda **options: clients([bpr_run], **options)
    clients.close()


def _items(body) -> list[str]:
    return [it["item_id"] for it in body["items"]]


def _direct_ctr(ranker: CTRRanker, log: BehaviorLog, history: list, items: list) -> np.ndarray:
    """Click probabilities straight from the ranker: one full batch row per target."""
    pos = {int(e): i + 1 for i, e in enumerate(log.item_ids)}
    category = np.zeros(log.n_items + 1, np.int64)
    category[log.items] = log.categories
    width = ranker.dims["max_len"]
    hist = [pos[int(h)] for h in history if int(h) in pos][-width:]
    row = np.zeros(width, np.int64)
    row[width - len(hist) :] = hist
    targets = np.array([pos[int(i)] for i in items])
    n = len(targets)
    batch = {
        "user": torch.zeros(n, dtype=torch.long),
        "item": torch.from_numpy(targets),
        "category": torch.from_numpy(category[targets]),
        "label": torch.zeros(n),
        "hist_item": torch.from_numpy(np.tile(row, (n, 1))),
        "hist_cat": torch.from_numpy(np.tile(category[row], (n, 1))),
        "hist_delta": torch.zeros(n, width),
        "hist_time": torch.zeros(n, width, dtype=torch.long),
        "hist_mask": torch.from_numpy(np.tile(row > 0, (n, 1))),
    }
    return torch.sigmoid(ranker.predict_logits(batch)).double().numpy()


def test_ctr_ranker_orders_the_candidates_by_its_own_ctr(make_client, ranker_run, bpr_run, log):
    client = make_client(ranker=ranker_run, candidates=CANDIDATES)
    bpr = Recommender.load(bpr_run / "model")
    ranker = CTRRanker.load(ranker_run / "model")
    assert client.get("/health").json()["ranker"] == f"{ranker.name}:{ranker_run.name}"
    user = 3
    candidates = [int(i) for i in bpr.recommend([user], k=CANDIDATES)["item"]]
    seen = bpr.seen.indices[bpr.seen.indptr[user] : bpr.seen.indptr[user + 1]]
    history = bpr.item_ids.to_external(seen).tolist()
    known = [i for i in candidates if i % 5 != 0]
    unknown = [i for i in candidates if i % 5 == 0]
    ctr = _direct_ctr(ranker, log, history, known)
    order = np.argsort(-ctr, kind="stable")
    want = [known[i] for i in order] + unknown  # unknown: after, in retrieval order

    body = client.get(f"/recommendations/{user}", params={"k": CANDIDATES}).json()
    assert body["reranked"] and body["source"] == "model" and len(body["models"]) == 2
    assert _items(body) == [str(i) for i in want]
    got = [it["score"] for it in body["items"]]
    np.testing.assert_allclose(got[: len(known)], ctr[order], rtol=1e-5)
    assert all(s is None for s in got[len(known) :])  # -inf: JSON null
    # an ad-hoc history is the ranker's history too
    adhoc = client.post("/recommendations", json={"history": ["1", "2", "3"], "k": 5}).json()
    assert adhoc["reranked"]
    merged = [int(i) for i in _items(adhoc)]
    scores = _direct_ctr(ranker, log, [1, 2, 3], [i for i in merged if i % 5 != 0])
    assert list(scores) == sorted(scores, reverse=True)


def test_forgotten_users_and_items_never_reach_the_ranker(make_client, ranker_run):
    client = make_client(ranker=ranker_run, candidates=CANDIDATES)
    service = client.app.state.service
    calls = []
    score = service.ranker.score_candidates

    def spy(user_id, history, candidates):
        calls.append((user_id, history.copy(), candidates.copy()))
        return score(user_id, history, candidates)

    service.ranker.score_candidates = spy
    top = _items(client.get("/recommendations/3", params={"k": 3}).json())[0]
    trained = calls[-1][1]
    assert len(trained) > 0 and calls[-1][0] == "3"
    client.post("/forget", json={"kind": "items", "item_ids": [top]}, headers=AUTH)
    gone = int(service.catalogue.index([top])[0])
    for user in ("3", "7", "nobody"):
        body = client.get(f"/recommendations/{user}", params={"k": CANDIDATES}).json()
        assert top not in _items(body)
    post = client.post("/recommendations", json={"history": [top, "2"], "k": 10}).json()
    assert top not in _items(post)
    assert all(gone not in c and gone not in h for _, h, c in calls[1:])

    client.post("/forget", json={"kind": "user", "user_id": "3"}, headers=AUTH)
    calls.clear()
    body = client.get("/recommendations/3", params={"k": 5}).json()
    assert body["cold_start"] and not body["reranked"] and not calls  # nothing to rank with
    fresh = "2" if top != "2" else "4"
    client.post("/events", json={"user_id": "3", "item_id": fresh}, headers=AUTH)
    body = client.get("/recommendations/3", params={"k": 5}).json()
    assert body["reranked"] and body["source"] == "history"
    user_id, history, _ = calls[-1]
    assert user_id is None  # the profile is not used
    assert history.tolist() == service.catalogue.index([fresh]).tolist()  # only the new event


def test_text_results_are_reranked_too(make_client, ranker_run):
    client = make_client(ranker=ranker_run, candidates=CANDIDATES)
    body = client.post(
        "/recommendations", json={"user_id": "3", "preference": "Prefers red", "k": 5}
    ).json()
    assert body["reranked"] and body["source"] == "model" and not body["preference_used"]


def test_ranker_directories_are_found_or_clearly_rejected(make_client, ranker_run, tmp_path):
    # CTRRanker.save's own folder works as well as the run holding it in model/
    client = make_client(ranker=ranker_run / "model", candidates=CANDIDATES)
    assert client.get("/recommendations/3").json()["reranked"]
    bare = tmp_path / "bare"
    CTRRanker.load(ranker_run / "model").save(bare)
    (bare / ITEMS_FILE).unlink()
    with pytest.raises(PolyrecError, match=ITEMS_FILE):
        make_client(ranker=bare)
    wrong = tmp_path / "wrong"
    CTRRanker.load(ranker_run / "model").save(wrong)
    pd.DataFrame({"item": ["1"], "category": [1]}).to_parquet(wrong / ITEMS_FILE)
    with pytest.raises(PolyrecError, match="lists 1 items"):
        make_client(ranker=wrong)


def test_polyrec_ctr_runs_are_servable_as_trained(make_client, tmp_path):
    """A run written by run_ctr (polyrec train dare / polyrec ctr train) carries its items."""
    from polyrec.models.ranking.experiment import run_ctr

    data = {
        "format": "dataset",
        "path": "synthetic",
        "category": "category",
        "protocol": {"min_events": 30, "max_len": 10, "n_train": 2, "train_stride": 1},
    }
    run = tmp_path / "run"
    run_ctr({"model": "din", "params": SMALL, "data": data}, run)
    ranker = CTRRanker.load(run / "model")
    assert ranker.items is not None and len(ranker.items) == ranker.dims["n_items"] - 1
    assert (ranker.items["category"] >= 1).all()
    assert (
        make_client(ranker=run, candidates=CANDIDATES).get("/recommendations/3").json()["reranked"]
    )
