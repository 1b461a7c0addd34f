"""Reading the audit log: the security auditor's search, entry detail, CSV export and anomalies,
and the security admin's narrow view of policy changes.

Auditors (`audit:entries` read) see every entry of their organisation's subtree, plus
entries that belong to no organisation (the gateway's own and connectors'); security admins
(`audit:policy` read) see only policy and organisation changes. Every call is first a
decision recorded in the log, so reading the log leaves a trace in it, and a CSV export
leaves an `audit.export` entry naming its filters and row count. Filtering, ordering and
paging run in SQL on the indexed columns; the views are built from each entry's canonical
text, the bytes that were hashed. Anomaly rules live in `gateway/anomalies.py`; this module
only reads the rows they need.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, Connection, Row, func, select
from sqlmodel import Session

from audit_log import AuditLog, AuditRecord, EventKind
from gateway import anomalies, anomaly_triage, sightings
from gateway.anomalies import Activity, Flag, Window
from gateway.auth import Principal
from gateway.authz import Authorizer
from gateway.purpose import holds_identifier
from gateway.quotas import china_day
from gateway.recorder import Recorder
from gateway.review_filters import EntryFilters, PageRequest, Period, RawQuery, day_start, visible_to, whole_number
from gateway.settings import AuditSettings
from xiezhi.errors import InvalidInput, NotFound
from xiezhi.wire import AnomalyTriage as AnomalyTriageBody
from xiezhi.wire import AnomalyView, AuditEntryDetail, AuditEntryPage, AuditEntryView, TriageView

_C = AuditRecord.__table__.c  # type: ignore[attr-defined]
TRIAGE_WINDOW = timedelta(days=30)  # how far back a flag may be triaged
_COLUMNS = (_C.seq, _C.recorded_at, _C.kind, _C.actor, _C.org, _C.request_id, _C.model, _C.connector, _C.outcome)
_VIEW_COLUMNS = (*_COLUMNS, _C.purpose, _C.entry)
CSV_HEADER = (
    *("seq", "at", "kind", "actor", "org", "request_id", "model", "connector", "outcome", "purpose", "action"),
    "detail",
)
_EntryRow = Row[*tuple[Any, ...]]  # a row of _VIEW_COLUMNS
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class CsvExport:
    """An export already recorded in the log: its row count and its text, streamed in chunks."""

    rows: int
    chunks: Iterator[str]


class AuditReview:
    def __init__(
        self,
        audit: AuditLog,
        authorizer: Authorizer,
        recorder: Recorder,
        settings: AuditSettings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._audit = audit
        self._authorizer = authorizer
        self._recorder = recorder
        self._settings = settings
        self._clock = clock

    # ---- search and detail -------------------------------------------------------------

    def search(self, principal: Principal, query: RawQuery, limit: str | None, before: str | None) -> AuditEntryPage:
        """Entries matching `query`, newest first. Raises Denied, or InvalidInput (bad_<parameter>)."""
        orgs = self._authorize(principal, "audit:entries")
        return self._page(EntryFilters.parse(query), PageRequest.parse(limit, before), orgs)

    def policy_changes(self, principal: Principal, limit: str | None, before: str | None) -> AuditEntryPage:
        orgs = self._authorize(principal, "audit:policy")
        return self._page(EntryFilters(kind=EventKind.POLICY_CHANGE.value), PageRequest.parse(limit, before), orgs)

    def entry(self, principal: Principal, seq: str) -> AuditEntryDetail:
        """One entry with its canonical text and leaf hash. NotFound if unknown or outside the subtree."""
        orgs = self._authorize(principal, "audit:entries")
        position = whole_number(seq, "seq")
        query = select(*_VIEW_COLUMNS, _C.leaf_hash).where(_C.seq == position, visible_to(orgs))
        with self._audit.engine.connect() as connection:
            row = connection.execute(query).first()
        if row is None:
            raise NotFound("no such audit entry", code="unknown_entry")
        return AuditEntryDetail(
            **_view(row).model_dump(),
            entry=bytes(row.entry).decode("utf-8", errors="replace"),
            leaf_hash=base64.b64encode(bytes(row.leaf_hash)).decode(),
        )

    def _page(self, filters: EntryFilters, page: PageRequest, orgs: Collection[str]) -> AuditEntryPage:
        conditions = [*filters.conditions(), visible_to(orgs)]
        if page.before is not None:
            conditions.append(_C.seq < page.before)
        query = select(*_VIEW_COLUMNS).where(*conditions).order_by(_C.seq.desc()).limit(page.limit + 1)
        with self._audit.engine.connect() as connection:
            rows = connection.execute(query).all()
        more = len(rows) > page.limit
        views = [_view(row) for row in rows[: page.limit]]
        return AuditEntryPage(entries=views, next_before=views[-1].seq if more and views else None)

    # ---- export ------------------------------------------------------------------------

    def export_csv(self, principal: Principal, query: RawQuery) -> CsvExport:
        """Record the export (filters, row count) in the log, then hand back the rows to stream.

        Refuses an export of more than `export_max_rows` rows with InvalidInput
        (export_too_large) rather than cut it short; the refusal is recorded too.
        """
        orgs = self._authorize(principal, "audit:entries")
        filters = EntryFilters.parse(query)
        # Entries appended from here on (this export's own among them) are not part of it.
        conditions = [*filters.conditions(), visible_to(orgs), _C.seq < self._audit.size()]
        with self._audit.engine.connect() as connection:
            counted = connection.execute(select(func.count()).select_from(AuditRecord).where(*conditions))
            count = int(counted.scalar_one())
        detail: dict[str, str | int] = {**filters.describe(), "rows": count, "format": "csv"}
        cap = self._settings.export_max_rows
        if count > cap:
            self._recorder.record_alone(
                principal, EventKind.EXPORT, "export", "refused", None, reason="export_too_large", **detail
            )
            raise InvalidInput(
                f"{count} entries match; an export holds at most {cap}: narrow the filters",
                code="export_too_large",
                extensions={"limit": cap},
            )
        self._recorder.record_alone(principal, EventKind.EXPORT, "export", "ok", None, **detail)
        return CsvExport(count, self._csv(conditions))

    def _csv(self, conditions: Sequence[ColumnElement[bool]]) -> Iterator[str]:
        # A byte-order mark, so spreadsheet programs read the UTF-8 (Chinese case numbers) right.
        yield "\ufeff" + _csv_text([CSV_HEADER])
        query = select(*_VIEW_COLUMNS).where(*conditions).order_by(_C.seq.desc())
        with self._audit.engine.connect() as connection:
            result = connection.execution_options(stream_results=True).execute(query)
            for rows in result.partitions(1000):
                yield _csv_text([_csv_row(_view(row)) for row in rows])

    # ---- anomalies ---------------------------------------------------------------------

    def anomalies(self, principal: Principal, since: str | None, until: str | None) -> list[AnomalyView]:
        """Flags raised in the period (default: the last 7 days), newest first; see gateway.anomalies."""
        orgs = self._authorize(principal, "audit:entries")
        period = Period.parse(since, until, self._clock())
        with self._audit.engine.connect() as connection:
            flags = self._detect(connection, orgs, Window(period.since, period.until))
            flags = [self._with_lookups(connection, orgs, f) if f.request_ids else f for f in flags]
        flags.sort(key=lambda flag: (flag.at, flag.code), reverse=True)
        keys = [anomaly_triage.flag_key(f) for f in flags]
        with Session(self._audit.engine) as session:
            triaged = anomaly_triage.latest(session, keys)
        return [
            AnomalyView(
                code=f.code, actor=f.actor, org=f.org, at=f.at, reason=f.reason, seqs=f.seqs,
                request_ids=f.request_ids, key=key, triage=triaged.get(key),
            )
            for f, key in zip(flags, keys, strict=True)
        ]  # fmt: skip

    def triage(self, principal: Principal, key: str, body: AnomalyTriageBody) -> TriageView:
        """Record an auditor's word on the flag known by `key` (one of the last 30 days' flags
        the auditor can see). NotFound for a key no such flag has; InvalidInput for a note
        holding an ID number."""
        self._recorder.enforce(
            principal, "audit:anomalies", "triage", None,
            self._authorizer.decide(principal, "audit:anomalies", "triage"),
        )  # fmt: skip
        if holds_identifier(body.note):
            raise InvalidInput("the note must not contain an identifier", code="identifier_in_note")
        now = self._clock()
        orgs = self._visible(principal)
        with self._audit.engine.connect() as connection:
            flags = self._detect(connection, orgs, Window(now - TRIAGE_WINDOW, now))
        flag = next((f for f in flags if anomaly_triage.flag_key(f) == key), None)
        if flag is None:
            raise NotFound("no anomaly flag of the last 30 days has that key", code="unknown_anomaly")
        with Session(self._audit.engine) as session:
            view = anomaly_triage.record(session, key, body.state, body.note, principal.subject, now)
            self._recorder.record(
                session, principal, EventKind.ANOMALY_TRIAGE, "triage", body.state.value, None,
                anomaly=key, code=flag.code, flagged_actor=flag.actor,
                note_digest=anomaly_triage.note_digest(body.note),
            )  # fmt: skip
            session.commit()
        return view

    def _detect(self, connection: Connection, orgs: Collection[str], window: Window) -> list[Flag]:
        t = self._settings.anomalies
        since, until, seen = window.since, window.until, visible_to(orgs)
        baseline_from = day_start(china_day(since) - timedelta(days=t.baseline_days))
        created = _activity(connection, _C.kind == EventKind.REQUEST_CREATED, _between(baseline_from, until), seen)
        acts = (EventKind.REQUEST_CREATED, EventKind.RESULT_READ, EventKind.APPROVAL)
        actions = _activity(connection, _C.kind.in_(acts), _between(since, until), seen)
        burst_from = since - timedelta(minutes=t.denial_burst_minutes)
        denials = _activity(
            connection, _C.kind == EventKind.DECISION, _C.outcome == "deny", _between(burst_from, until), seen
        )
        approved = [row for row in actions if row.kind == EventKind.APPROVAL and row.action == "approve"]
        asked = {row.request_id for row in approved if row.request_id}
        origins = _activity(connection, _C.kind == EventKind.REQUEST_CREATED, _C.request_id.in_(sorted(asked)), seen)
        exported = _activity(connection, _C.kind == EventKind.EXPORT, _between(since, until), seen)
        repeated = sightings.repeated(
            connection,
            until - timedelta(days=t.token_repeat_days),
            until,
            orgs,
            requests=t.token_repeat_requests,
            users=t.token_repeat_users,
        )
        return [
            *anomalies.volume_above_baseline(created, t, window),
            *anomalies.outside_working_hours(actions, t, window),
            *anomalies.denial_burst(denials, t, window),
            *anomalies.token_repeated(repeated, t, window),
            *anomalies.fast_approval(approved, {row.request_id or "": row for row in origins}, t, window),
            *anomalies.exports(exported, t, window),
        ]

    def _with_lookups(self, connection: Connection, orgs: Collection[str], flag: Flag) -> Flag:
        """Point a token flag at the lookup entries of its requests (at most 50)."""
        query = (
            select(_C.seq)
            .where(_C.kind == EventKind.LOOKUP, _C.request_id.in_(flag.request_ids), visible_to(orgs))
            .order_by(_C.seq)
            .limit(anomalies.MAX_SEQS)
        )
        return replace(flag, seqs=tuple(connection.execute(query).scalars()))

    # ---- authorization -----------------------------------------------------------------

    def _authorize(self, principal: Principal, obj: str) -> list[str]:
        """Record the decision (raising Denied unless allowed); return the organisations visible."""
        self._recorder.enforce(principal, obj, "read", None, self._authorizer.decide(principal, obj, "read"))
        return self._visible(principal)

    def _visible(self, principal: Principal) -> list[str]:
        tree = self._authorizer.policy.orgs
        return [org.code for org in tree if principal.org is not None and tree.covers(principal.org, org.code)]


# ---- rows → views ----------------------------------------------------------------------


def _between(since: datetime, until: datetime) -> ColumnElement[bool]:
    between: ColumnElement[bool] = _C.recorded_at.between(since.astimezone(UTC), until.astimezone(UTC))
    return between


def _parsed(row: _EntryRow) -> dict[str, object]:
    """The entry's canonical JSON; a damaged entry (it happens only by tampering) yields {}."""
    try:
        entry = json.loads(bytes(row.entry))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return entry if isinstance(entry, dict) else {}


def _recorded(row: _EntryRow) -> datetime:
    moment: datetime = row.recorded_at
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_FIELDS = ("kind", "actor", "org", "request_id", "model", "connector", "outcome", "purpose")
_ENTRY_FIELDS = frozenset((*_FIELDS, "at", "action", "detail"))


def _view(row: _EntryRow) -> AuditEntryView:
    """The view of one entry from its canonical text; the indexed columns stand in where it is damaged."""
    columns = {"seq": row.seq, "at": _recorded(row), **{name: getattr(row, name) for name in _FIELDS}}
    entry = {name: value for name, value in _parsed(row).items() if name in _ENTRY_FIELDS}
    try:
        return AuditEntryView.model_validate({**columns, "action": "", "detail": {}, **entry})
    except ValidationError:
        # Only a tampered entry fails here; the verification banner names it.
        return AuditEntryView.model_validate({**columns, "action": "", "detail": {}})


def _activity(connection: Connection, *conditions: ColumnElement[bool]) -> list[Activity]:
    rows = connection.execute(select(*_VIEW_COLUMNS).where(*conditions).order_by(_C.seq))
    activity = []
    for row in rows:
        view = _view(row)
        activity.append(
            Activity(
                seq=view.seq,
                at=view.at if view.at.tzinfo else view.at.replace(tzinfo=UTC),
                kind=view.kind,
                action=view.action,
                actor=view.actor,
                org=view.org,
                outcome=view.outcome,
                request_id=view.request_id,
                detail=view.detail,
            )
        )
    return activity


def _csv_row(view: AuditEntryView) -> list[str]:
    cells = [
        str(view.seq),
        view.at.astimezone(UTC).isoformat(),
        view.kind,
        view.actor,
        view.org or "",
        view.request_id or "",
        view.model or "",
        view.connector or "",
        view.outcome,
        view.purpose or "",
        view.action,
        json.dumps(view.detail, ensure_ascii=False, sort_keys=True, separators=(",", ":")),
    ]
    # A cell a spreadsheet would run as a formula gets a leading apostrophe (CSV injection).
    return ["'" + cell if cell.startswith(_FORMULA_START) else cell for cell in cells]


def _csv_text(rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


__all__ = ["CSV_HEADER", "AuditReview", "CsvExport"]
