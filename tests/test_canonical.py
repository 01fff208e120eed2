import json

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


@given(values, values)
def test_different_values_hash_differently(a: object, b: object) -> None:
    if json.loads(canonical_json(a)) != json.loads(canonical_json(b)):
        assert sha256_hex(a) != sha256_hex(b)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip_exactly(x: float) -> None:
    assert json.loads(canonical_json(x)) == x


def test_no_whitespace_and_sorted_keys() -> None:
    assert (
        canonical_json({"b": 1, "a": [1.5, None, True], "é": "ü"})
        == '{"a":[1.5,null,true],"b":1,"é":"ü"}'
    )
    assert canonical_json(-0.0) == "0.0"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {1: "x"}, {"a": object()}])
def test_values_without_canonical_form_are_rejected(bad: object) -> None:
    with pytest.raises(CanonicalFormError):
        canonical_json(bad)
