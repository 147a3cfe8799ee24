"""Built-in datasets by name: where to find them, how to read them, where to download them.

Resolution order for ``load_dataset(name)``:

1. ``data_dir`` when given, else ``$POLYREC_DATA_DIR``, in the layout of the team's data folder
   (e.g. ``movielens_100k_recbole/ml-100k.inter``, ``gowalla_lightgcn/train.txt``);
2. the user cache ``~/.cache/polyrec/<name>/`` (``$POLYREC_CACHE_DIR/<name>/``), same layout;
3. a download from the official source, verified by its published sha256 (MovieLens only: the
   other sets have no official direct download).

If none works, one :class:`PolyrecError` names the files expected and both places to put them.
``synthetic`` is generated (:func:`polyrec.data.synthetic.make_synthetic`, options as keyword
arguments). ``gowalla`` comes with its own train/test files: :func:`load_given_split`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from polyrec.data.dataset import Dataset
from polyrec.data.io import (
    attach_side_data,
    movielens_side_data,
    read_amazon_reviews,
    read_item_table,
    read_lcrec,
    read_lightgcn_split,
    read_movielens,
    read_recbole,
    read_sequences,
)
from polyrec.data.split import Split, given_split
from polyrec.data.synthetic import make_synthetic
from polyrec.errors import PolyrecError

__all__ = [
    "BUILTINS",
    "DatasetInfo",
    "cache_dir",
    "list_datasets",
    "load_dataset",
    "load_given_split",
]

DATA_DIR_ENV = "POLYREC_DATA_DIR"
CACHE_DIR_ENV = "POLYREC_CACHE_DIR"

Loaded = Dataset | tuple[Dataset, Dataset]


@dataclass(frozen=True)
class Layout:
    """One way a dataset can lie on disk: the files that must exist (relative to a root) and
    the reader that turns that root into a dataset (or a given (train, test) pair)."""

    files: tuple[str, ...]
    read: Callable[[Path], Loaded]


@dataclass(frozen=True)
class Download:
    """An official archive, its published sha256 and the folder it unpacks into."""

    url: str
    sha256: str


@dataclass(frozen=True)
class Builtin:
    name: str
    description: str
    citation: str
    layouts: tuple[Layout, ...] = ()
    given_split: bool = False
    download: Download | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """One row of ``polyrec datasets list``."""

    name: str
    description: str
    location: str  # a file path, "downloadable: <url>", "generated" or "not found"
    given_split: bool
    citation: str


# ------------------------------------------------------------------------------ readers
def _ml1m_sequences(root: Path) -> Dataset:
    ds = read_sequences(root / "ml-1m" / "sequences_original_ids.txt")
    items, users = movielens_side_data(root / "ml-1m")
    return attach_side_data(ds, item_data=items, user_data=users)


def _ml100k_recbole(root: Path) -> Dataset:
    ds = read_recbole(root / "movielens_100k_recbole" / "ml-100k")
    if ds.item_data is not None:  # same column name as the u.item reader
        ds.item_data = ds.item_data.rename(columns={"class": "genres"})
    return ds


def _s3rec(stem: str, text: str | None = None) -> Callable[[Path], Dataset]:
    """An S3-Rec Amazon sequence file, with its ``item2attributes`` ids and item text when
    present beside it."""

    def read(root: Path) -> Dataset:
        folder = root / "amazon_s3rec"
        ds = read_sequences(folder / f"{stem}.txt")
        attributes = folder / f"{stem}_item2attributes.json"
        if attributes.is_file():
            mapping = json.loads(attributes.read_text())
            frame = pd.DataFrame(
                {"attributes": list(mapping.values())}, index=[int(k) for k in mapping]
            )
            ds = attach_side_data(ds, item_data=frame)
        if text is not None and (root / text).is_file():
            meta = read_item_table(root / text, "item_id")
            keep = [c for c in ("asin", "title", "brand", "categories", "price") if c in meta]
            ds = attach_side_data(ds, item_data=meta[keep])
        return ds

    return read


def _taobao_head(root: Path) -> Dataset:
    from polyrec.data.ctr import read_taobao_userbehavior  # torch: only when this set is read

    path = root / "taobao_userbehavior_head" / "UserBehavior_head.csv"
    return read_taobao_userbehavior(path).to_dataset("taobao-head")


_GROUPLENS = (
    "F. M. Harper and J. A. Konstan, The MovieLens Datasets: History and Context, ACM TiiS 2015; "
    "GroupLens terms: research use, no redistribution"
)
_AMAZON = (
    "J. McAuley et al., Image-Based Recommendations on Styles and Substitutes, SIGIR 2015; "
    "5-core sequences of K. Zhou et al., S3-Rec, CIKM 2020; Amazon review data: research use"
)

_AMAZON18 = (
    "J. Ni, J. Li and J. McAuley, Justifying Recommendations using Distantly-Labeled Reviews "
    "and Fine-Grained Aspects, EMNLP 2019; Amazon review data: research use"
)
# (name, file stem, sizes): the small 2018 5-core categories, with review text
_AMAZON18_CATEGORIES = (
    ("amazon18-beauty", "All_Beauty_5", "991 users, 85 items, 5,269 reviews"),
    ("amazon18-fashion", "AMAZON_FASHION_5", "406 users, 31 items, 3,176 reviews"),
    ("amazon18-appliances", "Appliances_5", "47 users, 48 items, 2,277 reviews"),
    ("amazon18-gift-cards", "Gift_Cards_5", "458 users, 148 items, 2,972 reviews"),
    ("amazon18-magazines", "Magazine_Subscriptions_5", "348 users, 157 items, 2,375 reviews"),
)


def _amazon18(stem: str, suffix: str) -> Callable[[Path], Dataset]:
    return lambda root: read_amazon_reviews(root / "amazon2018_5core_reviews" / f"{stem}{suffix}")


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin(
            "ml-100k",
            "MovieLens 100K: 943 users, 1,682 movies, 100,000 ratings 1-5 with timestamps",
            _GROUPLENS,
            layouts=(
                Layout(("movielens_100k_recbole/ml-100k.inter",), _ml100k_recbole),
                Layout(("ml-100k/u.data",), lambda root: read_movielens(root / "ml-100k")),
            ),
            # sha256 as published in tensorflow/datasets url_checksums/movielens.txt
            download=Download(
                "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
            ),
        ),
        Builtin(
            "ml-1m",
            "MovieLens 1M: 6,040 users, 3,706 movies, 1,000,209 ratings (sequences only when "
            "ratings.dat is absent)",
            _GROUPLENS,
            layouts=(
                Layout(("ml-1m/ratings.dat",), lambda root: read_movielens(root / "ml-1m")),
                Layout(("ml-1m/sequences_original_ids.txt",), _ml1m_sequences),
            ),
            download=Download(
                "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
                "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
            ),
        ),
        Builtin(
            "gowalla",
            "Gowalla check-ins, LightGCN/NGCF split: 29,858 users, 40,981 places, "
            "810,128 train + 217,242 test",
            "E. Cho, S. A. Myers and J. Leskovec, Friendship and Mobility, KDD 2011 (SNAP); "
            "split of X. He et al., LightGCN, SIGIR 2020; research use",
            layouts=(
                Layout(
                    ("gowalla_lightgcn/train.txt", "gowalla_lightgcn/test.txt"),
                    lambda root: read_lightgcn_split(root / "gowalla_lightgcn"),
                ),
            ),
            given_split=True,
        ),
        Builtin(
            "amazon-beauty",
            "Amazon Beauty 5-core sequences: 22,363 users, 12,101 items, 198,502 reviews; "
            "titles when amazon_beauty_text/ is present",
            _AMAZON,
            layouts=(
                Layout(
                    ("amazon_s3rec/Beauty.txt",),
                    _s3rec("Beauty", "amazon_beauty_text/Beauty_item_text_s3rec_ids.tsv"),
                ),
            ),
        ),
        Builtin(
            "amazon-sports",
            "Amazon Sports and Outdoors 5-core sequences: 35,598 users, 18,357 items",
            _AMAZON,
            layouts=(
                Layout(("amazon_s3rec/Sports_and_Outdoors.txt",), _s3rec("Sports_and_Outdoors")),
            ),
        ),
        Builtin(
            "amazon-toys",
            "Amazon Toys and Games 5-core sequences: 19,412 users, 11,924 items",
            _AMAZON,
            layouts=(Layout(("amazon_s3rec/Toys_and_Games.txt",), _s3rec("Toys_and_Games")),),
        ),
        Builtin(
            "amazon-scientific",
            "Amazon Industrial and Scientific (LC-Rec): 8,317 users, 4,344 items with title, "
            "description, brand, categories",
            "J. Ni, J. Li and J. McAuley, Justifying Recommendations, EMNLP 2019; preprocessing "
            "of B. Zheng et al., LC-Rec, ICDE 2024; Amazon review data: research use",
            layouts=(
                Layout(
                    ("amazon_scientific/Scientific.inter.json",),
                    lambda root: read_lcrec(root / "amazon_scientific" / "Scientific"),
                ),
            ),
        ),
        Builtin(
            "taobao-head",
            "Taobao UserBehavior, head of the official file: 814 users, 55,233 items, 84,287 "
            "events (pv/cart/fav/buy), item categories; long histories for CTR ranking",
            "H. Zhu et al., Learning Tree-based Deep Model for Recommender Systems, KDD 2018; "
            "Alibaba Tianchi dataset 649: research use only",
            layouts=(Layout(("taobao_userbehavior_head/UserBehavior_head.csv",), _taobao_head),),
        ),
        *(
            Builtin(
                name,
                f"Amazon 2018 5-core {stem[:-2].replace('_', ' ')} with ratings, times and "
                f"review text: {sizes}",
                _AMAZON18,
                layouts=tuple(
                    Layout((f"amazon2018_5core_reviews/{stem}{suffix}",), _amazon18(stem, suffix))
                    for suffix in (".json.gz", ".json")
                ),
            )
            for name, stem, sizes in _AMAZON18_CATEGORIES
        ),
        Builtin(
            "synthetic",
            "Generated: power-law popularity, latent tastes with drift, ratings, item and "
            "review text; any size (keyword options of make_synthetic)",
            "generated by polyrec; no restrictions",
        ),
    )
}


# ------------------------------------------------------------------------------ public API
def cache_dir() -> Path:
    """The user cache root: ``$POLYREC_CACHE_DIR`` or ``~/.cache/polyrec``."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "polyrec"


def load_dataset(
    name: str, data_dir: str | Path | None = None, *, download: bool = True, **options: Any
) -> Dataset:
    """A built-in dataset by name (see the module docstring for where it is looked for).

    ``options`` are only for ``synthetic`` (``n_users``, ``n_items``, ``seed``, ...). A dataset
    with a given split returns train and test together; use :func:`load_given_split` to keep
    them apart.
    """
    spec = _spec(name)
    if spec.name == "synthetic":
        return _synthetic(options)
    if options:
        raise PolyrecError(f"dataset {name!r} takes no options; got {sorted(options)}")
    loaded = _load(spec, data_dir, download)
    if isinstance(loaded, tuple):
        loaded = _concat(*loaded)
    loaded.name = spec.name
    return loaded


def load_given_split(
    name: str, data_dir: str | Path | None = None, *, download: bool = True
) -> Split:
    """The train/test files a dataset ships with (e.g. LightGCN's Gowalla), as a :class:`Split`."""
    spec = _spec(name)
    if not spec.given_split:
        given = [b.name for b in BUILTINS.values() if b.given_split]
        raise PolyrecError(
            f"dataset {name!r} has no given train/test split (those that do: {given}); "
            "split it with polyrec.data.split"
        )
    train, test = cast(tuple[Dataset, Dataset], _load(spec, data_dir, download))
    train.name = test.name = spec.name
    return given_split(train, test)


def list_datasets(data_dir: str | Path | None = None) -> list[DatasetInfo]:
    """Every built-in dataset and where it would be loaded from right now."""
    infos = []
    for spec in BUILTINS.values():
        found = _locate(spec, data_dir)
        if spec.name == "synthetic":
            location = "generated"
        elif found is not None:
            location = str(found[1] / found[0].files[0])
        elif spec.download is not None:
            location = f"downloadable: {spec.download.url}"
        else:
            location = "not found"
        infos.append(
            DatasetInfo(spec.name, spec.description, location, spec.given_split, spec.citation)
        )
    return infos


# ------------------------------------------------------------------------------ internals
def _spec(name: str) -> Builtin:
    if name not in BUILTINS:
        raise PolyrecError(f"unknown dataset {name!r}; known: {', '.join(BUILTINS)}")
    return BUILTINS[name]


def _roots(spec: Builtin, data_dir: str | Path | None) -> list[Path]:
    first = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    roots = [Path(first).expanduser()] if first else []
    return [*roots, cache_dir() / spec.name]


def _locate(spec: Builtin, data_dir: str | Path | None) -> tuple[Layout, Path] | None:
    for root in _roots(spec, data_dir):
        for layout in spec.layouts:
            if all((root / f).is_file() for f in layout.files):
                return layout, root
    return None


def _load(spec: Builtin, data_dir: str | Path | None, download: bool) -> Loaded:
    found = _locate(spec, data_dir)
    failure = ""
    if found is None and spec.download is not None and download:
        try:
            _fetch(spec.download, cache_dir() / spec.name)
        except (urllib.error.URLError, OSError, zipfile.BadZipFile) as exc:
            failure = f"; download from {spec.download.url} failed ({_reason(exc)})"
        found = _locate(spec, data_dir)
    if found is None:
        raise PolyrecError(_not_found(spec, data_dir) + failure)
    layout, root = found
    return layout.read(root)


def _not_found(spec: Builtin, data_dir: str | Path | None) -> str:
    files = " or ".join(" + ".join(layout.files) for layout in spec.layouts)
    if data_dir is not None:
        first = f"under data_dir {data_dir}"
    else:
        first = f"under ${DATA_DIR_ENV} ({os.environ.get(DATA_DIR_ENV) or 'unset'})"
    how = "" if spec.download else " (it has no official download)"
    return (
        f"dataset {spec.name!r} not found{how}: put {files} {first} "
        f"or under {cache_dir() / spec.name}"
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return str(exc.reason)
    return str(exc)


def _fetch(source: Download, folder: Path) -> None:
    """Download ``source`` into ``folder``, verify its sha256 and unpack it there."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / source.url.rsplit("/", 1)[-1]
    part = archive.with_name(archive.name + ".part")
    digest = hashlib.sha256()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(file=sys.stderr),
        transient=True,
    )
    try:
        with urllib.request.urlopen(source.url, timeout=60) as response, part.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with progress:
                task = progress.add_task(f"downloading {archive.name}", total=total)
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    progress.advance(task, len(chunk))
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != source.sha256:
        part.unlink()
        raise PolyrecError(
            f"{source.url}: sha256 {digest.hexdigest()} differs from the published "
            f"{source.sha256}; the download was deleted"
        )
    with zipfile.ZipFile(part) as zf:  # extractall keeps members inside the folder
        zf.extractall(folder)
    part.unlink()


def _synthetic(options: dict[str, Any]) -> Dataset:
    allowed = [
        p.name
        for p in inspect.signature(make_synthetic).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise PolyrecError(f"unknown synthetic option {unknown[0]!r}; options are {allowed}")
    ds = make_synthetic(**options)
    ds.name = "synthetic"
    return ds


def _concat(train: Dataset, test: Dataset) -> Dataset:
    """Both parts of a given split as one dataset (same id maps)."""

    def cat(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
        return None if a is None or b is None else np.concatenate([a, b])

    return train.with_interactions(
        users=np.concatenate([train.users, test.users]),
        items=np.concatenate([train.items, test.items]),
        timestamps=cat(train.timestamps, test.timestamps),
        ratings=cat(train.ratings, test.ratings),
    )
