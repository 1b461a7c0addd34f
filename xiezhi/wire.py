"""Wire formats shared by the requester client, the gateway and the connectors.

Every body is a frozen pydantic model that rejects unknown fields: parsed once at the
edge, trusted after. Binary values (ristretto255 elements, proofs, tokens) travel as
standard base64 and are decoded strictly here, so a malformed value never reaches the
protocol code.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PlainSerializer,
    StrictBool,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import CoreSchema, core_schema

from xiezhi.errors import InvalidInput

ELEMENT_BYTES = 32
PROOF_BYTES = 64
TOKEN_BYTES = 16
CAPABILITY_PATTERN = r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$"
# The largest count, row or epoch a body may carry: what a 32-bit database integer holds
# (PostgreSQL's `integer`), so a larger one is refused at the edge, never overflows in a query.
MAX_COUNT = 2**31 - 1
IDENTIFIER_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"


class Capability(str):
    """A capability id, `<connector>.<name>`, that knows the connector publishing it.

        >>> Capability("court.winning_plaintiff_unpaid").connector
        'court'

    It is the id itself (a `str`): it keys mappings, sorts, compares and serialises exactly
    as the plain id does, so stored plans, audit entries and reports do not change. Made only
    from a well-formed id; anything else raises InvalidInput (without echoing the value).
    """

    __slots__ = ()

    def __new__(cls, value: str) -> Capability:
        if not isinstance(value, str) or re.fullmatch(CAPABILITY_PATTERN, value) is None:
            raise InvalidInput("not a capability id (connector.name, lower_snake_case)", code="invalid_capability")
        return super().__new__(cls, value)

    @property
    def connector(self) -> str:
        return self.partition(".")[0]

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        """As a pydantic field: validated from a string, dumped as the plain string."""
        return core_schema.no_info_after_validator_function(
            cls, core_schema.str_schema(pattern=CAPABILITY_PATTERN), serialization=core_schema.to_string_ser_schema()
        )


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Strict standard base64; raises ValueError on anything else."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("not valid base64") from exc


def _fixed_length(size: int) -> BeforeValidator:
    def decode(value: object) -> bytes:
        if isinstance(value, bytes):
            raw = value
        elif isinstance(value, str):
            raw = b64decode(value)
        else:
            raise ValueError("expected a base64 string")
        if len(raw) != size:
            raise ValueError(f"expected {size} bytes, got {len(raw)}")
        return raw

    return BeforeValidator(decode)


def _b64_schema(size: int) -> WithJsonSchema:
    """The JSON schema of `size` bytes in standard base64, exactly what `_fixed_length` accepts."""
    padding = "=" * (-size % 3)
    characters = (size * 4 + 2) // 3  # base64 characters before the padding
    pattern = f"^[A-Za-z0-9+/]{{{characters}}}{padding}$"
    return WithJsonSchema({"type": "string", "contentEncoding": "base64", "pattern": pattern})


_as_b64 = PlainSerializer(b64encode, return_type=str)
Element = Annotated[bytes, _fixed_length(ELEMENT_BYTES), _as_b64, _b64_schema(ELEMENT_BYTES)]
Proof = Annotated[bytes, _fixed_length(PROOF_BYTES), _as_b64, _b64_schema(PROOF_BYTES)]
Token = Annotated[bytes, _fixed_length(TOKEN_BYTES), _as_b64, _b64_schema(TOKEN_BYTES)]
CapabilityId = Annotated[str, Field(pattern=CAPABILITY_PATTERN, max_length=128)]
Identifier = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]


def _no_identifier(text: str) -> str:
    if re.search(r"\d{15,}", text):
        raise ValueError("holds something shaped like an ID number")
    return text


# Free text never holding a run of 15 digits (ASCII or full-width), as the OpenAPI document says.
NO_IDENTIFIER_SCHEMA = {"not": {"pattern": "[0-9０-９]{15}"}}


class Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---- requester ↔ gateway -------------------------------------------------------------


class RequestStatus(StrEnum):
    PENDING_APPROVAL = "pending_approval"
    REJECTED = "rejected"
    EXPIRED = "expired"
    EVALUATING = "evaluating"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


RegionCode = Annotated[str, Field(pattern=r"^\d{6}$")]


class CreateMatchRequest(Wire):
    """A run of one model. Purpose and legal basis are checked by policy, so a missing one is
    refused with a reason code rather than a validation error. `scope` is the region whose
    data the run reaches; it defaults to the requester's own organisation."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "housing_fund",
                    "purpose": "（2025）浙0803执监15号",
                    "legal_basis": "《人民检察院民事诉讼监督规则》第一百零四条",
                    "scope": "330803",
                    "subject_count": 1281,
                    "subjects_digest": "27c3ad499a6ec74b872ebd3cb82edb2fc57cc777ab12840bec2a1db677bba0aa",
                }
            ]
        }
    )

    model: Identifier
    # Generous bounds here; the policy refuses anything over 200 characters with a reason code.
    purpose: Annotated[str | None, Field(max_length=2000)] = None
    legal_basis: Annotated[str | None, Field(max_length=2000)] = None
    scope: RegionCode | None = None
    subject_count: Annotated[int, Field(ge=1, le=MAX_COUNT)]
    # The SHA-256 of the list file the subjects come from (its bytes as read), which the
    # approver sees and the clue report names: it binds an approval to the exact list.
    subjects_digest: Annotated[str | None, Field(pattern=r"^[0-9a-f]{64}$")] = None


class ConnectorPlan(Wire):
    """What the requester needs to run blind evaluation against one connector."""

    connector: Identifier
    epoch: Annotated[int, Field(ge=1, le=MAX_COUNT)]
    public_key: Element
    capabilities: tuple[CapabilityId, ...]


class SlotState(StrEnum):
    """Where one batch slot stands: claimed and no evaluation answered yet; evaluated; or its
    last evaluation's proof reported as failing (it needs another attempt)."""

    RESERVED = "reserved"
    EVALUATED = "evaluated"
    PROOF_FAILED = "proof_failed"


class EvaluationSlot(Wire):
    """Rows first_row … first_row+count−1 of a request, evaluated as one batch at one connector."""

    first_row: int
    count: int
    attempts: int  # evaluations of this slot so far (at most the view's max_batch_attempts)
    state: SlotState


class ConnectorProgress(Wire):
    connector: str
    slots: tuple[EvaluationSlot, ...]  # in row order


class MatchRequestView(Wire):
    """A request as its requester sees it; `evaluations` and `rows_looked_up` say how far it got,
    so a resumed run knows which batches to evaluate again and where its lookups continue."""

    request_id: str
    model: str
    status: RequestStatus
    subject_count: int
    scope: str
    reveals: tuple[CapabilityId, ...]
    connectors: tuple[ConnectorPlan, ...]  # empty until the request may run
    created_at: datetime
    evaluations: tuple[ConnectorProgress, ...] = ()
    rows_looked_up: int = 0
    max_batch_attempts: int = 1


class CapabilityInfo(Wire):
    """A capability as a person reads it: its Chinese title and sensitivity tier (None where
    no index of it is published now)."""

    id: CapabilityId
    title: str | None
    tier: int | None


class ApprovalView(Wire):
    """A request as its approver sees it: metadata and counts, never a subject."""

    request_id: str
    model: str
    model_title: str = ""
    capabilities: tuple[CapabilityInfo, ...] = ()  # what the model looks up
    subjects_digest: str | None = None  # the list's SHA-256, as the requester's client stated it
    requester: str
    org: str
    scope: str
    subject_count: int
    purpose: str
    legal_basis: str
    reasons: tuple[str, ...]
    approver_org: str
    status: str
    requested_at: datetime
    expires_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None


class RequestSummary(Wire):
    """One of the caller's own requests, as their list shows it: metadata and counts only."""

    request_id: str
    model: str
    model_title: str
    status: RequestStatus
    purpose: str
    subject_count: int
    rows_looked_up: int
    clues: int  # found by the lookups so far
    created_at: datetime
    completed_at: datetime | None
    result_available: bool  # completed, and its result not yet deleted by retention


class QuotaView(Wire):
    subjects_per_day: int
    used_today: int
    remaining_today: int
    resets_at: datetime  # the next midnight, China time


class ModelInfo(Wire):
    """A supervision model as a requester chooses one: what it looks up, and whether the
    policy lets the caller run it now (the request is authorized again when made)."""

    id: str
    title: str
    description: str
    subjects: str  # debtors or applicants
    looks_up: tuple[CapabilityInfo, ...]
    reveals: tuple[CapabilityId, ...]
    may_run: bool


class WorkspaceView(Wire):
    """The caller, their quota today and the models they may run."""

    subject: str
    org: str | None
    roles: tuple[str, ...]
    quota: QuotaView | None  # None: no quota granted to these roles
    models: tuple[ModelInfo, ...]


class ApprovalDecision(Wire):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "同意核查：属本院终本案件专项监督范围"}]})
    # gateway.approvals refuses a reason holding an ID number (identifier_in_reason).
    reason: Annotated[str, Field(min_length=1, max_length=500, json_schema_extra=NO_IDENTIFIER_SCHEMA)]


class EvaluationBatch(Wire):
    """Blinded elements for rows first_row … first_row+n−1: one batch slot at one connector.

    Without `first_row` (a client from before batch slots) the gateway takes the slot just
    after the connector's last one, as those clients sent their batches in order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "first_row": 0,
                    "blinded_elements": [
                        "4vKuCmq8TnGohKlhxQBRX1jjC2qlgt2NtqZZReCNLXY=",
                        "4vKuCmq8TnGohKlhxQBRX1jjC2qlgt2NtqZZReCNLXY=",
                    ],
                }
            ]
        }
    )

    first_row: Annotated[int | None, Field(ge=0)] = None
    blinded_elements: Annotated[list[Element], Field(min_length=1)]


class FailureReason(StrEnum):
    PROOF_FAILED = "proof_failed"


class EvaluationFailure(Wire):
    """The requester's report that the evaluation of one slot failed on its side (its proof did not verify)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"first_row": 0, "count": 2000, "reason": "proof_failed"}]}
    )

    first_row: Annotated[int, Field(ge=0)]
    count: Annotated[int, Field(ge=1)]
    reason: FailureReason


class EvaluationResult(Wire):
    epoch: int
    evaluated_elements: list[Element]
    proof: Proof


class LookupBatch(Wire):
    """Tokens for rows first_row … first_row+n-1 (0-based positions in the request)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "first_row": 0,
                    "tokens": {
                        "housing_fund.balance_positive": ["mwiKDV2SFbOnBV+HSn3ehQ=="],
                        "housing_fund.sealed_with_balance": ["mwiKDV2SFbOnBV+HSn3ehQ=="],
                    },
                }
            ]
        }
    )

    first_row: Annotated[int, Field(ge=0, le=MAX_COUNT)]
    tokens: Annotated[
        dict[CapabilityId, Annotated[list[Token], Field(min_length=1)]],
        # Every key is a capability id (pydantic's own schema would only constrain keys that match).
        Field(json_schema_extra={"propertyNames": {"pattern": CAPABILITY_PATTERN, "maxLength": 128}}),
    ]


class RowFlags(Wire):
    row: int
    clue: bool
    flags: dict[str, bool]


class LookupResult(Wire):
    rows: list[RowFlags]


class CapabilityAbout(Wire):
    """A capability a request looked up, as its clue report describes it."""

    id: CapabilityId
    title: str  # the Chinese title the connector published (the id where not known)
    data_as_of: datetime | None  # when the version of the index the request used was committed


class ResultAbout(Wire):
    """Who ran a request, why, with whose approval, and over which data: the clue report's 说明."""

    model_title: str
    requester: str
    org: str
    purpose: str
    legal_basis: str
    created_at: datetime
    completed_at: datetime | None
    approved_by: str | None  # None: the request needed no approval
    approved_at: datetime | None
    capabilities: tuple[CapabilityAbout, ...]  # every capability looked up, in the model's order


class MatchResult(Wire):
    request_id: str
    model: str
    reveals: tuple[CapabilityId, ...]
    rows: list[RowFlags]
    about: ResultAbout | None = None  # absent from gateways before it was given


# ---- gateway ↔ connector -------------------------------------------------------------


class TicketedBatch(Wire):
    ticket: Annotated[str, Field(min_length=1, max_length=4096)]
    blinded_elements: Annotated[list[Element], Field(min_length=1)]


# ---- connector → gateway: index publication ------------------------------------------


class CapabilityDescriptor(Wire):
    id: CapabilityId
    title: Annotated[str, Field(min_length=1, max_length=100)]
    tier: Annotated[int, Field(ge=1, le=3)]


Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class StartPublication(Wire):
    """A capability's token set for an epoch: `token_count` tokens whose sorted concatenation
    hashes (SHA-256) to `digest`. With `base`, a delta to that committed publication instead:
    it adds those tokens and removes `removed_count` (hashing to `removed_digest`), all at
    once when it is committed."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "epoch": 1,
                    "public_key": "4vKuCmq8TnGohKlhxQBRX1jjC2qlgt2NtqZZReCNLXY=",
                    "capability": {"id": "housing_fund.balance_positive", "title": "住房公积金账户有余额", "tier": 2},
                    "token_count": 250000,
                    "digest": "27c3ad499a6ec74b872ebd3cb82edb2fc57cc777ab12840bec2a1db677bba0aa",
                }
            ]
        }
    )

    epoch: Annotated[int, Field(ge=1, le=MAX_COUNT)]
    public_key: Element
    capability: CapabilityDescriptor
    token_count: Annotated[int, Field(ge=0, le=MAX_COUNT)]
    digest: Sha256Hex
    base: Annotated[str | None, Field(pattern=UUID_PATTERN)] = None
    removed_count: Annotated[int, Field(ge=0, le=MAX_COUNT)] = 0
    removed_digest: Sha256Hex | None = None

    @model_validator(mode="after")
    def _delta_fields_go_together(self) -> StartPublication:
        if self.base is None and (self.removed_count or self.removed_digest is not None):
            raise ValueError("removed_count and removed_digest belong to a delta (one with a base)")
        if self.base is not None and self.removed_digest is None:
            raise ValueError("a delta names the digest of the tokens it removes (removed_digest)")
        return self


class PublicationView(Wire):
    publication_id: str
    connector: str
    capability: str
    epoch: int
    token_count: int
    received: int
    committed: bool
    version: int = 1  # the token set's version: one more per delta applied
    base: str | None = None  # a delta: the publication it changes (its id once applied)
    removed_count: int = 0
    removed_received: int = 0


class EpochView(Wire):
    connector: str
    epoch: int
    active: bool
    capabilities: tuple[str, ...]


class ConnectorHealth(Wire):
    """A connector as the gateway sees it: whether it answered its health check in time, its
    active key epoch, and when its index was activated and how many seconds ago (None before
    its first activation)."""

    reachable: bool
    epoch: int | None
    index_activated_at: datetime | None
    index_age_seconds: int | None


class Problem(Wire):
    """RFC 9457 problem detail, as every error leaves the services."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str
    # Extension members, present only where they apply.
    request_id: str | None = None
    approver_org: str | None = None
    reasons: tuple[str, ...] | None = None
    limit: int | None = None
    resets_at: datetime | None = None
    deleted_at: datetime | None = None
    connectors: dict[str, ConnectorHealth] | None = None  # /readyz: each connector's health, by name


class PolicyView(Wire):
    """The rules in force: their version (as every audited decision names it) and text."""

    version: str
    revision: int
    policy: str


class PolicyUpdate(Wire):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"policy": "# the whole policy file (policies/policy.yaml), as text\n"}]}
    )
    policy: Annotated[str, Field(min_length=1, max_length=2_000_000)]


class OrgView(Wire):
    code: str
    name: str
    parent: str | None
    level: str


# An organisation's name: shown in every view of the tree, so never anything shaped like an ID.
OrgName = Annotated[
    str,
    Field(min_length=1, max_length=64, json_schema_extra=NO_IDENTIFIER_SCHEMA),
    AfterValidator(_no_identifier),
]


class OrgCreate(Wire):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"code": "330804", "name": "某市某区人民检察院", "parent": "330800"}]}
    )
    code: RegionCode
    name: OrgName
    parent: RegionCode | None = None


class OrgRename(Wire):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "某市某区人民检察院"}]})
    name: OrgName


AuditDetail = str | int | bool | None


class AuditEntryView(Wire):
    """One audit entry as the auditor's search shows it, taken from its canonical text."""

    seq: int
    at: datetime
    kind: str
    actor: str
    org: str | None
    request_id: str | None
    model: str | None
    connector: str | None
    outcome: str
    purpose: str | None
    action: str
    detail: dict[str, AuditDetail]


class AuditEntryPage(Wire):
    """Entries newest first; `next_before` is the cursor for the next (older) page, None at the end."""

    entries: list[AuditEntryView]
    next_before: int | None


class AuditEntryDetail(AuditEntryView):
    """An entry with the exact canonical text that was hashed, so a reader can hash it again."""

    entry: str  # the RFC 8785 canonical JSON, as stored
    leaf_hash: str  # base64 of SHA-256(0x00 || entry)


class TriageState(StrEnum):
    ACKNOWLEDGED = "acknowledged"  # seen, explained, nothing to do
    ESCALATED = "escalated"  # needs someone else's look (the discipline office, the head)
    DISMISSED = "dismissed"  # a false alarm


class AnomalyTriage(Wire):
    """An auditor's word on a flag. The note is kept in the gateway's table and its digest in
    the audit log; an ID number in it is refused."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"state": "acknowledged", "note": "已电话核实：周末加班办理专项"}]}
    )

    state: TriageState
    note: Annotated[str, Field(min_length=2, max_length=500, json_schema_extra=NO_IDENTIFIER_SCHEMA)]


class TriageView(Wire):
    state: TriageState
    note: str
    by: str
    at: datetime


class AnomalyView(Wire):
    """A pattern worth an auditor's look: which rule, who, when, why (with the numbers), where."""

    code: str
    actor: str
    org: str | None
    at: datetime
    reason: str
    seqs: tuple[int, ...]  # audit entries involved, at most 50
    request_ids: tuple[str, ...] = ()  # for token_repeated: the requests that looked the tokens up
    key: str = ""  # stable across reads: what a triage names
    triage: TriageView | None = None  # the latest word on it, if any


class ProofFailures(Wire):
    """Evaluations of one connector whose proofs requesters reported as failing."""

    count: int
    last_at: datetime


class SystemStatus(Wire):
    version: str
    database: str
    policy_version: str
    active_epochs: dict[str, int]
    requests_by_status: dict[str, int]
    proof_failures: dict[str, ProofFailures] = Field(default_factory=dict)  # only connectors with any
    connectors: dict[str, ConnectorHealth]  # every configured connector's health, by name


class AlarmView(Wire):
    """An alarm: open until an operator resolves it with a reason."""

    id: str
    kind: str
    source: str
    reason: str
    message: str
    raised_at: datetime
    last_at: datetime
    repeats: int
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution: str | None = None


class AlarmResolution(Wire):
    """What the operator did about an alarm (kept in the audit log)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"reason": "已核实：见证方的状态已从备份恢复，日志未被回滚"}]}
    )

    reason: Annotated[str, Field(min_length=4, max_length=500)]


class KeyRotation(Wire):
    """What `POST /v1/keys/rotate` rotates: the key-encryption key, the data key, or both."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"kek": True, "data_key": True}]})

    kek: StrictBool = True  # true or false, not "yes" or 1
    data_key: StrictBool = True


class KeyStatus(Wire):
    """Key ids and counts only, never key material."""

    provider: str
    kek: str  # the current key-encryption key's id
    keks: tuple[str, ...]
    data_key: str | None  # the data key new seals use
    data_keys: int
    awaiting_rewrap: int  # data keys still wrapped under an older KEK


# ---- the audit log's proofs (auditor ↔ gateway) -----------------------------------------


class LogKeyView(Wire):
    """What an auditor needs to check checkpoints offline: the log's and the witnesses' keys."""

    origin: str
    log_key: str  # verifier key, name+id+base64
    witnesses: dict[str, str]  # connector → cosignature/v1 verifier key


class CheckpointView(Wire):
    size: int
    root: str  # base64
    issued_at: datetime
    note: str  # the signed checkpoint, followed by the witnesses' cosignature lines
    cosigned_by: tuple[str, ...]


class InclusionProofView(Wire):
    seq: int
    tree_size: int
    leaf_hash: str  # base64
    proof: tuple[str, ...]  # base64 hashes, leaf side first (RFC 9162 §2.1.3)
    checkpoint: str  # the signed checkpoint of tree_size


class ConsistencyProofView(Wire):
    first: int
    second: int
    proof: tuple[str, ...]  # base64 hashes (RFC 9162 §2.1.4)


class VerificationProblemView(Wire):
    position: int | None
    code: str
    message: str


class VerificationView(Wire):
    ok: bool
    checked_at: datetime
    entries: int
    checkpoints: int
    latest_checkpoint: int | None
    cosigned: dict[str, int]
    first_bad_position: int | None
    problems: tuple[VerificationProblemView, ...]
