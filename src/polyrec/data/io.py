"""Readers for the interaction files that recommender papers and toolkits ship.

Every reader returns a :class:`~polyrec.data.Dataset` over sorted external ids (ids that are
all canonical integers become ``int64``, anything else stays a string). Parsing is vectorised
(numpy over the raw bytes, pandas' C parser); a malformed file raises one
:class:`~polyrec.errors.PolyrecError` of the form ``"<file>:<line>: <what>"``.

Formats:

* MovieLens ``u.data`` / ``ratings.dat`` (+ ``u.item``, ``u.user``, ``movies.dat``,
  ``users.dat``) -- Harper & Konstan, "The MovieLens Datasets", ACM TiiS 2015.
* RecBole atomic files ``NAME.inter`` / ``.item`` / ``.user`` with ``field:type`` headers --
  Zhao et al., "RecBole", CIKM 2021.
* ``uid i1 i2 ...`` lists: LightGCN/NGCF ``train.txt``/``test.txt`` (He et al., SIGIR 2020;
  Wang et al., SIGIR 2019) and S3-Rec sequences (Zhou et al., CIKM 2020); ``uid iid`` pairs
  as in SASRec (Kang & McAuley, ICDM 2018).
* LC-Rec ``NAME.inter.json`` / ``NAME.item.json`` (Zheng et al., ICDE 2024).
* Amazon Review Data (2018) JSON lines ``*.json`` / ``*.json.gz`` (Ni, Li & McAuley, EMNLP
  2019): ratings, times and review text.
* Any CSV/TSV/Parquet table with a column mapping.

Catalogue: the items (and users) that occur in the interaction files. Side-file rows for ids
without interactions are dropped, so a reader's counts are the published ones (ml-1m has 3,883
movies in ``movies.dat`` but 3,706 rated ones); the exceptions are users listed with an empty
history in a ``uid i1 ...`` file, who keep their id.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import zlib
from collections.abc import Mapping
from dataclasses import replace
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polyrec.data.dataset import Dataset, IdMap, rank_within, sorted_ids
from polyrec.errors import PolyrecError

__all__ = [
    "attach_side_data",
    "movielens_side_data",
    "read_amazon_reviews",
    "read_item_table",
    "read_lcrec",
    "read_lightgcn_split",
    "read_movielens",
    "read_recbole",
    "read_sequences",
    "read_table",
    "read_user_item_lists",
]

_WHITESPACE = np.zeros(256, bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True  # exactly what bytes.split() splits on
_DIGIT = np.zeros(256, bool)
_DIGIT[48:58] = True
_MAX_DIGITS = 18  # anything longer may overflow int64
_POW10 = 10 ** np.arange(_MAX_DIGITS + 1, dtype=np.int64)
_NA = ["", "nan", "NaN", "NAN", "NA", "null"]
_CANONICAL_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_ML100K_GENRES = np.array(
    [
        "unknown",
        "Action",
        "Adventure",
        "Animation",
        "Children's",
        "Comedy",
        "Crime",
        "Documentary",
        "Drama",
        "Fantasy",
        "Film-Noir",
        "Horror",
        "Musical",
        "Mystery",
        "Romance",
        "Sci-Fi",
        "Thriller",
        "War",
        "Western",
    ]
)
_RECBOLE_TYPES = ("token", "float", "token_seq", "float_seq")


# ---------------------------------------------------------------------------------- MovieLens
def read_movielens(path: str | Path) -> Dataset:
    """MovieLens ml-100k (``u.data``, tab) or ml-1m (``ratings.dat``, ``::``) with side data.

    ``path`` is the ratings file or the directory holding it. Titles and genres (``u.item`` /
    ``movies.dat``) and user demographics (``u.user`` / ``users.dat``) are attached when they
    lie beside the ratings file.
    """
    p = Path(path)
    if p.is_dir():
        found = [p / f for f in ("u.data", "ratings.dat") if (p / f).is_file()]
        if not found:
            raise PolyrecError(f"{p}: no u.data (ml-100k) or ratings.dat (ml-1m) in this folder")
        p = found[0]
    sep, encoding = ("::", "latin-1") if p.suffix == ".dat" else ("\t", "utf-8")
    names = ["user", "item", "rating", "timestamp"]
    dtypes = {"user": np.int64, "item": np.int64, "rating": np.float64, "timestamp": np.int64}
    df, lines = _read_delimited(p, sep=sep, names=names, dtypes=dtypes, encoding=encoding)
    _check_no_nan(p, df["rating"].to_numpy(), lines, "rating")
    item_data, user_data = movielens_side_data(p.parent)
    return _build(
        df["user"].to_numpy(),
        df["item"].to_numpy(),
        timestamps=df["timestamp"].to_numpy(np.float64),
        ratings=df["rating"].to_numpy(np.float32),
        item_data=item_data,
        user_data=user_data,
        name=p.parent.name or p.stem,
    )


def movielens_side_data(directory: str | Path) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """MovieLens item and user side data found in ``directory``, indexed by external id.

    Items get ``title`` and ``genres`` (list of names; ml-100k also ``release_date``); users
    get ``gender``, ``age``, ``occupation``, ``zip_code``. Missing files give ``None``.
    """
    d = Path(directory)
    items = users = None
    if (d / "u.item").is_file():
        names = ["item", "title", "release_date", "video_release_date", "url"]
        names += [f"g{i}" for i in range(len(_ML100K_GENRES))]
        dtypes = {"item": np.int64} | {f"g{i}": np.int64 for i in range(len(_ML100K_GENRES))}
        df, _ = _read_delimited(
            d / "u.item", sep="|", names=names, dtypes=dtypes, encoding="latin-1"
        )
        flags = df[names[5:]].to_numpy().astype(bool)
        items = pd.DataFrame(
            {
                "title": df["title"].to_numpy(),
                "release_date": df["release_date"].to_numpy(),
                "genres": [list(_ML100K_GENRES[row]) for row in flags],
            },
            index=pd.Index(df["item"].to_numpy(), name="item"),
        )
    elif (d / "movies.dat").is_file():
        df, _ = _read_delimited(
            d / "movies.dat",
            sep="::",
            names=["item", "title", "genres"],
            dtypes={"item": np.int64},
            encoding="latin-1",
        )
        items = pd.DataFrame(
            {"title": df["title"].to_numpy(), "genres": df["genres"].str.split("|").to_numpy()},
            index=pd.Index(df["item"].to_numpy(), name="item"),
        )
    user_files = {
        "u.user": ("|", ["user", "age", "gender", "occupation", "zip_code"]),
        "users.dat": ("::", ["user", "gender", "age", "occupation", "zip_code"]),
    }
    for fname, (sep, names) in user_files.items():
        if (d / fname).is_file():
            df, _ = _read_delimited(
                d / fname,
                sep=sep,
                names=names,
                dtypes={"user": np.int64, "age": np.int64},
                encoding="latin-1",
            )
            users = df.set_index("user")[["gender", "age", "occupation", "zip_code"]]
            break
    return items, users


# ---------------------------------------------------------------------------------- RecBole
def read_recbole(path: str | Path) -> Dataset:
    """RecBole atomic files: ``NAME.inter`` plus optional ``NAME.item`` / ``NAME.user``.

    ``path`` is the folder (holding one ``*.inter``), the ``.inter`` file, or the prefix
    ``folder/NAME``. Fields ``user_id``, ``item_id``, ``rating``, ``timestamp`` of the
    ``.inter`` file map to the dataset; other interaction fields are not read. Side fields
    become ``item_data`` / ``user_data`` columns: ``token_seq`` -> list of strings,
    ``float_seq`` -> float array, except a ``title`` / ``*_title`` field, which becomes the
    ``title`` column as one string.
    """
    inter = _resolve(path, ".inter")
    df, types, lines = _read_recbole_file(inter)
    for field in ("user_id", "item_id"):
        if field not in types:
            raise PolyrecError(f"{inter}:1: no {field} field; the header has {list(types)}")
    for field in ("rating", "timestamp"):
        if types.get(field, "float") != "float":
            raise PolyrecError(f"{inter}:1: {field} must be of type float, not {types[field]}")
    for field in ("user_id", "item_id"):
        empty = (df[field] == "").to_numpy()
        if empty.any():
            raise PolyrecError(f"{inter}:{lines[np.argmax(empty)]}: empty {field}")
    item_file = inter.with_name(inter.name[: -len(".inter")] + ".item")
    user_file = inter.with_name(inter.name[: -len(".inter")] + ".user")
    items = _recbole_side(item_file, "item_id") if item_file.is_file() else None
    users = _recbole_side(user_file, "user_id") if user_file.is_file() else None
    user_ids, item_ids, item_index, user_index = _as_ids(
        df["user_id"],
        df["item_id"],
        None if items is None else items.index.to_series(),
        None if users is None else users.index.to_series(),
    )
    if items is not None:
        items.index = pd.Index(item_index)
    if users is not None:
        users.index = pd.Index(user_index)
    ratings = timestamps = None
    if "rating" in types:
        ratings = df["rating"].to_numpy(np.float64)
        _check_no_nan(inter, ratings, lines, "rating")
    if "timestamp" in types:
        timestamps = df["timestamp"].to_numpy(np.float64)
        _check_no_nan(inter, timestamps, lines, "timestamp")
    return _build(
        user_ids,
        item_ids,
        timestamps=timestamps,
        ratings=None if ratings is None else ratings.astype(np.float32),
        item_data=items,
        user_data=users,
        name=inter.name[: -len(".inter")],
    )


def _read_recbole_file(path: Path) -> tuple[pd.DataFrame, dict[str, str], np.ndarray]:
    """A RecBole atomic file as text/float columns, its ``{field: type}`` and row lines."""
    data = _read_bytes(path)
    header = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace")
    types: dict[str, str] = {}
    for spec in header.split("\t"):
        name, _, kind = spec.partition(":")
        if kind not in _RECBOLE_TYPES:
            raise PolyrecError(
                f"{path}:1: header field {spec!r} is not name:type with type one of "
                f"{', '.join(_RECBOLE_TYPES)}"
            )
        types[name] = kind
    dtypes = {n: np.float64 if k == "float" else str for n, k in types.items()}
    df, lines = _read_delimited(
        path, sep="\t", names=list(types), dtypes=dtypes, encoding="utf-8", header=True, data=data
    )
    return df, types, lines


def _recbole_side(path: Path, id_field: str) -> pd.DataFrame:
    """A ``.item`` / ``.user`` file as a frame indexed by the (text) id field."""
    df, types, lines = _read_recbole_file(path)
    if id_field not in types:
        raise PolyrecError(f"{path}:1: no {id_field} field; the header has {list(types)}")
    dup = df[id_field].duplicated().to_numpy()
    if dup.any():
        row = int(np.argmax(dup))
        raise PolyrecError(f"{path}:{lines[row]}: duplicate {id_field} {df[id_field][row]!r}")
    out: dict[str, Any] = {}
    for name, kind in types.items():
        col = df[name]
        if name == id_field:
            continue
        if name == "title" or name.endswith("_title"):
            out["title"] = col.to_numpy(object)
        elif kind == "token_seq":
            out[name] = col.str.split().to_numpy()
        elif kind == "float_seq":
            out[name] = _float_seqs(path, name, col, lines)
        else:
            out[name] = col.to_numpy()
    return pd.DataFrame(out, index=pd.Index(df[id_field].to_numpy(object)))


def _float_seqs(path: Path, name: str, col: pd.Series, lines: np.ndarray) -> np.ndarray:
    """``float_seq`` text -> one float array per side-data row."""
    out = np.empty(len(col), dtype=object)
    for row, text in enumerate(col):
        try:
            out[row] = np.array(text.split(), np.float64)
        except ValueError:
            raise PolyrecError(f"{path}:{lines[row]}: {name} {text!r} is not numbers") from None
    return out


# --------------------------------------------------------------------- "uid i1 i2 ..." files
def read_user_item_lists(path: str | Path) -> Dataset:
    """LightGCN/NGCF ``uid i1 i2 ...`` lines (no timestamps); a bare ``uid`` keeps the user."""
    p = Path(path)
    heads, owner, tails = _int_lines(p)
    return _build(heads[owner], tails, all_users=heads, name=p.stem)


def read_lightgcn_split(directory: str | Path) -> tuple[Dataset, Dataset]:
    """LightGCN/NGCF ``train.txt`` and ``test.txt`` as (train, test) sharing id maps.

    Ids are the union of both files, sorted. When ``item_list.txt`` / ``user_list.txt``
    (``org_id remap_id``) lie beside them, the original ids become the side-data column
    ``org_id``.
    """
    d = Path(directory)
    train_heads, train_owner, train_tails = _int_lines(d / "train.txt")
    test_heads, test_owner, test_tails = _int_lines(d / "test.txt")
    users = _sorted_index(np.concatenate([train_heads, test_heads]))
    items = _sorted_index(np.concatenate([train_tails, test_tails]))
    user_map, item_map = IdMap(users.to_numpy()), IdMap(items.to_numpy())
    item_data = _org_ids(d / "item_list.txt", items)
    user_data = _org_ids(d / "user_list.txt", users)
    parts = []
    for heads, owner, tails in (
        (train_heads, train_owner, train_tails),
        (test_heads, test_owner, test_tails),
    ):
        parts.append(
            Dataset(
                users=users.get_indexer(heads[owner]),
                items=items.get_indexer(tails),
                user_ids=user_map,
                item_ids=item_map,
                item_data=item_data,
                user_data=user_data,
                name=d.name,
            )
        )
    return parts[0], parts[1]


def _org_ids(path: Path, index: pd.Index) -> pd.DataFrame | None:
    """``org_id remap_id`` list -> frame with column ``org_id`` aligned to ``index``."""
    if not path.is_file():
        return None
    df, lines = _read_delimited(
        path, sep=" ", names=["org_id", "remap_id"], dtypes={"remap_id": np.int64}, header=True
    )
    dup = df["remap_id"].duplicated().to_numpy()
    if dup.any():
        row = int(np.argmax(dup))
        raise PolyrecError(f"{path}:{lines[row]}: duplicate remap_id {df['remap_id'][row]}")
    (org,) = _as_ids(df["org_id"])
    return (
        pd.DataFrame({"org_id": org}, index=df["remap_id"].to_numpy())
        .reindex(index)
        .reset_index(drop=True)
    )


def read_sequences(path: str | Path) -> Dataset:
    """S3-Rec ``uid i1 i2 ...`` lines or SASRec ``uid iid`` pairs, in time order.

    Both layouts are the same stream of (user, item) in file order; the position of an item
    within its user's history (0, 1, 2, ...) becomes its timestamp, so time order is kept.
    """
    p = Path(path)
    heads, owner, tails = _int_lines(p)
    users = heads[owner]
    return _build(users, tails, timestamps=rank_within(users), all_users=heads, name=p.stem)


# ---------------------------------------------------------------------------------- LC-Rec
def read_lcrec(path: str | Path) -> Dataset:
    """LC-Rec ``NAME.inter.json`` (``{"uid": [iid, ...]}``, time-ordered) and the optional
    ``NAME.item.json`` (``{"iid": {"title", "description", "brand", "categories"}}``).

    ``path`` is the folder (holding one ``*.inter.json``), the file, or the prefix. Positions
    within a history become timestamps.
    """
    inter = _resolve(path, ".inter.json")
    histories = _load_json(inter)
    if not isinstance(histories, dict):
        raise PolyrecError(f"{inter}: expected a JSON object {{user: [items]}}")
    lists = list(histories.values())
    bad_user = next((u for u, v in histories.items() if not isinstance(v, list)), None)
    if bad_user is not None:
        raise PolyrecError(f"{inter}: user {bad_user!r}: expected a list of item ids")
    lengths = np.fromiter(map(len, lists), np.int64, count=len(lists))
    flat_list = list(chain.from_iterable(lists))
    try:
        flat = np.array(flat_list, dtype=None if flat_list else np.int64)
    except ValueError:  # ragged nested lists
        flat = np.array([], dtype=object)
    if flat.ndim != 1 or len(flat) != len(flat_list) or flat.dtype.kind not in "iu":
        pos = next(i for i, x in enumerate(flat_list) if type(x) is not int)
        user = list(histories)[int(np.searchsorted(np.cumsum(lengths), pos, side="right"))]
        raise PolyrecError(f"{inter}: user {user!r}: item {flat_list[pos]!r} is not an integer id")
    users = np.repeat(np.arange(len(lists)), lengths)
    item_file = inter.with_name(inter.name[: -len(".inter.json")] + ".item.json")
    items = None
    if item_file.is_file():
        meta = _load_json(item_file)
        if not isinstance(meta, dict) or not all(isinstance(v, dict) for v in meta.values()):
            raise PolyrecError(f"{item_file}: expected a JSON object {{item: {{field: value}}}}")
        items = pd.DataFrame.from_dict(meta, orient="index")
        keys = pd.Series(items.index.to_numpy(object))
        if not keys.str.fullmatch(_CANONICAL_INT).all():
            key = keys[~keys.str.fullmatch(_CANONICAL_INT)].iloc[0]
            raise PolyrecError(f"{item_file}: item id {key!r} is not an integer")
        items.index = pd.Index(keys.astype(np.int64).to_numpy())
    (user_ext,) = _as_ids(pd.Series(list(histories), dtype=object))
    return _build(
        user_ext[users],
        flat.astype(np.int64),
        timestamps=np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths),
        all_users=user_ext,
        item_data=items,
        name=inter.name[: -len(".inter.json")],
    )


# ------------------------------------------------------------------------- Amazon reviews
_AMAZON_REQUIRED = ("reviewerID", "asin", "overall", "unixReviewTime")


def read_amazon_reviews(path: str | Path) -> Dataset:
    """Amazon Review Data (2018) reviews: one JSON object per line, gzipped or not.

    ``reviewerID`` / ``asin`` / ``overall`` / ``unixReviewTime`` become user, item, rating and
    timestamp; ``interaction_data`` holds ``review`` (the ``summary`` and the ``reviewText``
    joined with ". ", what preference generators read) and ``summary``. ``item_data["style"]``
    is each item's most frequent ``style`` (e.g. "Size: 7.0 oz; Flavor: Classic Ice Blue"), the
    only item description these files carry (titles are in the separate ``meta_*`` files).
    """
    file = Path(path)
    raw = _read_bytes(file)
    try:
        text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
    except (OSError, EOFError, zlib.error) as exc:
        raise PolyrecError(f"{file}: not a readable gzip file ({exc})") from None
    except UnicodeDecodeError as exc:
        raise PolyrecError(f"{file}: not UTF-8 text ({exc.reason})") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PolyrecError(f"{file}:{number}: invalid JSON ({exc.msg})") from None
        missing = [k for k in _AMAZON_REQUIRED if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise PolyrecError(f"{file}:{number}: no field {missing[0]!r}")
        rating = rec["overall"]
        if not isinstance(rating, int | float) or not math.isfinite(rating):
            raise PolyrecError(f"{file}:{number}: 'overall' must be a finite number")
        if not isinstance(rec["unixReviewTime"], int):
            raise PolyrecError(f"{file}:{number}: 'unixReviewTime' must be an integer")
        records.append(rec)
    if not records:
        raise PolyrecError(f"{file}: no review")
    frame = pd.DataFrame.from_records(records)
    summary = frame.get("summary", pd.Series("", index=frame.index)).fillna("").astype(str)
    body = frame.get("reviewText", pd.Series("", index=frame.index)).fillna("").astype(str)
    review = (summary.str.strip() + ". " + body.str.strip()).str.strip(". ")
    style = frame.get("style", pd.Series(None, index=frame.index)).map(_style_text)
    items = (
        pd.DataFrame({"asin": frame["asin"].astype(str), "style": style})
        .loc[lambda f: f["style"] != ""]
        .groupby("asin")["style"]
        .agg(lambda s: s.value_counts().index[0])
        .to_frame()
    )
    return _build(
        frame["reviewerID"].astype(str).to_numpy(object),
        frame["asin"].astype(str).to_numpy(object),
        timestamps=frame["unixReviewTime"].to_numpy(np.int64),
        ratings=frame["overall"].to_numpy(np.float32),
        item_data=items.reindex(frame["asin"].astype(str).unique(), fill_value=""),
        interaction_data=pd.DataFrame({"review": review, "summary": summary}),
        name=file.name.split(".json")[0],
    )


def _style_text(style: Any) -> str:
    """``{"Size:": " 7.0 oz", "Flavor:": " Ice"}`` -> ``"Size: 7.0 oz; Flavor: Ice"``."""
    if not isinstance(style, dict):
        return ""
    return "; ".join(f"{str(k).rstrip(':').strip()}: {str(v).strip()}" for k, v in style.items())


# ---------------------------------------------------------------------------------- tables
def read_table(
    path: str | Path,
    columns: Mapping[str, str],
    *,
    sep: str | None = None,
    name: str | None = None,
) -> Dataset:
    """Any CSV/TSV/Parquet file with a column mapping.

    ``columns`` maps ``user``, ``item`` (required), ``timestamp``, ``rating`` to the file's
    column names. ``sep`` defaults to the extension (``.csv`` -> ``,``, ``.tsv``/``.tab`` ->
    tab) or is sniffed from the header. Timestamps may be numbers or date strings (-> seconds
    since the epoch, UTC).
    """
    p = Path(path)
    unknown = set(columns) - {"user", "item", "timestamp", "rating"}
    if unknown or not {"user", "item"} <= set(columns):
        raise PolyrecError(
            "columns must map user, item (and optionally timestamp, rating) to file columns; "
            f"got {dict(columns)}"
        )
    if not p.is_file():
        raise PolyrecError(f"{p}: file not found")
    wanted = list(columns.values())
    parquet = p.suffix.lower() in (".parquet", ".pq")
    if parquet:
        import pyarrow.parquet as pq

        try:
            available = pq.read_schema(p).names
        except Exception as exc:
            raise PolyrecError(f"{p}: not a readable Parquet file ({exc})") from exc
        _check_columns(p, wanted, available)
        df = pd.read_parquet(p, columns=wanted, engine="pyarrow")
    else:
        _check_utf8(p, _read_bytes(p))
        sep = sep or _guess_sep(p)
        ids = {columns["user"]: str, columns["item"]: str}
        try:
            available = list(pd.read_csv(p, sep=sep, nrows=0).columns)
            _check_columns(p, wanted, available)
            df = pd.read_csv(p, sep=sep, dtype=ids, engine="c")  # no usecols: hides ragged rows
        except pd.errors.ParserError as exc:
            raise parser_error(p, exc) from None
    frame = pd.DataFrame({ours: df[theirs] for ours, theirs in columns.items()})

    def where(row: int) -> str:
        return f"{p}: row {row}" if parquet else f"{p}:{_csv_line_of_row(p, sep, row)}"

    for col in ("user", "item"):
        missing = frame[col].isna().to_numpy()
        if missing.any():
            raise PolyrecError(f"{where(int(np.argmax(missing)))}: missing {columns[col]}")
    timestamps = ratings = None
    if "rating" in columns:
        raw = frame["rating"]
        ratings = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64)
        bad = np.isnan(ratings)
        if bad.any():
            row = int(np.argmax(bad))
            value = raw.iloc[row]
            what = "is missing or NaN" if pd.isna(value) else f"{value!r} is not a number"
            raise PolyrecError(f"{where(row)}: {columns['rating']} {what}")
    if "timestamp" in columns:
        timestamps = _to_seconds(frame["timestamp"], columns["timestamp"], where)
    users, items = frame["user"].to_numpy(), frame["item"].to_numpy()
    if not parquet:  # text ids: all canonical integers -> int64, else strings
        (users,), (items,) = _as_ids(frame["user"]), _as_ids(frame["item"])
    return _build(
        users,
        items,
        timestamps=timestamps,
        ratings=None if ratings is None else ratings.astype(np.float32),
        name=name or p.stem,
    )


def read_item_table(path: str | Path, id_column: str, *, sep: str = "\t") -> pd.DataFrame:
    """An item metadata table (quoted fields may hold separators and newlines), indexed by
    ``id_column``; integer-looking ids become ``int64``."""
    p = Path(path)
    if not p.is_file():
        raise PolyrecError(f"{p}: file not found")
    _check_utf8(p, _read_bytes(p))
    try:
        df = pd.read_csv(p, sep=sep, dtype={id_column: str}, keep_default_na=False, na_values=[""])
    except pd.errors.ParserError as exc:
        raise parser_error(p, exc) from None
    _check_columns(p, [id_column], list(df.columns))
    ids = df.pop(id_column)
    if ids.isna().any():
        row = int(np.argmax(ids.isna().to_numpy()))
        raise PolyrecError(f"{p}:{_csv_line_of_row(p, sep, row)}: missing {id_column}")
    dup = ids.duplicated().to_numpy()
    if dup.any():
        row = int(np.argmax(dup))
        line = _csv_line_of_row(p, sep, row)
        raise PolyrecError(f"{p}:{line}: duplicate {id_column} {ids.iloc[row]!r}")
    (index,) = _as_ids(ids)
    df.index = pd.Index(index)
    return df


def attach_side_data(
    ds: Dataset,
    *,
    item_data: pd.DataFrame | None = None,
    user_data: pd.DataFrame | None = None,
) -> Dataset:
    """A copy of ``ds`` with side data (indexed by external id) aligned to its id maps and
    joined to the side data it already has. Rows for unknown ids are ignored."""
    items = _join_side(ds.item_data, item_data, ds.item_ids)
    users = _join_side(ds.user_data, user_data, ds.user_ids)
    return replace(ds, item_data=items, user_data=users)


# ---------------------------------------------------------------------------------- helpers
def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PolyrecError(f"{path}: file not found") from None
    except OSError as exc:
        raise PolyrecError(f"{path}: cannot read ({exc.strerror})") from None


def _resolve(path: str | Path, suffix: str) -> Path:
    """A folder holding exactly one ``*suffix`` file, the file itself, or a prefix."""
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob(f"*{suffix}"))
        if len(found) != 1:
            what = "no" if not found else f"{len(found)} ({', '.join(f.name for f in found)})"
            raise PolyrecError(f"{p}: expected one *{suffix} file, found {what}")
        return found[0]
    if p.name.endswith(suffix):
        if not p.is_file():
            raise PolyrecError(f"{p}: file not found")
        return p
    full = p.with_name(p.name + suffix)
    if not full.is_file():
        raise PolyrecError(f"{full}: file not found")
    return full


def _load_json(path: Path) -> Any:
    try:
        return json.loads(_read_bytes(path))
    except json.JSONDecodeError as exc:
        raise PolyrecError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise PolyrecError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _int_lines(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse whitespace-separated integer lines ``head tail1 tail2 ...`` without a Python loop.

    Returns ``heads`` (first value of every non-blank line), ``owner`` (index into ``heads`` of
    each tail value) and ``tails`` (all other values in file order).
    """
    data = _read_bytes(path)
    if not data.strip():
        raise PolyrecError(f"{path}: no data")
    buf = np.frombuffer(data, np.uint8)
    ws = _WHITESPACE[buf]
    prev_ws = np.concatenate([[True], ws[:-1]])
    next_ws = np.concatenate([ws[1:], [True]])
    starts = np.flatnonzero(~ws & prev_ws)
    ends = np.flatnonzero(~ws & next_ws)  # inclusive
    newlines = np.flatnonzero(buf == 10)
    ok = _DIGIT[buf] | ws
    ok[starts] |= (buf[starts] == 45) & (ends > starts)  # a leading minus before digits
    bad_pos = np.flatnonzero(~ok)
    long_tok = np.flatnonzero(ends - starts >= _MAX_DIGITS + (buf[starts] == 45))
    if len(bad_pos) or len(long_tok):
        tok_of_bad = np.searchsorted(starts, bad_pos, side="right") - 1
        t = int(min(np.concatenate([tok_of_bad, long_tok])))
        token = data[starts[t] : ends[t] + 1].decode("utf-8", errors="replace")
        line = int(np.searchsorted(newlines, starts[t])) + 1
        raise PolyrecError(f"{path}:{line}: {token[:40]!r} is not an integer id")
    # value = sum of digit * 10**(places to the token's end), summed per token in int64
    lengths = ends - starts + 1
    pos = np.flatnonzero(~ws)
    places = np.repeat(ends, lengths) - pos
    byte = buf[pos].astype(np.int64)
    contrib = np.where(byte == 45, 0, (byte - 48) * _POW10[places])
    values = np.add.reduceat(contrib, np.cumsum(lengths) - lengths)
    values[buf[starts] == 45] *= -1
    line = np.searchsorted(newlines, starts)
    first = np.concatenate([[True], line[1:] != line[:-1]])
    owner = np.cumsum(first) - 1
    return values[first], owner[~first], values[~first]


def _read_delimited(
    path: Path,
    *,
    sep: str,
    names: list[str],
    dtypes: Mapping[str, Any],
    encoding: str = "utf-8",
    header: bool = False,
    data: bytes | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Parse an unquoted delimited file whose non-blank lines all have ``len(names)`` fields.

    Columns not in ``dtypes`` are read as text (empty fields stay ``""``); numeric columns
    read ``""``/``nan``/``NA`` as NaN. Returns the frame and the 1-based line of each row.
    """
    if data is None:
        data = _read_bytes(path)
    if encoding == "utf-8":
        _check_utf8(path, data)
    lines = _field_lines(path, data, sep.encode(), len(names), skip=int(header))
    if len(sep) > 1:
        data = data.replace(sep.encode(), b"\x1f")
        sep = "\x1f"
    numeric = [c for c, t in dtypes.items() if t is not str]
    dtypes = {c: dtypes.get(c, str) for c in names}

    def parse(types: Mapping[str, Any]) -> pd.DataFrame:
        return pd.read_csv(
            io.BytesIO(data),
            sep=sep,
            header=None,
            names=names,
            skiprows=int(header),
            dtype=types,
            quoting=csv.QUOTE_NONE,
            encoding=encoding,
            keep_default_na=False,
            na_values={c: _NA for c in numeric},
            engine="c",
        )

    try:
        return parse(dtypes), lines
    except (ValueError, OverflowError) as exc:
        error = exc
    text = parse(dict.fromkeys(names, str))  # the NA spellings of numeric columns -> NaN
    for col in numeric:
        raw = text[col]
        num = pd.to_numeric(raw, errors="coerce")
        missing = raw.isna().to_numpy()
        integer = np.issubdtype(dtypes[col], np.integer)
        bad = num.isna().to_numpy() & ~missing
        if integer:
            bad |= missing | (num.fillna(0) != num.fillna(0).round()).to_numpy()
        if bad.any():
            row = int(np.argmax(bad))
            if missing[row]:
                what = "is missing"
            else:
                what = f"{raw.iloc[row]!r} is not {'an integer' if integer else 'a number'}"
            raise PolyrecError(f"{path}:{lines[row]}: {col} {what}")
    raise PolyrecError(f"{path}: cannot parse ({error})")


def _field_lines(path: Path, data: bytes, sep: bytes, n_fields: int, skip: int) -> np.ndarray:
    """Check every non-blank line after ``skip`` has ``n_fields`` fields (vectorised over the
    bytes); return the 1-based line number of each data line."""
    if not data:
        raise PolyrecError(f"{path}: no data lines")
    buf = np.frombuffer(data, np.uint8)
    newlines = np.flatnonzero(buf == 10)
    line_start = np.concatenate([[0], newlines + 1])
    line_end = np.concatenate([newlines, [len(buf)]])
    has_cr = (line_end > line_start) & (buf[np.maximum(line_end - 1, 0)] == 13)
    blank = line_end - line_start - has_cr == 0
    if len(sep) == 1:
        hits = np.flatnonzero(buf == sep[0])
    else:
        match = np.ones(max(len(buf) - len(sep) + 1, 0), bool)
        for k, byte in enumerate(sep):
            match &= buf[k : len(buf) - len(sep) + 1 + k] == byte
        hits = np.flatnonzero(match)
    fields = np.bincount(np.searchsorted(newlines, hits), minlength=len(line_start)) + 1
    data_line = ~blank
    data_line[:skip] = False
    wrong = data_line & (fields != n_fields)
    if wrong.any():
        i = int(np.argmax(wrong))
        raise PolyrecError(
            f"{path}:{i + 1}: expected {n_fields} fields separated by {sep.decode()!r}, "
            f"found {fields[i]}"
        )
    out = np.flatnonzero(data_line) + 1
    if len(out) == 0:
        raise PolyrecError(f"{path}: no data lines")
    return out


def _check_no_nan(path: Path, values: np.ndarray, lines: np.ndarray, what: str) -> None:
    nan = np.isnan(values)
    if nan.any():
        raise PolyrecError(f"{path}:{lines[np.argmax(nan)]}: {what} is missing or NaN")


def _as_ids(*columns: pd.Series | None) -> tuple[np.ndarray, ...]:
    """Text id columns -> int64 arrays when every id in all of them is a canonical integer
    (so ids from different files still join), else object arrays of strings."""
    present = [c for c in columns if c is not None]
    as_int = all(c.astype(str).str.fullmatch(_CANONICAL_INT).all() for c in present)
    return tuple(
        None if c is None else (c.astype(np.int64) if as_int else c.astype(str)).to_numpy()
        for c in columns
    )


def _sorted_index(values: np.ndarray) -> pd.Index:
    """Unique values, sorted when comparable."""
    return sorted_ids(pd.Index(pd.unique(values)))


def _build(
    users: np.ndarray,
    items: np.ndarray,
    *,
    name: str,
    timestamps: np.ndarray | None = None,
    ratings: np.ndarray | None = None,
    all_users: np.ndarray | None = None,
    item_data: pd.DataFrame | None = None,
    user_data: pd.DataFrame | None = None,
    interaction_data: pd.DataFrame | None = None,
) -> Dataset:
    """Dataset over sorted ids of the interactions (plus ``all_users``), side data aligned."""
    user_index = _sorted_index(users if all_users is None else np.concatenate([users, all_users]))
    item_index = _sorted_index(items)
    return Dataset(
        users=user_index.get_indexer(users),
        items=item_index.get_indexer(items),
        user_ids=IdMap(user_index.to_numpy()),
        item_ids=IdMap(item_index.to_numpy()),
        timestamps=timestamps,
        ratings=ratings,
        item_data=None if item_data is None else _reindex(item_data, item_index),
        user_data=None if user_data is None else _reindex(user_data, user_index),
        interaction_data=interaction_data,
        name=name,
    )


def _reindex(frame: pd.DataFrame, index: pd.Index) -> pd.DataFrame:
    return frame.reindex(index).reset_index(drop=True)


def _join_side(
    current: pd.DataFrame | None, extra: pd.DataFrame | None, ids: IdMap
) -> pd.DataFrame | None:
    if extra is None:
        return current
    aligned = _reindex(extra, pd.Index(ids.external))
    if current is None:
        return aligned
    return pd.concat([current.drop(columns=aligned.columns, errors="ignore"), aligned], axis=1)


def _check_columns(path: Path, wanted: list[str], available: list[str]) -> None:
    missing = [c for c in wanted if c not in available]
    if missing:
        raise PolyrecError(f"{path}: no column {missing[0]!r}; columns are {available}")


def _guess_sep(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return ","
    if suffix in (".tsv", ".tab"):
        return "\t"
    with path.open(encoding="utf-8", errors="replace") as f:
        first = f.readline()
    return max(",\t;|", key=first.count)


def _check_utf8(path: Path, data: bytes) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PolyrecError(f"{path}:{line}: not UTF-8 text") from None


def parser_error(path: Path, exc: Exception) -> PolyrecError:
    """A pandas parser error as ``file:line: message`` (the line when pandas names one)."""
    message = str(exc).strip().splitlines()[-1]
    found = re.search(r"line (\d+)", message)
    return PolyrecError(f"{path}:{found.group(1)}: {message}" if found else f"{path}: {message}")


def _csv_line_of_row(path: Path, sep: str | None, row: int) -> int:
    """The 1-based line where data row ``row`` of a headed CSV starts (quotes and blank lines
    respected). Only called to report an error."""
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter=sep or ",")
        start = 1
        seen = -1  # the header is row -1
        for record in reader:
            if record:
                if seen == row:
                    return start
                seen += 1
            start = reader.line_num + 1
    return start


def _to_seconds(raw: pd.Series, column: str, where: Any) -> np.ndarray:
    """Numeric timestamps as they are; date strings -> seconds since the epoch (UTC)."""
    if pd.api.types.is_datetime64_any_dtype(raw):
        dt = pd.to_datetime(raw, utc=True)
    elif pd.api.types.is_numeric_dtype(raw):
        values = raw.to_numpy(np.float64)
        if np.isnan(values).any():
            raise PolyrecError(f"{where(int(np.argmax(np.isnan(values))))}: {column} is missing")
        return values
    else:
        numbers = pd.to_numeric(raw, errors="coerce")
        if numbers.notna().mean() > 0.5:  # numbers with a bad cell, not dates
            row = int(np.argmax(numbers.isna().to_numpy()))
            raise PolyrecError(f"{where(row)}: {column} {raw.iloc[row]!r} is not a number")
        try:
            dt = pd.to_datetime(raw, utc=True, errors="coerce", format="mixed")
        except (pd.errors.OutOfBoundsDatetime, OverflowError):  # e.g. "1001" read as a year
            row = next(i for i, v in enumerate(raw) if not _is_date(v))
            raise PolyrecError(f"{where(row)}: {column} {raw.iloc[row]!r} is not a date") from None
    bad = dt.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise PolyrecError(f"{where(row)}: {column} {raw.iloc[row]!r} is not a number or date")
    # microseconds: nanoseconds overflow before 1678 and after 2261
    return dt.dt.as_unit("us").astype("int64").to_numpy(np.float64) / 1e6


def _is_date(value: Any) -> bool:
    try:
        return not pd.isna(pd.to_datetime(value, utc=True))
    except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime):
        return False
