"""Atomic-file reader: parsing, tolerated formatting, and a clear error for every bad input."""

from __future__ import annotations

import numpy as np
import pytest

from kgglm.data.atomic import DatasetError, read_atomic, read_header

INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t100\n2\t20\t3.5\t200\n"


def write(tmp_path, text: str | bytes, name: str = "toy.inter"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_reads_tokens_and_floats(tmp_path):
    table = read_atomic(write(tmp_path, INTER), required=("user_id", "item_id"))
    assert table.types == {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"}
    assert table.column("user_id").tolist() == ["1", "2"]
    assert table.column("rating").dtype == np.float64
    np.testing.assert_allclose(table.column("rating"), [4.0, 3.5])
    assert table.lines.tolist() == [2, 3]


def test_usecols_skips_absent_optional_fields(tmp_path):
    table = read_atomic(write(tmp_path, INTER), usecols=("user_id", "item_id", "no_such_field"))
    assert list(table.frame.columns) == ["user_id", "item_id"]


def test_crlf_bom_and_blank_lines_are_tolerated(tmp_path):
    messy = ("\ufeff" + INTER.replace("\n", "\r\n") + "\r\n\n\n").encode("utf-8")
    clean = read_atomic(write(tmp_path, INTER, "a.inter"))
    table = read_atomic(write(tmp_path, messy, "b.inter"))
    assert table.types == clean.types
    for name in clean.types:
        assert table.column(name).tolist() == clean.column(name).tolist()


def test_blank_line_in_middle_keeps_line_numbers(tmp_path):
    text = INTER + "\n3\t30\t1\t300\n4\t40\tbad\t400\n"
    with pytest.raises(DatasetError) as err:
        read_atomic(write(tmp_path, text))
    assert "toy.inter line 6" in str(err.value) and "'rating'" in str(err.value)


def test_token_seq_and_float_seq(tmp_path):
    text = "item_id:token\tmovie_title:token_seq\temb:float_seq\n1\tToy  Story\t0.5 1\n2\tHeat\t\n"
    table = read_atomic(write(tmp_path, text, "toy.item"))
    assert table.column("movie_title").tolist() == ["Toy  Story", "Heat"]  # as written; split on spaces by users
    assert table.column("emb").tolist() == [(0.5, 1.0), ()]
    bad = text.replace("0.5 1", "0.5 x")
    with pytest.raises(DatasetError, match=r"toy.item line 2, field 'emb'.*float_seq"):
        read_atomic(write(tmp_path, bad, "toy.item"))


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"nothere.inter: file not found"):
        read_atomic(tmp_path / "nothere.inter")


def test_header_without_type(tmp_path):
    path = write(tmp_path, "user_id\titem_id:token\n1\t2\n")
    with pytest.raises(DatasetError, match=r"toy.inter line 1: header field 'user_id' has no type"):
        read_atomic(path)


def test_header_unknown_type_and_duplicate(tmp_path):
    with pytest.raises(DatasetError, match=r"toy.inter line 1, field 'rating': unknown type 'int'"):
        read_atomic(write(tmp_path, "user_id:token\trating:int\n1\t2\n"))
    with pytest.raises(DatasetError, match=r"toy.inter line 1, field 'user_id': appears twice"):
        read_atomic(write(tmp_path, "user_id:token\tuser_id:token\n1\t2\n"))


def test_header_missing_required_field(tmp_path):
    path = write(tmp_path, "user_id:token\trating:float\n1\t2\n")
    with pytest.raises(DatasetError, match=r"toy.inter line 1: header lacks required field 'item_id'"):
        read_atomic(path, required=("user_id", "item_id"))
    assert read_header(path) == {"user_id": "token", "rating": "float"}


@pytest.mark.parametrize("row,line", [("5\t6\t7", 4), ("5", 4), ("5\t6\t1\t2\t9", 4)])
def test_wrong_number_of_columns(tmp_path, row, line):
    path = write(tmp_path, INTER + row + "\n" + "7\t8\t1\t1\n")
    with pytest.raises(DatasetError) as err:
        read_atomic(path)
    msg = str(err.value)
    assert f"toy.inter line {line}:" in msg and "expected 4" in msg


def test_wrong_columns_on_last_line_without_newline(tmp_path):
    with pytest.raises(DatasetError, match=r"toy.inter line 4: found 2 .*expected 4"):
        read_atomic(write(tmp_path, INTER + "5\t6"))


def test_non_numeric_float(tmp_path):
    path = write(tmp_path, INTER + "3\t30\tfive\t300\n")
    with pytest.raises(DatasetError) as err:
        read_atomic(path)
    msg = str(err.value)
    assert "toy.inter line 4, field 'rating'" in msg and "'five'" in msg and "expected a float" in msg


def test_empty_float_is_nan(tmp_path):
    table = read_atomic(write(tmp_path, INTER + "3\t30\t\t300\n"))
    assert np.isnan(table.column("rating")[2])


def test_empty_file_and_header_only(tmp_path):
    with pytest.raises(DatasetError, match=r"toy.inter line 1: empty header"):
        read_atomic(write(tmp_path, ""))
    with pytest.raises(DatasetError, match=r"toy.inter line 2: no data rows"):
        read_atomic(write(tmp_path, "user_id:token\titem_id:token\n\n"))
    assert len(read_atomic(write(tmp_path, "user_id:token\titem_id:token\n"), allow_empty=True)) == 0


def test_not_utf8(tmp_path):
    path = write(tmp_path, INTER.encode() + b"3\t\xff\xfe\t1\t1\n")
    with pytest.raises(DatasetError, match=r"toy.inter line 4: not UTF-8"):
        read_atomic(path)


def test_crlf_last_token_column_has_no_carriage_return(tmp_path):
    text = b"\xef\xbb\xbfitem_id:token\tentity_id:token\r\n1\tm.1\r\n2\tm.2\r\n\r\n"
    table = read_atomic(write(tmp_path, text, "toy.link"))
    assert table.column("entity_id").tolist() == ["m.1", "m.2"] and table.lines.tolist() == [2, 3]


def test_unused_float_column_is_still_checked(tmp_path):
    # a declared float column that the caller does not ask for must still hold numbers
    path = write(tmp_path, INTER + "3\t30\tabc\t300\n")
    with pytest.raises(DatasetError) as err:
        read_atomic(path, usecols=("user_id", "item_id"))
    msg = str(err.value)
    assert "toy.inter line 4, field 'rating'" in msg and "'abc'" in msg and "expected a float" in msg


def test_unused_float_seq_column_is_still_checked(tmp_path):
    text = "item_id:token\temb:float_seq\n1\t0.5 1\n2\t0.5 x\n"
    with pytest.raises(DatasetError, match=r"toy.item line 3, field 'emb'.*float_seq"):
        read_atomic(write(tmp_path, text, "toy.item"), usecols=("item_id",))
    table = read_atomic(write(tmp_path, text.replace(" x", " 2"), "toy.item"), usecols=("item_id",))
    assert list(table.frame.columns) == ["item_id"]
