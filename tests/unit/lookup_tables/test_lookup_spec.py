"""Table specs: identifiers are checked and physical names never exceed PostgreSQL's 63 characters."""

from __future__ import annotations

import numpy as np
import pytest

from lookup_tables import KeyColumn, TableSpec

pytestmark = pytest.mark.unit


def spec(name: str = "lt_items", keys: tuple[KeyColumn, ...] = (KeyColumn("item_id", "int"),)) -> TableSpec:
    return TableSpec(usecase="items", name=name, keys=keys, keep_versions=2)


def test_version_tables_and_indexes_are_named_after_the_view() -> None:
    assert spec().version_table(7) == "lt_items__v7"
    assert spec().key_index(7) == "lt_items__v7_key"


def test_long_names_are_shortened_distinctly_and_within_63_characters() -> None:
    long_a, long_b = "a" * 60 + "_x", "a" * 60 + "_y"
    names = {spec(long_a).version_table(123456), spec(long_b).version_table(123456), spec(long_a).key_index(1)}
    assert len(names) == 3
    assert all(len(name) <= 63 for name in names)
    assert spec(long_a).version_table(123456).endswith("__v123456")


@pytest.mark.parametrize(
    ("name", "keys", "message"),
    [
        ("Items", (KeyColumn("item_id", "int"),), "lookup table 'Items'"),
        ("lt_x; drop", (KeyColumn("item_id", "int"),), "not an identifier"),
        ("lt_items", (), "at least one key"),
        ("lt_items", (KeyColumn("prediction", "int"),), "reserved"),
        ("lt_items", (KeyColumn("a", "int"), KeyColumn("a", "str")), "repeat"),
    ],
)
def test_bad_specs_are_refused_with_the_reason(name: str, keys: tuple[KeyColumn, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec(name, keys)


def test_key_columns_check_name_and_type() -> None:
    with pytest.raises(ValueError, match="not an identifier"):
        KeyColumn('x"', "int")
    with pytest.raises(ValueError, match="use 'int' or 'str'"):
        KeyColumn("x", "float")  # type: ignore[arg-type]


def test_keys_are_normalised_to_plain_python_values() -> None:

    two = spec(keys=(KeyColumn("item_id", "int"), KeyColumn("store", "str")))
    key = two.key_of((np.int64(3), "s1"))
    assert key == (3, "s1") and type(key[0]) is int
    assert two.key_of((3, "s1")) == (3, "s1")
