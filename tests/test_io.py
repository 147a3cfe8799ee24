"""Readers on tiny files written here: values, id maps, side data, and file:line errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from polyrec.data.io import (
    attach_side_data,
    read_amazon_reviews,
    read_item_table,
    read_lcrec,
    read_lightgcn_split,
    read_movielens,
    read_recbole,
    read_sequences,
    read_table,
    read_user_item_lists,
)
from polyrec.data.synthetic import make_synthetic
from polyrec.errors import PolyrecError


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def frame(ds) -> list[tuple]:
    """Interactions as (user, item, ...) tuples of external ids, in stored order."""
    return [tuple(r) for r in ds.to_frame().itertuples(index=False)]


# ---------------------------------------------------------------------------- MovieLens
ML100K_ITEM = (
    "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "2|GoldenEye (1995)|01-Jan-1995||http://y|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0\n"
    "10|Cité des enfants perdus (1995)|01-Jan-1995||http://z|0|0|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0\n"
    "99|Never Rated (1999)|01-Jan-1999||http://w|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
)


def test_ml100k_ratings_titles_genres_users(tmp_path):
    d = tmp_path / "ml-100k"
    write(d / "u.data", "196\t10\t3\t881250949\n22\t1\t5\t881250000\n196\t2\t1\t881250950\n")
    write(d / "u.item", ML100K_ITEM, "latin-1")
    write(d / "u.user", "22|24|M|technician|85711\n196|53|F|other|94043\n", "latin-1")
    for arg in (d, d / "u.data"):
        ds = read_movielens(arg)
        assert ds.name == "ml-100k"
        assert list(ds.user_ids.external) == [22, 196]
        assert list(ds.item_ids.external) == [1, 2, 10]  # item 99 has no rating: not in catalogue
        assert frame(ds) == [
            (196, 10, 881250949.0, 3.0),
            (22, 1, 881250000.0, 5.0),
            (196, 2, 881250950.0, 1.0),
        ]
        assert ds.ratings.dtype == np.float32
        assert list(ds.item_titles()) == [
            "Toy Story (1995)",
            "GoldenEye (1995)",
            "Cité des enfants perdus (1995)",
        ]
        assert ds.item_data["genres"].tolist() == [
            ["Animation", "Children's", "Comedy"],
            ["Action", "Adventure", "Thriller"],
            ["Drama"],
        ]
        assert ds.user_data.to_dict("list") == {
            "gender": ["M", "F"],
            "age": [24, 53],
            "occupation": ["technician", "other"],
            "zip_code": ["85711", "94043"],
        }


def test_ml1m_dat_files_latin1(tmp_path):
    d = tmp_path / "ml-1m"
    write(d / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    movies = "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
    movies += "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
    movies += "2000::Señor (2000)::Comedy\n"
    write(d / "movies.dat", movies, "latin-1")
    write(d / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n", "latin-1")
    ds = read_movielens(d)
    assert (ds.n_users, ds.n_items, len(ds)) == (2, 2, 3)
    assert list(ds.item_ids.external) == [661, 1193]
    assert ds.item_data["genres"].tolist() == [["Animation", "Children's", "Musical"], ["Drama"]]
    assert ds.user_data["age"].tolist() == [1, 56]
    np.testing.assert_array_equal(ds.timestamps, [978300760, 978302109, 978298413])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1\t2\t3\t4\n1\t2\t3\n", "u.data:2: expected 4 fields separated by '\\t', found 3"),
        ("1\t2\t3\t4\n\nx\t2\t3\t4\n", "u.data:3: user 'x' is not an integer"),
        ("1\t2\t3\t4\n1\t2\t3.5\t4.5\n", "u.data:2: timestamp '4.5' is not an integer"),
        ("1\t2\t3\t4\n1\t2\tgood\t4\n", "u.data:2: rating 'good' is not a number"),
        ("1\t2\t3\t4\n\n\n1\t2\t\t4\n", "u.data:4: rating is missing or NaN"),
        ("1\t2\tnan\t4\n", "u.data:1: rating is missing or NaN"),
        ("1\t2\t3\t4\n1\t\t3\t4\n", "u.data:2: item is missing"),
        ("1\t2\t3\t4\n1\t2\t3\tNA\n", "u.data:2: timestamp is missing"),
    ],
)
def test_movielens_malformed_lines(tmp_path, text, message):
    path = write(tmp_path / "u.data", text)
    with pytest.raises(PolyrecError) as err:
        read_movielens(path)
    assert str(err.value) == f"{path.parent}/{message}"


def test_movielens_missing_files(tmp_path):
    with pytest.raises(PolyrecError, match=r"no u.data \(ml-100k\) or ratings.dat \(ml-1m\)"):
        read_movielens(tmp_path)
    with pytest.raises(PolyrecError, match=r"u\.data: file not found"):
        read_movielens(tmp_path / "u.data")


def test_movielens_dat_field_count_error(tmp_path):
    path = write(tmp_path / "ratings.dat", "1::2::3::4\n1::2::3\n")
    with pytest.raises(PolyrecError, match=r"ratings.dat:2: expected 4 fields separated by '::'"):
        read_movielens(path)


# ---------------------------------------------------------------------------- RecBole
def write_recbole(d: Path, inter: str, item: str | None = None, user: str | None = None) -> Path:
    write(d / "toy.inter", inter)
    if item is not None:
        write(d / "toy.item", item)
    if user is not None:
        write(d / "toy.user", user)
    return d / "toy"


INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\treview:token_seq\n"
    "7\t10\t4\t100\tgreat fun\n"
    "3\t2\t2.5\t50\tmeh\n"
    "7\t2\t5\t120\t\n"
)
ITEM = (
    "item_id:token\tmovie_title:token_seq\tclass:token_seq\tfeat:float_seq\tyear:float\n"
    "2\tThe  Matrix\tAction Sci-Fi\t0.5 1.5\t1999\n"
    "10\tHeat\tCrime\t\t\n"
    "11\tUnrated\tDrama\t1\t2001\n"
)
USER = "user_id:token\tage:token\tgender:token\n3\t20\tF\n7\t31\tM\n"


def test_recbole_fields_and_side_data(tmp_path):
    prefix = write_recbole(tmp_path, INTER, ITEM, USER)
    for arg in (tmp_path, prefix, tmp_path / "toy.inter"):
        ds = read_recbole(arg)
        assert ds.name == "toy"
        assert list(ds.user_ids.external) == [3, 7]
        assert list(ds.item_ids.external) == [2, 10]
        assert frame(ds) == [(7, 10, 100.0, 4.0), (3, 2, 50.0, 2.5), (7, 2, 120.0, 5.0)]
        items = ds.item_data
        assert list(items.columns) == ["title", "class", "feat", "year"]
        assert items["title"].tolist() == ["The  Matrix", "Heat"]
        assert items["class"].tolist() == [["Action", "Sci-Fi"], ["Crime"]]
        np.testing.assert_array_equal(items["feat"][0], [0.5, 1.5])
        assert len(items["feat"][1]) == 0
        assert items["year"][0] == 1999.0 and np.isnan(items["year"][1])
        assert ds.user_data.to_dict("list") == {"age": ["20", "31"], "gender": ["F", "M"]}


def test_recbole_string_tokens_stay_strings(tmp_path):
    inter = "user_id:token\titem_id:token\nalice\t007\nbob\tB01\n"
    ds = read_recbole(write_recbole(tmp_path, inter, "item_id:token\ttitle:token_seq\n007\tBond\n"))
    assert list(ds.user_ids.external) == ["alice", "bob"]
    assert list(ds.item_ids.external) == ["007", "B01"]  # "007" is not a canonical integer
    assert ds.item_titles().tolist() == ["Bond", ""]
    assert ds.ratings is None and ds.timestamps is None


@pytest.mark.parametrize(
    ("inter", "message"),
    [
        ("user_id\titem_id:token\n1\t2\n", "toy.inter:1: header field 'user_id' is not name:type"),
        ("user:token\titem_id:token\n1\t2\n", "toy.inter:1: no user_id field"),
        ("user_id:token\titem_id:token\trating:token\n1\t2\t3\n", "rating must be of type float"),
        (
            "user_id:token\titem_id:token\trating:float\n1\t2\t3\n1\t2\tx\n",
            "toy.inter:3: rating 'x'",
        ),
        (
            "user_id:token\titem_id:token\trating:float\n1\t2\t3\n\n1\t3\tNaN\n",
            "toy.inter:4: rating is",
        ),
        ("user_id:token\titem_id:token\n1\t2\n1\t2\t3\n", "toy.inter:3: expected 2 fields"),
        ("user_id:token\titem_id:token\n1\t2\n\t2\n", "toy.inter:3: empty user_id"),
    ],
)
def test_recbole_errors(tmp_path, inter, message):
    with pytest.raises(PolyrecError, match=message):
        read_recbole(write_recbole(tmp_path, inter))


def test_recbole_side_file_errors(tmp_path):
    item = "item_id:token\tfeat:float_seq\n1\t0.5\n1\t2\n"
    with pytest.raises(PolyrecError, match=r"toy.item:3: duplicate item_id '1'"):
        read_recbole(write_recbole(tmp_path, "user_id:token\titem_id:token\n1\t1\n", item))
    write(tmp_path / "toy.item", "item_id:token\tfeat:float_seq\n1\t0.5 x\n")
    with pytest.raises(PolyrecError, match=r"toy.item:2: feat '0.5 x' is not numbers"):
        read_recbole(tmp_path)


def test_recbole_missing_file(tmp_path):
    with pytest.raises(PolyrecError, match=r"nope.inter: file not found"):
        read_recbole(tmp_path / "nope")
    with pytest.raises(PolyrecError, match=r"expected one \*.inter file, found no"):
        read_recbole(tmp_path)


# ---------------------------------------------------------------------------- uid lists
def test_user_item_lists_keep_bare_users(tmp_path):
    path = write(tmp_path / "train.txt", "0 5 3 7\n2\n1 3\r\n\n")
    ds = read_user_item_lists(path)
    assert list(ds.user_ids.external) == [0, 1, 2]  # user 2 has no items but keeps its id
    assert list(ds.item_ids.external) == [3, 5, 7]
    assert frame(ds) == [(0, 5), (0, 3), (0, 7), (1, 3)]
    assert ds.timestamps is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 1 2\n1 3a 4\n", "x.txt:2: '3a' is not an integer id"),
        ("0 1\n\n\n1 2.0\n", "x.txt:4: '2.0' is not an integer id"),
        ("0 1 - 2\n", "x.txt:1: '-' is not an integer id"),
        ("0 1 1234567890123456789\n", "x.txt:1: '1234567890123456789' is not an integer id"),
        ("\n\n", "x.txt: no data"),
        ("", "x.txt: no data"),
    ],
)
def test_int_lines_errors(tmp_path, text, message):
    path = write(tmp_path / "x.txt", text)
    with pytest.raises(PolyrecError) as err:
        read_user_item_lists(path)
    assert str(err.value) == f"{tmp_path}/{message}"


def test_int_lines_negative_and_large_ids(tmp_path):
    ds = read_user_item_lists(write(tmp_path / "x.txt", "-3 123456789012345678 0\n"))
    assert list(ds.user_ids.external) == [-3]
    assert list(ds.item_ids.external) == [0, 123456789012345678]


def test_lightgcn_split_shares_id_maps(tmp_path):
    write(tmp_path / "train.txt", "0 0 1\n1 2\n3 1\n")
    write(tmp_path / "test.txt", "0 4\n1\n2 0\n")
    write(tmp_path / "item_list.txt", "org_id remap_id\n900 0\n901 1\n902 2\n904 4\n905 5\n")
    write(tmp_path / "user_list.txt", "org_id remap_id\nu0 0\nu1 1\nu2 2\nu3 3\n")
    train, test = read_lightgcn_split(tmp_path)
    assert train.user_ids is test.user_ids and train.item_ids is test.item_ids
    assert list(train.user_ids.external) == [0, 1, 2, 3]  # union: user 2 is only in test
    assert list(train.item_ids.external) == [0, 1, 2, 4]  # 5 is listed but never interacted
    assert frame(train) == [(0, 0), (0, 1), (1, 2), (3, 1)]
    assert frame(test) == [(0, 4), (2, 0)]
    assert train.item_data["org_id"].tolist() == [900, 901, 902, 904]
    assert train.user_data["org_id"].tolist() == ["u0", "u1", "u2", "u3"]


def test_lightgcn_split_missing_test(tmp_path):
    write(tmp_path / "train.txt", "0 1\n")
    with pytest.raises(PolyrecError, match=r"test.txt: file not found"):
        read_lightgcn_split(tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        "1 10 11 12\n2 11 13\n",  # S3-Rec: one user per line
        "1 10\n2 11\n1 11\n1 12\n2 13\n",  # SASRec: (user, item) pairs, users interleaved
    ],
)
def test_sequences_positions_become_timestamps(tmp_path, text):
    ds = read_sequences(write(tmp_path / "Beauty.txt", text))
    assert ds.name == "Beauty"
    seqs = ds.sequences
    assert ds.item_ids.to_external(seqs[0]).tolist() == [10, 11, 12]
    assert ds.item_ids.to_external(seqs[1]).tolist() == [11, 13]
    assert seqs.timestamps.tolist() == [0, 1, 2, 0, 1]


# ---------------------------------------------------------------------------- LC-Rec
def test_lcrec_inter_and_item_json(tmp_path):
    write(tmp_path / "Sci.inter.json", json.dumps({"0": [3, 1, 3], "1": [1], "2": []}))
    meta = {
        "1": {"title": "Tape", "description": "sticky", "brand": "3M", "categories": "A,B"},
        "3": {"title": "Glue", "description": "", "brand": "X", "categories": "A"},
        "9": {"title": "Unused", "description": "", "brand": "", "categories": ""},
    }
    write(tmp_path / "Sci.item.json", json.dumps(meta, indent=2))
    for arg in (tmp_path, tmp_path / "Sci", tmp_path / "Sci.inter.json"):
        ds = read_lcrec(arg)
        assert ds.name == "Sci"
        assert list(ds.user_ids.external) == [0, 1, 2]
        assert list(ds.item_ids.external) == [1, 3]
        assert frame(ds) == [(0, 3, 0.0), (0, 1, 1.0), (0, 3, 2.0), (1, 1, 0.0)]
        assert ds.item_titles().tolist() == ["Tape", "Glue"]
        assert list(ds.item_data.columns) == ["title", "description", "brand", "categories"]


def test_lcrec_errors(tmp_path):
    write(tmp_path / "S.inter.json", '{\n"0": [1, 2],\n"1": [3,, 4]\n}')
    with pytest.raises(PolyrecError, match=r"S.inter.json:3: invalid JSON"):
        read_lcrec(tmp_path / "S")
    write(tmp_path / "S.inter.json", json.dumps({"0": [1, 2], "1": [3, "4x"]}))
    with pytest.raises(PolyrecError, match=r"S.inter.json: user '1': item '4x' is not an integer"):
        read_lcrec(tmp_path / "S")
    write(tmp_path / "S.inter.json", json.dumps({"0": [1, 2.5]}))
    with pytest.raises(PolyrecError, match=r"user '0': item 2.5 is not an integer"):
        read_lcrec(tmp_path / "S")
    write(tmp_path / "S.inter.json", json.dumps({"0": 1}))
    with pytest.raises(PolyrecError, match=r"user '0': expected a list"):
        read_lcrec(tmp_path / "S")
    with pytest.raises(PolyrecError, match=r"T.inter.json: file not found"):
        read_lcrec(tmp_path / "T")


# ---------------------------------------------------------------------------- tables
def test_read_table_csv_with_dates_and_mapping(tmp_path):
    path = write(
        tmp_path / "log.csv",
        "uid,iid,when,stars,extra\n"
        'b,x,2024-01-01T00:00:10Z,4,"a, b"\n'
        "a,y,2024-01-01T00:00:00Z,5,z\n",
    )
    cols = {"user": "uid", "item": "iid", "timestamp": "when", "rating": "stars"}
    ds = read_table(path, cols)
    t0 = pd.Timestamp("2024-01-01", tz="UTC").timestamp()
    assert frame(ds) == [("b", "x", t0 + 10, 4.0), ("a", "y", t0, 5.0)]
    assert ds.name == "log"


def test_read_table_tsv_sniffed_and_parquet(tmp_path):
    df = pd.DataFrame({"u": [3, 1, 3], "i": [7, 7, 8], "t": [5.0, 6.0, 7.0]})
    df.to_csv(tmp_path / "log.txt", sep="\t", index=False)
    df.to_parquet(tmp_path / "log.parquet")
    for name in ("log.txt", "log.parquet"):
        ds = read_table(tmp_path / name, {"user": "u", "item": "i", "timestamp": "t"})
        assert frame(ds) == [(3, 7, 5.0), (1, 7, 6.0), (3, 8, 7.0)]
        assert ds.ratings is None
    path = write(tmp_path / "ids.csv", "u,i\n10,007\n9,8\n")
    ds = read_table(path, {"user": "u", "item": "i"})
    assert list(ds.user_ids.external) == [9, 10]
    assert list(ds.item_ids.external) == ["007", "8"]  # "007" is not a canonical integer


def test_read_table_errors_name_file_and_line(tmp_path):
    # a quoted newline in row 1 and a blank line: the bad row 2 starts on line 5
    path = write(tmp_path / "r.csv", 'u,i,r,note\n1,2,3,"two\nlines"\n\n1,3,,ok\n')
    with pytest.raises(PolyrecError, match=r"r.csv:5: r is missing or NaN"):
        read_table(path, {"user": "u", "item": "i", "rating": "r"})
    write(tmp_path / "r.csv", "u,i,r\n1,2,3\n1,3,bad\n")
    with pytest.raises(PolyrecError, match=r"r.csv:3: r 'bad' is not a number"):
        read_table(path, {"user": "u", "item": "i", "rating": "r"})
    write(tmp_path / "r.csv", "u,i,t\n1,2,1\n1,3,notadate\n1,4,5\n")  # numbers, one bad
    with pytest.raises(PolyrecError, match=r"r.csv:3: t 'notadate' is not a number$"):
        read_table(path, {"user": "u", "item": "i", "timestamp": "t"})
    write(tmp_path / "r.csv", "u,i,t\n1,2,2020-01-01\n1,3,1001-06-01\n")  # before 1678
    early = read_table(path, {"user": "u", "item": "i", "timestamp": "t"}).timestamps
    assert early.tolist() == [1577836800.0, -30565641600.0]
    write(tmp_path / "r.csv", "u,i,r\n1,2,3\n,3,3\n")
    with pytest.raises(PolyrecError, match=r"r.csv:3: missing u"):
        read_table(path, {"user": "u", "item": "i"})
    write(tmp_path / "r.csv", "u,i,r\n1,2,3\n1,2,3,4\n")
    with pytest.raises(PolyrecError, match=r"r.csv:3: .*Expected 3 fields"):
        read_table(path, {"user": "u", "item": "i"})
    with pytest.raises(PolyrecError, match=r"r.csv: no column 'when'; columns are"):
        read_table(path, {"user": "u", "item": "i", "timestamp": "when"})
    with pytest.raises(PolyrecError, match=r"columns must map user, item"):
        read_table(path, {"user": "u", "thing": "i"})
    path.write_bytes(b"u,i\n1,2\n1,\xff\n")
    with pytest.raises(PolyrecError, match=r"r.csv:3: not UTF-8 text"):
        read_table(path, {"user": "u", "item": "i"})
    with pytest.raises(PolyrecError, match=r"gone.csv: file not found"):
        read_table(tmp_path / "gone.csv", {"user": "u", "item": "i"})
    pd.DataFrame({"u": [1, 2], "i": [1, None]}).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(PolyrecError, match=r"p.parquet: row 1: missing i"):
        read_table(tmp_path / "p.parquet", {"user": "u", "item": "i"})


def test_item_table_quoted_tabs_and_newlines(tmp_path):
    path = write(
        tmp_path / "items.tsv",
        'item_id\ttitle\tprice\n2\t"Nail\tPolish ""Red"""\t3.5\n1\t"two\nlines"\t\n',
    )
    meta = read_item_table(path, "item_id")
    assert meta.index.tolist() == [2, 1]
    assert meta["title"].tolist() == ['Nail\tPolish "Red"', "two\nlines"]
    assert meta["price"][2] == 3.5 and np.isnan(meta["price"][1])
    write(tmp_path / "items.tsv", "item_id\ttitle\n1\ta\n1\tb\n")
    with pytest.raises(PolyrecError, match=r"items.tsv:3: duplicate item_id '1'"):
        read_item_table(path, "item_id")


def test_attach_side_data_aligns_and_joins(tmp_path):
    ds = read_sequences(write(tmp_path / "s.txt", "1 30 10\n2 20\n"))
    ds = attach_side_data(ds, item_data=pd.DataFrame({"title": ["ten", "x"]}, index=[10, 99]))
    ds = attach_side_data(
        ds,
        item_data=pd.DataFrame({"brand": ["b20", "b30"]}, index=[20, 30]),
        user_data=pd.DataFrame({"age": [40]}, index=[2]),
    )
    assert ds.item_data["title"].tolist()[0] == "ten"
    assert ds.item_data["title"].isna().tolist() == [False, True, True]
    assert ds.item_data["brand"].tolist()[1:] == ["b20", "b30"]
    assert ds.user_data["age"].isna().tolist() == [True, False]
    assert ds.order_only  # positions in the file, not times


def test_attach_side_data_keeps_interaction_data():
    ds = make_synthetic(20, 10, 100, seed=0)
    out = attach_side_data(ds, item_data=pd.DataFrame({"x": [1]}, index=[ds.item_ids.external[0]]))
    assert out.interaction_data is ds.interaction_data and out.timestamps is ds.timestamps


# ------------------------------------------------------------------------- Amazon reviews
AMAZON_LINES = [
    {"overall": 5.0, "reviewerID": "U2", "asin": "B1", "unixReviewTime": 300,
     "summary": "Great", "reviewText": "Smells nice.", "style": {"Size:": " 7 oz"}},
    {"overall": 2.0, "reviewerID": "U1", "asin": "B1", "unixReviewTime": 100,
     "reviewText": "Too strong", "style": {"Size:": " 7 oz"}},
    {"overall": 4.0, "reviewerID": "U1", "asin": "B2", "unixReviewTime": 200,
     "summary": "Fine", "style": {"Color:": " Red", "Size:": " S"}},
    {"overall": 3.0, "reviewerID": "U2", "asin": "B3", "unixReviewTime": 400},
]  # fmt: skip


def test_amazon_reviews_gzipped_json_lines(tmp_path):
    path = tmp_path / "All_Beauty_5.json.gz"
    path.write_bytes(gzip.compress("\n".join(map(json.dumps, AMAZON_LINES)).encode()))
    ds = read_amazon_reviews(path)
    assert (ds.n_users, ds.n_items, ds.n_interactions, ds.name) == (2, 3, 4, "All_Beauty_5")
    assert ds.user_ids.to_external(ds.users).tolist() == ["U2", "U1", "U1", "U2"]
    assert ds.ratings.tolist() == [5.0, 2.0, 4.0, 3.0]
    assert ds.timestamps.tolist() == [300, 100, 200, 400]
    assert ds.interaction_data["review"].tolist() == [
        "Great. Smells nice",
        "Too strong",
        "Fine",
        "",
    ]
    assert ds.item_data["style"].tolist() == ["Size: 7 oz", "Color: Red; Size: S", ""]
    plain = tmp_path / "plain.json"
    plain.write_text("\n".join(map(json.dumps, AMAZON_LINES)) + "\n\n")
    assert read_amazon_reviews(plain).n_interactions == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"overall": 5, "asin": "B1", "unixReviewTime": 1}', "x.json:1: no field 'reviewerID'"),
        ('{"overall": 5, "reviewerID": "U", "asin": "B", "unixReviewTime": 1}\n{bad',
         "x.json:2: invalid JSON"),
        ('{"overall": "5", "reviewerID": "U", "asin": "B", "unixReviewTime": 1}',
         "x.json:1: 'overall' must be a finite number"),
        ('{"overall": NaN, "reviewerID": "U", "asin": "B", "unixReviewTime": 1}',
         "x.json:1: 'overall' must be a finite number"),
        ('{"overall": 5, "reviewerID": "U", "asin": "B", "unixReviewTime": "1"}',
         "x.json:1: 'unixReviewTime' must be an integer"),
        ("", "x.json: no review"),
    ],
)  # fmt: skip
def test_amazon_reviews_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(PolyrecError, match=message):
        read_amazon_reviews(path)
