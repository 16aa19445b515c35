"""JSON for programs whose start-up time matters.

`import json` costs more than starting the interpreter, because `json.decoder` imports `re`,
which imports `enum`. `rune` is executed several times per container, so it reads and writes
JSON with the C scanner and encoder of the standard library (`_json`) directly. The output is
the same as `json.dumps`; malformed input raises `ValueError` naming the position.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WHITESPACE = " \t\n\r"


class _ScannerContext:
    """The attributes `_json.make_scanner` reads from a decoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]


_scan = _json.make_scanner(_ScannerContext())  # type: ignore[arg-type]


def _not_serializable(value: object) -> object:
    raise TypeError(f"object of type {type(value).__name__} is not JSON serializable")


_encode = _json.make_encoder(
    {},
    _not_serializable,
    _json.encode_basestring_ascii,
    None,
    ": ",
    ", ",
    False,
    False,
    True,
)


def _skip_whitespace(text: str, pos: int) -> int:
    end = len(text)
    while pos < end and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def loads(text: str | bytes) -> Any:
    """Parse one JSON document; `ValueError` (with the position) when it is malformed."""
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8-sig")
    pos = _skip_whitespace(text, 0)
    if pos == len(text):
        raise ValueError("empty document")
    try:
        value, pos = _scan(text, pos)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except (StopIteration, ValueError, SystemError):
        # The C scanner reports errors through json.decoder, which is not imported here:
        # let the standard module explain (malformed input is the rare, slow path).
        _explain(text)
        raise ValueError("malformed JSON") from None
    pos = _skip_whitespace(text, pos)
    if pos != len(text):
        raise ValueError(f"extra data at character {pos}")
    return value


def _explain(text: str) -> None:
    import json

    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def dumps(value: Any, indent: str | None = None) -> str:
    """Serialize like `json.dumps(value, indent=indent)`; compact when indent is None."""
    if indent is not None:
        chunks: list[str] = []
        _write_indented(value, indent, 0, chunks)
        return "".join(chunks)
    return "".join(_encode(value, 0))


def _write_indented(value: Any, indent: str, level: int, out: list[str]) -> None:
    if isinstance(value, dict) and value:
        inner = "\n" + indent * (level + 1)
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            out.append(("," if index else "") + inner + _json.encode_basestring_ascii(str(key)))
            out.append(": ")
            _write_indented(item, indent, level + 1, out)
        out.append("\n" + indent * level + "}")
    elif isinstance(value, list | tuple) and value:
        inner = "\n" + indent * (level + 1)
        out.append("[")
        for index, item in enumerate(value):
            out.append(("," if index else "") + inner)
            _write_indented(item, indent, level + 1, out)
        out.append("\n" + indent * level + "]")
    else:
        out.append(dumps(value))


def type_name(value: object) -> str:
    """What kind of JSON value this is, in words, for error messages ("got a string")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
