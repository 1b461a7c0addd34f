"""What telemetry may carry: an allowlist of attribute keys with the shape of their values,
and a scan that blanks identifiers, tokens, keys and names out of any text that is left.

Two layers, both fail-closed:

1. `attributes()` keeps only the keys in `ALLOWED`. Each key names the shape its values
   must have (a pattern for text, or int, float, bool); a value of another shape keeps its
   key with `[redacted]`, and a key not in the list is dropped. `name()` does the same for
   span, event and metric names. Nothing unknown passes: a new attribute is invisible
   until someone adds it here, with its shape.
2. `scrub()` replaces, in any text, what looks like a subject ID (15 to 18 digits, with
   spaces, dashes or full-width digits between, a trailing X in either case), a credit
   code, a passport number, a JWT or bearer credential, a PEM block, a long hex or base64
   string (tokens, blinded elements, keys) and runs of Chinese characters (names). Every
   allowed value must come through `scrub()` unchanged; free text (a log message) comes out
   scrubbed.

Pure code: no I/O. `RedactingFilter` applies `scrub()` to stdlib log records.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Mapping, Sequence

REDACTED = "[redacted]"

Scalar = str | bool | int | float
Value = Scalar | Sequence[str] | Sequence[bool] | Sequence[int] | Sequence[float]

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SEP = r"[ \t\-_.]"  # what people type between the digits of an ID (after NFKC: U+3000 is a space)
_BASE64 = re.compile(r"[A-Za-z0-9+/_\-]{20,}={0,2}")
_SECRETS = (
    re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|$)", re.DOTALL),
    re.compile(r"(?i)\b(?:bearer|basic)\s+\S+"),
    re.compile(r"eyJ[\w-]*\.[\w-]*(?:\.[\w-]*)?"),  # JWT (a ticket, a caller token)
    re.compile(r"[0-9A-Fa-f]{24,}"),  # tokens, elements and keys in hex
    _BASE64,  # … and in base64, when random-looking
    re.compile(rf"(?<![0-9])[0-9](?:{_SEP}?[0-9]){{14,}}(?:{_SEP}?[Xx])?"),  # resident IDs, 15 and 18
    re.compile(r"(?<![0-9A-Za-z])[0-9A-Za-z]{2}[0-9]{6}[0-9A-Za-z]{10}(?![0-9A-Za-z])"),  # credit codes
    re.compile(r"(?<![0-9A-Za-z])[A-Za-z]{1,2}[0-9]{7,9}(?![0-9A-Za-z])"),  # passports and permits
    re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff][\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff·•]+"),  # names
)


def _random_looking(candidate: str) -> bool:
    """Two of upper case, lower case and (two or more) digits: base64 of random bytes, not a
    path like /v1/audit/export/entries or an identifier like winning_plaintiff_unpaid."""
    classes = (
        any(c.isupper() for c in candidate),
        any(c.islower() for c in candidate),
        sum(c.isdigit() for c in candidate) >= 2,
    )
    return sum(classes) >= 2


def _scrub_piece(text: str) -> str:
    for pattern in _SECRETS:  # in order: a hex token must not lose only its leading digits
        if pattern is _BASE64:
            text = pattern.sub(lambda m: REDACTED if _random_looking(m.group()) else m.group(), text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


def scrub(text: str) -> str:
    """`text` (NFKC-folded) with every secret-looking part replaced by `[redacted]`.

    Request ids (UUIDs) are kept: they are split out first so that their hex digits do not
    join a neighbouring path into something that looks random.
    """
    folded = unicodedata.normalize("NFKC", text)
    pieces: list[str] = []
    at = 0
    for match in _UUID.finditer(folded):
        pieces += [_scrub_piece(folded[at : match.start()]), match.group()]
        at = match.end()
    pieces.append(_scrub_piece(folded[at:]))
    return "".join(pieces)


# ---- the allowlist -----------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9_]{1,64}")  # model, connector and event ids
_CODE = re.compile(r"[a-z0-9_.:+\-]{1,96}")  # outcomes, reason codes, operation names
_TEMPLATE = re.compile(r"/[a-z0-9_/{}.\-]{0,200}")  # route templates, never concrete paths
_DOTTED = re.compile(r"[A-Za-z0-9_.<>]{1,160}")  # exception types, function names
_VERSION = re.compile(r"[0-9A-Za-z.\-]{1,32}")
_NAME = re.compile(r"[A-Za-z0-9_.:{} /\-]{1,160}")

Shape = re.Pattern[str] | type

ALLOWED: dict[str, Shape] = {
    # ours (xiezhi.telemetry's helpers)
    "xiezhi.request_id": _UUID,
    "xiezhi.model": _WORD,
    "xiezhi.connector": _WORD,
    "xiezhi.capability": re.compile(r"[a-z0-9_]{1,64}\.[a-z0-9_]{1,64}"),
    "xiezhi.operation": _NAME,  # span names, e.g. "POST /v1/requests/{request_id}/lookups"
    "xiezhi.outcome": _CODE,
    "xiezhi.reason": _CODE,
    "xiezhi.alarm": _CODE,
    "xiezhi.action": _CODE,
    "xiezhi.object_kind": _WORD,
    "xiezhi.event_kind": _CODE,
    "xiezhi.org": re.compile(r"[0-9]{6}|-"),
    "xiezhi.epoch": int,
    "xiezhi.batch_size": int,
    "xiezhi.subjects": int,
    "xiezhi.rows": int,
    "xiezhi.first_row": int,
    "xiezhi.clues": int,
    "xiezhi.redacted_attributes": int,
    # HTTP (FastAPI's server spans and metrics, our client spans)
    "http.request.method": re.compile(r"[A-Z_]{1,10}"),
    "http.route": _TEMPLATE,
    "url.template": _TEMPLATE,
    "http.response.status_code": int,
    "url.scheme": re.compile(r"https?|wss?"),
    "network.protocol.name": _WORD,
    "network.protocol.version": _VERSION,
    "server.port": int,
    "error.type": _DOTTED,
    "code.function.name": _DOTTED,
    "code.line.number": int,
    "fastapi.validation.error_count": int,
    "exception.type": _DOTTED,
    "exception.escaped": bool,
    # resource
    "service.name": re.compile(r"[a-z0-9_.\-]{1,64}"),
    "service.namespace": _WORD,
    "service.version": _VERSION,
    "telemetry.sdk.language": _WORD,
    "telemetry.sdk.name": _WORD,
    "telemetry.sdk.version": _VERSION,
}
_MAX_INT = 10**12  # counts, ports, epochs; an ID number read as an int is far above


def _fits(shape: Shape, value: object) -> bool:
    if isinstance(shape, re.Pattern):
        return isinstance(value, str) and shape.fullmatch(value) is not None and scrub(value) == value
    if shape is int:
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) < _MAX_INT
    if shape is float:
        return isinstance(value, float | int) and not isinstance(value, bool)
    return isinstance(value, shape)


def value(key: str, raw: object) -> Value | None:
    """`raw` if `key` is allowed and `raw` has its shape; `[redacted]` if only the key is
    allowed; None (drop it) for a key that is not."""
    shape = ALLOWED.get(key)
    if shape is None:
        return None
    if isinstance(raw, str | bool | int | float):
        return raw if _fits(shape, raw) else REDACTED
    if isinstance(raw, Sequence) and raw and all(_fits(shape, item) for item in raw):
        return tuple(raw)
    return REDACTED


def attributes(raw: Mapping[str, object] | None) -> dict[str, Value]:
    """The allowed part of `raw`; how many keys were dropped is kept as a count."""
    kept: dict[str, Value] = {}
    dropped = 0
    for key, item in (raw or {}).items():
        allowed = value(key, item)
        if allowed is None:
            dropped += 1
        else:
            kept[key] = allowed
    if dropped:
        kept["xiezhi.redacted_attributes"] = dropped
    return kept


def name(raw: str) -> str:
    """A span, event or metric name, or `[redacted]` if it is not of a name's shape."""
    return raw if _NAME.fullmatch(raw) and scrub(raw) == raw else REDACTED


# ---- stdlib logging ----------------------------------------------------------------------


class RedactingFilter(logging.Filter):
    """Rewrites every record it passes: the message scrubbed, any exception or stack reduced
    to the exception's type (a traceback quotes values, an exception message may too).

    Put it on handlers, not loggers: a logger's filter misses records from its children.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed format string: keep the template, not the arguments
            message = str(record.msg)
        if record.exc_info and record.exc_info[0] is not None:
            message += f" [{record.exc_info[0].__name__}]"
        record.msg, record.args = scrub(message), ()
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True
