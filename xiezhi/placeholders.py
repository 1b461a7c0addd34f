"""Placeholders left in a settings file: `CHANGE-ME` anywhere in a value, or `<…>`.

Example settings carry them where an operator must fill in a real value; every service
refuses to start with one left, naming the field (never the value: it may be a secret's place).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

_PLACEHOLDER = re.compile(r"CHANGE[-_ ]?ME|<[^<>]+>", re.IGNORECASE)


def placeholder_fields(value: object) -> list[str]:
    """The dotted names of the fields of `value` (a parsed settings mapping) holding a placeholder."""
    return sorted(_walk(value, ""))


def refuse_placeholders(data: object) -> object:
    """`data` unchanged, or ValueError naming every field that holds a placeholder (for a
    settings model's `mode="before"` validator)."""
    fields = placeholder_fields(data)
    if fields:
        raise ValueError(f"placeholder left in {', '.join(fields)}; fill in the real value")
    return data


def _walk(value: object, where: str) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            path = f"{where}.{key}" if where else str(key)
            if _PLACEHOLDER.search(str(key)):  # an example's key (a kid, a connector) left in
                yield path
            yield from _walk(inner, path)
    elif isinstance(value, list | tuple):
        for index, inner in enumerate(value):
            yield from _walk(inner, f"{where}[{index}]")
    elif isinstance(value, str | Path) and _PLACEHOLDER.search(str(value)):
        yield where or "settings"
