"""Strict parsing of JSON request bodies: anything that is not plain, storable JSON is a 422 with its path.

Python's ``json.loads`` accepts more than JSON (RFC 8259) and fails on some hostile inputs with
exceptions that are not about the client's mistake. Each case becomes a field error here, in
pydantic's shape (``loc`` starting with ``"body"``, ``msg``, ``type``), raised as a FastAPI
``RequestValidationError`` so that the usual 422 problem document (``api.problems``) answers:

* ``NaN``, ``Infinity``, ``-Infinity`` literals and numbers that overflow a float (``1e999``): not
  JSON, and not storable in PostgreSQL's JSONB — ``number_not_finite`` at the value's path;
* integers with more than :data:`MAX_INT_DIGITS` digits (Python refuses to convert more than 4,300
  and no field accepts more than 20) — ``int_too_long`` at the value's path;
* invalid UTF-8 inside a string (decoded with ``surrogateescape`` so that parsing can go on and
  report where) and lone surrogates from ``\\ud800`` escapes: not Unicode text, and they fail
  whoever encodes them next — ``string_unicode`` at the string's (or key's) path;
* NUL characters (JSON allows ``\\u0000``; PostgreSQL's text and JSONB cannot store it) — ``string_nul``;
* nesting deeper than :data:`MAX_DEPTH` (the C parser's recursion limit is ~1,000, and every later
  walk of the value recurses too) — ``too_deep`` at the path where the limit is passed, or at the
  body when the parser itself ran out of stack.

Syntax errors stay ``json_invalid`` with their line and column (they have no field path).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from fastapi.exceptions import RequestValidationError

MAX_DEPTH = 32
"""An ExperimentSpec is 4 levels deep; 32 leaves room for any JSON a client means to send."""
MAX_INT_DIGITS = 100
"""The largest integer any field accepts (a 64-bit seed) has 20 digits."""
MAX_ERRORS = 20


class _NotJSON:
    """Placeholder the parser leaves where a value is not plain JSON, with the reason."""

    __slots__ = ("code", "message", "text")

    def __init__(self, code: str, message: str, text: str) -> None:
        self.code, self.message, self.text = code, message, text


def _parse_constant(name: str) -> _NotJSON:
    return _NotJSON("number_not_finite", f"{name} is not a JSON number; numbers must be finite", name)


def _parse_float(text: str) -> float | _NotJSON:
    value = float(text)
    if math.isfinite(value):
        return value
    return _NotJSON("number_not_finite", "the number overflows a 64-bit float", _short(text))


def _parse_int(text: str) -> int | _NotJSON:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        return _NotJSON("int_too_long", f"an integer of {len(text.lstrip('-')):,} digits; at most "
                        f"{MAX_INT_DIGITS} are accepted", _short(text))
    return int(text)


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _string_problem(s: str) -> tuple[str, str] | None:
    if s.isascii():
        if "\x00" in s:
            return "string_nul", "NUL characters are not allowed"
        return None
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return "string_unicode", "not valid Unicode text: invalid UTF-8 or a lone surrogate (U+D800 to U+DFFF)"
    if "\x00" in s:
        return "string_nul", "NUL characters are not allowed"
    return None


def _error(loc: list[str | int], code: str, message: str, value: Any = None) -> dict[str, Any]:
    e: dict[str, Any] = {"loc": ("body", *loc), "msg": message, "type": code}
    if value is not None:
        e["input"] = value
    return e


def find_problems(value: Any) -> list[dict[str, Any]]:
    """Field errors for everything in a parsed body that is not plain, storable JSON (iterative walk:
    depth is bounded here, not by the interpreter's stack)."""
    errors: list[dict[str, Any]] = []
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack and len(errors) < MAX_ERRORS:
        node, path = stack.pop()
        if isinstance(node, dict | list):
            if len(path) >= MAX_DEPTH:
                errors.append(_error(path, "too_deep", f"nested more than {MAX_DEPTH} levels deep"))
                continue
            if isinstance(node, dict):
                children: list[tuple[Any, list[str | int]]] = []
                for k, v in node.items():
                    bad = _string_problem(k)
                    if bad is not None:
                        errors.append(_error([*path, _printable(k)], bad[0], "in a key: " + bad[1]))
                        continue
                    children.append((v, [*path, k]))
            else:
                children = [(v, [*path, i]) for i, v in enumerate(node)]
            stack.extend(reversed(children))
        elif isinstance(node, _NotJSON):
            errors.append(_error(path, node.code, node.message, node.text))
        elif isinstance(node, str):
            bad = _string_problem(node)
            if bad is not None:
                errors.append(_error(path, *bad))
    return errors


_SURROGATE = re.compile("[\ud800-\udfff]")


def _printable(s: str) -> str:
    """``s`` with each lone surrogate replaced by U+FFFD (and NUL spelled out), so that a path can name
    the key it came from."""
    return _SURROGATE.sub("\ufffd", s).replace("\x00", "\\u0000")


def parse_json_body(raw: bytes) -> Any:
    """The body's JSON value; raises ``RequestValidationError`` (a 422 problem with field paths) when
    the body is not plain JSON (module docstring)."""
    text = raw.decode("utf-8", "surrogateescape")
    try:
        value = json.loads(text, parse_constant=_parse_constant, parse_float=_parse_float, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        raise RequestValidationError([_error([], "json_invalid", f"invalid JSON at line {e.lineno} column "
                                             f"{e.colno}: {e.msg}")]) from None
    except RecursionError:
        raise RequestValidationError([_error([], "too_deep", f"nested more than {MAX_DEPTH} levels deep")]) from None
    errors = find_problems(value)
    if errors:
        raise RequestValidationError(errors)
    return value
