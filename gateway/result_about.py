"""What a clue report says about its request (`ResultAbout`): the model's title, who ran it,
why, who approved it, and for each capability looked up its Chinese title and the time the
index it was looked up in was committed — the agency's data as of then.

Read at result time from the request and its approval; the titles and as-of times are those
its plan pinned when it started (a request pinned before they were kept shows the ids and
no time), so the report of an old request stays the same after the agency publishes again.
"""

from __future__ import annotations

from sqlmodel import Session

from gateway.approvals import APPROVED
from gateway.db import Approval, MatchRequest, aware
from xiezhi.supervision import SupervisionModel
from xiezhi.wire import Capability, CapabilityAbout, ResultAbout


def describe(session: Session, request: MatchRequest, model: SupervisionModel) -> ResultAbout:
    found = session.get(Approval, request.id)
    approval = found if found is not None and found.status == APPROVED else None
    return ResultAbout(
        model_title=model.title,
        requester=request.requester,
        org=request.org,
        purpose=request.purpose,
        legal_basis=request.legal_basis,
        created_at=aware(request.created_at),
        completed_at=aware(request.completed_at) if request.completed_at else None,
        approved_by=approval.decided_by if approval else None,
        approved_at=aware(approval.decided_at) if approval and approval.decided_at else None,
        capabilities=tuple(_capability(request, c) for c in model.looks_up),
    )


def _capability(request: MatchRequest, capability: Capability) -> CapabilityAbout:
    pinned = request.plan.pinned(capability.connector)
    as_of = pinned.as_of.get(capability) if pinned else None
    return CapabilityAbout(
        id=capability,
        title=(pinned.titles.get(capability) if pinned else None) or capability,
        data_as_of=aware(as_of) if as_of else None,
    )
