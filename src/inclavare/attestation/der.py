"""A small, strict reader of DER (the X.509 encoding), enough for certificates and extensions.

The vendors' certificates carry their facts in private extensions, and some RA-TLS
certificates are rejected outright by `cryptography` (Gramine's puts a NULL parameter in an
ECDSA AlgorithmIdentifier), so certificates are walked here as plain TLVs.

Only what X.509 uses is accepted: single-byte tags and definite lengths in their shortest form.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from inclavare.attestation.errors import MalformedEvidence

# Universal tags (class and constructed bits included, as they appear on the wire).
BOOLEAN = 0x01
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
ENUMERATED = 0x0A
UTF8_STRING = 0x0C
PRINTABLE_STRING = 0x13
T61_STRING = 0x14
IA5_STRING = 0x16
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
BMP_STRING = 0x1E
SEQUENCE = 0x30
SET = 0x31


def context(number: int, constructed: bool = True) -> int:
    """The tag byte of a context-specific [number] field."""
    return 0x80 | (0x20 if constructed else 0) | number


@dataclass(frozen=True)
class Tlv:
    """One DER element: its tag byte, its content, and its whole encoding."""

    tag: int
    content: bytes
    encoded: bytes

    def children(self) -> list[Tlv]:
        """The elements inside a constructed element (SEQUENCE, SET, [n])."""
        if not self.tag & 0x20:
            raise MalformedEvidence(f"DER element with tag 0x{self.tag:02x} is not constructed")
        return list(iter_tlvs(self.content))

    def expect(self, tag: int, what: str) -> Tlv:
        if self.tag != tag:
            raise MalformedEvidence(f"{what}: expected DER tag 0x{tag:02x}, found 0x{self.tag:02x}")
        return self


def read_tlv(data: bytes, offset: int = 0) -> tuple[Tlv, int]:
    """Read one element at `offset`; return it and the offset just after it."""
    end = len(data)
    if offset + 2 > end:
        raise MalformedEvidence("DER element truncated")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise MalformedEvidence("DER multi-byte tags are not used by X.509")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise MalformedEvidence("DER forbids indefinite lengths")
    else:
        count = first & 0x7F
        if count > 4 or pos + count > end:
            raise MalformedEvidence("DER length field truncated or too large")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or length >> (8 * (count - 1)) == 0:
            raise MalformedEvidence("DER length not in its shortest form")
        pos += count
    if pos + length > end:
        raise MalformedEvidence("DER element runs past the end of its container")
    return Tlv(tag, data[pos : pos + length], data[offset : pos + length]), pos + length


def parse_single(data: bytes, what: str) -> Tlv:
    """Parse `data` as exactly one element, with nothing after it."""
    tlv, end = read_tlv(data)
    if end != len(data):
        raise MalformedEvidence(f"{what}: {len(data) - end} unexpected bytes after the DER element")
    return tlv


def iter_tlvs(data: bytes) -> Iterator[Tlv]:
    offset = 0
    while offset < len(data):
        tlv, offset = read_tlv(data, offset)
        yield tlv


def decode_oid(content: bytes) -> str:
    """The dotted form of an OBJECT IDENTIFIER's content bytes."""
    if not content or content[-1] & 0x80:
        raise MalformedEvidence("malformed OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    for byte in content:
        if value == 0 and byte == 0x80:
            raise MalformedEvidence("OBJECT IDENTIFIER arc not in its shortest form")
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(arc) for arc in head + arcs[1:])


def encode_oid(dotted: str) -> bytes:
    """The content bytes of an OBJECT IDENTIFIER given in dotted form."""
    arcs = [int(part) for part in dotted.split(".")]
    values = [arcs[0] * 40 + arcs[1], *arcs[2:]]
    out = bytearray()
    for value in values:
        chunk = [value & 0x7F]
        value >>= 7
        while value:
            chunk.append(0x80 | (value & 0x7F))
            value >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


def decode_integer(content: bytes) -> int:
    if not content:
        raise MalformedEvidence("empty INTEGER")
    return int.from_bytes(content, "big", signed=True)


def decode_boolean(content: bytes) -> bool:
    if len(content) != 1:
        raise MalformedEvidence("BOOLEAN must be one byte")
    return content != b"\x00"


def decode_bit_string(content: bytes) -> bytes:
    """The bits of a BIT STRING whose length is a whole number of bytes."""
    if not content or content[0] != 0:
        raise MalformedEvidence("BIT STRING with unused bits where whole bytes are expected")
    return content[1:]


def decode_string(tlv: Tlv) -> str:
    """The text of one of the ASN.1 string types X.509 names use."""
    try:
        if tlv.tag == BMP_STRING:
            return tlv.content.decode("utf-16-be")
        if tlv.tag == UTF8_STRING:
            return tlv.content.decode("utf-8")
        if tlv.tag in (PRINTABLE_STRING, IA5_STRING, T61_STRING):
            return tlv.content.decode("latin-1")
    except UnicodeDecodeError as error:
        raise MalformedEvidence(f"undecodable string in DER: {error.reason}") from None
    return tlv.content.hex()
