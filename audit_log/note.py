"""Signed notes, checkpoints and witness cosignatures, in the C2SP formats.

- c2sp.org/signed-note: text ending in a newline, a blank line, then signature lines
  `— <key name> base64(key id || signature)`; an Ed25519 key id is
  SHA-256(name || 0x0A || 0x01 || public key)[:4].
- c2sp.org/tlog-checkpoint: the text is origin, tree size and base64 root hash, one per line.
- c2sp.org/tlog-cosignature: a witness signs `cosignature/v1\\ntime <t>\\n` + checkpoint text;
  its signature is key id (type 0x04) || u64 timestamp || Ed25519 signature.

Keys are written as the Go note tool writes them: a verifier key `name+hexid+base64(type ||
public key)` and a signer key `PRIVATE+KEY+name+hexid+base64(type || seed)`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from xiezhi.crypto import (
    SigningKey,
    ed25519_from_seed,
    ed25519_generate,
    ed25519_public,
    ed25519_seed,
    ed25519_verify,
    write_secret,
)
from xiezhi.errors import XiezhiError

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
DASH = "\u2014 "


_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")


def is_decimal(text: str) -> bool:
    """A tree size as c2sp.org notes write it: ASCII digits, no leading zero, below 10^19.
    (`str.isdigit` also takes digits such as '²' that `int` refuses.)"""
    return _DECIMAL.fullmatch(text) is not None


class NoteError(XiezhiError):
    """A note, key or checkpoint that is malformed or does not verify."""

    status = 400
    code = "note_invalid"


def key_id(name: str, kind: int, public: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + public).digest()
    return int.from_bytes(digest[:4], "big")


def _check_name(name: str) -> str:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError(f"{what} is not valid base64") from exc


@dataclass(frozen=True)
class Verifier:
    """A public key that checks one kind of note signature (Ed25519 or cosignature/v1)."""

    name: str
    kind: int
    public: bytes

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.kind, self.public)

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError("a verifier key has the form name+keyid+base64key")
        name, hex_id, material = parts
        raw = _b64decode(material, "the verifier key")
        if len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE_V1):
            raise NoteError("only Ed25519 (type 1) and cosignature/v1 (type 4) verifier keys are supported")
        verifier = cls(_check_name(name), raw[0], raw[1:])
        if len(hex_id) != 8 or f"{verifier.key_id:08x}" != hex_id.lower():
            raise NoteError(f"the key id {hex_id} does not match the key of {name}")
        return verifier

    def __str__(self) -> str:
        material = base64.b64encode(bytes([self.kind]) + self.public).decode()
        return f"{self.name}+{self.key_id:08x}+{material}"

    def check(self, message: bytes, signature: bytes) -> bool:
        return ed25519_verify(self.public, signature, message)


@dataclass(frozen=True)
class Signer:
    """An Ed25519 key that signs notes under a name."""

    name: str
    key: SigningKey

    @property
    def public(self) -> bytes:
        return ed25519_public(self.key)

    def verifier(self, kind: int = ED25519) -> Verifier:
        return Verifier(self.name, kind, self.public)

    @classmethod
    def parse(cls, skey: str) -> Signer:
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("a signer key has the form PRIVATE+KEY+name+keyid+base64key")
        name, hex_id, material = parts[2:]
        raw = _b64decode(material, "the signer key")
        if len(raw) != 33 or raw[0] != ED25519:
            raise NoteError("only Ed25519 signer keys are supported")
        signer = cls(_check_name(name), ed25519_from_seed(raw[1:]))
        if f"{signer.verifier().key_id:08x}" != hex_id.lower():
            raise NoteError(f"the key id {hex_id} does not match the key of {name}")
        return signer

    def sign(self, text: str) -> str:
        """A signature line over `text`."""
        body = struct.pack(">I", self.verifier().key_id) + self.key.sign(text.encode())
        return f"{DASH}{self.name} {base64.b64encode(body).decode()}\n"

    def cosign(self, text: str, timestamp: int) -> str:
        """A cosignature/v1 line over the checkpoint `text`, made at POSIX time `timestamp`."""
        message = f"cosignature/v1\ntime {timestamp}\n{text}".encode()
        body = struct.pack(">IQ", self.verifier(COSIGNATURE_V1).key_id, timestamp) + self.key.sign(message)
        return f"{DASH}{self.name} {base64.b64encode(body).decode()}\n"


@dataclass(frozen=True)
class SignatureLine:
    name: str
    key_id: int
    body: bytes  # after the key id

    def __str__(self) -> str:
        raw = struct.pack(">I", self.key_id) + self.body
        return f"{DASH}{self.name} {base64.b64encode(raw).decode()}\n"


def split_note(note: str) -> tuple[str, list[SignatureLine]]:
    """Separate a signed note into its text and its signature lines (unverified)."""
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise NoteError("a note must not contain control characters other than newline")
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise NoteError("a signed note is text, a blank line, then signature lines")
    text, block = note[: cut + 1], note[cut + 2 :]
    lines = []
    for line in block.splitlines():
        if not line.startswith(DASH):
            raise NoteError("a signature line starts with an em dash and a space")
        name, _, encoded = line[len(DASH) :].partition(" ")
        raw = _b64decode(encoded, "a note signature")
        if len(raw) < 5:
            raise NoteError("a note signature is too short")
        lines.append(SignatureLine(_check_name(name), int.from_bytes(raw[:4], "big"), raw[4:]))
    if not lines:
        raise NoteError("the note carries no signature")
    return text, lines


def _find(lines: list[SignatureLine], verifier: Verifier) -> SignatureLine | None:
    return next((s for s in lines if s.name == verifier.name and s.key_id == verifier.key_id), None)


def open_note(note: str, verifier: Verifier) -> str:
    """Return the text of `note` if `verifier`'s Ed25519 signature on it is present and valid."""
    text, lines = split_note(note)
    line = _find(lines, verifier)
    if line is None:
        raise NoteError(f"the note is not signed by {verifier.name} (key {verifier.key_id:08x})")
    if not verifier.check(text.encode(), line.body):
        raise NoteError(f"the signature of {verifier.name} does not verify")
    return text


def cosignature_time(note: str, witness: Verifier) -> int | None:
    """The timestamp of `witness`'s cosignature on `note`, None if it has not cosigned it.

    Raises NoteError if the cosignature is there but does not verify.
    """
    text, lines = split_note(note)
    line = _find(lines, witness)
    if line is None:
        return None
    if len(line.body) != 72:
        raise NoteError(f"the cosignature of {witness.name} is not 8 + 64 bytes")
    (timestamp,) = struct.unpack(">Q", line.body[:8])
    message = f"cosignature/v1\ntime {timestamp}\n{text}".encode()
    if not witness.check(message, line.body[8:]):
        raise NoteError(f"the cosignature of {witness.name} does not verify")
    return int(timestamp)


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or not all(lines[:-1]):
            raise NoteError("a checkpoint is origin, tree size and root hash, one per line")
        origin, size, root = lines[0], lines[1], lines[2]
        if not is_decimal(size):
            raise NoteError("the checkpoint's tree size is not a decimal number")
        digest = _b64decode(root, "the checkpoint's root hash")
        if len(digest) != 32:
            raise NoteError("the checkpoint's root hash is not 32 bytes")
        return cls(origin, int(size), digest)


def open_checkpoint(note: str, log: Verifier) -> Checkpoint:
    """Parse a checkpoint note after checking the log's signature; its origin must be the key name."""
    checkpoint = Checkpoint.parse(open_note(note, log))
    if checkpoint.origin != log.name:
        raise NoteError(f"the checkpoint's origin {checkpoint.origin!r} is not the log {log.name!r}")
    return checkpoint


def generate_signer(name: str) -> Signer:
    return Signer(_check_name(name), ed25519_generate())


def signer_key(signer: Signer) -> str:
    """The PRIVATE+KEY string of `signer` (for key files)."""
    seed = ed25519_seed(signer.key)
    material = base64.b64encode(bytes([ED25519]) + seed).decode()
    return f"PRIVATE+KEY+{signer.name}+{signer.verifier().key_id:08x}+{material}"


def load_signer(path: Path) -> Signer:
    try:
        return Signer.parse(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise NoteError(f"cannot read the note key {path}: {exc.strerror}") from exc


def ensure_signer(path: Path, name: str, kind: int = ED25519) -> Signer:
    """Load the note key at `path`, creating it (mode 0600) under `name` if it does not exist.

    The verifier key of type `kind` is written beside it as `<path>.vkey` for others to trust.
    """
    if path.exists():
        signer = load_signer(path)
    else:
        signer = generate_signer(name)
        write_secret(path, (signer_key(signer) + "\n").encode())
    path.with_suffix(".vkey").write_text(str(signer.verifier(kind)) + "\n", encoding="utf-8")
    return signer


def read_verifier(value: str) -> Verifier:
    """A verifier key given inline, or the path of a file holding one."""
    candidate = Path(value)
    if "+" not in value or candidate.is_file():
        try:
            value = candidate.read_text(encoding="utf-8")
        except OSError as exc:
            raise NoteError(f"{value} is neither a verifier key nor a readable file holding one") from exc
    return Verifier.parse(value)


def parse_witnesses(vkeys: dict[str, str]) -> dict[str, Verifier]:
    """Witness name → its cosignature/v1 verifier key, each checked."""
    witnesses = {}
    for name, vkey in vkeys.items():
        verifier = read_verifier(vkey)
        if verifier.kind != COSIGNATURE_V1:
            raise NoteError(f"witness {name}: its key is not a cosignature/v1 (type 4) key")
        witnesses[name] = verifier
    return witnesses
