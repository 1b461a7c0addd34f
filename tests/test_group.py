"""The ristretto255 / SHA-512 layer: RFC 9380 expand_message_xmd and strict decoding."""

from __future__ import annotations

import pytest

from xiezhi import group
from xiezhi.errors import ProofError

# RFC 9380 Appendix K.3, expand_message_xmd(SHA-512).
XMD_DST = b"QUUX-V01-CS02-with-expander-SHA512-256"
XMD_VECTORS = [
    (b"", 0x20, "6b9a7312411d92f921c6f68ca0b6380730a1a4d982c507211a90964c394179ba"),
    (b"abc", 0x20, "0da749f12fbe5483eb066a5f595055679b976e93abe9be6f0f6318bce7aca8dc"),
    (
        b"abc",
        0x80,
        "7f1dddd13c08b543f2e2037b14cefb255b44c83cc397c1786d975653e36a6b11"
        "bdd7732d8b38adb4a0edc26a0cef4bb45217135456e58fbca1703cd6032cb134"
        "7ee720b87972d63fbf232587043ed2901bce7f22610c0419751c065922b48843"
        "1851041310ad659e4b23520e1772ab29dcdeb2002222a363f0c2b1c972b3efe1",
    ),
]
# RFC 9496 §4.4: the generator's canonical encoding.
GENERATOR = bytes.fromhex("e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76")
FIELD_PRIME = 2**255 - 19
ONE = group.Scalar((1).to_bytes(32, "little"))


@pytest.mark.parametrize(("msg", "length", "expected"), XMD_VECTORS)
def test_expand_message_xmd_rfc9380(msg: bytes, length: int, expected: str) -> None:
    assert group.expand_message_xmd(msg, XMD_DST, length).hex() == expected


@pytest.mark.parametrize("length", [0, -1, 255 * 64 + 1, 0x10000])
def test_expand_message_xmd_rejects_lengths(length: int) -> None:
    with pytest.raises(ValueError):
        group.expand_message_xmd(b"", XMD_DST, length)


def test_oversize_dst_is_hashed() -> None:
    long_dst = b"d" * 300
    hashed = group.digest(b"H2C-OVERSIZE-DST-" + long_dst)
    expected = group.expand_message_xmd(b"m", hashed, 64)
    assert group.expand_message_xmd(b"m", long_dst, 64) == expected


def test_generator_and_arithmetic() -> None:
    assert group.scalar_mult_base(ONE) == GENERATOR
    assert group.deserialize_element(GENERATOR) == GENERATOR
    a, b = group.random_scalar(), group.random_scalar()
    ga, gb = group.scalar_mult_base(a), group.scalar_mult_base(b)
    assert group.scalar_mult(a, GENERATOR) == ga
    assert group.element_add(ga, gb) == group.scalar_mult_base(group.scalar_add(a, b))
    assert group.element_sub(ga, gb) == group.scalar_mult_base(group.scalar_sub(a, b))
    assert group.scalar_mult(b, ga) == group.scalar_mult_base(group.scalar_mul(a, b))
    assert group.scalar_mul(a, group.scalar_invert(a)) == ONE
    assert group.element_sub(ga, ga) == group.IDENTITY
    assert group.element_add(group.IDENTITY, ga) == ga
    assert group.scalar_mult_batch(a, [GENERATOR, gb]) == [ga, group.scalar_mult(a, gb)]


def test_hashes_are_deterministic_and_domain_separated() -> None:
    assert group.hash_to_group(b"m", b"dst-a") == group.hash_to_group(b"m", b"dst-a")
    assert group.hash_to_group(b"m", b"dst-a") != group.hash_to_group(b"m", b"dst-b")
    group.deserialize_element(group.hash_to_group(b"m", b"dst-a"))
    scalar = group.hash_to_scalar(b"m", b"dst-a")
    assert int.from_bytes(scalar, "little") < group.ORDER
    wide = group.expand_message_xmd(b"m", b"dst-a", 64)
    assert int.from_bytes(scalar, "little") == int.from_bytes(wide, "little") % group.ORDER


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes(32), "identity element rejected"),
        (GENERATOR[:31] + bytes([GENERATOR[31] | 0x80]), "not a canonical"),
        (FIELD_PRIME.to_bytes(32, "little"), "not a canonical"),
        ((FIELD_PRIME + 1).to_bytes(32, "little"), "not a canonical"),
        ((1).to_bytes(32, "little"), "not a canonical"),
        (b"\xff" * 32, "not a canonical"),
        (GENERATOR[:31], "32 bytes"),
        (b"", "32 bytes"),
    ],
)
def test_deserialize_element_rejects(data: bytes, message: str) -> None:
    with pytest.raises(ProofError, match=message):
        group.deserialize_element(data)


@pytest.mark.parametrize("data", [bytes(32), GENERATOR[:31] + bytes([GENERATOR[31] | 0x80]), b"\xff" * 32, b"\x01"])
def test_scalar_mult_rejects_what_the_decoder_rejects(data: bytes) -> None:
    with pytest.raises(ProofError):
        group.scalar_mult(ONE, data)


def test_zero_scalar_is_refused_where_it_would_give_the_identity() -> None:
    with pytest.raises(ProofError):
        group.scalar_mult(group.ZERO_SCALAR, GENERATOR)
    with pytest.raises(ProofError):
        group.scalar_mult_base(group.ZERO_SCALAR)
    with pytest.raises(ProofError):
        group.scalar_invert(group.ZERO_SCALAR)


def test_deserialize_scalar() -> None:
    top = (group.ORDER - 1).to_bytes(32, "little")
    assert group.deserialize_scalar(top) == top
    assert group.deserialize_scalar(bytes(32)) == group.ZERO_SCALAR
    for bad in (b"\xff" * 32, group.ORDER.to_bytes(32, "little")):
        with pytest.raises(ProofError, match="scalar is not canonical"):
            group.deserialize_scalar(bad)
    with pytest.raises(ProofError, match="32 bytes"):
        group.deserialize_scalar(bytes(33))


def test_mistyped_lengths_never_reach_libsodium() -> None:
    with pytest.raises(ValueError):
        group.scalar_add(group.Scalar(b"short"), ONE)
    with pytest.raises(ValueError):
        group.scalar_reduce(bytes(32))
    with pytest.raises(ValueError):
        group.element_add(group.Element(b"short"), group.IDENTITY)


def test_random_scalars_are_canonical_nonzero_and_distinct() -> None:
    scalars = {group.random_scalar() for _ in range(64)}
    assert len(scalars) == 64
    assert all(0 < int.from_bytes(s, "little") < group.ORDER for s in scalars)
