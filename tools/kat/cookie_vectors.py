#!/usr/bin/env python3
"""Known-answer vectors for intentra's mac1, mac2, cookies and CookieReply.

Computed independently of the Rust code, from the formulas in PROTOCOL.md,
with the standard library (hashlib, hmac, ipaddress) and the `cryptography`
package (AES-256-GCM). Inputs are fixed, so the output is deterministic:

    python3 tools/kat/cookie_vectors.py            # rewrites src/proto/tests/data/cookie_vectors.json
    python3 tools/kat/cookie_vectors.py --check    # fails if the committed file differs

The Rust tests in src/proto/cookie.rs load the JSON and check every value.
"""

import argparse
import hashlib
import hmac
import ipaddress
import json
import pathlib
import struct
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
TYPE_HANDSHAKE_INIT = 1
TYPE_COOKIE_REPLY = 4
MAC1_LABEL = b"intentra-mac1-v1"
COOKIE_LABEL = b"intentra-cookie-v1"

OUT = pathlib.Path(__file__).resolve().parents[2] / "src" / "proto" / "tests" / "data" / "cookie_vectors.json"


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def mac(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 truncated to its first 16 bytes."""
    return hmac.new(key, data, hashlib.sha256).digest()[:16]


def mac1_key(responder_public: bytes) -> bytes:
    return sha256(MAC1_LABEL + responder_public)


def cookie_key(responder_public: bytes) -> bytes:
    return sha256(COOKIE_LABEL + responder_public)


def addr_bytes(host: str, port: int) -> bytes:
    """Source IP (IPv4-mapped IPv6 folded to 4 bytes) then the port big-endian."""
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.packed + struct.pack(">H", port)


def rust_socket_addr(host: str, port: int) -> str:
    """The text form Rust's SocketAddr parses."""
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def init_without_macs(sender: int, noise: bytes) -> bytes:
    assert len(noise) == 32
    body = bytes([VERSION, TYPE_HANDSHAKE_INIT, 0, 0]) + struct.pack("<I", sender) + noise + bytes(48)
    assert len(body) == 88
    return body


def cookie_reply(responder_public: bytes, receiver: int, nonce: bytes, cookie: bytes, init_mac1: bytes) -> bytes:
    assert len(nonce) == 12 and len(cookie) == 16 and len(init_mac1) == 16
    sealed = AESGCM(cookie_key(responder_public)).encrypt(nonce, cookie, init_mac1)
    packet = bytes([VERSION, TYPE_COOKIE_REPLY, 0, 0]) + struct.pack("<I", receiver) + nonce + sealed
    assert len(packet) == 52
    return packet


def handshake_vector(label: str, responder_public: bytes, sender: int, secret: bytes,
                     addrs: list, reply_addr_index: int, nonce: bytes) -> dict:
    prefix88 = init_without_macs(sender, sha256(b"intentra kat noise " + label.encode()))
    k1 = mac1_key(responder_public)
    mac1 = mac(k1, prefix88)
    cookies = []
    for host, port in addrs:
        raw = addr_bytes(host, port)
        cookie = mac(secret, raw)
        mac2 = mac(cookie, prefix88 + mac1)
        cookies.append({
            "addr": rust_socket_addr(host, port),
            "addr_bytes": raw.hex(),
            "cookie": cookie.hex(),
            "mac2": mac2.hex(),
            "init": (prefix88 + mac1 + mac2).hex(),
        })
    reply_cookie = bytes.fromhex(cookies[reply_addr_index]["cookie"])
    return {
        "label": label,
        "responder_public_key": responder_public.hex(),
        "mac1_key": k1.hex(),
        "cookie_key": cookie_key(responder_public).hex(),
        "init_without_macs": prefix88.hex(),
        "mac1": mac1.hex(),
        "init_without_cookie": (prefix88 + mac1 + bytes(16)).hex(),
        "secret": secret.hex(),
        "cookies": cookies,
        "cookie_reply": {
            "receiver": sender,
            "nonce": nonce.hex(),
            "cookie": reply_cookie.hex(),
            "init_mac1": mac1.hex(),
            "packet": cookie_reply(responder_public, sender, nonce, reply_cookie, mac1).hex(),
        },
    }


def build() -> dict:
    # RFC 4231 test cases 1 and 6 (the latter has a key longer than a SHA-256 block),
    # truncated to 16 bytes, plus an empty key and message.
    hmac_cases = [
        (bytes([0x0B]) * 20, b"Hi There"),
        (bytes([0xAA]) * 131, b"Test Using Larger Than Block-Size Key - Hash Key First"),
        (b"", b""),
        (bytes(range(64)), bytes(range(200))),
    ]
    addrs = [
        ("192.0.2.1", 51820),
        ("2001:db8::1", 443),
        ("::ffff:192.0.2.1", 51820),
        ("192.0.2.1", 51821),
        ("198.51.100.77", 1),
        ("fe80::1234:5678:9abc:def0", 65535),
    ]
    return {
        "generator": "tools/kat/cookie_vectors.py",
        "hmac_sha256_128": [
            {"key": k.hex(), "data": d.hex(), "mac": mac(k, d).hex()} for k, d in hmac_cases
        ],
        "handshakes": [
            handshake_vector(
                "rfc7748-alice",
                # RFC 7748 section 6.1, Alice's public key.
                bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"),
                0x11223344,
                sha256(b"intentra kat cookie secret 1"),
                addrs,
                0,
                bytes.fromhex("000102030405060708090a0b"),
            ),
            handshake_vector(
                "rfc7748-bob",
                # RFC 7748 section 6.1, Bob's public key.
                bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"),
                0xFFFFFFFF,
                sha256(b"intentra kat cookie secret 2"),
                addrs,
                1,
                bytes.fromhex("f0e1d2c3b4a5968778695a4b"),
            ),
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = json.dumps(build(), indent=2) + "\n"
    if args.check:
        if args.out.read_text() != text:
            print(f"{args.out} is out of date", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
