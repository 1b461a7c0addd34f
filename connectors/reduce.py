"""Reducing a capability's evidence rows to the set of subjects for which it holds.

Pure code: rows in, subjects out. Every row's raw ID is normalised exactly as the
requester's client normalises it; rows whose ID fails are counted, never "fixed".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from connectors.config import DistinctKeys, LatestValue, Reduction
from xiezhi.errors import InvalidIdentifier
from xiezhi.ids import SubjectId, normalise_subject_id


@dataclass(frozen=True)
class Reduced:
    subjects: frozenset[SubjectId]
    rows: int
    invalid_rows: int


def reduce_rows(rows: Iterable[tuple[Any, ...]], reduction: Reduction) -> Reduced:
    """`rows` are (subject_id[, key[, value]]) tuples as the capability query returns them."""
    evidence: dict[SubjectId, list[tuple[Any, Any]]] = defaultdict(list)
    count = invalid = 0
    for row in rows:
        count += 1
        raw = row[0]
        try:
            if not isinstance(raw, str):
                raise InvalidIdentifier("证件号码为空", code="empty")
            subject = normalise_subject_id(raw)
        except InvalidIdentifier:
            invalid += 1
            continue
        evidence[subject].append((row[1] if len(row) > 1 else None, row[2] if len(row) > 2 else None))
    return Reduced(frozenset(s for s, ev in evidence.items() if holds(ev, reduction)), count, invalid)


def holds(evidence: list[tuple[Any, Any]], reduction: Reduction) -> bool:
    """Whether a subject with these (key, value) rows satisfies `reduction`."""
    if reduction is None:
        return True
    if isinstance(reduction, DistinctKeys):
        return len({key for key, _ in evidence if key is not None}) >= reduction.distinct_keys_at_least
    assert isinstance(reduction, LatestValue)
    dated = [(key, value) for key, value in evidence if key is not None]
    if not dated:
        return False
    latest = max(key for key, _ in dated)
    return all(value == reduction.latest_value_is for key, value in dated if key == latest)
