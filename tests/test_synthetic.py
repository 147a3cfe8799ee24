import numpy as np

from polyrec.data.synthetic import make_synthetic


def test_reproducible_and_sized():
    a, b = make_synthetic(200, 100, 3000, seed=5), make_synthetic(200, 100, 3000, seed=5)
    assert np.array_equal(a.items, b.items) and np.array_equal(a.timestamps, b.timestamps)
    assert 0.9 * 3000 <= len(a) <= 3000
    pairs = a.users * a.n_items + a.items
    assert len(np.unique(pairs)) == len(pairs)  # unique (user, item)
    assert np.diff(a.sequences.indptr).min() >= 5


def test_realistic_properties():
    ds = make_synthetic(1000, 500, 20000, seed=0)
    pop = np.sort(ds.item_popularity)[::-1]
    assert pop[: len(pop) // 10].sum() > 0.3 * pop.sum()  # head-heavy popularity
    reviews = ds.interaction_data["review"].to_numpy()
    assert all("love" in r for r in reviews[ds.ratings == 5])
    assert all("Terrible" in r for r in reviews[ds.ratings == 1])
    assert ds.item_data["title"].str.len().min() > 0 and "category" in ds.item_data
    # taste structure: a user's items cluster in categories more than chance
    cat = ds.item_data["category"].to_numpy()[ds.items]
    same = np.mean([len(set(cat[ds.users == u])) for u in range(50)])
    shuffled = np.random.default_rng(0).permutation(cat)
    same_rand = np.mean([len(set(shuffled[ds.users == u])) for u in range(50)])
    assert same < same_rand
