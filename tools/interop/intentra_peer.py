#!/usr/bin/env python3
"""An independent intentra initiator, written from PROTOCOL.md alone.

It shares no code with the Rust implementation: the Noise XX handshake is
hand-written on top of the `cryptography` package (X25519, AES-256-GCM) and the
standard library (SHA-256, HMAC), and every byte layout, formula and rule comes
from PROTOCOL.md (section numbers are quoted in comments). It is a test tool: a
second implementation that must agree with the first on the wire.

    python3 tools/interop/intentra_peer.py --server 127.0.0.1:7000 --server-key HEX \\
        [--key-file F] --send-realtime 100 --send-reliable 100 --expect-echo

It performs the handshake over UDP (answering a CookieReply with mac2), waits for
the responder's confirmation, sends the Realtime and Reliable messages (each as its
own packet, or with --bundle N several in one Bundle, section 7.5), takes apart the
Bundles it receives, ACKs the
Reliable data it receives, retransmits its own until they are ACKed, sends
keepalives when idle, collects what the server sends back, closes the session with
an authenticated Close and prints a JSON summary on stdout. Exit status: 0 on
success, 1 when the exchange failed (the reason is on stderr and in the summary's
"error"), 2 on bad arguments.

What it does not implement (not needed by a short-lived test initiator): acting
as a responder, rekeying (runs are limited to well under the 120 s rekey age),
roaming, strikes and rate limits of its own.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import json
import os
import pathlib
import select
import socket
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

# ----- constants (PROTOCOL.md sections 3, 4, 7, 18) --------------------------------------

VERSION = 1
T_INIT, T_RESPONSE, T_FINISH, T_COOKIE = 1, 2, 3, 4
T_REALTIME, T_RELIABLE, T_ACK, T_KEEPALIVE, T_CLOSE, T_BUNDLE = 5, 6, 7, 8, 9, 10
TRANSPORT_TYPES = (T_REALTIME, T_RELIABLE, T_ACK, T_KEEPALIVE, T_CLOSE, T_BUNDLE)

MAX_DATAGRAM = 1452
HEADER_LEN = 16
TAG_LEN = 16
OVERHEAD = HEADER_LEN + TAG_LEN
MAX_REALTIME = MAX_DATAGRAM - OVERHEAD  # 1420
MAX_RELIABLE = MAX_REALTIME - 8  # 1412
# Section 7.5: a Bundle's plaintext is frames of kind (u8), length (u16 LE), body.
FRAME_HEADER_LEN = 3
MAX_BUNDLE_FRAMES = 64
FRAME_KINDS = (T_REALTIME, T_RELIABLE)
MODES = {"realtime": T_REALTIME, "reliable": T_RELIABLE, T_REALTIME: T_REALTIME,
         T_RELIABLE: T_RELIABLE}

INIT_LEN, RESPONSE_LEN, FINISH_LEN, COOKIE_REPLY_LEN = 120, 112, 77, 52
INIT_MAC1, INIT_MAC2 = 88, 104

NOISE_NAME = b"Noise_XX_25519_AESGCM_SHA256"
PROLOGUE = b"intentra v1"
MAC1_LABEL = b"intentra-mac1-v1"
COOKIE_LABEL = b"intentra-cookie-v1"

INTENT_NEW_SESSION, INTENT_REKEY = 0, 1

REPLAY_WINDOW = 2048
# Section 7.3: never seal once the next counter reaches 2^64 - 2^13 - 1.
REJECT_COUNTER = 2**64 - 2**13 - 1
# Section 15: at most 1024 sequence numbers from the oldest unacknowledged one on.
RELIABLE_WINDOW = 1024
# Section 7.4: an Ack's selective bitmap is 1 to 16 u64 LE words.
ACK_MIN_LEN, ACK_MAX_LEN = 16, 8 + 8 * (RELIABLE_WINDOW // 64)
# Section 4.6: the receive window each side advertises in its handshake payload (u32 LE);
# a sender treats more than 1024 x 1412 bytes as that, since more is never in flight.
MAX_WINDOW = RELIABLE_WINDOW * MAX_RELIABLE  # 1445888
# This peer's reorder buffer is bounded by sequence numbers only, so it takes any window.
OUR_WINDOW = MAX_WINDOW

HANDSHAKE_RETRY = 0.250
HANDSHAKE_RETRY_MAX = 2.0
HANDSHAKE_TIMEOUT = 10.0
KEEPALIVE_INTERVAL = 1.0
COOKIE_USE_FOR = 110.0
# Well below the 120 s at which an initiator must rekey (section 13), which this peer does not do.
MAX_RUN_SECONDS = 100.0

CLOSE_REASONS = ["local", "remote", "idle_timeout", "handshake_timeout", "strikes",
                 "key_expired", "not_allowed", "shutdown", "replaced"]


class PeerError(Exception):
    """The exchange failed; the message says why."""


# ----- primitives (section 1) ------------------------------------------------------------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def mac(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 truncated to 16 bytes."""
    return hmac_sha256(key, data)[:16]


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as err:  # all-zero output: a low-order point (section 4.2)
        raise PeerError(f"X25519 refused the peer's key: {err}") from err


# ----- Noise XX (section 4.2) ------------------------------------------------------------


def hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    temp = hmac_sha256(chaining_key, ikm)
    out1 = hmac_sha256(temp, b"\x01")
    out2 = hmac_sha256(temp, out1 + b"\x02")
    return out1, out2


class CipherState:
    """Noise CipherState with AESGCM: note the BIG-endian nonce counter."""

    def __init__(self) -> None:
        self.key: bytes | None = None
        self.n = 0

    def set_key(self, key: bytes) -> None:
        self.key, self.n = key, 0

    def _nonce(self) -> bytes:
        return bytes(4) + self.n.to_bytes(8, "big")

    def encrypt(self, ad: bytes, plaintext: bytes) -> bytes:
        if self.key is None:
            return plaintext
        out = AESGCM(self.key).encrypt(self._nonce(), plaintext, ad)
        self.n += 1
        return out

    def decrypt(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self.key is None:
            return ciphertext
        try:
            out = AESGCM(self.key).decrypt(self._nonce(), ciphertext, ad)
        except InvalidTag as err:
            raise PeerError("Noise message failed to decrypt") from err
        self.n += 1
        return out


class SymmetricState:
    def __init__(self, name: bytes, prologue: bytes) -> None:
        self.h = name.ljust(32, b"\x00") if len(name) <= 32 else sha256(name)
        self.ck = self.h
        self.cipher = CipherState()
        self.mix_hash(prologue)

    def mix_hash(self, data: bytes) -> None:
        self.h = sha256(self.h + data)

    def mix_key(self, ikm: bytes) -> None:
        self.ck, key = hkdf2(self.ck, ikm)
        self.cipher.set_key(key)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        out = self.cipher.encrypt(self.h, plaintext)
        self.mix_hash(out)
        return out

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        out = self.cipher.decrypt(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return out

    def split(self) -> tuple[bytes, bytes]:
        return hkdf2(self.ck, b"")


class XXInitiator:
    """The initiator side of Noise_XX_25519_AESGCM_SHA256 with intentra's payloads."""

    def __init__(self, static: X25519PrivateKey, ephemeral: X25519PrivateKey | None = None):
        self.ss = SymmetricState(NOISE_NAME, PROLOGUE)
        self.s = static
        self.e = ephemeral if ephemeral is not None else X25519PrivateKey.generate()
        self.re = b""
        self.rs = b""
        self.peer_window = 0

    def write_msg1(self) -> bytes:
        e_pub = public_bytes(self.e)
        self.ss.mix_hash(e_pub)
        return e_pub + self.ss.encrypt_and_hash(b"")  # empty payload: 32 bytes in all

    def read_msg2(self, msg: bytes) -> bytes:
        """Returns the responder's static public key; keeps its window in `peer_window`."""
        if len(msg) != 100:
            raise PeerError(f"msg2 is {len(msg)} bytes, expected 100")
        self.re = msg[:32]
        self.ss.mix_hash(self.re)
        self.ss.mix_key(dh(self.e, self.re))  # ee
        self.rs = self.ss.decrypt_and_hash(msg[32:80])  # s
        self.ss.mix_key(dh(self.e, self.rs))  # es
        payload = self.ss.decrypt_and_hash(msg[80:100])
        if len(payload) != 4:
            raise PeerError("msg2 payload is not a 4-byte window")
        self.peer_window = min(struct.unpack("<I", payload)[0], MAX_WINDOW)
        return self.rs

    def write_msg3(self, intent: int, window: int = OUR_WINDOW) -> tuple[bytes, bytes, bytes]:
        """Returns msg3 and the split (k1 initiator->responder, k2 responder->initiator)."""
        out = self.ss.encrypt_and_hash(public_bytes(self.s))  # s
        self.ss.mix_key(dh(self.s, self.re))  # se
        out += self.ss.encrypt_and_hash(bytes([intent]) + struct.pack("<I", window))
        k1, k2 = self.ss.split()
        return out, k1, k2


class XXResponder:
    """The responder side, used by the self-tests to check the initiator against itself."""

    def __init__(self, static: X25519PrivateKey, ephemeral: X25519PrivateKey | None = None):
        self.ss = SymmetricState(NOISE_NAME, PROLOGUE)
        self.s = static
        self.e = ephemeral if ephemeral is not None else X25519PrivateKey.generate()
        self.re = b""
        self.rs = b""
        self.peer_window = 0

    def read_msg1(self, msg: bytes) -> None:
        if len(msg) != 32:
            raise PeerError(f"msg1 is {len(msg)} bytes, expected 32")
        self.re = msg
        self.ss.mix_hash(self.re)
        self.ss.decrypt_and_hash(b"")

    def write_msg2(self, window: int = OUR_WINDOW) -> bytes:
        e_pub = public_bytes(self.e)
        self.ss.mix_hash(e_pub)
        self.ss.mix_key(dh(self.e, self.re))  # ee
        out = e_pub + self.ss.encrypt_and_hash(public_bytes(self.s))  # s
        self.ss.mix_key(dh(self.s, self.re))  # es
        return out + self.ss.encrypt_and_hash(struct.pack("<I", window))

    def read_msg3(self, msg: bytes) -> tuple[bytes, int, bytes, bytes]:
        """Returns the initiator's static key, the FinishIntent byte, k1 and k2; keeps its
        window in `peer_window`."""
        if len(msg) != 69:
            raise PeerError(f"msg3 is {len(msg)} bytes, expected 69")
        self.rs = self.ss.decrypt_and_hash(msg[:48])
        self.ss.mix_key(dh(self.e, self.rs))  # se
        payload = self.ss.decrypt_and_hash(msg[48:])
        if len(payload) != 5:
            raise PeerError("msg3 payload is not the intent byte and a 4-byte window")
        self.peer_window = min(struct.unpack_from("<I", payload, 1)[0], MAX_WINDOW)
        k1, k2 = self.ss.split()
        return self.rs, payload[0], k1, k2


# ----- framing, mac1, mac2, cookies (sections 3, 4, 5) ------------------------------------


def prefix(packet_type: int) -> bytes:
    return bytes([VERSION, packet_type, 0, 0])


def mac1_key(responder_public: bytes) -> bytes:
    return sha256(MAC1_LABEL + responder_public)


def cookie_key(responder_public: bytes) -> bytes:
    return sha256(COOKIE_LABEL + responder_public)


def build_init(sender: int, msg1: bytes, responder_public: bytes, cookie: bytes | None = None) -> bytes:
    """HandshakeInit: prefix, sender, msg1, 48 zero bytes, mac1, mac2 (section 4.3)."""
    body = prefix(T_INIT) + struct.pack("<I", sender) + msg1 + bytes(48)
    assert len(body) == INIT_MAC1
    body += mac(mac1_key(responder_public), body)
    body += mac(cookie, body) if cookie is not None else bytes(16)
    assert len(body) == INIT_LEN
    return body


def build_finish(receiver: int, msg3: bytes) -> bytes:
    packet = prefix(T_FINISH) + struct.pack("<I", receiver) + msg3
    assert len(packet) == FINISH_LEN
    return packet


def build_response(sender: int, receiver: int, msg2: bytes) -> bytes:
    packet = prefix(T_RESPONSE) + struct.pack("<II", sender, receiver) + msg2
    assert len(packet) == RESPONSE_LEN
    return packet


def addr_bytes(host: str, port: int) -> bytes:
    """Section 5.3: IP (IPv4-mapped IPv6 folded to 4 bytes), then the port big-endian."""
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.packed + struct.pack(">H", port)


def make_cookie(secret: bytes, host: str, port: int) -> bytes:
    return mac(secret, addr_bytes(host, port))


def seal_cookie_reply(responder_public: bytes, receiver: int, nonce: bytes, cookie: bytes,
                      init_mac1: bytes) -> bytes:
    sealed = AESGCM(cookie_key(responder_public)).encrypt(nonce, cookie, init_mac1)
    return prefix(T_COOKIE) + struct.pack("<I", receiver) + nonce + sealed


def open_cookie_reply(responder_public: bytes, packet: bytes, init_mac1: bytes) -> bytes | None:
    """The cookie in a CookieReply answering the init whose mac1 is `init_mac1` (section 4.8)."""
    if len(packet) != COOKIE_REPLY_LEN or packet[:4] != prefix(T_COOKIE):
        return None
    try:
        return AESGCM(cookie_key(responder_public)).decrypt(packet[8:20], packet[20:], init_mac1)
    except InvalidTag:
        return None


@dataclass
class Header:
    packet_type: int
    sender: int = 0
    receiver: int = 0
    counter: int = 0


def parse(datagram: bytes) -> Header | None:
    """Section 3.3: the fixed fields, checked in order. None means malformed."""
    n = len(datagram)
    if n < 4 or n > MAX_DATAGRAM or datagram[0] != VERSION or datagram[2:4] != b"\x00\x00":
        return None
    t = datagram[1]
    if t == T_INIT and n == INIT_LEN:
        h = Header(t, sender=struct.unpack_from("<I", datagram, 4)[0])
    elif t == T_RESPONSE and n == RESPONSE_LEN:
        sender, receiver = struct.unpack_from("<II", datagram, 4)
        h = Header(t, sender=sender, receiver=receiver)
        if sender == 0:
            return None
    elif t in (T_FINISH, T_COOKIE) and n == (FINISH_LEN if t == T_FINISH else COOKIE_REPLY_LEN):
        h = Header(t, receiver=struct.unpack_from("<I", datagram, 4)[0])
    elif t in TRANSPORT_TYPES and n >= OVERHEAD:
        plain = n - OVERHEAD
        lo, hi = {T_REALTIME: (0, MAX_REALTIME), T_RELIABLE: (8, MAX_REALTIME), T_ACK: (ACK_MIN_LEN, ACK_MAX_LEN),
                  T_KEEPALIVE: (0, 0), T_CLOSE: (1, 1),
                  T_BUNDLE: (FRAME_HEADER_LEN, MAX_REALTIME)}[t]
        if not lo <= plain <= hi or (t == T_ACK and plain % 8 != 0):
            return None
        receiver, counter = struct.unpack_from("<IQ", datagram, 4)
        h = Header(t, receiver=receiver, counter=counter)
    else:
        return None
    if t == T_INIT:
        return h if h.sender != 0 else None
    return h if h.receiver != 0 else None


# ----- transport packets (section 7) ------------------------------------------------------


def transport_nonce(counter: int) -> bytes:
    """4 zero bytes || counter u64 LITTLE-endian (unlike Noise's handshake nonce)."""
    return bytes(4) + struct.pack("<Q", counter)


def seal(key: bytes, packet_type: int, receiver: int, counter: int, plaintext: bytes) -> bytes:
    header = struct.pack("<BBHIQ", VERSION, packet_type, 0, receiver, counter)
    return header + AESGCM(key).encrypt(transport_nonce(counter), plaintext, header)


def open_packet(key: bytes, packet: bytes) -> bytes | None:
    """The plaintext of a transport packet, or None if it does not authenticate."""
    if len(packet) < OVERHEAD:
        return None
    counter = struct.unpack_from("<Q", packet, 8)[0]
    try:
        return AESGCM(key).decrypt(transport_nonce(counter), packet[HEADER_LEN:], packet[:HEADER_LEN])
    except InvalidTag:
        return None


class BadBundle(ValueError):
    """A Bundle's framing breaks a rule of section 7.5; the message says which."""


def bundle_frames(plaintext: bytes) -> list[tuple[int, bytes]]:
    """Section 7.5: the frames of a Bundle's plaintext, as (kind, body) in order, where a
    body is exactly the plaintext a lone packet of type `kind` would carry. Raises
    BadBundle if the framing is malformed; then no frame may be acted on."""
    frames: list[tuple[int, bytes]] = []
    at, end = 0, len(plaintext)
    while at < end:
        if len(frames) == MAX_BUNDLE_FRAMES:
            raise BadBundle(f"more than {MAX_BUNDLE_FRAMES} frames")
        if end - at < FRAME_HEADER_LEN:
            raise BadBundle(f"a frame header at offset {at} does not fit in the "
                            f"{end - at} bytes left")
        kind = plaintext[at]
        length = struct.unpack_from("<H", plaintext, at + 1)[0]
        if kind not in FRAME_KINDS:
            raise BadBundle(f"frame kind {kind} at offset {at} is not 5 or 6")
        body_at = at + FRAME_HEADER_LEN
        if body_at + length > end:
            raise BadBundle(f"the frame at offset {at} claims {length} bytes, "
                            f"{end - body_at} are left")
        if kind == T_RELIABLE and length < 8:
            raise BadBundle(f"the Reliable frame at offset {at} has {length} bytes, "
                            "shorter than its 8-byte seq")
        frames.append((kind, plaintext[body_at:body_at + length]))
        at = body_at + length
    if not frames:  # only an empty plaintext, which parse() already refuses
        raise BadBundle("no frame")
    return frames


def build_bundle(frames: list[tuple[int, bytes]]) -> bytes:
    """The plaintext of a Bundle of `frames`, (kind, body) each, body as in bundle_frames.
    Raises ValueError for what a sender must not send (section 7.5 and 3.3)."""
    if not 1 <= len(frames) <= MAX_BUNDLE_FRAMES:
        raise ValueError(f"a bundle has 1 to {MAX_BUNDLE_FRAMES} frames, not {len(frames)}")
    out = bytearray()
    for kind, body in frames:
        if kind not in FRAME_KINDS:
            raise ValueError(f"frame kind {kind} is not 5 (Realtime) or 6 (Reliable)")
        if kind == T_RELIABLE and len(body) < 8:
            raise ValueError("a Reliable frame's body starts with its 8-byte seq")
        out += struct.pack("<BH", kind, len(body)) + body
    if len(out) > MAX_REALTIME:
        raise ValueError(f"the bundle's plaintext is {len(out)} bytes, more than "
                         f"{MAX_REALTIME} (a datagram of at most {MAX_DATAGRAM})")
    return bytes(out)


def encode_ack(next_expected: int, selective: int) -> bytes:
    """Section 7.4: next_expected, then the bitmap in as few u64 LE words as hold it."""
    words = max(1, (selective.bit_length() + 63) // 64)
    return struct.pack("<Q", next_expected) + selective.to_bytes(8 * words, "little")


def decode_ack(plaintext: bytes) -> tuple[int, int]:
    """The length was checked by parse_header: 16..=136 bytes, whole words."""
    return struct.unpack_from("<Q", plaintext)[0], int.from_bytes(plaintext[8:], "little")


def ack_covers(next_expected: int, selective: int, seq: int) -> bool:
    """Section 7.4: seq < next_expected, or bit (seq - next_expected - 1) of the bitmap."""
    if seq < next_expected:
        return True
    offset = seq - next_expected
    return 1 <= offset <= RELIABLE_WINDOW and (selective >> (offset - 1)) & 1 == 1


class ReplayWindow:
    """Section 9, exactly: accept c iff nothing seen, or c > highest, or
    highest - c < 2048 and c not seen. Check before the AEAD, mark after."""

    def __init__(self) -> None:
        self.highest: int | None = None
        self.seen: set[int] = set()

    def check(self, c: int) -> bool:
        if self.highest is None or c > self.highest:
            return True
        return self.highest - c < REPLAY_WINDOW and c not in self.seen

    def mark(self, c: int) -> None:
        if self.highest is None or c > self.highest:
            self.highest = c
            floor = c - REPLAY_WINDOW
            if len(self.seen) > 2 * REPLAY_WINDOW:
                self.seen = {s for s in self.seen if s > floor}
        self.seen.add(c)


class ReliableReceiver:
    """In-order, exactly-once delivery with a bounded reorder buffer (section 15)."""

    def __init__(self, limit: int = RELIABLE_WINDOW) -> None:
        self.next_expected = 0
        self.buffer: dict[int, bytes] = {}
        self.limit = limit

    def on_segment(self, seq: int, payload: bytes) -> list[bytes]:
        """Returns the messages now deliverable, in order."""
        if seq < self.next_expected or seq in self.buffer:
            return []  # duplicate: ACKed again, not delivered again
        if seq - self.next_expected > self.limit:
            return []  # beyond what an ACK can describe: not ACKed, so it is resent
        self.buffer[seq] = payload
        out = []
        while self.next_expected in self.buffer:
            out.append(self.buffer.pop(self.next_expected))
            self.next_expected += 1
        return out

    def ack(self) -> tuple[int, int]:
        selective = 0
        for seq in self.buffer:
            offset = seq - self.next_expected
            if 1 <= offset <= RELIABLE_WINDOW:
                selective |= 1 << (offset - 1)
        return self.next_expected, selective


@dataclass
class Outstanding:
    payload: bytes
    first_sent: float
    last_sent: float
    retransmits: int = 0


class ReliableSender:
    """Sequence numbers from 0, at most 1024 in flight, RTO with backoff, fast retransmit,
    and never more bytes in flight than the peer's advertised window (section 15)."""

    def __init__(self, peer_window: int = MAX_WINDOW) -> None:
        self.next_seq = 0
        self.unacked: dict[int, Outstanding] = {}
        # Payload length of every segment sent and not yet cumulatively acknowledged
        # (selectively acknowledged ones too: the receiver still buffers them).
        self.in_window: dict[int, int] = {}
        self.peer_window = peer_window
        self.srtt: float | None = None
        self.acked = 0
        self.retransmits = 0
        self.bad_acks = 0

    def span(self) -> int:
        """Sequence numbers from the oldest not cumulatively acknowledged to the next."""
        return self.next_seq - min(self.in_window, default=self.next_seq)

    def window_bytes(self) -> int:
        return sum(self.in_window.values())

    def can_send_all(self, sizes: list[int]) -> bool:
        """Whether every message of `sizes` could be pushed now, one after the other."""
        if self.span() + len(sizes) > RELIABLE_WINDOW:
            return False
        in_flight = self.window_bytes()
        for size in sizes:
            if in_flight != 0 and in_flight + size > self.peer_window:
                return False
            in_flight += size
        return True

    def can_send(self, size: int = 0) -> bool:
        if self.span() >= RELIABLE_WINDOW:
            return False
        # A lone segment always goes: the receiver takes the next in-order one in place.
        in_flight = self.window_bytes()
        return in_flight == 0 or in_flight + size <= self.peer_window

    def push(self, payload: bytes, now: float) -> int:
        seq = self.next_seq
        self.next_seq += 1
        self.unacked[seq] = Outstanding(payload, now, now)
        self.in_window[seq] = len(payload)
        return seq

    def rto(self) -> float:
        base = 0.2 if self.srtt is None else max(0.05, 2.0 * self.srtt)
        return min(base, 1.0)

    def on_ack(self, next_expected: int, selective: int, now: float) -> list[int]:
        """Applies an ACK; returns sequence numbers to fast-retransmit."""
        highest_claimed = next_expected - 1
        if selective:
            highest_claimed = next_expected + selective.bit_length()
        if highest_claimed >= self.next_seq:
            self.bad_acks += 1  # acknowledges what we never sent (section 10)
        highest_acked = -1
        for seq in [seq for seq in self.in_window if seq < next_expected]:
            del self.in_window[seq]
        for seq in sorted(self.unacked):
            if ack_covers(next_expected, selective, seq):
                item = self.unacked.pop(seq)
                self.acked += 1
                highest_acked = max(highest_acked, seq)
                if item.retransmits == 0:  # Karn: time only unambiguous samples
                    sample = now - item.first_sent
                    self.srtt = sample if self.srtt is None else 0.875 * self.srtt + 0.125 * sample
        # A hole below a selectively acknowledged segment is lost, most likely.
        return [seq for seq, item in self.unacked.items()
                if seq < highest_acked and now - item.last_sent >= self.rto() / 2]

    def due(self, now: float) -> list[int]:
        return [seq for seq, item in self.unacked.items()
                if now - item.last_sent >= self.rto() * (2 ** min(item.retransmits, 4))]


# ----- the initiator session ---------------------------------------------------------------


@dataclass
class Summary:
    ok: bool = False
    error: str | None = None
    server: str = ""
    local_public_key: str = ""
    handshake_ok: bool = False
    handshake_confirmed: bool = False
    cookie_replies: int = 0
    handshake_retransmits: int = 0
    sent: dict = field(default_factory=lambda: {"realtime": 0, "reliable": 0})
    reliable_acked: int = 0
    reliable_retransmits: int = 0
    received: dict = field(default_factory=lambda: {"realtime": 0, "reliable": 0})
    acks_seen: int = 0
    acks_sent: int = 0
    keepalives_seen: int = 0
    keepalives_sent: int = 0
    bad_acks: int = 0
    bundles_sent: int = 0
    bundles_received: int = 0
    bundle_frames_received: int = 0
    bad_bundles: int = 0
    dropped: dict = field(default_factory=lambda: {"malformed": 0, "unknown_session": 0,
                                                   "replay": 0, "crypto": 0,
                                                   "handshake_failed": 0})
    echo: dict | None = None
    close_sent: bool = False
    closed_by_server: str | None = None


class Initiator:
    """One session with one responder, driven by a blocking loop over a UDP socket."""

    def __init__(self, sock: socket.socket, server: tuple[str, int], server_key: bytes,
                 static: X25519PrivateKey, summary: Summary, handshake_timeout: float) -> None:
        self.sock = sock
        self.server = server
        self.server_key = server_key
        self.static = static
        self.summary = summary
        self.handshake_timeout = handshake_timeout
        # Section 6: a non-zero index, hard to guess.
        self.local_index = 0
        while self.local_index == 0:
            self.local_index = int.from_bytes(os.urandom(4), "little")
        self.remote_index = 0
        self.send_key = b""
        self.recv_key = b""
        self.send_counter = 0
        self.replay = ReplayWindow()
        self.last_sent = 0.0
        self.finish_packet = b""
        self.confirmed = False
        self.closed_reason: str | None = None
        self.rel_tx = ReliableSender()
        self.rel_rx = ReliableReceiver()
        self.ack_due = False
        self.realtime_in: list[bytes] = []
        self.reliable_in: list[bytes] = []

    # -- socket helpers --

    def _send(self, datagram: bytes) -> None:
        self.sock.sendto(datagram, self.server)

    def _recv(self, timeout: float) -> tuple[bytes, tuple] | None:
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return None
        try:
            return self.sock.recvfrom(2048)
        except (BlockingIOError, InterruptedError):
            return None
        except ConnectionRefusedError:
            # ICMP port unreachable from an earlier send: nobody listens (yet); keep retrying.
            return None

    # -- handshake (sections 4, 5.6, 11.1) --

    def handshake(self) -> None:
        start = time.monotonic()
        noise = XXInitiator(self.static)
        msg1 = noise.write_msg1()
        cookie: tuple[bytes, float] | None = None

        def init_packet() -> bytes:
            valid = cookie if cookie is not None and time.monotonic() < cookie[1] else None
            return build_init(self.local_index, msg1, self.server_key, valid[0] if valid else None)

        packet = init_packet()
        self._send(packet)
        interval = HANDSHAKE_RETRY
        next_retry = time.monotonic() + interval
        finished_at = None
        while not self.confirmed:
            now = time.monotonic()
            if now - start >= self.handshake_timeout:
                raise PeerError(
                    "handshake timed out: " + ("no confirmation of HandshakeFinish" if finished_at
                                               else "no HandshakeResponse (wrong --server-key, "
                                                    "server down, or refused)"))
            if now >= next_retry:
                self._send(self.finish_packet if finished_at else packet)
                self.summary.handshake_retransmits += 1
                interval = min(interval * 2, HANDSHAKE_RETRY_MAX)
                next_retry = now + interval
            got = self._recv(min(next_retry, start + self.handshake_timeout) - now)
            if got is None:
                continue
            datagram, _src = got
            h = parse(datagram)
            if h is None:
                self.summary.dropped["malformed"] += 1
                continue
            if h.packet_type == T_COOKIE and h.receiver == self.local_index and not finished_at:
                got_cookie = open_cookie_reply(self.server_key, datagram, packet[INIT_MAC1:INIT_MAC2])
                if got_cookie is None:
                    self.summary.dropped["crypto"] += 1
                    continue
                self.summary.cookie_replies += 1
                cookie = (got_cookie, time.monotonic() + COOKIE_USE_FOR)
                packet = init_packet()  # same ephemeral, same mac1, now with mac2
                self._send(packet)
            elif h.packet_type == T_RESPONSE and h.receiver == self.local_index:
                if finished_at:
                    self._send(self.finish_packet)  # our Finish was lost: resend at once
                    continue
                try:
                    remote_static = noise.read_msg2(datagram[12:])
                except PeerError:
                    self.summary.dropped["handshake_failed"] += 1
                    # Noise state is spent after a failed read: start over with a new ephemeral.
                    noise = XXInitiator(self.static)
                    msg1 = noise.write_msg1()
                    packet = init_packet()
                    continue
                if remote_static != self.server_key:
                    raise PeerError("the responder's static key is not --server-key")
                msg3, k1, k2 = noise.write_msg3(INTENT_NEW_SESSION)
                self.rel_tx.peer_window = noise.peer_window
                self.remote_index = h.sender
                self.send_key, self.recv_key = k1, k2
                self.finish_packet = build_finish(self.remote_index, msg3)
                self._send(self.finish_packet)
                self.summary.handshake_ok = True
                finished_at = time.monotonic()
                interval = HANDSHAKE_RETRY
                next_retry = finished_at + interval
            elif h.packet_type in TRANSPORT_TYPES and finished_at:
                # Any authenticated packet on the new keys confirms the session (11.1, step 5).
                self.on_transport(datagram, h)
            else:
                self.summary.dropped["unknown_session"] += 1
        self.summary.handshake_confirmed = True
        self.last_sent = time.monotonic()

    # -- transport (sections 7, 8, 15) --

    def seal_and_send(self, packet_type: int, plaintext: bytes) -> None:
        if self.send_counter >= REJECT_COUNTER:
            raise PeerError("send counter exhausted")
        self._send(seal(self.send_key, packet_type, self.remote_index, self.send_counter, plaintext))
        self.send_counter += 1
        self.last_sent = time.monotonic()

    def on_transport(self, datagram: bytes, h: Header) -> None:
        if h.receiver != self.local_index or not self.recv_key:
            self.summary.dropped["unknown_session"] += 1
            return
        if not self.replay.check(h.counter):
            self.summary.dropped["replay"] += 1
            return
        plaintext = open_packet(self.recv_key, datagram)
        if plaintext is None:
            self.summary.dropped["crypto"] += 1
            return
        self.replay.mark(h.counter)
        self.confirmed = True
        now = time.monotonic()
        if h.packet_type in FRAME_KINDS:
            self.on_message(h.packet_type, plaintext)
        elif h.packet_type == T_BUNDLE:
            # Section 7.5 and 8, step 7: the whole framing is checked first; a malformed
            # bundle is dropped whole as `malformed` (a strike at the implementation) and
            # nothing of it is delivered. Otherwise each frame, in order, is handled as a
            # lone packet of its kind with that plaintext.
            try:
                frames = bundle_frames(plaintext)
            except BadBundle:
                self.summary.dropped["malformed"] += 1
                self.summary.bad_bundles += 1
                return
            self.summary.bundles_received += 1
            self.summary.bundle_frames_received += len(frames)
            for kind, body in frames:
                self.on_message(kind, body)
        elif h.packet_type == T_ACK:
            self.summary.acks_seen += 1
            next_expected, selective = decode_ack(plaintext)
            for seq in self.rel_tx.on_ack(next_expected, selective, now):
                self.retransmit(seq)
        elif h.packet_type == T_KEEPALIVE:
            self.summary.keepalives_seen += 1
        elif h.packet_type == T_CLOSE:
            code = plaintext[0]
            self.closed_reason = CLOSE_REASONS[code] if code < len(CLOSE_REASONS) else f"code {code}"

    def on_message(self, kind: int, plaintext: bytes) -> None:
        """A Realtime or Reliable plaintext, from a lone packet or a bundle's frame."""
        if kind == T_REALTIME:
            self.summary.received["realtime"] += 1
            self.realtime_in.append(plaintext)
        else:
            seq = struct.unpack_from("<Q", plaintext)[0]
            delivered = self.rel_rx.on_segment(seq, plaintext[8:])
            self.reliable_in.extend(delivered)
            self.summary.received["reliable"] += len(delivered)
            self.ack_due = True  # whatever the outcome: new, duplicate or dropped

    def send_bundle(self, messages: list[tuple[str | int, bytes]]) -> list[int | None] | None:
        """Sends `messages`, (mode, message) each with mode "realtime"/"reliable" (or type
        5/6), in one datagram (section 7.5): a Bundle, or the message's own packet when
        there is only one. Reliable messages get the next sequence numbers, in order.
        Returns each message's seq (None for Realtime); None, sending nothing, when the
        Reliable ones do not all fit the window now. Raises ValueError when the messages
        cannot share one datagram (too many, too large, unknown mode)."""
        if not messages:
            raise ValueError("a bundle needs at least one message")
        kinds = []
        for mode, message in messages:
            if mode not in MODES:
                raise ValueError(f"unknown mode {mode!r}")
            kind = MODES[mode]
            if len(message) > (MAX_REALTIME if kind == T_REALTIME else MAX_RELIABLE):
                raise ValueError(f"a {len(message)}-byte message is too large")
            kinds.append(kind)
        if len(messages) > 1:
            # Check the size before taking sequence numbers (placeholder seqs are as long).
            build_bundle([(k, (bytes(8) if k == T_RELIABLE else b"") + m)
                          for k, (_, m) in zip(kinds, messages)])
        if not self.rel_tx.can_send_all([len(m) for k, (_, m) in zip(kinds, messages)
                                         if k == T_RELIABLE]):
            return None
        now = time.monotonic()
        seqs: list[int | None] = []
        frames = []
        for kind, (_, message) in zip(kinds, messages):
            if kind == T_RELIABLE:
                seq = self.rel_tx.push(message, now)
                seqs.append(seq)
                frames.append((kind, struct.pack("<Q", seq) + message))
                self.summary.sent["reliable"] += 1
            else:
                seqs.append(None)
                frames.append((kind, message))
                self.summary.sent["realtime"] += 1
        if len(frames) == 1:
            self.seal_and_send(*frames[0])  # a lone message goes as its own packet
        else:
            self.seal_and_send(T_BUNDLE, build_bundle(frames))
            self.summary.bundles_sent += 1
        return seqs

    def retransmit(self, seq: int) -> None:
        item = self.rel_tx.unacked[seq]
        item.retransmits += 1
        item.last_sent = time.monotonic()
        self.rel_tx.retransmits += 1
        self.seal_and_send(T_RELIABLE, struct.pack("<Q", seq) + item.payload)

    def send_ack_if_due(self) -> None:
        if self.ack_due:
            self.ack_due = False
            self.seal_and_send(T_ACK, encode_ack(*self.rel_rx.ack()))
            self.summary.acks_sent += 1

    def exchange(self, realtime: list[bytes], reliable: list[bytes], expect_echo: bool,
                 realtime_min: int, rate: float, timeout: float, bundle: int = 1) -> None:
        """Sends the messages, one Realtime and one Reliable per tick at `rate` ticks per
        second; with `bundle` > 1, up to `bundle` messages per tick, alternating Realtime
        and Reliable, in one Bundle (section 7.5)."""
        start = time.monotonic()
        gap = 1.0 / rate
        next_send = start
        rt_q, rel_q = deque(realtime), deque(reliable)

        def done() -> bool:
            if rt_q or rel_q or self.rel_tx.unacked:
                return False
            if expect_echo:
                return (len(self.reliable_in) >= len(reliable)
                        and len(self.realtime_in) >= realtime_min)
            return True

        while not done():
            now = time.monotonic()
            if self.closed_reason is not None:
                raise PeerError(f"the server closed the session ({self.closed_reason})")
            if now - start >= timeout:
                raise PeerError("timed out before the exchange completed")
            if now >= next_send:
                if bundle > 1:
                    batch = self.next_batch(rt_q, rel_q, bundle)
                    if batch:
                        sent = self.send_bundle(batch)
                        assert sent is not None, "next_batch kept to the window"
                else:
                    if rt_q:
                        self.seal_and_send(T_REALTIME, rt_q.popleft())
                        self.summary.sent["realtime"] += 1
                    if rel_q and self.rel_tx.can_send(len(rel_q[0])):
                        message = rel_q.popleft()
                        seq = self.rel_tx.push(message, now)
                        self.seal_and_send(T_RELIABLE, struct.pack("<Q", seq) + message)
                        self.summary.sent["reliable"] += 1
                next_send = max(next_send + gap, now - 1.0)
            for seq in self.rel_tx.due(now):
                self.retransmit(seq)
            if now - self.last_sent >= KEEPALIVE_INTERVAL:
                self.seal_and_send(T_KEEPALIVE, b"")
                self.summary.keepalives_sent += 1
            sending = rt_q or rel_q
            wait = min(next_send - now if sending else 0.02, 0.02)
            got = self._recv(wait)
            while got is not None:
                datagram, _src = got
                h = parse(datagram)
                if h is None:
                    self.summary.dropped["malformed"] += 1
                elif h.packet_type in TRANSPORT_TYPES:
                    self.on_transport(datagram, h)
                elif h.packet_type == T_RESPONSE and h.receiver == self.local_index:
                    pass  # a late duplicate of msg2: the session is confirmed already
                else:
                    self.summary.dropped["unknown_session"] += 1
                got = self._recv(0.0)
            self.send_ack_if_due()

    def next_batch(self, rt_q: deque, rel_q: deque, limit: int) -> list[tuple[str, bytes]]:
        """Takes up to `limit` messages off the queues for one datagram, alternating
        Realtime and Reliable, while they fit a datagram and the Reliable window."""
        batch: list[tuple[str, bytes]] = []
        plaintext = 0
        rel_sizes: list[int] = []
        turn = "realtime"
        while len(batch) < limit:
            order = ("realtime", "reliable") if turn == "realtime" else ("reliable", "realtime")
            taken = False
            for mode in order:
                queue = rt_q if mode == "realtime" else rel_q
                if not queue:
                    continue
                body = len(queue[0]) + (8 if mode == "reliable" else 0)
                if batch and plaintext + FRAME_HEADER_LEN + body > MAX_REALTIME:
                    continue  # (a lone message goes as its own packet: no frame header)
                if mode == "reliable" and not self.rel_tx.can_send_all(rel_sizes + [len(queue[0])]):
                    continue
                if mode == "reliable":
                    rel_sizes.append(len(queue[0]))
                batch.append((mode, queue.popleft()))
                plaintext += FRAME_HEADER_LEN + body
                turn = "reliable" if mode == "realtime" else "realtime"
                taken = True
                break
            if not taken:
                break
        return batch

    def linger(self, seconds: float) -> None:
        """Keeps ACKing what the server sends for a moment, so its Reliable data settles."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and self.closed_reason is None:
            got = self._recv(end - time.monotonic())
            if got is None:
                break
            h = parse(got[0])
            if h is not None and h.packet_type in TRANSPORT_TYPES:
                self.on_transport(got[0], h)
            self.send_ack_if_due()

    def close(self) -> None:
        if self.send_key and self.closed_reason is None:
            self.seal_and_send(T_CLOSE, bytes([CLOSE_REASONS.index("local")]))
            self.summary.close_sent = True


# ----- command line -----------------------------------------------------------------------


def payloads(kind: str, count: int, size: int) -> list[bytes]:
    out = []
    for i in range(count):
        text = f"{kind} {i} ".encode()
        out.append(text + b"." * max(0, size - len(text)))
    return out


def parse_server(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]")
    port_number = int(port)
    if not 0 < port_number < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host, port_number


def parse_hex_key(text: str, what: str) -> bytes:
    text = text.strip()
    if len(text) != 64:
        raise ValueError(f"{what}: expected 64 hex characters, found {len(text)}")
    try:
        key = bytes.fromhex(text)
    except ValueError as err:
        raise ValueError(f"{what}: not hexadecimal") from err
    if key == bytes(32):
        raise ValueError(f"{what}: the all-zero key is not a key")
    return key


def load_static(path: str | None) -> X25519PrivateKey:
    """The key file holds one line: the 64-hex-character secret key (section 2)."""
    if path is None:
        return X25519PrivateKey.generate()
    text = pathlib.Path(path).read_text(encoding="ascii")
    return X25519PrivateKey.from_private_bytes(parse_hex_key(text, f"key file {path}"))


def check_echo(summary: Summary, peer: Initiator, realtime: list[bytes], reliable: list[bytes],
               realtime_min: int) -> None:
    sent_rt = set(realtime)
    unknown_rt = [p for p in peer.realtime_in if p not in sent_rt]
    duplicate_rt = len(peer.realtime_in) - len(set(peer.realtime_in))
    in_order = peer.reliable_in[:len(reliable)] == reliable
    summary.echo = {
        "realtime_matched": len(peer.realtime_in) - len(unknown_rt),
        "realtime_unknown": len(unknown_rt),
        "realtime_duplicates": duplicate_rt,
        "reliable_in_order": in_order,
        "reliable_extra": max(0, len(peer.reliable_in) - len(reliable)),
    }
    if unknown_rt:
        raise PeerError(f"{len(unknown_rt)} Realtime echoes match nothing we sent")
    if duplicate_rt:
        raise PeerError(f"{duplicate_rt} Realtime echoes arrived twice")
    if len(peer.realtime_in) < realtime_min:
        raise PeerError(f"only {len(peer.realtime_in)} of {realtime_min} Realtime echoes arrived")
    if not in_order:
        first_bad = next((i for i, (a, b) in enumerate(zip(peer.reliable_in, reliable)) if a != b),
                         min(len(peer.reliable_in), len(reliable)))
        raise PeerError(f"Reliable echoes differ from what was sent, first at message {first_bad}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", help="responder address HOST:PORT (required)")
    parser.add_argument("--server-key", help="responder public key, 64 hex (required)")
    parser.add_argument("--key-file", help="our secret key file (one line of hex); "
                                           "a fresh key if omitted")
    parser.add_argument("--send-realtime", type=int, default=0, metavar="N")
    parser.add_argument("--send-reliable", type=int, default=0, metavar="N")
    parser.add_argument("--expect-echo", action="store_true",
                        help="require every message to come back in its mode")
    parser.add_argument("--realtime-min", type=int, metavar="N",
                        help="Realtime echoes required (default: all of them)")
    parser.add_argument("--payload-size", type=int, default=64, metavar="BYTES")
    parser.add_argument("--rate", type=float, default=1000.0, metavar="HZ",
                        help="message pairs (or bundles, with --bundle) sent per second")
    parser.add_argument("--bundle", type=int, default=1, metavar="N",
                        help="send up to N messages per tick in one Bundle (PROTOCOL.md 7.5), "
                             "alternating Realtime and Reliable; 1 (default) sends each "
                             "message as its own packet")
    parser.add_argument("--timeout", type=float, default=20.0, metavar="SECONDS",
                        help="limit for the exchange after the handshake")
    parser.add_argument("--handshake-timeout", type=float, default=HANDSHAKE_TIMEOUT,
                        metavar="SECONDS")
    parser.add_argument("--linger", type=float, default=0.2, metavar="SECONDS",
                        help="keep ACKing server data this long before closing")
    parser.add_argument("--show-public-key", action="store_true",
                        help="print the public key of --key-file and exit")
    args = parser.parse_args(argv)

    summary = Summary(server=args.server or "")
    if args.show_public_key:
        try:
            if not args.key_file:
                raise ValueError("--show-public-key needs --key-file")
            print(public_bytes(load_static(args.key_file)).hex())
        except (ValueError, OSError) as err:
            print(f"intentra_peer: error: {err}", file=sys.stderr)
            return 2
        return 0
    try:
        if not args.server or not args.server_key:
            raise ValueError("--server and --server-key are required")
        server = parse_server(args.server)
        server_key = parse_hex_key(args.server_key, "--server-key")
        static = load_static(args.key_file)
        for name in ("send_realtime", "send_reliable"):
            if getattr(args, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must not be negative")
        if not 0 <= args.payload_size <= MAX_RELIABLE:
            raise ValueError(f"--payload-size must be 0..={MAX_RELIABLE}")
        if not 1 <= args.bundle <= MAX_BUNDLE_FRAMES:
            raise ValueError(f"--bundle must be 1..={MAX_BUNDLE_FRAMES}")
        if args.rate <= 0:
            raise ValueError("--rate must be positive")
        if not 0 < args.timeout + args.handshake_timeout + args.linger <= MAX_RUN_SECONDS:
            raise ValueError(f"a run must end within {MAX_RUN_SECONDS:.0f} s "
                             "(this peer does not rekey)")
    except (ValueError, OSError) as err:
        print(f"intentra_peer: error: {err}", file=sys.stderr)
        return 2
    summary.local_public_key = public_bytes(static).hex()

    realtime = payloads("rt", args.send_realtime, args.payload_size)
    reliable = payloads("rel", args.send_reliable, args.payload_size)
    realtime_min = args.realtime_min if args.realtime_min is not None else len(realtime)
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    peer = None
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
            peer = Initiator(sock, server, server_key, static, summary, args.handshake_timeout)
            try:
                peer.handshake()
                peer.exchange(realtime, reliable, args.expect_echo, realtime_min, args.rate,
                              args.timeout, args.bundle)
                peer.linger(args.linger)
                if args.expect_echo:
                    check_echo(summary, peer, realtime, reliable, realtime_min)
                if peer.rel_tx.bad_acks:
                    raise PeerError(f"{peer.rel_tx.bad_acks} ACKs acknowledged data never sent")
                summary.ok = True
            finally:
                summary.reliable_acked = peer.rel_tx.acked
                summary.reliable_retransmits = peer.rel_tx.retransmits
                summary.bad_acks = peer.rel_tx.bad_acks
                summary.closed_by_server = peer.closed_reason
                try:
                    peer.close()
                except (OSError, PeerError):
                    pass
    except (PeerError, OSError) as err:
        summary.ok = False
        summary.error = str(err)
    print(json.dumps(summary.__dict__, indent=2, sort_keys=True))
    if not summary.ok:
        print(f"intentra_peer: FAILED: {summary.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
