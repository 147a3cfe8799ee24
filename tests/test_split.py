import numpy as np
import pytest

from polyrec import PolyrecError
from polyrec.data.split import leave_one_out, ratio_split, temporal_split
from polyrec.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def ds():
    return make_synthetic(300, 120, 5000, seed=3)


def _pairs(d):
    return set(zip(d.users.tolist(), d.items.tolist(), d.timestamps.tolist(), strict=True))


def _partition_ok(ds, split):
    parts = [split.train, split.test] + ([split.valid] if split.valid is not None else [])
    assert sum(len(p) for p in parts) <= len(ds)
    seen = set()
    for p in parts:
        cur = _pairs(p)
        assert not (seen & cur)
        seen |= cur
    return seen


def test_leave_one_out_no_future_leak(ds):
    s = leave_one_out(ds)
    assert _partition_ok(ds, s) == _pairs(ds)
    last_train = np.full(ds.n_users, -np.inf)
    np.maximum.at(last_train, s.train.users, s.train.timestamps)
    test_time = np.full(ds.n_users, np.inf)
    test_time[s.test.users] = s.test.timestamps
    assert (s.valid.timestamps <= test_time[s.valid.users]).all()
    assert (s.test.timestamps >= last_train[s.test.users]).all()
    assert (s.valid.timestamps >= last_train[s.valid.users]).all()
    assert np.bincount(s.test.users, minlength=ds.n_users).max() == 1


def test_leave_one_out_short_users_stay_in_train():
    ds = make_synthetic(50, 40, 300, min_history=1, seed=1)
    s = leave_one_out(ds)
    counts = np.bincount(ds.users, minlength=ds.n_users)
    short = np.flatnonzero((counts > 0) & (counts < 3))
    assert s.protocol["users_train_only"] == len(short)
    assert not np.isin(s.test.users, short).any()


def test_ratio_split_reproducible_and_proportional(ds):
    a, b = ratio_split(ds, test=0.2, seed=7), ratio_split(ds, test=0.2, seed=7)
    assert np.array_equal(a.test.items, b.test.items)
    c = ratio_split(ds, test=0.2, seed=8)
    assert not np.array_equal(a.test.items, c.test.items)
    assert _partition_ok(ds, a) == _pairs(ds)
    counts = np.bincount(ds.users, minlength=ds.n_users)
    n_test = np.bincount(a.test.users, minlength=ds.n_users)
    assert np.array_equal(n_test, np.minimum(np.rint(counts * 0.2), counts - 1))


def test_temporal_split_is_a_global_cut(ds):
    s = temporal_split(ds, test=0.2, valid=0.1)
    assert s.train.timestamps.max() <= s.valid.timestamps.min()
    assert s.valid.timestamps.max() <= s.test.timestamps.min()
    assert set(s.test.users.tolist()) <= set(s.train.users.tolist())
    assert s.protocol["cold_dropped"] >= 0


def test_bad_fractions(ds):
    with pytest.raises(PolyrecError, match="split fractions"):
        ratio_split(ds, test=0.8, valid=0.3)
