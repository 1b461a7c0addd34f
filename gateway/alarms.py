"""Alarms: what an operator must act on, kept in the database so every instance sees them.

Two are raised today: a witness that refuses the log's checkpoint (it remembers a larger or
different log than the one this gateway now signs, so the log was rolled back or rewritten,
or the witness was given the wrong key), and, at start-up, a database that no longer holds
the newest checkpoint published outside it (`gateway.checkpoint_publication`). Raising an alarm is logged, counted in
metrics (`xiezhi.alarms`) and written to the audit log as its own entry; while any alarm is
open the readiness check fails. Further refusals of the same kind from the same source only
count up on the open alarm, so a witness refusing every checkpoint does not flood the log.
An operator resolves an alarm with a reason once they have acted; that is audited too.

Messages carry witness names, sizes and reason codes only.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from audit_log import EventKind
from gateway.auth import Principal
from gateway.authz import Authorizer
from gateway.db import Alarm
from gateway.recorder import Recorder
from xiezhi.errors import Conflict, NotFound
from xiezhi.telemetry import Telemetry, count_alarm
from xiezhi.wire import AlarmView

log = logging.getLogger("xiezhi.gateway.alarms")

ALARMS = "system:alarms"
WITNESS_REFUSAL = "witness_refusal"
CHECKPOINT_ROLLBACK = "checkpoint_rollback"  # the database no longer holds a checkpoint published outside it


class Alarms:
    def __init__(
        self,
        engine: Engine,
        recorder: Recorder,
        authorizer: Authorizer,
        clock: Callable[[], datetime],
        telemetry: Telemetry | None = None,
    ) -> None:
        self._engine = engine
        self._recorder = recorder
        self._authorizer = authorizer
        self._clock = clock
        self._telemetry = telemetry
        self._lock = threading.Lock()  # one raiser at a time in this process: one open alarm per source

    def raise_alarm(self, kind: str, source: str, reason: str, message: str) -> str:
        """Raise (or repeat) the open alarm of `kind` from `source`; returns its id."""
        log.error("alarm %s from %s: %s (%s)", kind, source, message, reason)
        self._count(kind, source)
        now = self._clock()
        with self._lock, Session(self._engine) as session:
            alarm = session.exec(
                select(Alarm).where(Alarm.kind == kind, Alarm.source == source, col(Alarm.resolved_at).is_(None))
            ).first()
            if alarm is not None:
                # The first refusal's reason and message stand; repeats are counted.
                alarm.repeats, alarm.last_at = alarm.repeats + 1, now
                session.add(alarm)
                session.commit()
                return alarm.id
            alarm = Alarm(
                id=str(uuid.uuid4()),
                kind=kind,
                source=source,
                reason=reason,
                message=message,
                raised_at=now,
                last_at=now,
            )
            session.add(alarm)
            self._recorder.record_system(
                session,
                EventKind.ALARM,
                "raise",
                reason,
                None,
                alarm=alarm.id,
                alarm_kind=kind,
                source=source,
                message=message,
            )
            session.commit()
            return alarm.id

    def open_alarms(self) -> list[AlarmView]:
        """The alarms no operator has resolved yet, oldest first (for the readiness check)."""
        with Session(self._engine) as session:
            rows = session.exec(
                select(Alarm).where(col(Alarm.resolved_at).is_(None)).order_by(col(Alarm.raised_at))
            ).all()
            return [_view(alarm) for alarm in rows]

    def list(self, principal: Principal, include_resolved: bool = False) -> list[AlarmView]:
        """Alarms for an operator or auditor: the open ones, or all."""
        self._authorize(principal, "read")
        with Session(self._engine) as session:
            query = select(Alarm).order_by(col(Alarm.raised_at).desc())
            if not include_resolved:
                query = query.where(col(Alarm.resolved_at).is_(None))
            return [_view(alarm) for alarm in session.exec(query).all()]

    def resolve(self, principal: Principal, alarm_id: str, reason: str) -> AlarmView:
        """Close an open alarm with what the operator did; audited."""
        self._authorize(principal, "resolve")
        with Session(self._engine) as session:
            alarm = session.get(Alarm, alarm_id)
            if alarm is None:
                raise NotFound("unknown alarm", code="unknown_alarm")
            if alarm.resolved_at is not None:
                raise Conflict("the alarm was already resolved", code="alarm_resolved")
            alarm.resolved_at, alarm.resolved_by, alarm.resolution = self._clock(), principal.subject, reason
            session.add(alarm)
            self._recorder.record(
                session,
                principal,
                EventKind.ALARM,
                "resolve",
                "ok",
                None,
                alarm=alarm.id,
                alarm_kind=alarm.kind,
                source=alarm.source,
                resolution=reason,
            )
            session.commit()
            session.refresh(alarm)
            return _view(alarm)

    def _authorize(self, principal: Principal, action: str) -> None:
        self._recorder.enforce(principal, ALARMS, action, None, self._authorizer.decide(principal, ALARMS, action))

    def _count(self, kind: str, source: str) -> None:
        if self._telemetry is None:
            count_alarm(kind, source)
            return
        with self._telemetry.activate():
            count_alarm(kind, source)


def _view(alarm: Alarm) -> AlarmView:
    return AlarmView.model_validate(alarm, from_attributes=True)


__all__ = ["ALARMS", "CHECKPOINT_ROLLBACK", "WITNESS_REFUSAL", "Alarms"]
