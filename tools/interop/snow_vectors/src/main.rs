//! Writes Noise XX and transport-packet vectors for the Python interop peer.
//!
//! Owns only vector generation: fixed inputs in, JSON on stdout. It uses snow with
//! exactly intentra's parameters (protocol name, prologue, payloads) and feeds the
//! ephemeral keys from fixed bytes, so the Python Noise implementation can be checked
//! byte for byte against the library the Rust endpoint uses. It must never read a
//! clock or a random source.
//!
//!     cargo run --offline --manifest-path tools/interop/snow_vectors/Cargo.toml \
//!         > src/proto/tests/data/interop_vectors.json

use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::{AeadInPlace, Aes256Gcm, KeyInit};
use serde_json::{json, Value};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};

const PARAMS: &str = "Noise_XX_25519_AESGCM_SHA256";
const PROLOGUE: &[u8] = b"intentra v1";

/// Hands out fixed bytes: the ephemeral private key of one handshake side.
struct FixedRandom {
    bytes: [u8; 32],
    used: bool,
}

impl Random for FixedRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        // Only one ephemeral key is drawn per side; a second draw would make the
        // vector meaningless, so refuse it loudly.
        if self.used || dest.len() != 32 {
            return Err(snow::Error::Rng);
        }
        dest.copy_from_slice(&self.bytes);
        self.used = true;
        Ok(())
    }
}

struct FixedResolver([u8; 32]);

impl CryptoResolver for FixedResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(FixedRandom {
            bytes: self.0,
            used: false,
        }))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic 32 bytes from a label (not cryptographic; inputs only).
fn fill(label: u8) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = label
            .wrapping_mul(31)
            .wrapping_add((i as u8).wrapping_mul(7))
            ^ 0x5c;
    }
    out
}

fn builder(ephemeral: [u8; 32]) -> snow::Builder<'static> {
    let params = PARAMS.parse().expect("valid params");
    snow::Builder::with_resolver(params, Box::new(FixedResolver(ephemeral)))
}

/// One handshake with fixed keys; each side advertises its Reliable receive window
/// (u32 LE) in its payload: the responder's alone in msg2, the initiator's after the
/// FinishIntent byte in msg3.
fn handshake(
    case: u8,
    finish_intent: u8,
    responder_window: u32,
    initiator_window: u32,
) -> (Value, [u8; 32], [u8; 32]) {
    let (init_static, resp_static) = (fill(case), fill(case + 100));
    let (init_eph, resp_eph) = (fill(case + 50), fill(case + 150));
    let mut init = builder(init_eph)
        .local_private_key(&init_static)
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.build_initiator())
        .expect("initiator");
    let mut resp = builder(resp_eph)
        .local_private_key(&resp_static)
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.build_responder())
        .expect("responder");
    let mut buf = [0u8; 256];
    let mut payload = [0u8; 64];

    let n1 = init.write_message(&[], &mut buf).expect("msg1");
    let msg1 = buf[..n1].to_vec();
    assert_eq!(resp.read_message(&msg1, &mut payload).expect("read1"), 0);

    let n2 = resp
        .write_message(&responder_window.to_le_bytes(), &mut buf)
        .expect("msg2");
    let msg2 = buf[..n2].to_vec();
    assert_eq!(init.read_message(&msg2, &mut payload).expect("read2"), 4);
    assert_eq!(payload[..4], responder_window.to_le_bytes());

    let mut msg3_payload = vec![finish_intent];
    msg3_payload.extend_from_slice(&initiator_window.to_le_bytes());
    let n3 = init.write_message(&msg3_payload, &mut buf).expect("msg3");
    let msg3 = buf[..n3].to_vec();
    assert_eq!(resp.read_message(&msg3, &mut payload).expect("read3"), 5);
    assert_eq!(payload[..5], msg3_payload[..]);

    let hash = init.get_handshake_hash().to_vec();
    assert_eq!(hash, resp.get_handshake_hash());
    let (k1, k2) = init.dangerously_get_raw_split();
    let (r1, r2) = resp.dangerously_get_raw_split();
    assert_eq!((k1, k2), (r1, r2));
    let init_public = init.get_remote_static().map(hex);
    let value = json!({
        "initiator_static_private": hex(&init_static),
        "responder_static_private": hex(&resp_static),
        "initiator_ephemeral_private": hex(&init_eph),
        "responder_ephemeral_private": hex(&resp_eph),
        "responder_static_public": init_public,
        "initiator_static_public": resp.get_remote_static().map(hex),
        "finish_intent": finish_intent,
        "responder_window": responder_window,
        "initiator_window": initiator_window,
        "msg1": hex(&msg1),
        "msg2": hex(&msg2),
        "msg3": hex(&msg3),
        "handshake_hash": hex(&hash),
        "k1_initiator_to_responder": hex(&k1),
        "k2_responder_to_initiator": hex(&k2),
    });
    (value, k1, k2)
}

fn transport(key: &[u8; 32], ty: u8, receiver: u32, counter: u64, plaintext: &[u8]) -> Value {
    let mut header = [0u8; 16];
    header[0] = 1;
    header[1] = ty;
    header[4..8].copy_from_slice(&receiver.to_le_bytes());
    header[8..16].copy_from_slice(&counter.to_le_bytes());
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_le_bytes());
    let cipher = Aes256Gcm::new(&GenericArray::from(*key));
    let mut body = plaintext.to_vec();
    let tag = cipher
        .encrypt_in_place_detached(&GenericArray::from(nonce), &header, &mut body)
        .expect("seal");
    let mut packet = header.to_vec();
    packet.extend_from_slice(&body);
    packet.extend_from_slice(&tag);
    json!({
        "key": hex(key),
        "type": ty,
        "receiver": receiver,
        "counter": counter,
        "nonce": hex(&nonce),
        "header": hex(&header),
        "plaintext": hex(plaintext),
        "packet": hex(&packet),
    })
}

fn main() {
    let (first, k1, k2) = handshake(1, 0, 65_536, 90_368);
    let (second, _, _) = handshake(2, 1, 512, 0x0102_0304);
    let mut reliable = 7u64.to_le_bytes().to_vec();
    reliable.extend_from_slice(b"reliable payload");
    let mut ack = 5u64.to_le_bytes().to_vec();
    ack.extend_from_slice(&0b1011u64.to_le_bytes());
    let transports = vec![
        transport(&k1, 5, 0x1234_0001, 0, b"hello, intentra"),
        transport(&k1, 5, 0x1234_0001, 1, &[]),
        transport(&k2, 6, 0xbeef_0002, 42, &reliable),
        transport(&k2, 7, 0xbeef_0002, 0x0102_0304_0506_0708, &ack),
        transport(&k1, 8, 0x1234_0001, (1u64 << 60) - 1, &[]),
        transport(&k2, 9, 0xbeef_0002, 3, &[0]),
    ];
    let out = json!({
        "generator": "tools/interop/snow_vectors (snow 0.10, aes-gcm 0.10)",
        "noise_protocol": PARAMS,
        "prologue": hex(PROLOGUE),
        "handshakes": [first, second],
        "transport": transports,
    });
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}
