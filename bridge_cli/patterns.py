"""Table-name patterns of `allowed_sources` and `allowed_targets`, parsed and matched.

Pure: no configuration, no policy; bridge_cli/config.py checks every pattern when the profile loads,
and bridge_cli/policy.py matches event tables with them.

Patterns are SQL Server names: parts separated by dots, each part bare (letters, digits, `_`, `$`,
`-`, and `*`, the only wildcard, matching any run of characters within the part) or quoted with
brackets or backticks (a quoted part is a literal name). A last part that is a bare `*` also covers
any parts that follow (`*` is every table, `c.*` every table of catalog `c`). A one-part target
pattern other than `*` names a table of `dbo`, as a bare target name does. Names compare without
regard to case, as SQL Server's default collation and Databricks do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bridge_cli.errors import ValidationError
from bridge_cli.identifiers import IDENTIFIER_PART, TableName

# A bare pattern part: an identifier's characters plus the wildcard.
_BARE_PART = re.compile(r"[A-Za-z0-9_$\-*]{1,128}")


@dataclass(frozen=True)
class NamePart:
    text: str  # lower-cased
    quoted: bool

    @property
    def is_wildcard(self) -> bool:
        """A bare `*`: any name (as a last part, also any parts after it)."""
        return not self.quoted and self.text == "*"

    def matches(self, part: str) -> bool:
        if self.quoted or "*" not in self.text:
            return part.lower() == self.text
        regex = ".*".join(re.escape(piece) for piece in self.text.split("*"))
        return re.fullmatch(regex, part.lower(), flags=re.DOTALL) is not None


@dataclass(frozen=True)
class NamePattern:
    """One entry of `allowed_sources` or `allowed_targets`, parsed."""

    text: str
    parts: tuple[NamePart, ...]

    @property
    def allows_any(self) -> bool:
        """`*`, `*.*`, `*.*.*`: every table (what `bridge doctor` warns about)."""
        return all(p.is_wildcard for p in self.parts)

    def matches(self, name: TableName) -> bool:
        wanted = self.parts
        if len(wanted) > len(name.parts):
            return False
        if len(wanted) < len(name.parts):
            if not self.parts[-1].is_wildcard:
                return False
            wanted = wanted[:-1]
        return all(p.matches(n) for p, n in zip(wanted, name.parts, strict=False))


def split_pattern(text: str) -> list[NamePart]:
    """`[dbo].[users]`, `` `mi-catalog`.* ``, `dbo.user*` -> parts; ValidationError when malformed."""
    parts: list[NamePart] = []
    i, text = 0, text.strip()
    if not text:
        raise ValidationError("a pattern is empty")
    while True:
        if i < len(text) and text[i] in "[`":
            close = "]" if text[i] == "[" else "`"
            value, i = _quoted(text, i + 1, close)
            if not IDENTIFIER_PART.fullmatch(value):
                raise ValidationError(
                    f"pattern {text!r}: quoted part {value!r} is not a valid name (letters, digits, "
                    "'_', '$' or '-')"
                )
            parts.append(NamePart(value.lower(), quoted=True))
        else:
            end = text.find(".", i)
            end = len(text) if end < 0 else end
            value = text[i:end]
            if not _BARE_PART.fullmatch(value):
                raise ValidationError(
                    f"pattern {text!r}: part {value!r} may only use letters, digits, '_', '$', '-' "
                    "and the wildcard '*' (quote a name with [brackets] or `backticks`)"
                )
            parts.append(NamePart(value.lower(), quoted=False))
            i = end
        if i == len(text):
            return parts
        if text[i] != ".":
            raise ValidationError(f"pattern {text!r}: unexpected {text[i]!r} after a quoted part")
        i += 1
        if i == len(text):
            raise ValidationError(f"pattern {text!r} ends with a dot")


def _quoted(text: str, start: int, close: str) -> tuple[str, int]:
    """The quoted part starting at `start` (after the opening quote), with a doubled closing
    quote standing for itself; and the index after the closing quote."""
    out: list[str] = []
    i = start
    while i < len(text):
        if text[i] == close:
            if i + 1 < len(text) and text[i + 1] == close:
                out.append(close)
                i += 2
                continue
            return "".join(out), i + 1
        out.append(text[i])
        i += 1
    raise ValidationError(f"pattern {text!r}: unclosed {'[' if close == ']' else '`'}")


def parse_pattern(text: str, *, max_parts: int) -> NamePattern:
    """A source pattern (`max_parts=3`: catalog.schema.table) or a target one (2: schema.table)."""
    parts = split_pattern(text)
    if len(parts) > max_parts:
        shape = "catalog.schema.table" if max_parts == 3 else "schema.table"
        raise ValidationError(f"pattern {text!r} has more parts than {shape}")
    if len(parts) < max_parts:
        last = parts[-1]
        if max_parts == 2 and len(parts) == 1 and not last.is_wildcard:
            parts = [NamePart("dbo", quoted=True), last]  # a bare table name is dbo's
        elif not last.is_wildcard:
            shape = "catalog.schema.table" if max_parts == 3 else "schema.table"
            raise ValidationError(
                f"pattern {text!r} must name {shape}, or end with '.*' to cover every table below"
            )
    return NamePattern(text.strip(), tuple(parts))


def parse_patterns(items: Sequence[str], *, max_parts: int) -> tuple[NamePattern, ...]:
    return tuple(parse_pattern(item, max_parts=max_parts) for item in items)
