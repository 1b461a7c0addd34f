"""One error root for all of Xiezhi.

    XiezhiError(public_message, status, code)
    ├── InvalidInput            400  malformed input: a body, a file row, a config field
    │   └── InvalidIdentifier   400  an ID number or credit code that fails validation
    ├── Unauthenticated         401  missing, expired or forged credentials
    ├── Denied                  403  authenticated, but policy refuses
    ├── NotFound                404  unknown request, model, capability or connector
    ├── Conflict                409  state does not allow the operation (yet)
    │   └── ApprovalRequired    409  the request waits for a department head's approval
    ├── Gone                    410  a result deleted after its retention period
    ├── TooManyRequests         429  a quota is spent; says the limit and when it resets
    ├── ProofError              422  a VOPRF proof or encoding that does not verify
    ├── ConnectorError          502  a connector failed, timed out or answered badly
    ├── Unavailable             503  a dependency (index, audit log) is not ready, or storage is full
    ├── DeriveKeyPairError      500  DeriveKeyPair drew a zero scalar 256 times (xiezhi.oprf)
    ├── CryptoError             500  an AEAD or key-wrap operation refused its input (xiezhi.crypto)
    ├── TicketKeysError         500  the ticket key folder's state or a key file is unreadable (xiezhi.jwks)
    ├── AuditUnavailable        503  the audit log could not make an event durable (audit_log.writer)
    ├── UnsafeAuditEntry        500  an event carried an ID-like value; never logged (audit_log.entries)
    ├── ProofFailed             422  a Merkle inclusion or consistency proof does not verify (audit_log.merkle)
    ├── NoteError               400  a signed note, note key or checkpoint is malformed or unverified (audit_log.note)
    ├── WitnessRefusal          400  a checkpoint the witness will not cosign; per-refusal status (audit_log.witness)
    ├── SchemaOutdated          503  the database is not at this release's schema revision (gateway.schema)
    ├── KeyringError            500  a keyring file or KEK id is missing, malformed or exposed (gateway.keyring)
    └── SealError               500  a sealed blob did not open; one message for every cause (gateway.sealing)

Each line names a class, its HTTP status and, for classes defined outside this module, the
module that defines it; `tests/test_errors.py` imports every module of every package and
holds this drawing to the classes it finds.

`public_message` is safe to show a caller: it never carries an ID number, name, token or
key. `extensions` are further problem-detail members (a request id, a limit, a reset
time), never anything identifying. The API renders every XiezhiError as an RFC 9457
problem detail in one handler.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

# A mapping carries a structured member, such as /readyz's connectors by name.
Extension = str | int | datetime | tuple[str, ...] | Mapping[str, object] | None


class XiezhiError(Exception):
    """Base of every error Xiezhi raises on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self, public_message: str, *, code: str | None = None, extensions: Mapping[str, Extension] | None = None
    ) -> None:
        super().__init__(public_message)
        self.public_message = public_message
        self.extensions: dict[str, Extension] = dict(extensions or {})
        if code is not None:
            self.code = code


class InvalidInput(XiezhiError):
    status = 400
    code = "invalid_input"


class InvalidIdentifier(InvalidInput):
    """An identifier failed normalisation or validation.

    `code` is a stable English reason code; `public_message` a Chinese reason a prosecutor
    reads in the errors report. Neither ever contains the identifier itself.
    """

    code = "invalid_identifier"


class Unauthenticated(XiezhiError):
    status = 401
    code = "unauthenticated"


class Denied(XiezhiError):
    status = 403
    code = "denied"


class NotFound(XiezhiError):
    status = 404
    code = "not_found"


class Conflict(XiezhiError):
    status = 409
    code = "conflict"


class ApprovalRequired(Conflict):
    """The request was recorded and waits in `pending_approval`; extensions say for whom."""

    code = "approval_required"


class Gone(XiezhiError):
    """Something that existed and was deleted on purpose (a result past its retention)."""

    status = 410
    code = "gone"


class TooManyRequests(XiezhiError):
    """A quota is spent. Extensions carry `limit` and `resets_at`; the API adds Retry-After."""

    status = 429
    code = "quota_exceeded"


class ProofError(XiezhiError):
    """An OPRF element, scalar or proof failed to decode or verify.

    Decoding and verification failures fold into this one error on purpose, so a caller
    learns nothing about which check failed.
    """

    status = 422
    code = "proof_invalid"


class ConnectorError(XiezhiError):
    status = 502
    code = "connector_error"


class Unavailable(XiezhiError):
    status = 503
    code = "unavailable"
