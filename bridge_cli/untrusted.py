"""Text from event rows (and workers rows) made safe to show. Anyone who can write to the event
table writes what bridge prints: an escape sequence in a table name would clear or retitle a
terminal, a newline would forge a log line, a bidi override would reorder what people read.

`printable` is for terminals, piped lines and text logs; `json_text` for JSON output and JSON
logs; `strict_json` reads a stored JSON column the way `json_text` can write it back. No rich
here: the log formatter uses it as the tables do (reporting.py applies it where text is printed).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

# C0 controls (\n, \r and \t too), DEL, C1 controls, the line and paragraph separators, the bidi
# embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069), and lone surrogates (no
# encoding can write them).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# What json.dumps(ensure_ascii=False) leaves as it is among those: it escapes C0 itself.
_UNSAFE_IN_JSON = re.compile(r"[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str) -> str:
    """`text` with every control and bidi character shown as an escape (`\\x1b`, `\\n`,
    `\\u202e`), so it prints as one line that means what it shows; other text, non-ASCII included,
    is left as it is. Idempotent: what it returns has nothing left to escape."""
    return _UNSAFE.sub(_visible, text)


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def json_text(data: Any, *, indent: int | None = None,
              default: Callable[[Any], Any] | None = None) -> str:
    """Strict JSON (RFC 8259): never NaN or Infinity (a non-finite float, as a hand-written row can
    hold, is null), and the characters `printable` escapes written as \\uXXXX, so a terminal that
    shows the JSON is safe too. Other non-ASCII text stays readable."""
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False, indent=indent, default=default)
    except ValueError:  # a NaN or an infinity somewhere: JSON has no such number
        loose = json.dumps(data, ensure_ascii=False, default=default)
        finite = json.loads(loose, parse_constant=lambda _name: None)
        text = json.dumps(finite, ensure_ascii=False, allow_nan=False, indent=indent)
    return _UNSAFE_IN_JSON.sub(_json_escape, text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400
        raise ValueError(f"{text} is out of range")
    return value


def strict_json(text: str, **stricter: Any) -> Any:
    """The JSON value `text` holds; ValueError unless it is strict JSON (Python's json also reads
    NaN, Infinity and 1e400 as floats) that can be written back as it was read. `stricter`: more
    of json.loads' hooks (an event's fields also refuse big integers and repeated keys)."""
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, **stricter)
    except RecursionError:  # nested deeper than the parser goes
        raise ValueError("nested too deeply") from None
