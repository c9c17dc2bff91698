#!/usr/bin/env python3
"""Known-answer vectors for intentra-pubsub, written from PUBSUB.md alone (not from the
Rust code), so `tests/vectors.rs` checks that the code and the text agree.

Run: python3 gen.py > pubsub_vectors.txt
Each line: a kind, then space-separated fields (hex for bytes, decimal for numbers).
"""
import hashlib
import random
import struct

DOMAIN = b"intentra-topic-v1"


def topic_id(name: bytes) -> int:
    # PUBSUB.md 3.2: u64_le(SHA-256("intentra-topic-v1" || name)[0..8])
    return struct.unpack("<Q", hashlib.sha256(DOMAIN + name).digest()[:8])[0]


def tid(name: bytes) -> bytes:
    return struct.pack("<Q", topic_id(name))


def named(ty: int, name: bytes) -> bytes:  # 4.2
    return bytes([ty]) + tid(name) + bytes([len(name)]) + name


def publish(hops, topic, origin, seq, payload):  # 4.4
    return bytes([0x05, hops]) + struct.pack("<Q", topic) + origin + struct.pack("<Q", seq) + payload


def presence(role, reason, topic, member, hub):  # 4.5
    ty = 0x06 if reason == 0 else 0x07
    return bytes([ty, role, reason]) + struct.pack("<Q", topic) + member + hub


def seq_verdicts(seqs):
    """PUBSUB.md section 5, rules 1-4, for one origin."""
    highest, seen, out = None, 0, []
    mask = (1 << 64) - 1
    for s in seqs:
        if highest is None:
            highest, seen = s, 1
            out.append("d0")
        elif s > highest:
            d = s - highest
            seen = (((seen << d) & mask) if d < 64 else 0) | 1
            highest = s
            out.append(f"d{d - 1}")
        elif highest - s < 64:
            bit = 1 << (highest - s)
            out.append("dup" if seen & bit else "late")
            seen |= bit
        else:
            highest, seen = s, 1
            out.append("r")
    return out


def main():
    rng = random.Random(7)
    lines = []
    names = [b"md/btc-usd", b"a", b"robot/7/joint \xc3\xa9tat", b"x" * 128]
    for n in names:
        lines.append(f"topic {n.hex()} {topic_id(n)}")
        lines.append(f"subscribe {n.hex()} {named(0x01, n).hex()}")
        lines.append(f"advertise {n.hex()} {named(0x03, n).hex()}")
        t = topic_id(n)
        lines.append(f"unsubscribe {t} {(bytes([0x02]) + tid(n)).hex()}")
        lines.append(f"unadvertise {t} {(bytes([0x04]) + tid(n)).hex()}")
    for _ in range(20):
        hops = rng.randrange(3)
        t = topic_id(rng.choice(names))
        origin = bytes(rng.randrange(256) for _ in range(32))
        seq = rng.choice([0, 1, 2, 255, 256, 2**32, 2**64 - 1])
        payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 64, 512, 1370])))
        msg = publish(hops, t, origin, seq, payload)
        lines.append(f"publish {hops} {t} {origin.hex()} {seq} {payload.hex() or '-'} {msg.hex()}")
    for role in (1, 2):
        for reason in (0, 1, 2, 3):
            t = topic_id(b"md/btc-usd")
            m, h = bytes([role] * 32), bytes([reason + 0x30] * 32)
            lines.append(f"presence {role} {reason} {t} {m.hex()} {h.hex()} {presence(role, reason, t, m, h).hex()}")
    lines.append("hello 0801")
    lines.append("heartbeat 09")
    for action in (1, 2, 3):
        t = 0 if action == 3 else topic_id(b"a")
        lines.append(f"refused {action} {t} {(bytes([0x0a, action]) + struct.pack('<Q', t)).hex()}")
    # Section 4.1 / 4.12: invalid messages and the reason each is dropped with.
    good_sub = named(0x01, b"md/btc-usd")
    invalid = [
        (b"", "empty"),
        (b"\x00", "unknown_type"),
        (b"\x0b", "unknown_type"),
        (good_sub[:-1], "bad_length"),
        (good_sub + b"\x00", "bad_length"),
        (bytes([0x01]) + tid(b"") + b"\x00", "bad_topic_name"),
        (named(0x01, b"a\x7fb"), "bad_topic_name"),
        (bytes([0x01]) + tid(b"md/btc-usd") + bytes([2]) + b"\xff\xfe", "bad_topic_name"),
        (bytes([0x01]) + tid(b"b") + b"\x01a", "topic_id_mismatch"),
        (b"\x02" + b"\x00" * 7, "bad_length"),
        (publish(0, 1, b"\x00" * 32, 1, b"")[:49], "bad_length"),
        (publish(0, 1, b"\x00" * 32, 1, b"\x00" * 1371), "bad_length"),
        (publish(3, 1, b"\x00" * 32, 1, b""), "bad_hops"),
        (presence(3, 0, 1, b"\x00" * 32, b"\x00" * 32), "bad_field"),
        (presence(1, 4, 1, b"\x00" * 32, b"\x00" * 32)[:1] + b"\x01\x04" + presence(1, 4, 1, b"\x00" * 32, b"\x00" * 32)[3:], "bad_field"),
        (b"\x06\x01\x01" + b"\x00" * 72, "bad_field"),  # UP with reason left
        (b"\x07\x01\x00" + b"\x00" * 72, "bad_field"),  # DOWN with reason joined
        (b"\x06" + b"\x00" * 73, "bad_length"),
        (b"\x08\x02", "bad_version"),
        (b"\x08\x01\x00", "bad_length"),
        (b"\x09\x09", "bad_length"),
        (b"\x0a\x04" + b"\x00" * 8, "bad_field"),
        (b"\x0a\x01" + b"\x00" * 7, "bad_length"),
    ]
    for msg, reason in invalid:
        lines.append(f"invalid {msg.hex() or '-'} {reason}")
    # Section 5: subscriber verdicts for sequences with loss, reordering, duplicates, restarts.
    runs = [
        [5, 6, 9, 9, 7, 7, 6, 10],
        [1, 2, 3, 200, 199, 137, 136, 1, 2],
        [1000, 937, 936, 1, 3, 2, 2],
        [1, 65, 2, 1, 66],
    ]
    for _ in range(20):
        s, run = rng.randrange(1, 1000), []
        for _ in range(60):
            s = max(1, s + rng.choice([1, 1, 1, 2, 3, 0, -1, -2, -70, 5]))
            run.append(s)
        runs.append(run)
    for run in runs:
        lines.append(f"seq {','.join(map(str, run))} {','.join(seq_verdicts(run))}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
