"""The request plan: what a match request pinned when it started to run.

Per connector the model needs: the OPRF epoch the request evaluates under, that epoch's
public key, and the publication (a committed index of that epoch) of each capability the
model looks up. The plan is fixed when the request starts (at creation, or at approval) and
read by every later step, so a connector that rotates its epoch, or applies a delta to an
index, meanwhile changes nothing for a request in flight: it pins each publication's version
too, and looks tokens up in that version (`gateway.index_deltas`).

It is stored in `match_requests.plan` as JSON text in the shape it has always had,

    {"court": {"epoch": 1, "public_key": "<hex>", "publications": {"court.multiple_terminated": "<id>"},
               "versions": {"court.multiple_terminated": 3}}}

where `versions` appears only once a version other than the first is pinned (a plan stored
before deltas reads as version 1, which is what its publications then held).

and `PlanColumn` (gateway.db) parses it once as a row is read and serialises it as a row is
written; nothing else handles the text. A request waiting for approval has the empty plan.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, RootModel

from xiezhi.wire import Capability, ConnectorPlan

_Hex = Annotated[
    bytes, BeforeValidator(lambda v: bytes.fromhex(v) if isinstance(v, str) else v), PlainSerializer(bytes.hex)
]


class PinnedConnector(BaseModel):
    """One connector's part of a plan: its epoch, that epoch's public key, a publication per capability."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epoch: int
    public_key: _Hex
    publications: dict[Capability, str]
    versions: dict[Capability, int] = {}  # a capability absent: version 1
    # When each pinned version was committed: the data's as-of time in the clue report
    # (absent from plans stored before it was kept).
    as_of: dict[Capability, datetime] = {}
    titles: dict[Capability, str] = {}  # each capability's Chinese title then (for the same report)


class RequestPlan(RootModel[dict[str, PinnedConnector]]):
    """Connector → what the request pinned there, in the order the model first needs each."""

    model_config = ConfigDict(frozen=True)

    @classmethod
    def from_json(cls, text: str) -> RequestPlan:
        return cls.model_validate(json.loads(text))

    def to_json(self) -> str:
        # json.dumps, not pydantic's compact dump: the stored text stays byte for byte as before
        # (an empty `versions` is left out).
        return json.dumps(self.model_dump(mode="json", exclude_defaults=True))

    def connectors(self) -> tuple[str, ...]:
        """The connectors, in plan order."""
        return tuple(self.root)

    def pinned(self, connector: str) -> PinnedConnector | None:
        """What the request pinned at `connector`; None if the plan does not name it."""
        return self.root.get(connector)

    def publication(self, capability: Capability) -> str:
        """The publication pinned for `capability`; KeyError if the plan does not hold it."""
        return self.root[capability.connector].publications[capability]

    def version(self, capability: Capability) -> int:
        """The version of `capability`'s publication the request looks up in."""
        return self.root[capability.connector].versions.get(capability, 1)

    def pinned_versions(self) -> dict[str, int]:
        """Every pinned publication and its version."""
        return {
            publication: pinned.versions.get(capability, 1)
            for pinned in self.root.values()
            for capability, publication in pinned.publications.items()
        }

    def publication_ids(self) -> set[str]:
        """Every publication the plan pins, across its connectors."""
        return {publication for pinned in self.root.values() for publication in pinned.publications.values()}

    def views(self) -> tuple[ConnectorPlan, ...]:
        """What the requester is told about each connector, by connector name."""
        return tuple(
            ConnectorPlan(
                connector=name,
                epoch=pinned.epoch,
                public_key=pinned.public_key,
                capabilities=tuple(sorted(pinned.publications)),
            )
            for name, pinned in sorted(self.root.items(), key=lambda item: item[0])
        )


EMPTY_PLAN = RequestPlan({})
