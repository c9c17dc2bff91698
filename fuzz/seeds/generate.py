#!/usr/bin/env python3
"""Writes the hand-made seeds of the fuzz targets into fuzz/seeds/<target>/.

Each seed is a short program in the byte language its fuzz body reads (see the bodies in
src/proto/src/fuzz/ and src/proto/src/reliable/fuzz.rs); the config seeds are TOML and the
pcap seeds tiny captures. Regression seeds found by fuzzing are committed beside these under
names starting with `crash-` or `regress-`, and this script never touches them.

    python3 fuzz/seeds/generate.py
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def write(target, name, data):
    folder = os.path.join(HERE, target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(bytes(data))


def u16(v):
    return list(struct.pack("<H", v & 0xFFFF))


def u64(v):
    return list(struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF))


# ----- wire: a plausible packet of each type, and a few rejections -------------------------

def wire_seeds():
    def transport(ty, plaintext_len, receiver=7, counter=9):
        return [1, ty, 0, 0] + list(struct.pack("<IQ", receiver, counter)) + [0xAB] * (plaintext_len + 16)

    write("wire", "init", [1, 1, 0, 0, 5, 0, 0, 0] + [0x11] * 112)
    write("wire", "response", [1, 2, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0] + [0x22] * 96)
    write("wire", "finish", [1, 3, 0, 0, 6, 0, 0, 0] + [0x33] * 65)
    write("wire", "cookie_reply", [1, 4, 0, 0, 5, 0, 0, 0] + [0x44] * 44)
    write("wire", "realtime", transport(5, 20))
    write("wire", "reliable", transport(6, 8 + 20))
    write("wire", "ack", [1, 7, 0, 0, 7, 0, 0, 0] + u64(9) + u64(10) + u64(0xFF) + [0] * 16)
    write("wire", "keepalive", transport(8, 0))
    write("wire", "close", [1, 9, 0, 0, 7, 0, 0, 0] + u64(9) + [4] + [0] * 16)
    write("wire", "zero_index", transport(8, 0, receiver=0))
    write("wire", "bad_version", [2] + transport(8, 0)[1:])
    write("wire", "reserved", [1, 8, 0, 1] + transport(8, 0)[4:])
    write("wire", "short", [1, 5, 0])
    write("wire", "oversize", transport(5, 1452 - 32 + 1))
    # Bundles (PROTOCOL.md 7.5): the worked example's frames, then framing that lies.
    example = [0x05, 0x02, 0x00, 0x68, 0x69, 0x06, 0x0A, 0x00] + u64(7) + [0x6F, 0x6B]
    bundle = [1, 10, 0, 0, 7, 0, 0, 0] + u64(9)
    write("wire", "bundle", bundle + example + [0] * 16)
    write("wire", "bundle_lies", bundle + example[:5] + [0x05, 0x40, 0x00, 1, 2] + [0] * 16)
    write("wire", "bundle_64_frames", bundle + [0x05, 0, 0] * 64 + [0] * 16)


# ----- responder ----------------------------------------------------------------------------

def src(kind=0, host=1, port=0):
    return [kind, host, port]


def r_header(flags=0, seed=1, in_flight=9, per_ip=4, rates=0xFF, per_source=0xFF, max_peers=3,
             timeout=50):
    return [flags, seed, in_flight, per_ip, rates, per_source, max_peers, timeout]


def r_junk(type_byte, length, fill=0x5A, at=src()):
    return [0] + at + [type_byte] + u16(length) + [fill] * length


def r_init(slot, at=src(), fresh=1):
    return [2, slot] + at + [fresh]


def r_finish(slot):
    return [4, slot]


def r_mutate(at=src(), pos=10, xor=1, from_sent=0):
    return [5] + at + u16(pos) + [xor, from_sent]


def r_truncate(at=src(), cut=1):
    return [6] + at + [cut]


def r_burst(count, at=src(3, 7)):
    return [7, count] + at


def r_advance(ms, mult=0):
    return [8] + u16(ms) + [mult]


def responder_seeds():
    write("responder", "handshake", r_header() + r_init(0) + r_finish(0) + r_advance(500))
    write("responder", "handshake_any_key",
          r_header(flags=2) + r_init(0) + r_init(1, src(2, 9)) + r_advance(2000, 3) + r_finish(0))
    write("responder", "always_cookie",
          r_header(flags=1) + r_init(0) + r_init(0, fresh=5) + r_finish(0) + r_advance(100))
    write("responder", "cookie_under_load",
          r_header(in_flight=15, per_ip=15, rates=0, per_source=0) + r_burst(8, src(0, 3))
          + r_init(1, src(0, 4)) + r_init(1, src(0, 4), fresh=5) + r_finish(1))
    write("responder", "ipv6_prefix_burst",
          r_header(in_flight=15, per_ip=4, rates=0x11, per_source=0x01) + r_burst(31, src(3, 7))
          + r_burst(31, src(4, 8)) + r_advance(60000, 1))
    # The same source and index with a new ephemeral each time: replacement churn.
    churn = r_header(in_flight=15, per_ip=4, rates=0x22, per_source=0x21)
    for _ in range(12):
        churn += r_init(0, src(0, 5), fresh=0x0C)
    write("responder", "replacement_churn", churn + r_finish(0))
    junk = r_header()
    for ty in range(9):
        junk += r_junk(ty, [120, 108, 73, 52, 40, 48, 48, 32, 33][ty], fill=ty * 17)
    write("responder", "junk_types", junk + r_junk(0x80, 7) + r_advance(1000))
    write("responder", "mutations",
          r_header(flags=1) + r_init(0) + r_mutate(from_sent=0) + r_mutate(pos=30, from_sent=1)
          + r_truncate() + r_init(2, src(5, 1)) + r_mutate(src(0, 2), 100, 0x80, 0))
    write("responder", "timeouts",
          r_header(timeout=1) + r_init(0) + r_init(1, src(1, 2)) + r_advance(300)
          + r_advance(65535, 3) + r_init(0) + r_finish(0))


# ----- pair ---------------------------------------------------------------------------------

def p_send(side, realtime, length):
    return [0, side | (realtime << 1), length]


def p_bundle(side, count, modes, length):
    # Several messages queued together, sent as bundles: bit i of `modes` makes message i Reliable.
    return [0, side | 4 | ((count - 2) << 3), length, modes]


def p_deliver(i=0):
    return [2, i]


def p_dup(i=0):
    return [4, i]


def p_drop(i=0):
    return [5, i]


P_FLUSH = [6]


def p_flip(choice, pos, bit, srcb=1):
    return [7, choice] + u16(pos) + [bit, srcb]


def p_trunc(choice, cut, extra, srcb=1):
    return [8, choice, cut, len(extra)] + extra + [srcb]


def p_junk(to, kind, index=0, counter_choice=0, delta=1, length=8, srcb=1):
    body_len = {2: 16, 3: 0, 4: 1}.get(kind)
    op = [9, to, kind, index, counter_choice] + u16(delta)
    if body_len is None:
        op.append(length)
        body_len = {1: 8 + length % 64, 5: 3 + length % 72}.get(kind, length % 72)
    return op + [0x3C] * (body_len + 16) + [srcb]


def p_replay(choice, srcb=1):
    return [10, choice, srcb]


def p_relay(choice, attacker):
    return [11, choice, attacker]


def p_swap(x, y):
    return [12, x, y]


def p_advance_ms(ms, healthy=True):
    return [13] + u16(ms) + [0 if healthy else 1]


def p_advance_s(secs, healthy=True):
    return [14, secs, 1 if healthy else 0]


def p_junk_handshake(to, ty, srcb=1):
    length = [120, 108, 73, 52][ty]
    return [15, to, ty, 0, 0] + [0x77] * length + [srcb]


def traffic(n=3):
    ops = []
    for i in range(n):
        ops += p_send(0, 0, 10 + i) + p_send(1, 0, 20 + i) + p_send(0, 1, 5 + i) + p_send(1, 1, 9)
    return ops


def pair_seeds():
    write("pair", "clean_traffic", [0] + traffic() + P_FLUSH + p_advance_ms(1500) + traffic(1) + P_FLUSH)
    write("pair", "rekey_short_timers",
          [1] + traffic(2) + P_FLUSH + p_advance_s(25) + traffic(2) + P_FLUSH + p_advance_s(25) + traffic(1))
    write("pair", "rekey_default_timers", [0] + traffic(1) + P_FLUSH + p_advance_s(130) + traffic(1)
          + p_advance_s(70) + traffic(1) + P_FLUSH)
    write("pair", "drops_dups_reorder",
          [0] + traffic(3) + p_drop(2) + p_dup(0) + p_swap(0, 3) + p_deliver(1) + p_deliver(4)
          + P_FLUSH + p_advance_ms(3000) + P_FLUSH)
    # Failed AEAD opens from the peer's own address: never a reason to close the session.
    junk = [0] + traffic(1) + P_FLUSH
    for i in range(12):
        junk += p_junk(1, i % 5, index=i, counter_choice=i % 4, delta=i + 1, length=12)
        junk += p_junk(0, (i + 2) % 5, index=i, counter_choice=(i + 1) % 4, delta=3, length=40)
    write("pair", "junk_at_real_index", junk + traffic(1) + P_FLUSH + p_advance_ms(2000))
    flips = [0] + traffic(2)
    for i in range(12):
        flips += p_flip(i * 2, 20 + i, i % 8) + p_trunc(i * 2 + 1, i % 20, [i] * (i % 5))
    write("pair", "bitflips_truncations", flips + P_FLUSH + p_advance_ms(1000))
    replays = [0] + traffic(2) + P_FLUSH
    for i in range(12):
        replays += p_replay(i * 3) + p_replay(i * 5, srcb=4 * (i % 5))
    write("pair", "replays", replays + traffic(1) + P_FLUSH)
    # An on-path relay moves the peer to the attacker's address, whose junk follows it.
    relay = [0] + traffic(1) + p_relay(0, 0)
    for i in range(12):
        relay += p_junk(1, i % 5, index=i, srcb=0) + p_junk(0, i % 5, index=i, srcb=0)
    write("pair", "relay_then_junk", relay + P_FLUSH + p_advance_ms(2000) + P_FLUSH)
    hs = [1] + traffic(1) + P_FLUSH + p_advance_s(9)
    for i in range(8):
        hs += p_junk_handshake(i % 2, i % 4, srcb=1 + (i % 2) * 3)
    write("pair", "handshake_junk_across_rekey", hs + p_advance_s(12) + traffic(1) + P_FLUSH)
    small = [2]
    for i in range(30):
        small += p_send(i % 2, 0, 60)
        if i % 7 == 6:
            small += p_deliver(i) + p_drop(i + 1)
    write("pair", "small_queue", small + P_FLUSH + p_advance_ms(2000) + P_FLUSH)
    bundles = [0]
    for i in range(10):
        bundles += p_bundle(i % 2, 2 + i * 3, 0b1010_0110 ^ i, 8 + i * 5)
        bundles += p_deliver(0) + p_dup(0) + p_swap(0, 1) + p_drop(2) + p_deliver(1)
    write("pair", "bundles_drops_dups_reorder", bundles + P_FLUSH + p_advance_ms(3000) + P_FLUSH)
    write("pair", "dead_network", [1] + traffic(1) + p_advance_s(30, healthy=False) + P_FLUSH)
    write("pair", "idle_then_junk",
          [0] + traffic(1) + P_FLUSH + p_advance_ms(3000, healthy=False) + p_junk(1, 3, 0, 0, 1)
          + P_FLUSH + p_advance_ms(3000))


# ----- reliable (the existing body's language) ----------------------------------------------

def reliable_seeds():
    def push(length):
        return [0] + u16(length)

    base = [5, 5, 3]
    ops = []
    for i in range(6):
        ops += push(100 + i) + [2, 0]
    write("reliable", "in_order", base + ops + [6, 7, 0, 5])
    ops = []
    for i in range(10):
        ops += push(1400) + [3, i] + [4, i] + [2, i * 3] + [9, 60]
    write("reliable", "lossy", [7, 7, 1] + ops + [6, 7, 0, 8, 0, 9, 200])
    write("reliable", "tiny_bound", [1, 1, 2] + push(16) + push(17) + [2, 0, 6, 7, 0] + push(0))
    write("reliable", "huge_bound", [7, 2, 0x31] + push(1412) * 8 + [2, 1, 2, 0, 6, 7, 0, 9, 255])


# ----- config -------------------------------------------------------------------------------

def config_seeds():
    with open(os.path.join(ROOT, "scripts", "intentra.example.toml"), "rb") as f:
        write("config", "example.toml", f.read())
    write("config", "empty.toml", "")
    write("config", "minimal.toml", '[node]\nbind = ["127.0.0.1:7700"]\n')
    write("config", "limits_edge.toml",
          '[node]\nbind = ["127.0.0.1:7700", "[::1]:7700"]\nworkers = 256\n\n[limits]\n'
          'max_peers = 1000000\nreliable_queue_bytes = 4294\nhandshakes_in_flight = 1000000\n'
          'handshakes_per_ip = 1000000\nrate_pps = 10000000\n')
    write("config", "queue_too_big.toml", "[limits]\nreliable_queue_bytes = 1073741824\n")
    write("config", "newline_key.toml", '[node]\n"bad\\nkey" = 1\n"\\u001b[31mred" = 2\n')
    write("config", "bad_level.toml", '[log]\nlevel = "info,\\u001b[2J=debug"\n')
    write("config", "timers.toml",
          "[timers]\nkeepalive_ms = 10\nidle_timeout_ms = 11\nhandshake_timeout_ms = 100\n"
          "handshake_retry_ms = 100\nrekey_after_s = 1\nreject_after_s = 2\n"
          "redial_initial_ms = 10\nredial_max_ms = 10\n")
    write("config", "io.toml",
          '[io]\ndriver = "mmsg"\nidle = "spin"\nbatch_size = 1024\nbuffers = 16384\n'
          "buffer_size = 65535\npin_cores = [0, 1]\nbusy_poll_us = 50\n")
    write("config", "hub.toml",
          '[node]\nbind = ["127.0.0.1:7700"]\n\n[hub]\nenabled = true\nlinks = ["a"]\n'
          '[[hub.rules]]\nkey = "*"\ntopic = "sensors/*"\nallow = ["publish", "subscribe"]\n')
    write("config", "peers.toml",
          '[[node.peers]]\naddress = "192.0.2.1:7700"\npublic_key = "'
          + "11" * 32 + '"\n[[node.peers]]\naddress = "[2001:db8::1]:7700"\npublic_key = "'
          + "11" * 32 + '"\n')
    write("config", "wrong_types.toml", '[node]\nbind = "x"\nworkers = -1\n[metrics]\nlisten = 5\n')


# ----- pcap ---------------------------------------------------------------------------------

def udp_frame(payload):
    # Ethernet, IPv4, UDP 7000 -> 7700, checksums zero.
    eth = bytes(12) + b"\x08\x00"
    total = 20 + 8 + len(payload)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 17, 0,
                     bytes([127, 0, 0, 1]), bytes([127, 0, 0, 2]))
    udp = struct.pack(">HHHH", 7000, 7700, 8 + len(payload), 0)
    return eth + ip + udp + payload


def pcap(frames, big=False, nano=False):
    e = ">" if big else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
    for i, frame in enumerate(frames):
        out += struct.pack(e + "IIII", 1_700_000_000 + i, 0, len(frame), len(frame)) + frame
    return out


def pcapng_block(block_type, body):
    padded = body + bytes((-len(body)) % 4)
    total = 12 + len(padded)
    return struct.pack("<II", block_type, total) + padded + struct.pack("<I", total)


def pcapng(frames):
    shb = pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = pcapng_block(1, struct.pack("<HHI", 1, 0, 65535))
    out = shb + idb
    for frame in frames:
        out += pcapng_block(6, struct.pack("<IIIII", 0, 0, 0, len(frame), len(frame)) + frame)
    # A simple packet block too.
    out += pcapng_block(3, struct.pack("<I", len(frames[0])) + frames[0])
    return out


def pcap_seeds():
    keepalive = bytes([1, 8, 0, 0, 7, 0, 0, 0]) + bytes(8) + bytes(16)
    init = bytes([1, 1, 0, 0, 5, 0, 0, 0]) + bytes(112)
    frames = [udp_frame(init), udp_frame(keepalive)]
    write("pcap", "tiny.pcap", pcap(frames))
    write("pcap", "tiny_big_endian_nanos.pcap", pcap(frames, big=True, nano=True))
    write("pcap", "tiny.pcapng", pcapng(frames))
    write("pcap", "truncated.pcap", pcap(frames)[:-5])
    huge = bytearray(pcap(frames[:1]))
    huge[24 + 8:24 + 12] = struct.pack("<I", 0xFFFFFFF0)
    write("pcap", "huge_length.pcap", bytes(huge))
    ng = bytearray(pcapng(frames))
    ng[28 + 4:28 + 8] = struct.pack("<I", 0x7FFFFFFC)
    write("pcap", "huge_block.pcapng", bytes(ng))


if __name__ == "__main__":
    wire_seeds()
    responder_seeds()
    pair_seeds()
    reliable_seeds()
    config_seeds()
    pcap_seeds()
