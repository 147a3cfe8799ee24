"""Built-in dataset resolution: data dir / env -> cache -> download, and the errors."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from polyrec.data import registry
from polyrec.data.registry import (
    BUILTINS,
    Download,
    list_datasets,
    load_dataset,
    load_given_split,
)
from polyrec.data.split import temporal_split
from polyrec.errors import PolyrecError
from polyrec.experiment import prepare_data, resolve_config

REAL_DATA = os.environ.get("POLYREC_DATA_DIR")


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    """No real data dir, and a private cache, for every test here."""
    monkeypatch.delenv("POLYREC_DATA_DIR", raising=False)
    monkeypatch.setenv("POLYREC_CACHE_DIR", str(tmp_path / "cache"))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def beauty(root: Path, text: str) -> Path:
    write(root / "amazon_s3rec" / "Beauty.txt", text)
    return root


def test_env_dir_wins_over_cache_and_argument_wins_over_env(tmp_path, monkeypatch):
    env = beauty(tmp_path / "env", "1 1 2 3\n")
    cache = beauty(tmp_path / "cache" / "amazon-beauty", "1 1\n2 2\n")
    arg = beauty(tmp_path / "arg", "7 7\n")
    assert len(load_dataset("amazon-beauty")) == 2  # only the cache
    monkeypatch.setenv("POLYREC_DATA_DIR", str(env))
    ds = load_dataset("amazon-beauty")
    assert ds.name == "amazon-beauty" and len(ds) == 3
    assert list(load_dataset("amazon-beauty", data_dir=arg).item_ids.external) == [7]
    (env / "amazon_s3rec" / "Beauty.txt").unlink()  # env dir without the files -> cache
    assert len(load_dataset("amazon-beauty")) == 2
    infos = {i.name: i for i in list_datasets()}
    assert infos["amazon-beauty"].location == str(cache / "amazon_s3rec" / "Beauty.txt")


def test_sequence_files_split_leave_one_out_by_default(tmp_path):
    """Positions are not times: "auto" holds out each user's last item, and a temporal
    split is refused."""
    root = beauty(tmp_path, "1 5 6 7 8\n2 6 7 9\n")
    spec = resolve_config("pop", "amazon-beauty")
    split = prepare_data(spec, root).split
    assert spec.split is not None and spec.split.method == "leave_one_out"
    assert split.test.item_ids.to_external(split.test.items).tolist() == [8, 9]
    assert split.valid is not None
    assert split.valid.item_ids.to_external(split.valid.items).tolist() == [7, 7]
    with pytest.raises(PolyrecError, match="temporal split needs times; dataset 'amazon-beauty'"):
        temporal_split(load_dataset("amazon-beauty", root))


def test_beauty_side_data_from_text_and_attributes(tmp_path):
    root = beauty(tmp_path, "1 2 1\n2 2\n")
    write(root / "amazon_s3rec" / "Beauty_item2attributes.json", '{"1": [5, 6], "2": [7]}')
    write(
        root / "amazon_beauty_text" / "Beauty_item_text_s3rec_ids.tsv",
        "item_id\tasin\ttitle\tbrand\tcategories\tprice\tsales_rank\tplrec_item_id\tmatch\n"
        '1\tA1\t"Red\tpolish"\tOPI\tNails\t3.0\t10\t7\tunique\n'
        "2\tA2\tCream\t\tSkin\t\t\t8\tunique\n",
    )
    ds = load_dataset("amazon-beauty", data_dir=root)
    assert ds.item_titles().tolist() == ["Red\tpolish", "Cream"]
    assert ds.item_data["attributes"].tolist() == [[5, 6], [7]]
    assert ds.item_data["asin"].tolist() == ["A1", "A2"]
    assert ds.sequences.timestamps.tolist() == [0, 1, 0]


def test_missing_dataset_names_files_and_places(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYREC_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(PolyrecError) as err:
        load_dataset("gowalla")
    msg = str(err.value)
    assert "\n" not in msg
    assert "gowalla_lightgcn/train.txt + gowalla_lightgcn/test.txt" in msg
    assert f"$POLYREC_DATA_DIR ({tmp_path / 'nowhere'})" in msg
    assert str(tmp_path / "cache" / "gowalla") in msg
    assert "no official download" in msg
    with pytest.raises(PolyrecError, match=r"amazon_s3rec/Beauty.txt under data_dir /x"):
        load_dataset("amazon-beauty", data_dir="/x")


def test_unknown_name_and_bad_options():
    with pytest.raises(PolyrecError, match=r"unknown dataset 'ml-10m'; known: ml-100k, ml-1m"):
        load_dataset("ml-10m")
    with pytest.raises(PolyrecError, match=r"'amazon-toys' takes no options; got \['seed'\]"):
        load_dataset("amazon-toys", seed=3)
    with pytest.raises(PolyrecError, match=r"unknown synthetic option 'n_user'"):
        load_dataset("synthetic", n_user=10)


def test_synthetic_options():
    ds = load_dataset("synthetic", n_users=50, n_items=30, n_interactions=400, seed=2)
    assert ds.name == "synthetic" and ds.n_users == 50 and ds.n_items == 30
    again = load_dataset("synthetic", n_users=50, n_items=30, n_interactions=400, seed=2)
    assert again.fingerprint() == ds.fingerprint()


def test_given_split_gowalla_layout(tmp_path):
    write(tmp_path / "gowalla_lightgcn" / "train.txt", "0 0 1\n1 1\n")
    write(tmp_path / "gowalla_lightgcn" / "test.txt", "0 2\n1 0\n")
    split = load_given_split("gowalla", data_dir=tmp_path)
    assert split.protocol == {"split": "given"}
    assert (len(split.train), len(split.test), split.valid) == (3, 2, None)
    assert split.train.name == split.test.name == "gowalla"
    full = load_dataset("gowalla", data_dir=tmp_path)
    assert full.item_ids == split.train.item_ids and len(full) == 5
    assert full.binary_csr.toarray().tolist() == [[1, 1, 1], [1, 1, 0]]
    with pytest.raises(PolyrecError, match=r"'amazon-beauty' has no given train/test split"):
        load_given_split("amazon-beauty", data_dir=tmp_path)
    infos = {i.name: i for i in list_datasets(tmp_path)}
    assert infos["gowalla"].given_split and not infos["ml-100k"].given_split


def fake_ml100k_zip(tmp_path: Path) -> tuple[str, str]:
    """A file:// URL of a zip laid out like ml-100k.zip, and its sha256."""
    archive = tmp_path / "src" / "ml-100k.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t10\t4\t100\n2\t10\t3\t101\n2\t20\t5\t102\n")
        zf.writestr(
            "ml-100k/u.item",
            "10|A (1990)|01-Jan-1990||u|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
            "20|B (1991)|01-Jan-1991||u|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n",
        )
    return archive.as_uri(), hashlib.sha256(archive.read_bytes()).hexdigest()


def test_download_verifies_checksum_and_unpacks_into_cache(tmp_path, monkeypatch):
    url, sha = fake_ml100k_zip(tmp_path)
    monkeypatch.setitem(
        BUILTINS, "ml-100k", dataclasses.replace(BUILTINS["ml-100k"], download=Download(url, sha))
    )
    assert {i.name: i for i in list_datasets()}["ml-100k"].location == f"downloadable: {url}"
    ds = load_dataset("ml-100k")
    assert (ds.name, ds.n_users, ds.n_items, len(ds)) == ("ml-100k", 2, 2, 3)
    assert ds.item_data["genres"].tolist() == [["Action"], ["Comedy"]]
    folder = tmp_path / "cache" / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == ["ml-100k"]  # archive removed
    (tmp_path / "src" / "ml-100k.zip").unlink()  # second load: from the cache, no download
    assert load_dataset("ml-100k").fingerprint() == ds.fingerprint()


def test_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch):
    url, _ = fake_ml100k_zip(tmp_path)
    bad = Download(url, "0" * 64)
    monkeypatch.setitem(BUILTINS, "ml-1m", dataclasses.replace(BUILTINS["ml-1m"], download=bad))
    with pytest.raises(PolyrecError, match=r"sha256 [0-9a-f]{64} differs from the published 0+"):
        load_dataset("ml-1m")
    assert list((tmp_path / "cache" / "ml-1m").iterdir()) == []


def test_offline_download_failure_is_one_clear_error(tmp_path, monkeypatch):
    gone = Download((tmp_path / "missing.zip").as_uri(), "0" * 64)
    monkeypatch.setitem(
        BUILTINS, "ml-100k", dataclasses.replace(BUILTINS["ml-100k"], download=gone)
    )
    with pytest.raises(PolyrecError) as err:
        load_dataset("ml-100k")
    msg = str(err.value)
    assert msg.startswith("dataset 'ml-100k' not found: put movielens_100k_recbole/ml-100k.inter")
    assert "or ml-100k/u.data" in msg and f"download from {gone.url} failed" in msg
    with pytest.raises(PolyrecError, match=r"not found: put") as err:
        load_dataset("ml-100k", download=False)
    assert "failed" not in str(err.value)


def test_published_checksums_are_pinned():
    for name in ("ml-100k", "ml-1m"):
        source = registry.BUILTINS[name].download
        assert source.url.startswith("https://files.grouplens.org/datasets/movielens/")
        assert len(source.sha256) == 64


# ---------------------------------------------------------------------------- real data
REAL_COUNTS = {
    "ml-100k": (943, 1682, 100_000),
    "ml-1m": (6040, 3706, 1_000_209),
    "gowalla": (29_858, 40_981, 1_027_370),
    "amazon-beauty": (22_363, 12_101, 198_502),
    "amazon-sports": (35_598, 18_357, 296_337),
    "amazon-toys": (19_412, 11_924, 167_597),
    "amazon-scientific": (8317, 4344, 58_492),
}


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_DATA, reason="POLYREC_DATA_DIR is not set")
@pytest.mark.parametrize("name", list(REAL_COUNTS))
def test_real_builtin_counts(name):
    start = time.perf_counter()
    ds = load_dataset(name, data_dir=REAL_DATA, download=False)
    seconds = time.perf_counter() - start
    print(f"\n{name}: loaded in {seconds:.2f} s")
    assert (ds.n_users, ds.n_items, len(ds)) == REAL_COUNTS[name]
    assert len(ds.active_users) == ds.n_users and (ds.item_popularity > 0).all()
    if name != "gowalla":
        assert ds.timestamps is not None
    if name in ("ml-100k", "ml-1m", "amazon-beauty", "amazon-scientific"):
        titles = ds.item_titles()
        assert titles is not None and (titles != "").mean() > 0.99
    if name == "ml-100k":
        assert ds.ratings is not None and ds.ratings.min() == 1 and ds.ratings.max() == 5


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_DATA, reason="POLYREC_DATA_DIR is not set")
def test_real_gowalla_given_split():
    start = time.perf_counter()
    split = load_given_split("gowalla", data_dir=REAL_DATA)
    seconds = time.perf_counter() - start
    print(f"\ngowalla split: loaded in {seconds:.2f} s")
    assert seconds < 2.0
    assert (split.train.n_users, split.train.n_items) == (29_858, 40_981)
    assert (len(split.train), len(split.test)) == (810_128, 217_242)
    overlap = split.train.binary_csr.multiply(split.test.binary_csr).nnz
    assert overlap == 0
    assert np.array_equal(split.train.item_data["org_id"].notna(), np.ones(40_981, bool))
