import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.canonical import CanonicalFormError, canonical_json, sha256_hex

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)


@given(values)
def test_round_trip_is_stable(value: object) -> None:
    text = canonical_json(value)
    assert canonical_json(json.loads(text)) == text


@given(st.dictionaries(st.text(), scalars, max_size=8))
def test_key_order_does_not_matter(mapping: dict[str, object]) -> None:
    reordered = dict(reversed(list(mapping.items())))
    assert canonical_json(mapping) == canonical_json(reordered)
    assert sha256_hex(mapping) == sha256_hex(reordered)


def tagged(value: object) -> object:
    """A form in which 1 and 1.0, and 0.0 and -0.0, compare unequal, as in the canonical text."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", value, math.copysign(1.0, value))
    if isinstance(value, dict):
        return ("dict", sorted((k, tagged(v)) for k, v in value.items()))
    return ("list", [tagged(v) for v in value])  # type: ignore[union-attr]


@given(values, values)
def test_equal_values_and_only_they_hash_equal(a: object, b: object) -> None:
    same = tagged(json.loads(canonical_json(a))) == tagged(json.loads(canonical_json(b)))
    assert same == (sha256_hex(a) == sha256_hex(b))
    assert tagged(json.loads(canonical_json(a))) == tagged(a)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip_exactly(x: float) -> None:
    assert json.loads(canonical_json(x)) == x


def test_no_whitespace_and_sorted_keys() -> None:
    assert (
        canonical_json({"b": 1, "a": [1.5, None, True], "é": "ü"})
        == '{"a":[1.5,null,true],"b":1,"é":"ü"}'
    )
    assert canonical_json(-0.0) == "-0.0" and canonical_json(1) != canonical_json(1.0)


def test_numpy_scalars_are_plain_numbers() -> None:
    import numpy as np

    assert canonical_json({"a": np.float64(0.5), "b": np.int64(3)}) == '{"a":0.5,"b":3}'


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), [-float("inf")], {"a": object()}, {1: "x", "b": 2}]
)
def test_values_without_canonical_form_are_rejected(bad: object) -> None:
    with pytest.raises(CanonicalFormError):
        canonical_json(bad)
