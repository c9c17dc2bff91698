-- intentra.lua: a Wireshark dissector for the intentra wire protocol, version 1.
--
-- Every packet of PROTOCOL.md section 3.2, field by field, with the names PROTOCOL.md
-- gives them (sections 4.3-4.8 and 7). Registered on a UDP port (preference "port",
-- default 7700, the daemon's default bind) and heuristically on any UDP port (preference
-- "heuristic"); the heuristic accepts only datagrams that pass the parsing rules of
-- section 3.3 (version, type, reserved bytes, exact length, non-zero indexes).
--
-- Decryption: with preference "keylog" naming a capture's key log (FILE.keylog, written by
-- `intentra serve --capture FILE`; format in PROTOCOL.md section 20), transport packets in
-- both directions are opened with the logged key of their receiver index, and their
-- plaintext is dissected (section 7.4); a Bundle's (type 10, section 7.5) frame by frame, each
-- with its kind, length and (Reliable) seq, and a malformed one says why. AES-256-GCM comes from Wireshark's GcryptCipher
-- bindings where this Lua has them (recent releases); elsewhere (4.0, Debian 12's, has none)
-- from a small Lua implementation below.
--
-- Install: copy this file to ~/.local/lib/wireshark/plugins/ (Wireshark 3.x and later), or
-- load it for one run: tshark -X lua_script:tools/wireshark/intentra.lua -r FILE -V
-- With a key log: tshark -X lua_script:tools/wireshark/intentra.lua \
--     -o intentra.keylog:FILE.keylog -r FILE -V

local intentra = Proto("intentra", "intentra")

local TYPE_NAMES = {
    [1] = "HandshakeInit",
    [2] = "HandshakeResponse",
    [3] = "HandshakeFinish",
    [4] = "CookieReply",
    [5] = "Realtime",
    [6] = "Reliable",
    [7] = "Ack",
    [8] = "Keepalive",
    [9] = "Close",
    [10] = "Bundle",
}

-- The kinds of a Bundle's frames (PROTOCOL.md 7.5): the lone packet type of the body.
local FRAME_KINDS = { [5] = "Realtime", [6] = "Reliable" }
local FRAME_HEADER_LEN = 3
local MAX_BUNDLE_FRAMES = 64

local CLOSE_REASONS = {
    [0] = "local",
    [1] = "remote",
    [2] = "idle_timeout",
    [3] = "handshake_timeout",
    [4] = "strikes",
    [5] = "key_expired",
    [6] = "not_allowed",
    [7] = "shutdown",
    [8] = "replaced",
}

local INTENTS = { [0] = "NewSession", [1] = "Rekey" }

-- PROTOCOL.md constants (section 18).
local VERSION = 1
local MAX_DATAGRAM_LEN = 1452
local HEADER_LEN = 16
local TAG_LEN = 16
local OVERHEAD = HEADER_LEN + TAG_LEN
-- Exact lengths of the handshake-phase packets, and plaintext bounds of transport ones.
local EXACT_LEN = { [1] = 120, [2] = 112, [3] = 77, [4] = 52 }
local PLAINTEXT = {
    [5] = { 0, 1420 },
    [6] = { 8, 1420 },
    [7] = { 16, 136 }, -- and a multiple of 8 (7.4)
    [8] = { 0, 0 },
    [9] = { 1, 1 },
    [10] = { 3, 1420 },
}

local f = intentra.fields
-- 3.1 The common prefix.
f.version = ProtoField.uint8("intentra.version", "Version", base.DEC)
f.type = ProtoField.uint8("intentra.type", "Type", base.DEC, TYPE_NAMES)
f.reserved = ProtoField.uint16("intentra.reserved", "Reserved", base.HEX)
-- Session indexes (section 6), u32 little-endian.
f.sender = ProtoField.uint32("intentra.sender", "Sender index", base.HEX)
f.receiver = ProtoField.uint32("intentra.receiver", "Receiver index", base.HEX)
-- 4.3 HandshakeInit.
f.noise = ProtoField.bytes("intentra.noise", "Noise message")
f.ephemeral = ProtoField.bytes("intentra.ephemeral", "Ephemeral public key")
f.padding = ProtoField.bytes("intentra.padding", "Padding")
f.mac1 = ProtoField.bytes("intentra.mac1", "mac1")
f.mac2 = ProtoField.bytes("intentra.mac2", "mac2")
-- 4.4 HandshakeResponse and 4.5 HandshakeFinish.
f.encrypted_static = ProtoField.bytes("intentra.encrypted_static", "Encrypted static key")
-- The handshake payloads (PROTOCOL.md 4.6) are encrypted under handshake keys the key log
-- does not hold, so they are shown sealed: msg2's receive window, msg3's FinishIntent and
-- receive window, each with its 16-byte tag.
f.encrypted_payload = ProtoField.bytes("intentra.encrypted_payload",
    "Encrypted payload (receive window)")
f.encrypted_intent = ProtoField.bytes("intentra.encrypted_intent",
    "Encrypted payload (FinishIntent, receive window)")
-- 4.8 CookieReply.
f.cookie_nonce = ProtoField.bytes("intentra.cookie_reply.nonce", "Nonce")
f.cookie = ProtoField.bytes("intentra.cookie_reply.cookie", "Encrypted cookie")
f.cookie_tag = ProtoField.bytes("intentra.cookie_reply.tag", "Tag")
-- 7.1 Transport packets.
f.counter = ProtoField.uint64("intentra.counter", "Counter", base.DEC)
f.ciphertext = ProtoField.bytes("intentra.ciphertext", "Ciphertext")
f.sealed_length = ProtoField.uint32("intentra.sealed_length", "Sealed length", base.DEC)
f.tag = ProtoField.bytes("intentra.tag", "Tag")
f.decrypted = ProtoField.string("intentra.decryption", "Decryption")
-- 7.4 Plaintext layouts (only with a key log and AES-GCM available).
f.seq = ProtoField.uint64("intentra.reliable.seq", "Sequence", base.DEC)
f.message = ProtoField.bytes("intentra.message", "Message")
f.message_len = ProtoField.uint32("intentra.message_length", "Message length", base.DEC)
f.next_expected = ProtoField.uint64("intentra.ack.next_expected", "Next expected", base.DEC)
f.selective = ProtoField.uint64("intentra.ack.selective", "Selective word", base.HEX)
f.close_reason = ProtoField.uint8("intentra.close.reason", "Close reason", base.DEC, CLOSE_REASONS)
-- 7.5 Bundles: frames of kind (u8), length (u16 LE) and body, each body the plaintext of a
-- lone Realtime or Reliable packet.
f.bundle_frames = ProtoField.uint32("intentra.bundle.frames", "Frames", base.DEC)
f.frame = ProtoField.bytes("intentra.bundle.frame", "Frame")
f.frame_kind = ProtoField.uint8("intentra.bundle.frame.kind", "Frame kind", base.DEC, FRAME_KINDS)
f.frame_len = ProtoField.uint16("intentra.bundle.frame.length", "Frame length", base.DEC)
f.bundle_malformed = ProtoField.string("intentra.bundle.malformed", "Malformed bundle")

-- A packet the capture cut short (snap length): its layout comes from the length on the wire,
-- and only the captured fields are shown; nothing is decrypted from part of a ciphertext.
local ef_truncated = ProtoExpert.new("intentra.truncated", "Packet cut short by the capture",
    expert.group.MALFORMED, expert.severity.WARN)
intentra.experts = { ef_truncated }

intentra.prefs.port = Pref.uint("UDP port", 7700, "The UDP port intentra is dissected on")
intentra.prefs.heuristic = Pref.bool("Heuristic dissection", true,
    "Also recognise intentra on any UDP port, by the parsing rules of PROTOCOL.md 3.3")
intentra.prefs.keylog = Pref.string("Key log file", "",
    "A capture's key log (FILE.keylog) to decrypt transport packets with")

-- ----- key log ---------------------------------------------------------------------------

-- Receiver index (a number) -> 32-byte key as a ByteArray. A key set's packets to the
-- logging node name its local index and open with its recv key; packets from it name the
-- remote index and open with its send key.
local keys = {}
local keys_loaded_from = nil
local keylog_note = nil

local function load_keylog()
    local path = intentra.prefs.keylog
    if path == keys_loaded_from then
        return
    end
    keys = {}
    keys_loaded_from = path
    keylog_note = nil
    if path == nil or path == "" then
        return
    end
    local file = io.open(path, "r")
    if file == nil then
        keylog_note = "cannot open key log " .. path
        return
    end
    for line in file:lines() do
        local lidx, ridx, send, recv = line:match(
            "^SESSION (%x%x%x%x%x%x%x%x) (%x%x%x%x%x%x%x%x) (%x+) (%x+) ")
        if lidx ~= nil and #send == 64 and #recv == 64 then
            keys[tonumber(lidx, 16)] = ByteArray.new(recv)
            keys[tonumber(ridx, 16)] = ByteArray.new(send)
        end
    end
    file:close()
end

-- ----- AES-256-GCM ---------------------------------------------------------------------
--
-- Wireshark's own (GcryptCipher) where this Lua has it; otherwise a small implementation in
-- Lua from FIPS-197 (AES) and NIST SP 800-38D (GCM, 96-bit nonces only), enough to read a
-- capture: it is slow and not constant-time, and never seals anything.

local have_gcrypt = GcryptCipher ~= nil and GCRY_CIPHER_MODE_GCM ~= nil and GCRY_CIPHER_AES256 ~= nil
local band, bor, bxor, lshift, rshift = bit32.band, bit32.bor, bit32.bxor, bit32.lshift, bit32.rshift

local function xtime(a)
    a = a * 2
    if a >= 256 then
        a = bxor(a, 0x11b)
    end
    return a
end

-- The S-box: the inverse in GF(2^8) (from log/antilog tables of generator 3), then the affine map.
local SBOX = {}
do
    local exp, log = {}, {}
    local a = 1
    for i = 0, 254 do
        exp[i] = a
        log[a] = i
        a = bxor(a, xtime(a))
    end
    local function rotl8(v, n)
        return band(bor(lshift(v, n), rshift(v, 8 - n)), 0xff)
    end
    for x = 0, 255 do
        local inv = 0
        if x ~= 0 then
            inv = exp[(255 - log[x]) % 255]
        end
        SBOX[x] = bxor(inv, rotl8(inv, 1), rotl8(inv, 2), rotl8(inv, 3), rotl8(inv, 4), 0x63)
    end
end

local RCON = { 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40 }

-- The AES-256 key schedule: 240 bytes, 0-based.
local function expand_key(key)
    local w = {}
    for i = 0, 31 do
        w[i] = key[i]
    end
    for i = 8, 59 do
        local t0, t1, t2, t3 = w[4 * i - 4], w[4 * i - 3], w[4 * i - 2], w[4 * i - 1]
        if i % 8 == 0 then
            t0, t1, t2, t3 = bxor(SBOX[t1], RCON[i / 8]), SBOX[t2], SBOX[t3], SBOX[t0]
        elseif i % 8 == 4 then
            t0, t1, t2, t3 = SBOX[t0], SBOX[t1], SBOX[t2], SBOX[t3]
        end
        w[4 * i] = bxor(w[4 * i - 32], t0)
        w[4 * i + 1] = bxor(w[4 * i - 31], t1)
        w[4 * i + 2] = bxor(w[4 * i - 30], t2)
        w[4 * i + 3] = bxor(w[4 * i - 29], t3)
    end
    return w
end

-- Encrypts one 16-byte block (0-based table, column-major as FIPS-197 lays out the state).
local function aes_block(w, input)
    local s = {}
    for i = 0, 15 do
        s[i] = bxor(input[i], w[i])
    end
    for round = 1, 14 do
        local t = {}
        for c = 0, 3 do
            for r = 0, 3 do
                t[r + 4 * c] = SBOX[s[r + 4 * ((c + r) % 4)]]
            end
        end
        if round < 14 then
            for c = 0, 3 do
                local a0, a1, a2, a3 = t[4 * c], t[4 * c + 1], t[4 * c + 2], t[4 * c + 3]
                local x = bxor(a0, a1, a2, a3)
                t[4 * c] = bxor(a0, x, xtime(bxor(a0, a1)))
                t[4 * c + 1] = bxor(a1, x, xtime(bxor(a1, a2)))
                t[4 * c + 2] = bxor(a2, x, xtime(bxor(a2, a3)))
                t[4 * c + 3] = bxor(a3, x, xtime(bxor(a3, a0)))
            end
        end
        for i = 0, 15 do
            s[i] = bxor(t[i], w[16 * round + i])
        end
    end
    return s
end

-- GF(2^128) elements as four big-endian 32-bit words; multiplication as SP 800-38D Algorithm 1.
local function words(bytes, at)
    local out = {}
    for j = 0, 3 do
        local v = 0
        for k = 0, 3 do
            v = v * 256 + (bytes[at + 4 * j + k] or 0)
        end
        out[j] = v
    end
    return out
end

local function gf_mul(x, y)
    local z0, z1, z2, z3 = 0, 0, 0, 0
    local v0, v1, v2, v3 = y[0], y[1], y[2], y[3]
    for i = 0, 127 do
        local word = x[math.floor(i / 32)]
        if band(rshift(word, 31 - i % 32), 1) == 1 then
            z0, z1, z2, z3 = bxor(z0, v0), bxor(z1, v1), bxor(z2, v2), bxor(z3, v3)
        end
        local lsb = band(v3, 1)
        v3 = bor(rshift(v3, 1), lshift(band(v2, 1), 31))
        v2 = bor(rshift(v2, 1), lshift(band(v1, 1), 31))
        v1 = bor(rshift(v1, 1), lshift(band(v0, 1), 31))
        v0 = rshift(v0, 1)
        if lsb == 1 then
            v0 = bxor(v0, 0xE1000000)
        end
    end
    return { [0] = z0, z1, z2, z3 }
end

-- GHASH over a (0-based byte table of length alen) and c (clen), each zero-padded to blocks.
local function ghash(h, a, alen, c, clen)
    local y = { [0] = 0, 0, 0, 0 }
    local function absorb(bytes, len)
        for at = 0, len - 1, 16 do
            local block = {}
            for k = 0, 15 do
                block[k] = (at + k < len) and bytes[at + k] or 0
            end
            local b = words(block, 0)
            for j = 0, 3 do
                y[j] = bxor(y[j], b[j])
            end
            y = gf_mul(y, h)
        end
    end
    absorb(a, alen)
    absorb(c, clen)
    -- Lengths in bits, 64-bit big-endian each; they fit the low word here.
    local lengths = { [0] = 0, alen * 8, 0, clen * 8 }
    for j = 0, 3 do
        y[j] = bxor(y[j], lengths[j])
    end
    return gf_mul(y, h)
end

local function to_table(ba)
    local t = {}
    for i = 0, ba:len() - 1 do
        t[i] = ba:get_index(i)
    end
    return t
end

-- Opens AES-256-GCM: key, 12-byte nonce, ad and ciphertext as ByteArrays, tag as ByteArray.
-- Returns the plaintext ByteArray, or nil if the tag does not authenticate.
local function lua_gcm_open(key, nonce, ad, ciphertext, tag)
    local w = expand_key(to_table(key))
    local zero = {}
    for i = 0, 15 do
        zero[i] = 0
    end
    local h = words(aes_block(w, zero), 0)
    local j0 = to_table(nonce)
    j0[12], j0[13], j0[14], j0[15] = 0, 0, 0, 1
    local a, c = to_table(ad), to_table(ciphertext)
    local alen, clen = ad:len(), ciphertext:len()
    local s = ghash(h, a, alen, c, clen)
    local ek = words(aes_block(w, j0), 0)
    local expected = to_table(tag)
    local want = words(expected, 0)
    local diff = 0
    for j = 0, 3 do
        diff = bor(diff, bxor(bxor(s[j], ek[j]), want[j]))
    end
    if diff ~= 0 then
        return nil
    end
    local out = ByteArray.new()
    out:set_size(clen)
    local counter = 1
    for at = 0, clen - 1, 16 do
        counter = counter + 1
        local block = {}
        for k = 0, 11 do
            block[k] = j0[k]
        end
        block[12] = band(rshift(counter, 24), 0xff)
        block[13] = band(rshift(counter, 16), 0xff)
        block[14] = band(rshift(counter, 8), 0xff)
        block[15] = band(counter, 0xff)
        local stream = aes_block(w, block)
        for k = 0, 15 do
            if at + k < clen then
                out:set_index(at + k, bxor(c[at + k], stream[k]))
            end
        end
    end
    return out
end

local function gcrypt_gcm_open(key, nonce, ad, ciphertext, tag)
    local cipher = GcryptCipher.open(GCRY_CIPHER_AES256, GCRY_CIPHER_MODE_GCM, 0)
    cipher:setkey(key)
    cipher:setiv(nonce)
    cipher:authenticate(ad)
    local plaintext = ciphertext
    if ciphertext:len() > 0 then
        plaintext = cipher:decrypt(nil, ciphertext)
    end
    if cipher:checktag(tag) ~= 0 then
        return nil
    end
    return plaintext
end

local gcm_open = have_gcrypt and gcrypt_gcm_open or lua_gcm_open
local gcm_source = have_gcrypt and "Wireshark's Gcrypt" or "the dissector's Lua AES-GCM"

-- The AES-256-GCM nonce of section 7.2: four zero bytes, then the counter little-endian.
local function nonce(tvb)
    local n = ByteArray.new("00000000")
    n:append(tvb:range(8, 8):bytes())
    return n
end

-- The plaintext as a ByteArray, or nil and why not.
local function open(tvb, receiver)
    load_keylog()
    if keylog_note ~= nil then
        return nil, "not decrypted: " .. keylog_note
    end
    local key = keys[receiver]
    if key == nil then
        if keys_loaded_from == nil or keys_loaded_from == "" then
            return nil, "not decrypted: no key log (preference intentra.keylog)"
        end
        return nil, "not decrypted: receiver index not in the key log"
    end
    local len = tvb:len()
    local ok, plaintext = pcall(function()
        local body = ByteArray.new()
        if len > OVERHEAD then
            body = tvb:range(HEADER_LEN, len - OVERHEAD):bytes()
        end
        return gcm_open(key, nonce(tvb), tvb:range(0, HEADER_LEN):bytes(), body,
            tvb:range(len - TAG_LEN, TAG_LEN):bytes())
    end)
    if not ok then
        return nil, "decryption failed: " .. tostring(plaintext)
    end
    if plaintext == nil then
        return nil, "decryption failed: the tag does not authenticate with the logged key"
    end
    return plaintext, "decrypted with the key log (" .. gcm_source .. ")"
end

-- For tests: AES-256-GCM open over hex strings, or nil.
intentra_test_gcm_open = function(key, nonce_hex, ad, ciphertext, tag)
    local out = lua_gcm_open(ByteArray.new(key), ByteArray.new(nonce_hex), ByteArray.new(ad),
        ByteArray.new(ciphertext), ByteArray.new(tag))
    return out and out:tohex() or nil
end

-- ----- the parsing rules of section 3.3 ---------------------------------------------------

-- The lengths are the datagram's on the wire (tvb:reported_len()), which a capture cut at
-- its snap length holds only part of; the fixed fields checked below must be captured.
local function well_formed(tvb)
    local len = tvb:reported_len()
    local captured = tvb:len()
    if len < 4 or len > MAX_DATAGRAM_LEN or captured < 8 then
        return false
    end
    local ptype = tvb:range(1, 1):uint()
    if tvb:range(0, 1):uint() ~= VERSION or TYPE_NAMES[ptype] == nil then
        return false
    end
    if tvb:range(2, 2):uint() ~= 0 then
        return false
    end
    if ptype == 2 and captured < 12 then
        return false
    end
    local exact = EXACT_LEN[ptype]
    if exact ~= nil then
        if len ~= exact then
            return false
        end
    else
        local bounds = PLAINTEXT[ptype]
        local plain = len - OVERHEAD
        if plain < bounds[1] or plain > bounds[2] then
            return false
        end
        if ptype == 7 and plain % 8 ~= 0 then
            return false
        end
    end
    -- Index fields are non-zero: sender at 4 (types 1, 2), receiver at 8 (type 2) or 4.
    if tvb:range(4, 4):le_uint() == 0 then
        return false
    end
    if ptype == 2 and tvb:range(8, 4):le_uint() == 0 then
        return false
    end
    return true
end

-- ----- dissection -------------------------------------------------------------------------

-- A lone Realtime (5) or Reliable (6) plaintext, or a bundle frame's body, at ptvb[at, at+len).
local function message_tree(tree, ptype, ptvb, at, len)
    if ptype == 6 then
        tree:add_le(f.seq, ptvb:range(at, 8))
        at, len = at + 8, len - 8
    end
    tree:add(f.message_len, len)
    if len > 0 then
        tree:add(f.message, ptvb:range(at, len))
    end
end

-- Walks a Bundle's frames (PROTOCOL.md 7.5), adding each to the tree. Returns the frame count
-- and nil, or the count of frames read and why the bundle is malformed (then a receiver drops
-- it whole, delivering none of its frames).
local function bundle_tree(tree, ptvb)
    local len = ptvb:len()
    local at, frames = 0, 0
    while at < len do
        if frames == MAX_BUNDLE_FRAMES then
            return frames, "more than " .. MAX_BUNDLE_FRAMES .. " frames"
        end
        if len - at < FRAME_HEADER_LEN then
            return frames, string.format("a frame header at offset %d does not fit in the %d bytes left",
                at, len - at)
        end
        local kind = ptvb:range(at, 1):uint()
        local body_len = ptvb:range(at + 1, 2):le_uint()
        if FRAME_KINDS[kind] == nil then
            return frames, string.format("frame kind %d at offset %d is not 5 or 6", kind, at)
        end
        local body_at = at + FRAME_HEADER_LEN
        if body_at + body_len > len then
            return frames, string.format("the frame at offset %d claims %d bytes, %d are left", at,
                body_len, len - body_at)
        end
        if kind == 6 and body_len < 8 then
            return frames, string.format("the Reliable frame at offset %d has %d bytes, fewer than its seq",
                at, body_len)
        end
        frames = frames + 1
        local frame = tree:add(f.frame, ptvb:range(at, FRAME_HEADER_LEN + body_len))
        local text = string.format("Frame %d: %s, %d bytes", frames, FRAME_KINDS[kind], body_len)
        if kind == 6 then
            text = text .. ", seq " .. tostring(ptvb:range(body_at, 8):le_uint64())
        end
        frame:set_text(text)
        frame:add(f.frame_kind, ptvb:range(at, 1))
        frame:add_le(f.frame_len, ptvb:range(at + 1, 2))
        message_tree(frame, kind, ptvb, body_at, body_len)
        at = body_at + body_len
    end
    if frames == 0 then
        return frames, "no frame"
    end
    return frames, nil
end

local function plaintext_tree(tree, ptype, plaintext)
    local ptvb = plaintext:tvb("Decrypted intentra")
    local len = ptvb:len()
    if ptype == 10 then
        local frames, malformed = bundle_tree(tree, ptvb)
        local count = tree:add(f.bundle_frames, frames)
        count:set_generated()
        if malformed ~= nil then
            local note = tree:add(f.bundle_malformed, malformed .. " (dropped whole: nothing delivered, a strike)")
            note:set_generated()
            return " malformed"
        end
        return string.format(" frames=%d", frames)
    elseif ptype == 5 or ptype == 6 then
        message_tree(tree, ptype, ptvb, 0, len)
    elseif ptype == 7 then
        tree:add_le(f.next_expected, ptvb:range(0, 8))
        -- 1 to 16 words; word w holds bits 64w .. 64w + 63 (next_expected + 1 + bit).
        for at = 8, len - 8, 8 do
            tree:add_le(f.selective, ptvb:range(at, 8)):append_text(
                string.format(" (bits %d..%d)", (at - 8) * 8, (at - 8) * 8 + 63))
        end
    elseif ptype == 9 then
        tree:add(f.close_reason, ptvb:range(0, 1))
    end
end

local function dissect(tvb, pinfo, tree)
    local len = tvb:reported_len()
    local captured = tvb:len()
    local truncated = captured < len
    local ptype = tvb:range(1, 1):uint()
    local name = TYPE_NAMES[ptype] or "Unknown"
    pinfo.cols.protocol = "intentra"
    local root = tree:add(intentra, tvb:range(0, captured), "intentra " .. name)
    -- Adds the field at [at, at + n) if the capture holds it; a cut packet shows what it has.
    local function add(parent, field, at, n, little_endian)
        if at + n > captured then
            return nil
        end
        if little_endian then
            return parent:add_le(field, tvb:range(at, n))
        end
        return parent:add(field, tvb:range(at, n))
    end
    root:add(f.version, tvb:range(0, 1))
    root:add(f.type, tvb:range(1, 1))
    root:add_le(f.reserved, tvb:range(2, 2))
    local info = name
    if ptype == 1 and len == 120 then
        add(root, f.sender, 4, 4, true)
        local noise = add(root, f.noise, 8, 32)
        if noise then
            noise:add(f.ephemeral, tvb:range(8, 32))
        end
        add(root, f.padding, 40, 48)
        add(root, f.mac1, 88, 16)
        add(root, f.mac2, 104, 16)
        info = string.format("%s sender=0x%08x", name, tvb:range(4, 4):le_uint())
    elseif ptype == 2 and len == 112 then
        add(root, f.sender, 4, 4, true)
        add(root, f.receiver, 8, 4, true)
        local noise = add(root, f.noise, 12, 100)
        if noise then
            noise:add(f.ephemeral, tvb:range(12, 32))
            noise:add(f.encrypted_static, tvb:range(44, 48))
            noise:add(f.encrypted_payload, tvb:range(92, 20))
        end
        info = string.format("%s sender=0x%08x receiver=0x%08x", name,
            tvb:range(4, 4):le_uint(), tvb:range(8, 4):le_uint())
    elseif ptype == 3 and len == 77 then
        add(root, f.receiver, 4, 4, true)
        local noise = add(root, f.noise, 8, 69)
        if noise then
            noise:add(f.encrypted_static, tvb:range(8, 48))
            noise:add(f.encrypted_intent, tvb:range(56, 21))
        end
        info = string.format("%s receiver=0x%08x", name, tvb:range(4, 4):le_uint())
    elseif ptype == 4 and len == 52 then
        add(root, f.receiver, 4, 4, true)
        add(root, f.cookie_nonce, 8, 12)
        add(root, f.cookie, 20, 16)
        add(root, f.cookie_tag, 36, 16)
        info = string.format("%s receiver=0x%08x", name, tvb:range(4, 4):le_uint())
    elseif ptype >= 5 and ptype <= 10 and len >= OVERHEAD then
        local receiver = tvb:range(4, 4):le_uint()
        root:add_le(f.receiver, tvb:range(4, 4))
        local counter = add(root, f.counter, 8, 8, true)
        -- The ciphertext ends where the tag starts on the wire; a cut packet shows the part
        -- it holds, labelled as such.
        local sealed_end = len - TAG_LEN
        if len > OVERHEAD and captured > HEADER_LEN then
            local shown = math.min(sealed_end, captured) - HEADER_LEN
            local item = root:add(f.ciphertext, tvb:range(HEADER_LEN, shown))
            if shown < len - OVERHEAD then
                item:append_text(string.format(" [%d of %d bytes captured]", shown,
                    len - OVERHEAD))
            end
        end
        root:add(f.sealed_length, len - OVERHEAD)
        add(root, f.tag, sealed_end, TAG_LEN)
        local plaintext, why
        if truncated then
            why = string.format("not decrypted: the capture holds %d of the packet's %d bytes",
                captured, len)
        else
            plaintext, why = open(tvb, receiver)
        end
        local note = root:add(f.decrypted, why)
        note:set_generated()
        local suffix = nil
        if plaintext ~= nil then
            suffix = plaintext_tree(root, ptype, plaintext)
        end
        local counter_text = counter and tostring(tvb:range(8, 8):le_uint64()) or "?"
        info = string.format("%s receiver=0x%08x counter=%s len=%d%s", name, receiver,
            counter_text, len - OVERHEAD, suffix or "")
    end
    if truncated then
        root:add_proto_expert_info(ef_truncated, string.format(
            "Packet cut short by the capture: %d of %d bytes captured", captured, len))
        info = info .. " [truncated]"
    end
    pinfo.cols.info = info
    return captured
end

function intentra.dissector(tvb, pinfo, tree)
    if not well_formed(tvb) then
        return 0
    end
    return dissect(tvb, pinfo, tree)
end

local function heuristic(tvb, pinfo, tree)
    if not intentra.prefs.heuristic or not well_formed(tvb) then
        return false
    end
    dissect(tvb, pinfo, tree)
    return true
end

local registered_port = nil

local function register_port()
    local udp = DissectorTable.get("udp.port")
    if registered_port ~= nil then
        udp:remove(registered_port, intentra)
    end
    registered_port = intentra.prefs.port
    if registered_port ~= 0 then
        udp:add(registered_port, intentra)
    end
end

function intentra.prefs_changed()
    register_port()
    keys_loaded_from = nil
end

function intentra.init()
    keys_loaded_from = nil
end

register_port()
intentra:register_heuristic("udp", heuristic)
