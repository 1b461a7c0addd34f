"""The auditor's search filters: parsed from query strings once, then turned into SQL conditions.

Every value arrives as text and is checked here, so a bad one is refused with a code naming
the parameter (`bad_since`, `bad_limit`, …) and never reaches the database. A value holding
a run of 15 or more digits is refused as `identifier_in_filter`: filters are echoed into the
audit entry of an export, and the log never holds anything shaped like an ID number.
Datetimes are ISO 8601; one without a UTC offset is read as China Standard Time.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import ColumnElement, or_

from audit_log import AuditRecord, EventKind
from gateway.purpose import holds_identifier
from gateway.quotas import CHINA
from xiezhi.errors import InvalidInput

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_SEQS = 50
# The largest entry position or tree size a caller may name: far past any real log, and well
# inside the databases' 64-bit integers (a larger value would overflow in the query).
MAX_POSITION = 2**62
_DIGITS = re.compile(r"^[0-9]{1,20}$")  # ASCII only: str.isdigit also takes '²', which int() refuses
_ORG = re.compile(r"^\d{6}$")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_OUTCOME = re.compile(r"^[a-z][a-z_]{0,31}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_KINDS = frozenset(kind.value for kind in EventKind)

RawQuery = Mapping[str, str | None]
_ENTRIES = AuditRecord.__table__.c  # type: ignore[attr-defined]


def _bad(name: str, why: str) -> InvalidInput:
    return InvalidInput(f"parameter {name}: {why}", code=f"bad_{name}")


def parse_moment(value: str, name: str) -> datetime:
    """An ISO 8601 date or datetime; naive means China Standard Time. Returns UTC."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise _bad(name, "expected an ISO 8601 datetime such as 2026-06-01T09:30:00+08:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=CHINA)
    return moment.astimezone(UTC)


def _text(value: str, name: str, pattern: re.Pattern[str] | None, max_length: int) -> str:
    value = value.strip()
    if not value or len(value) > max_length:
        raise _bad(name, f"expected 1 to {max_length} characters")
    if pattern is not None and not pattern.match(value):
        raise _bad(name, "has characters this field never holds")
    return value


def whole_number(value: str, name: str, low: int = 0, high: int = MAX_POSITION) -> int:
    """`value` as a whole number from `low` to `high`; InvalidInput (bad_<name>) otherwise."""
    value = value.strip()
    if not _DIGITS.match(value) or not low <= int(value) <= high:
        raise _bad(name, f"expected a whole number from {low} to {high}")
    return int(value)


@dataclass(frozen=True)
class EntryFilters:
    """What to search for; every field narrows the result, None means any."""

    since: datetime | None = None
    until: datetime | None = None
    user: str | None = None
    org: str | None = None
    model: str | None = None
    connector: str | None = None
    decision: str | None = None  # the entry's outcome: allow, deny, needs_approval, ok, failed, …
    purpose: str | None = None  # a substring of the case number
    kind: str | None = None
    request_id: str | None = None
    seqs: tuple[int, ...] = ()  # specific entries, as an anomaly flag lists them

    @classmethod
    def parse(cls, query: RawQuery) -> EntryFilters:
        """Raises InvalidInput with code bad_<parameter>, bad_range or identifier_in_filter."""
        given = {name: value for name, value in query.items() if value is not None and value != ""}
        for name, value in given.items():
            if holds_identifier(value):
                raise InvalidInput(f"parameter {name} holds something shaped like an ID", code="identifier_in_filter")
        since = parse_moment(given["since"], "since") if "since" in given else None
        until = parse_moment(given["until"], "until") if "until" in given else None
        if since is not None and until is not None and since > until:
            raise InvalidInput("since is after until", code="bad_range")
        kind = given.get("kind")
        if kind is not None and kind not in _KINDS:
            raise _bad("kind", f"expected one of {', '.join(sorted(_KINDS))}")
        return cls(
            since=since,
            until=until,
            user=_text(given["user"], "user", None, 128) if "user" in given else None,
            org=_text(given["org"], "org", _ORG, 6) if "org" in given else None,
            model=_text(given["model"], "model", _NAME, 64) if "model" in given else None,
            connector=_text(given["connector"], "connector", _NAME, 64) if "connector" in given else None,
            decision=_text(given["decision"], "decision", _OUTCOME, 32) if "decision" in given else None,
            purpose=_text(given["purpose"], "purpose", None, 200) if "purpose" in given else None,
            kind=kind,
            request_id=_text(given["request_id"], "request_id", _REQUEST_ID, 64) if "request_id" in given else None,
            seqs=_seqs(given["seqs"]) if "seqs" in given else (),
        )

    def conditions(self) -> list[ColumnElement[bool]]:
        c = _ENTRIES
        exact = {
            c.actor: self.user,
            c.org: self.org,
            c.model: self.model,
            c.connector: self.connector,
            c.outcome: self.decision,
            c.kind: self.kind,
            c.request_id: self.request_id,
        }
        found: list[ColumnElement[bool]] = [column == value for column, value in exact.items() if value is not None]
        if self.since is not None:
            found.append(c.recorded_at >= self.since)
        if self.until is not None:
            found.append(c.recorded_at <= self.until)
        if self.purpose is not None:
            found.append(c.purpose.contains(self.purpose, autoescape=True))
        if self.seqs:
            found.append(c.seq.in_(self.seqs))
        return found

    def describe(self) -> dict[str, str]:
        """The filters in force as `filter.<name>` → text, for the audit entry of an export."""
        described = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value is None or value == ():
                continue
            if isinstance(value, datetime):
                text = value.isoformat()
            elif isinstance(value, tuple):
                text = ",".join(str(v) for v in value)
            else:
                text = str(value)
            described[f"filter.{spec.name}"] = text
        return described


def _seqs(value: str) -> tuple[int, ...]:
    parts = [part for part in value.split(",") if part.strip()]
    if not parts or len(parts) > MAX_SEQS:
        raise _bad("seqs", f"expected 1 to {MAX_SEQS} comma-separated entry positions")
    return tuple(sorted({whole_number(part, "seqs") for part in parts}))


@dataclass(frozen=True)
class PageRequest:
    limit: int = DEFAULT_LIMIT
    before: int | None = None  # only entries with a smaller position: the previous page's cursor

    @classmethod
    def parse(cls, limit: str | None, before: str | None) -> PageRequest:
        return cls(
            limit=whole_number(limit, "limit", 1, MAX_LIMIT) if limit else DEFAULT_LIMIT,
            before=whole_number(before, "before") if before else None,
        )


def visible_to(orgs: Collection[str]) -> ColumnElement[bool]:
    """Entries of these organisations, and entries of no organisation (the gateway's, connectors')."""
    return or_(_ENTRIES.org.is_(None), _ENTRIES.org.in_(sorted(orgs)))


@dataclass(frozen=True)
class Period:
    """The window an anomaly review covers: by default the last 7 days, at most 366."""

    since: datetime
    until: datetime

    @classmethod
    def parse(cls, since: str | None, until: str | None, now: datetime) -> Period:
        end = parse_moment(until, "until") if until else now.astimezone(UTC)
        start = parse_moment(since, "since") if since else end - timedelta(days=7)
        if start > end:
            raise InvalidInput("since is after until", code="bad_range")
        if end - start > timedelta(days=366):
            raise InvalidInput("an anomaly review covers at most 366 days", code="bad_range")
        return cls(start, end)


def day_start(day: date) -> datetime:
    """Midnight China time of `day`, in UTC."""
    return datetime.combine(day, datetime.min.time(), CHINA).astimezone(UTC)


__all__ = ["MAX_POSITION", "EntryFilters", "PageRequest", "Period", "parse_moment", "visible_to", "whole_number"]
