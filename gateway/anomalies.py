"""Anomaly rules: patterns in the audit log and in token sightings worth an auditor's look.

Pure functions of the rows they are given and the thresholds (`AnomalyThresholds`): no
database, no clock. `gateway/audit_review.py` reads the rows; this module decides. Days and
working hours are China Standard Time. A flag names its rule, the user, when, a reason with
the numbers that triggered it and the threshold, and the audit entries involved (at most 50).

    volume_above_baseline  a user's subjects requested in one day > volume_factor × the median
                           of their earlier active days within baseline_days, and
                           > volume_min_subjects. A user with no earlier active day is
                           compared with volume_min_subjects alone: a first day is judged by
                           the absolute bound rather than never flagged.
    outside_working_hours  a person's (not the gateway's, not a connector's) request,
                           result read or approval outside working hours; one flag per user
                           and day
    denial_burst           ≥ denial_burst_count denials of one user within
                           denial_burst_minutes; overlapping bursts merge into one flag
    token_repeated         one pseudonymous token looked up by ≥ token_repeat_requests
                           requests or ≥ token_repeat_users users within token_repeat_days;
                           tokens of one connector looked up by the same set of requests
                           share one flag, which counts them per capability
    fast_approval          an approval granted less than fast_approval_seconds after the
                           request was created (and so put to approval)
    export                 every export of audit data, when flag_exports is set
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from gateway.quotas import CHINA, china_day
from gateway.settings import AnomalyThresholds, WorkingHours
from xiezhi.wire import Capability

MAX_SEQS = 50
SYSTEM_ACTOR = "gateway"
CONNECTOR_PREFIX = "connector:"
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class Window:
    """The period a review looks at, both ends included (aware datetimes)."""

    since: datetime
    until: datetime

    def holds(self, at: datetime) -> bool:
        return self.since <= at <= self.until


@dataclass(frozen=True)
class Activity:
    """One audit entry as the rules read it."""

    seq: int
    at: datetime
    kind: str
    action: str
    actor: str
    org: str | None
    outcome: str
    request_id: str | None = None
    detail: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Sighting:
    """One request's lookup of one pseudonymous token, known only by a keyed digest."""

    digest: bytes
    capability: str
    request_id: str
    actor: str
    org: str | None
    at: datetime


@dataclass(frozen=True)
class Flag:
    code: str
    actor: str
    org: str | None
    at: datetime
    reason: str
    seqs: tuple[int, ...] = ()
    request_ids: tuple[str, ...] = ()


def is_person(actor: str) -> bool:
    """People act through identity-provider subjects; the gateway and connectors do not."""
    return actor != SYSTEM_ACTOR and not actor.startswith(CONNECTOR_PREFIX)


def _seqs(rows: Iterable[Activity]) -> tuple[int, ...]:
    return tuple(sorted(row.seq for row in rows)[:MAX_SEQS])


# ---- volume --------------------------------------------------------------------------


def volume_above_baseline(created: Sequence[Activity], t: AnomalyThresholds, window: Window) -> list[Flag]:
    """`created`: request.created entries from baseline_days before the window to its end."""
    days: dict[str, dict[date, list[Activity]]] = defaultdict(lambda: defaultdict(list))
    for row in created:
        days[row.actor][china_day(row.at)].append(row)
    flags = []
    for actor, by_day in days.items():
        totals = {day: sum(_subjects(row) for row in rows) for day, rows in by_day.items()}
        for day, rows in sorted(by_day.items()):
            if not any(window.holds(row.at) for row in rows):
                continue
            earlier = [n for d, n in totals.items() if day - timedelta(days=t.baseline_days) <= d < day and n > 0]
            flag = _volume_flag(actor, day, rows, totals[day], earlier, t)
            if flag is not None:
                flags.append(flag)
    return flags


def _volume_flag(
    actor: str, day: date, rows: list[Activity], total: int, earlier: list[int], t: AnomalyThresholds
) -> Flag | None:
    if total <= t.volume_min_subjects:
        return None
    if earlier:
        median = statistics.median(earlier)
        if total <= t.volume_factor * median:
            return None
        why = (
            f"{total} subjects requested on {day} (China time), above {t.volume_factor:g} × the median "
            f"{median:g} of {len(earlier)} earlier active day(s) within {t.baseline_days} days "
            f"and above the minimum of {t.volume_min_subjects}"
        )
    else:
        why = (
            f"{total} subjects requested on {day} (China time) with no earlier active day within "
            f"{t.baseline_days} days to compare with, above the minimum of {t.volume_min_subjects}"
        )
    last = max(rows, key=lambda row: row.at)
    return Flag("volume_above_baseline", actor, last.org, last.at, why, _seqs(rows))


def _subjects(row: Activity) -> int:
    value = row.detail.get("subjects")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# ---- working hours -------------------------------------------------------------------


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def within_working_hours(moment: datetime, hours: WorkingHours) -> bool:
    local = moment.astimezone(CHINA)
    if hours.weekdays_only and local.weekday() >= 5:
        return False
    now, start, end = local.hour * 60 + local.minute, _minutes(hours.start), _minutes(hours.end)
    if start <= end:
        return start <= now < end
    return now >= start or now < end  # hours that run past midnight


def outside_working_hours(actions: Sequence[Activity], t: AnomalyThresholds, window: Window) -> list[Flag]:
    """`actions`: request.created, result.read and approval entries in the window."""
    hours = t.working_hours
    groups: dict[tuple[str, date], list[Activity]] = defaultdict(list)
    for row in actions:
        if is_person(row.actor) and window.holds(row.at) and not within_working_hours(row.at, hours):
            groups[(row.actor, china_day(row.at))].append(row)
    days = "Monday to Friday" if hours.weekdays_only else "every day"
    flags = []
    for (actor, day), rows in sorted(groups.items()):
        first = min(rows, key=lambda row: row.at)
        kinds = ", ".join(f"{kind} ×{n}" for kind, n in sorted(Counter(row.kind for row in rows).items()))
        why = (
            f"{len(rows)} action(s) ({kinds}) on {_WEEKDAYS[day.weekday()]} {day}, first at "
            f"{first.at.astimezone(CHINA):%H:%M} China time, outside working hours "
            f"{hours.start}–{hours.end} {days}"
        )
        flags.append(Flag("outside_working_hours", actor, first.org, first.at, why, _seqs(rows)))
    return flags


# ---- denials -------------------------------------------------------------------------


def denial_burst(denials: Sequence[Activity], t: AnomalyThresholds, window: Window) -> list[Flag]:
    """`denials`: decisions with outcome deny, from denial_burst_minutes before the window to its end."""
    by_actor: dict[str, list[Activity]] = defaultdict(list)
    for row in denials:
        by_actor[row.actor].append(row)
    span = timedelta(minutes=t.denial_burst_minutes)
    flags = []
    for actor, rows in sorted(by_actor.items()):
        rows.sort(key=lambda row: (row.at, row.seq))
        for burst in _bursts(rows, t.denial_burst_count, span):
            if any(window.holds(row.at) for row in burst):
                flags.append(_burst_flag(actor, burst, t))
    return flags


def _bursts(rows: list[Activity], count: int, span: timedelta) -> list[list[Activity]]:
    """Maximal runs in which every `count` consecutive rows fall within `span`, merged when they overlap."""
    bursts: list[tuple[int, int]] = []
    start = 0
    for end in range(len(rows)):
        while rows[end].at - rows[start].at > span:
            start += 1
        if end - start + 1 >= count:
            if bursts and start <= bursts[-1][1]:
                bursts[-1] = (bursts[-1][0], end)
            else:
                bursts.append((start, end))
    return [rows[first : last + 1] for first, last in bursts]


def _burst_flag(actor: str, burst: list[Activity], t: AnomalyThresholds) -> Flag:
    minutes = (burst[-1].at - burst[0].at).total_seconds() / 60
    reasons = Counter(str(row.detail.get("reason") or "unknown") for row in burst)
    listed = ", ".join(f"{reason} ×{n}" for reason, n in reasons.most_common())
    why = (
        f"{len(burst)} denied decisions within {minutes:.1f} minutes ({listed}); threshold: "
        f"{t.denial_burst_count} within {t.denial_burst_minutes:g} minutes"
    )
    return Flag("denial_burst", actor, burst[0].org, burst[0].at, why, _seqs(burst))


# ---- repeated tokens -----------------------------------------------------------------


def token_repeated(sightings: Sequence[Sighting], t: AnomalyThresholds, window: Window) -> list[Flag]:
    """`sightings`: lookups from token_repeat_days before the window's end to its end.

    Counts sightings within token_repeat_days of the window's end; a token counts once per
    request however many capabilities or rows it appeared under. The flag names the
    requests and users and how many tokens, never a token or its digest.
    """
    start = window.until - timedelta(days=t.token_repeat_days)
    tokens: dict[tuple[str, bytes], list[Sighting]] = defaultdict(list)
    for sighting in sightings:
        if start < sighting.at <= window.until:
            tokens[(sighting.capability, sighting.digest)].append(sighting)
    groups: dict[tuple[str, frozenset[str]], list[list[Sighting]]] = defaultdict(list)
    for (capability, _), seen in tokens.items():
        requests = frozenset(s.request_id for s in seen)
        users = {s.actor for s in seen}
        repeated = len(requests) >= t.token_repeat_requests or len(users) >= t.token_repeat_users
        if repeated and max(s.at for s in seen) >= window.since:
            groups[(Capability(capability).connector, requests)].append(seen)
    return [_token_flag(connector, requests, group, t) for (connector, requests), group in sorted(groups.items())]


def _token_flag(connector: str, requests: frozenset[str], group: list[list[Sighting]], t: AnomalyThresholds) -> Flag:
    every = [s for seen in group for s in seen]
    last = max(every, key=lambda s: s.at)
    users = sorted({s.actor for s in every})
    per_capability = Counter(seen[0].capability for seen in group)
    counted = ", ".join(f"{capability} ×{n}" for capability, n in sorted(per_capability.items()))
    why = (
        f"pseudonymous tokens of {connector} ({counted}) each looked up by {len(requests)} requests of "
        f"{len(users)} user(s) ({', '.join(users)}) within {t.token_repeat_days} days; threshold: "
        f"{t.token_repeat_requests} requests or {t.token_repeat_users} users"
    )
    ordered = sorted(requests, key=lambda r: min(s.at for s in every if s.request_id == r))
    return Flag("token_repeated", last.actor, last.org, last.at, why, (), tuple(ordered))


# ---- approvals and exports -----------------------------------------------------------


def fast_approval(
    approvals: Sequence[Activity], created: Mapping[str, Activity], t: AnomalyThresholds, window: Window
) -> list[Flag]:
    """`approvals`: approval entries in the window; `created`: request id → its request.created entry."""
    flags = []
    for row in approvals:
        origin = created.get(row.request_id or "")
        if row.action != "approve" or not window.holds(row.at) or origin is None:
            continue
        seconds = (row.at - origin.at).total_seconds()
        if seconds < t.fast_approval_seconds:
            why = (
                f"approved {seconds:g} s after the request by {origin.actor} was created; "
                f"threshold: {t.fast_approval_seconds:g} s"
            )
            flags.append(Flag("fast_approval", row.actor, row.org, row.at, why, (origin.seq, row.seq)))
    return flags


def exports(entries: Sequence[Activity], t: AnomalyThresholds, window: Window) -> list[Flag]:
    """`entries`: audit.export entries in the window."""
    if not t.flag_exports:
        return []
    flags = []
    for row in entries:
        if not window.holds(row.at):
            continue
        filters = ", ".join(
            f"{key.removeprefix('filter.')}={value}"
            for key, value in sorted(row.detail.items())
            if key.startswith("filter.")
        )
        why = (
            f"exported {row.detail.get('rows', '?')} audit entries ({row.outcome}), "
            f"filters: {filters or 'none'}; every export is flagged for review"
        )
        flags.append(Flag("export", row.actor, row.org, row.at, why, (row.seq,)))
    return flags


__all__ = [
    "Activity",
    "Flag",
    "Sighting",
    "Window",
    "denial_burst",
    "exports",
    "fast_approval",
    "outside_working_hours",
    "token_repeated",
    "volume_above_baseline",
    "within_working_hours",
]
