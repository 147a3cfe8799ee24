from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from polyrec import Dataset, IdMap, PolyrecError


@pytest.fixture
def tiny() -> Dataset:
    df = pd.DataFrame(
        {
            "user": ["a", "a", "b", "c", "c", "c"],
            "item": [10, 20, 20, 30, 20, 10],
            "timestamp": [2, 1, 3, 6, 5, 4],
            "rating": [5, 3, 4, 1, 2, 5],
        }
    )
    titles = pd.DataFrame({"title": ["ten", "twenty", "thirty", "forty"]}, index=[10, 20, 30, 40])
    return Dataset.from_frame(df, item_data=titles)


def test_id_maps_roundtrip(tiny):
    assert tiny.n_users == 3
    assert tiny.n_items == 4  # item 40 has side data only and still enters the catalogue
    internal = tiny.item_ids.to_internal([30, 10])
    assert list(tiny.item_ids.to_external(internal)) == [30, 10]
    assert list(tiny.item_titles()) == ["ten", "twenty", "thirty", "forty"]


def test_unknown_id_is_one_clear_error(tiny):
    with pytest.raises(PolyrecError, match="unknown user 'zz'"):
        tiny.user_ids.to_internal(["a", "zz"], what="user")


def test_integer_ids_are_matched_exactly_not_truncated():
    ids = IdMap(np.array([1, 2, 3]))
    assert ids.to_internal(["3", 2.0]).tolist() == [2, 1]  # the same ids in other types
    with pytest.raises(PolyrecError, match=r"^unknown user 2\.5$"):
        ids.to_internal([1, 2.5], what="user")
    with pytest.raises(PolyrecError, match=r"^unknown user 'abc'$"):  # not the valid '1'
        ids.to_internal(["1", "abc"], what="user")


def test_order_only_tells_positions_from_times(tiny):
    assert not tiny.order_only
    positions = tiny.with_interactions(timestamps=None, users=tiny.users, items=tiny.items)
    assert positions.order_only
    seq = tiny.sequences
    ranks = np.empty(len(tiny))
    ranks[tiny.order] = np.arange(len(tiny)) - np.repeat(seq.indptr[:-1], seq.lengths)
    assert replace(tiny, timestamps=ranks).order_only


def test_csr_and_sequences(tiny):
    dense = tiny.csr.toarray()
    a, c = tiny.user_ids.to_internal(["a", "c"])
    i10, i20, i30 = tiny.item_ids.to_internal([10, 20, 30])
    assert dense[a, i10] == 5 and dense[a, i20] == 3 and dense[a].sum() == 8
    # c's history by time: 10 (t=4), 20 (t=5), 30 (t=6)
    assert list(tiny.sequences[c]) == [i10, i20, i30]
    assert list(tiny.sequences[a]) == [i20, i10]
    assert tiny.sequences.lengths.tolist() == [2, 1, 3]
    assert tiny.csr is tiny.csr  # cached


def test_subset_shares_id_maps(tiny):
    sub = tiny.with_interactions(tiny.ratings >= 4)
    assert sub.item_ids is tiny.item_ids and sub.n_interactions == 3
    assert sub.fingerprint() != tiny.fingerprint()


def test_bad_frames():
    with pytest.raises(PolyrecError, match="column 'user' not found"):
        Dataset.from_frame(pd.DataFrame({"u": [1], "item": [1]}))
    with pytest.raises(PolyrecError, match="rating is missing or not a number at row 1"):
        Dataset.from_frame(pd.DataFrame({"user": [1, 2], "item": [1, 1], "rating": [1.0, None]}))
    with pytest.raises(PolyrecError, match="duplicate id"):
        IdMap([1, 1])


def test_describe(tiny):
    info = tiny.describe()
    assert info["interactions"] == 6 and info["history_length"]["max"] == 3
    assert info["item_fields"] == ["title"]
