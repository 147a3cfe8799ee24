"""Filters on hand-checked small datasets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from polyrec.data.dataset import Dataset
from polyrec.data.filtering import FilterReport, binarize, compact, dedupe, k_core
from polyrec.data.synthetic import make_synthetic
from polyrec.errors import PolyrecError


def pairs(ds: Dataset) -> list[tuple]:
    return [tuple(r) for r in ds.to_frame().itertuples(index=False)]


def test_k_core_iterates_to_fixed_point():
    # item counts: a 3, b 2, c 2, d 1; user u2 has 1 interaction.
    # round 1 drops (u2,c) and (u3,d); then u3 and c fall to 1 -> round 2 drops (u3,a), (u1,c).
    df = pd.DataFrame(
        {
            "user": ["u0", "u0", "u1", "u1", "u1", "u2", "u3", "u3"],
            "item": ["a", "b", "a", "b", "c", "c", "d", "a"],
        }
    )
    ds = Dataset.from_frame(df, timestamp=None, rating=None)
    out, report = k_core(ds, user_k=2, item_k=2)
    assert pairs(out) == [("u0", "a"), ("u0", "b"), ("u1", "a"), ("u1", "b")]
    assert list(out.user_ids.external) == ["u0", "u1"]
    assert list(out.item_ids.external) == ["a", "b"]
    assert report == FilterReport("k_core(user_k=2, item_k=2)", (8, 4), (4, 2), (4, 2))
    assert report.removed_interactions == 4
    assert report.as_dict()["users"] == [4, 2]
    assert str(report) == (
        "k_core(user_k=2, item_k=2): interactions 8 -> 4, users 4 -> 2, items 4 -> 2"
    )


def test_k_core_result_is_a_core_on_synthetic():
    ds = make_synthetic(n_users=200, n_items=150, n_interactions=3000, seed=1)
    out, report = k_core(ds, user_k=8, item_k=8)
    assert 0 < len(out) < len(ds)
    assert np.bincount(out.users).min() >= 8 and np.bincount(out.items).min() >= 8
    assert report.interactions == (len(ds), len(out))
    # nothing to remove: the same interactions come back
    again, rep2 = k_core(out, 8, 8)
    assert rep2.removed_interactions == 0 and again.fingerprint() == out.fingerprint()


def test_k_core_rejects_negative():
    ds = make_synthetic(n_users=20, n_items=10, n_interactions=100)
    with pytest.raises(PolyrecError, match="thresholds must be >= 0"):
        k_core(ds, user_k=-1)


def test_binarize_keeps_high_ratings_and_drops_ratings():
    df = pd.DataFrame(
        {
            "user": [1, 1, 2, 3],
            "item": [5, 6, 5, 7],
            "rating": [4.0, 2.0, 3.5, 1.0],
            "timestamp": [10, 11, 12, 13],
        }
    )
    out, report = binarize(Dataset.from_frame(df), threshold=3.5)
    assert out.ratings is None
    assert pairs(out) == [(1, 5, 10.0), (2, 5, 12.0)]
    assert list(out.user_ids.external) == [1, 2]  # user 3 had only a low rating
    assert list(out.item_ids.external) == [5]
    assert report.interactions == (4, 2) and report.items == (3, 1)
    with pytest.raises(PolyrecError, match="binarize needs ratings"):
        binarize(out, 3)


@pytest.mark.parametrize(
    ("keep", "expected"),
    [
        ("last", [(1, 5, 30.0), (2, 5, 5.0), (1, 6, 40.0)]),
        ("first", [(1, 5, 10.0), (2, 5, 5.0), (1, 6, 40.0)]),
    ],
)
def test_dedupe_by_time_not_position(keep, expected):
    df = pd.DataFrame(
        {
            "user": [1, 1, 2, 1, 1],
            "item": [5, 5, 5, 5, 6],
            "timestamp": [30, 10, 5, 20, 40],  # file order is not time order
        }
    )
    out, report = dedupe(Dataset.from_frame(df), keep=keep)
    assert sorted(pairs(out)) == sorted(expected)
    assert report.removed_interactions == 2
    with pytest.raises(PolyrecError, match="keep must be 'first' or 'last'"):
        dedupe(out, keep="sum")  # type: ignore[arg-type]


def test_dedupe_without_timestamps_uses_file_order():
    df = pd.DataFrame({"user": [1, 1, 1], "item": [5, 6, 5], "rating": [1.0, 2.0, 3.0]})
    out, _ = dedupe(Dataset.from_frame(df), keep="last")
    assert pairs(out) == [(1, 6, 2.0), (1, 5, 3.0)]


def test_compact_keeps_side_data_and_vectors_aligned():
    df = pd.DataFrame({"user": [0, 0, 2], "item": [10, 30, 30]})
    item_data = pd.DataFrame({"title": ["ten", "twenty", "thirty"]}, index=[10, 20, 30])
    user_data = pd.DataFrame({"age": [20, 21, 22]}, index=[0, 1, 2])
    ds = Dataset.from_frame(
        df, timestamp=None, rating=None, item_data=item_data, user_data=user_data
    )
    ds.item_vectors["emb"] = np.array([[1.0], [2.0], [3.0]])
    assert ds.n_items == 3 and ds.n_users == 3  # item 20 and user 1 enter via side data
    out, report = compact(ds)
    assert list(out.item_ids.external) == [10, 30]
    assert out.item_titles().tolist() == ["ten", "thirty"]
    assert out.item_vectors["emb"].ravel().tolist() == [1.0, 3.0]
    assert list(out.user_ids.external) == [0, 2]
    assert out.user_data["age"].tolist() == [20, 22]
    assert pairs(out) == [(0, 10), (0, 30), (2, 30)]
    assert report.users == (3, 2) and report.items == (3, 2) and report.interactions == (3, 3)


def test_filters_keep_review_text_aligned():
    ds = make_synthetic(60, 40, 900, seed=1)
    review = ds.interaction_data["review"].to_numpy()
    pair = {(u, i): r for u, i, r in zip(ds.users, ds.items, review, strict=True)}
    for out, _ in (binarize(ds, 4), k_core(ds, 15, 15)):
        assert out.n_interactions < ds.n_interactions
        assert out.interaction_data is not None and len(out.interaction_data) == len(out)
        users = ds.user_ids.to_internal(out.user_ids.to_external(out.users))
        items = ds.item_ids.to_internal(out.item_ids.to_external(out.items))
        got = out.interaction_data["review"].tolist()
        assert got == [pair[(u, i)] for u, i in zip(users, items, strict=True)]
