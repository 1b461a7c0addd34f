"""Symmetric and signature primitives Xiezhi composes, all from `cryptography`.

Only this module (and `xiezhi.group` for libsodium's ristretto255) imports
`cryptography.hazmat`. Callers get small functions over bytes and PEM files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from xiezhi import group

TOKEN_BYTES = 16

# Key types other modules name in signatures without importing hazmat themselves.
SigningKey = Ed25519PrivateKey
VerifyKey = Ed25519PublicKey
TOKEN_INFO_PREFIX = b"xiezhi/token/v1/"


def derive_token(oprf_output: bytes, capability: str) -> bytes:
    """Return t_c(y) = HKDF-SHA256(O(y), info="xiezhi/token/v1/" + c)[:16].

    Tokens of one subject differ per capability, so an index for one capability says
    nothing about another.
    """
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=TOKEN_BYTES,
        salt=None,
        info=TOKEN_INFO_PREFIX + capability.encode("utf-8"),
    )
    return hkdf.derive(oprf_output)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def batch_digest(elements: list[bytes]) -> str:
    """Hex SHA-256 over length-prefixed elements; binds a ticket to one exact batch."""
    h = hashlib.sha256()
    for element in elements:
        h.update(len(element).to_bytes(2, "big"))
        h.update(element)
    return h.hexdigest()


def generate_signing_key(path: Path) -> Ed25519PublicKey:
    """Create an Ed25519 private key at `path` (mode 0600, PEM) and a `.pub` beside it."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_secret(path, pem)
    public = key.public_key()
    public_path(path).write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return public


def public_path(private_path: Path) -> Path:
    return private_path.with_suffix(".pub")


def write_secret(path: Path, data: bytes) -> None:
    """Write `data` to `path` readable by the owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def load_verification_key(path: Path) -> Ed25519PublicKey | EllipticCurvePublicKey:
    """Load a PEM public key for JWT verification: Ed25519 (EdDSA) or EC (ES256)."""
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey | EllipticCurvePublicKey):
        raise ValueError(f"{path} holds neither an Ed25519 nor an EC public key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} does not hold an Ed25519 public key")
    return key


# ---- raw Ed25519 (signed notes of the audit log) -------------------------------------------


def ed25519_from_seed(seed: bytes) -> SigningKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def ed25519_generate() -> SigningKey:
    return Ed25519PrivateKey.generate()


def ed25519_seed(key: SigningKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def ed25519_public(key: SigningKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ed25519_verify(public: bytes, signature: bytes, message: bytes) -> bool:
    """True if `signature` is `public`'s Ed25519 signature on `message` (libsodium's check)."""
    return group.ed25519_verify(public, signature, message)
