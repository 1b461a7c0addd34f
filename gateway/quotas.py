"""Quotas: subjects per user per day and match requests per user per minute.

Days run midnight to midnight China Standard Time, minutes on the clock. Each spend is one
conditional UPDATE (`used + n <= limit`), so concurrent requests on any number of gateway
instances can never together exceed a quota; it runs in the caller's transaction, so a
request that fails afterwards spends nothing. A refused spend raises TooManyRequests
with the limit and the moment the window resets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from gateway.authz.policy import Limits, Quota
from gateway.db import QuotaUsage
from xiezhi.errors import Denied, TooManyRequests

CHINA = timezone(timedelta(hours=8), "CST")


def china_day(moment: datetime) -> date:
    return moment.astimezone(CHINA).date()


@dataclass(frozen=True)
class Window:
    key: str
    resets_at: datetime

    @classmethod
    def day(cls, now: datetime) -> Window:
        day = china_day(now)
        midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), CHINA)
        return cls(f"day:{day.isoformat()}", midnight.astimezone(UTC))

    @classmethod
    def minute(cls, now: datetime) -> Window:
        start = now.astimezone(UTC).replace(second=0, microsecond=0)
        return cls(f"minute:{start:%Y-%m-%dT%H:%M}", start + timedelta(minutes=1))


def quota_for(limits: Limits, roles: frozenset[str]) -> Quota:
    """The most generous quota among the user's roles; none at all is a denial."""
    quotas = [limits.quotas[role] for role in roles if role in limits.quotas]
    if not quotas:
        raise Denied("no quota is granted to these roles", code="quota_not_granted")
    return Quota(
        subjects_per_day=max(q.subjects_per_day for q in quotas),
        requests_per_minute=max(q.requests_per_minute for q in quotas),
    )


def spend(session: Session, user: str, quota: Quota, subjects: int, now: datetime) -> None:
    """Spend one request and `subjects` subjects, or raise TooManyRequests and spend nothing."""
    minute, day = Window.minute(now), Window.day(now)
    _take(session, user, minute, 1, quota.requests_per_minute, "quota_requests_per_minute", "requests per minute")
    _take(session, user, day, subjects, quota.subjects_per_day, "quota_subjects_per_day", "subjects per day")


def refund(session: Session, user: str, subjects: int, created_at: datetime) -> None:
    """Give back the subjects of a request that never ran (rejected or expired)."""
    row = QuotaUsage.__table__.c  # type: ignore[attr-defined]
    key = Window.day(created_at).key
    session.execute(update(QuotaUsage).where(row.user == user, row.window == key).values(used=row.used - subjects))


def _take(session: Session, user: str, window: Window, amount: int, limit: int, code: str, what: str) -> None:
    _ensure_row(session, user, window.key)
    row = QuotaUsage.__table__.c  # type: ignore[attr-defined]
    statement = (
        update(QuotaUsage)
        .where(row.user == user, row.window == window.key, row.used + amount <= limit)
        .values(used=row.used + amount)
    )
    if session.execute(statement).rowcount != 1:  # type: ignore[attr-defined]
        raise TooManyRequests(
            f"quota of {limit} {what} reached; it resets at {window.resets_at.isoformat()}",
            code=code,
            extensions={"limit": limit, "resets_at": window.resets_at},
        )


def _ensure_row(session: Session, user: str, key: str) -> None:
    """Create the window's row unless it exists; a concurrent creator is not an error."""
    dialect = session.get_bind().dialect.name
    values = {"user": user, "window": key, "used": 0}
    if dialect == "postgresql":
        session.execute(postgresql.insert(QuotaUsage).values(values).on_conflict_do_nothing())
    else:
        session.execute(sqlite.insert(QuotaUsage).values(values).on_conflict_do_nothing())
