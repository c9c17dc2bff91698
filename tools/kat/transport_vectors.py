#!/usr/bin/env python3
"""Known-answer vectors for intentra transport packets, computed with Python's
`cryptography` package, independently of the Rust code.

A transport packet is header(16) || AES-256-GCM(key, nonce, plaintext, ad=header) || tag(16),
where header = version 1, type, reserved 0 0, receiver index u32 LE, counter u64 LE, and the
nonce is 4 zero bytes followed by the counter as u64 little-endian (PROTOCOL.md).

Regenerate:  python3 tools/kat/transport_vectors.py > src/proto/tests/data/transport_vectors.json
Check:       python3 tools/kat/transport_vectors.py --check
"""
import hashlib
import json
import struct
import sys
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

OUT = Path(__file__).resolve().parents[2] / "src" / "proto" / "tests" / "data" / "transport_vectors.json"


def stream(label: str, length: int) -> bytes:
    """Deterministic bytes: SHA-256 in counter mode over a label."""
    out = b""
    block = 0
    while len(out) < length:
        out += hashlib.sha256(f"{label}/{block}".encode()).digest()
        block += 1
    return out[:length]


def vector(i: int, packet_type: int, receiver: int, counter: int, length: int) -> dict:
    key = stream(f"key-{i}", 32)
    header = bytes([1, packet_type, 0, 0]) + struct.pack("<I", receiver) + struct.pack("<Q", counter)
    plaintext = stream(f"plaintext-{i}", length)
    nonce = b"\x00" * 4 + struct.pack("<Q", counter)
    sealed = AESGCM(key).encrypt(nonce, plaintext, header)
    return {
        "key": key.hex(),
        "counter": counter,
        "header": header.hex(),
        "plaintext": plaintext.hex(),
        "nonce": nonce.hex(),
        "packet": (header + sealed).hex(),
    }


def generate() -> str:
    cases = [
        (8, 0x0001_0001, 0, 0),  # keepalive, first packet of a direction
        (9, 0x1234_0002, 1, 1),  # close with its reason byte
        (7, 0xBEEF_0003, 2, 16),  # ACK: next_expected + selective bitmap
        (6, 0x7777_0004, 1000, 8 + 56),  # reliable: seq + 56 bytes
        (5, 0x0042_0005, 123_456_789, 128),  # the benchmark size
        (5, 0xFFFF_FFFF, 2**32 + 5, 512),
        (6, 0x0100_0006, 2**60 - 1, 1200),
        (5, 0x0200_0007, 2**64 - 2**13 - 2, 1420),  # the largest payload, the last counter
    ]
    vectors = [vector(i, *case) for i, case in enumerate(cases)]
    return json.dumps({"generator": "tools/kat/transport_vectors.py", "vectors": vectors}, indent=1) + "\n"


if __name__ == "__main__":
    text = generate()
    if "--check" in sys.argv[1:]:
        if OUT.read_text() != text:
            sys.exit(f"{OUT} differs from what {__file__} generates")
        print(f"{OUT.name}: up to date")
    else:
        sys.stdout.write(text)
