"""Symmetric and signature primitives Xiezhi composes, all from `cryptography`.

Only this module (and `xiezhi.group` for libsodium's ristretto255) imports
`cryptography.hazmat`. Callers get small functions over bytes and PEM files.
AES-256-GCM and RFC 3394 key wrap fail with one `CryptoError`, whatever went wrong.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from xiezhi import group
from xiezhi.errors import XiezhiError

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


class JwsKey(NamedTuple):
    """A JWT verification key bound to the one JWS algorithm its type allows."""

    key: Ed25519PublicKey | EllipticCurvePublicKey
    algorithm: str  # "EdDSA" or "ES256"


def load_verification_key(path: Path) -> JwsKey:
    """Load a PEM public key for JWT verification and bind it to its algorithm: Ed25519 to
    EdDSA, EC P-256 to ES256. Raises ValueError for any other key.

    A token is then verified under that algorithm only: a token whose header names another
    (`none`, HS256 with the public key as its secret, ES256 under an Ed25519 key) is refused
    before any signature check, never handed to code for another key type.
    """
    key = serialization.load_pem_public_key(path.read_bytes())
    if isinstance(key, Ed25519PublicKey):
        return JwsKey(key, "EdDSA")
    if isinstance(key, EllipticCurvePublicKey) and isinstance(key.curve, SECP256R1):
        return JwsKey(key, "ES256")
    raise ValueError(f"{path} holds neither an Ed25519 nor an EC P-256 public key")


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


def ed25519_verify_key(public: bytes) -> VerifyKey:
    """The Ed25519 public key of 32 raw bytes (a JWK's `x`); raises ValueError for another size."""
    if len(public) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(public)


def ed25519_verify(public: bytes, signature: bytes, message: bytes) -> bool:
    """True if `signature` is `public`'s Ed25519 signature on `message` (libsodium's check)."""
    return group.ed25519_verify(public, signature, message)


# ---- AES-256-GCM and RFC 3394 key wrap (envelope encryption, `gateway.sealing`) -------------

AES256_KEY_BYTES = 32
GCM_NONCE_BYTES = 12


class CryptoError(XiezhiError):
    """An AEAD or key-wrap operation refused its input.

    A wrong tag, a wrong key, a bad length and a tampered byte all fold into this one error
    on purpose (pyca's `InvalidToken`); its message never carries key or plaintext bytes.
    """

    code = "crypto_error"


def random_key() -> bytes:
    """32 fresh bytes from the OS: an AES-256 data key or key-encryption key."""
    return os.urandom(AES256_KEY_BYTES)


def aes256gcm_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM ciphertext || 16-byte tag. Raises CryptoError for a key or nonce of the wrong size.

    The nonce must never repeat under one key; callers draw it at random (96 bits).
    """
    _check_sizes(key, nonce)
    try:
        return AESGCM(key).encrypt(nonce, plaintext, aad)
    except (ValueError, OverflowError):
        raise CryptoError("data could not be encrypted") from None


def aes256gcm_open(key: bytes, nonce: bytes, ciphertext: bytes | memoryview, aad: bytes) -> bytes:
    """The plaintext of `aes256gcm_seal`'s output (a view of it is fine, and saves a copy).

    Raises CryptoError if anything fails to verify.
    """
    _check_sizes(key, nonce)
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError, OverflowError):
        raise CryptoError("data could not be decrypted") from None


def wrap_key(kek: bytes, dek: bytes) -> bytes:
    """RFC 3394 AES key wrap of `dek` under a 256-bit `kek`. Raises CryptoError on bad sizes."""
    if len(kek) != AES256_KEY_BYTES:
        raise CryptoError("a key-encryption key must be 32 bytes")
    try:
        return aes_key_wrap(kek, dek)
    except ValueError:
        raise CryptoError("key could not be wrapped") from None


def unwrap_key(kek: bytes, wrapped: bytes) -> bytes:
    """Undo `wrap_key`. Raises CryptoError if the integrity check fails or a size is wrong."""
    if len(kek) != AES256_KEY_BYTES:
        raise CryptoError("a key-encryption key must be 32 bytes")
    try:
        return aes_key_unwrap(kek, wrapped)
    except (InvalidUnwrap, ValueError):
        raise CryptoError("key could not be unwrapped") from None


def _check_sizes(key: bytes, nonce: bytes) -> None:
    # `AESGCM` would accept a 128- or 192-bit key and nonces of 8 to 128 bytes; we allow only one shape.
    if len(key) != AES256_KEY_BYTES or len(nonce) != GCM_NONCE_BYTES:
        raise CryptoError("AES-256-GCM needs a 32-byte key and a 12-byte nonce")
