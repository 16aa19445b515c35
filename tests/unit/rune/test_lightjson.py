"""The start-up-friendly JSON module must agree with the standard library."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inclavare import lightjson

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_agrees_with_the_standard_library(value: object) -> None:
    assert lightjson.dumps(value) == json.dumps(value)
    assert lightjson.dumps(value, indent="\t") == json.dumps(value, indent="\t")
    assert lightjson.loads(json.dumps(value)) == json.loads(json.dumps(value))


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_text_is_a_value_or_a_value_error(text: str) -> None:
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            lightjson.loads(text)
    else:
        # compared as serialized text: NaN, which JSON documents may hold, is not == NaN
        assert json.dumps(lightjson.loads(text)) == json.dumps(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty document"),
        ("  ", "empty document"),
        ("{} x", "extra data at character 3"),
        ("[1,]", "Expecting value at line 1 column 4"),
        ("[" * 100000, "nested too deeply|Expecting value"),
    ],
)
def test_malformed_documents(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lightjson.loads(text)


def test_bytes_with_a_byte_order_mark() -> None:
    assert lightjson.loads(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}


def test_what_json_cannot_hold_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        lightjson.dumps({"a": {1}})
