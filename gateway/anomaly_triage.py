"""What auditors made of anomaly flags: each flag's stable key, and its latest triage state.

Flags are recomputed from the log at each read (`gateway.anomalies`), so a flag is known by a
key derived from what makes it that flag — its rule, actor, time and the entries behind it —
which stays the same from read to read. The latest triage of each key is kept in
`anomaly_triage`; every triage is also an `anomaly.triage` audit entry (its note only as a
digest: free text could name someone).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime

from sqlmodel import Session, col, select

from gateway.anomalies import Flag
from gateway.db import AnomalyTriage, aware
from xiezhi.wire import TriageState, TriageView


def flag_key(flag: Flag) -> str:
    """A flag's key: 24 hex characters of SHA-256 over its rule, actor, time and entries."""
    text = "\x1f".join([flag.code, flag.actor, flag.at.isoformat(), ",".join(map(str, flag.seqs))])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def latest(session: Session, keys: Iterable[str]) -> dict[str, TriageView]:
    """The triage of each of `keys` that has one."""
    wanted = list(keys)
    if not wanted:
        return {}
    rows = session.exec(select(AnomalyTriage).where(col(AnomalyTriage.key).in_(wanted))).all()
    return {row.key: _view(row) for row in rows}


def record(session: Session, key: str, state: TriageState, note: str, by: str, now: datetime) -> TriageView:
    """Make (`state`, `note`) the flag's latest triage; the caller audits it and commits."""
    row = session.get(AnomalyTriage, key) or AnomalyTriage(key=key, state=state.value, note=note, by=by, at=now)
    row.state, row.note, row.by, row.at = state.value, note, by, now
    session.add(row)
    return _view(row)


def note_digest(note: str) -> str:
    return hashlib.sha256(note.encode("utf-8")).hexdigest()[:16]


def _view(row: AnomalyTriage) -> TriageView:
    return TriageView(state=TriageState(row.state), note=row.note, by=row.by, at=aware(row.at))
