//! Fuzz bodies for the daemon's inputs from files: the TOML configuration and the captures
//! `intentra-replay` reads. The cargo-fuzz targets in `fuzz/` call them, and `cargo test`
//! runs them over the committed seeds in `fuzz/seeds/`.
//!
//! Owns nothing but the checks: each body panics when a promise is broken (an error
//! message of more than one line, an accepted configuration whose memory is not bounded,
//! a frame outside its capture), never on an input merely being bad.

use std::time::Duration;

use intentra::proto::{Keypair, SecretKey, MAX_QUEUE_BYTES};

use crate::config::{
    Config, MAX_IO_BUFFER_TOTAL_BYTES, MAX_RELIABLE_QUEUE_BYTES, MAX_RELIABLE_TOTAL_BYTES,
};
use crate::replay_reader::{self, Format, Frame, Warning};

/// Parses `data` as the daemon's TOML configuration and validates it: never panics; every
/// error is one line of printable text; an accepted configuration keeps every per-peer and
/// per-worker allocation within the bounds `validate` documents, and prints back to itself.
pub fn fuzz_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let config = match Config::from_toml_str(&text) {
        Ok(config) => config,
        Err(err) => {
            assert_one_line("parse error", &err.to_string());
            return;
        }
    };
    match config.validate() {
        Ok(()) => assert_bounded(&config),
        Err(err) => assert_one_line("validation error", &err.to_string()),
    }
    let printed = config.to_toml_string();
    let reparsed = Config::from_toml_str(&printed)
        .unwrap_or_else(|err| panic!("the printed configuration does not parse: {err}\n{printed}"));
    assert_eq!(
        reparsed, config,
        "the printed configuration parses back to itself"
    );
    let annotated = config.to_annotated_toml();
    let reparsed = Config::from_toml_str(&annotated).unwrap_or_else(|err| {
        panic!("the annotated configuration does not parse: {err}\n{annotated}")
    });
    assert_eq!(
        reparsed, config,
        "the annotated configuration parses back to itself"
    );
}

fn assert_one_line(what: &str, message: &str) {
    assert!(!message.is_empty(), "an empty {what}");
    assert!(
        !message.chars().any(char::is_control),
        "a {what} with a line break or control character: {message:?}"
    );
}

/// What an accepted configuration may cost: the bounds `Config::validate` enforces, checked
/// on the protocol core's configuration the daemon derives from it.
fn assert_bounded(config: &Config) {
    let limits = &config.limits;
    assert!(!config.node.bind.is_empty());
    assert!((1..=256).contains(&config.node.workers));
    assert!((1..=1_000_000).contains(&limits.max_peers));
    assert!(limits.reliable_queue_bytes <= MAX_RELIABLE_QUEUE_BYTES);
    assert!(
        limits.reliable_queue_bytes.saturating_mul(limits.max_peers) <= MAX_RELIABLE_TOTAL_BYTES,
        "reliable queues of {} bytes for {} peers",
        limits.reliable_queue_bytes,
        limits.max_peers
    );
    assert!((1..=1_000_000).contains(&limits.handshakes_in_flight));
    assert!(limits.handshakes_per_ip <= limits.handshakes_in_flight);
    let io = &config.io;
    assert!(io.batch_size <= io.buffers);
    assert!(io.buffers.saturating_mul(io.buffer_size) <= MAX_IO_BUFFER_TOTAL_BYTES);
    let hub = &config.hub;
    assert!(hub.backlog_per_peer <= 1 << 20 && hub.max_topics <= 1 << 20);
    assert!(hub.max_memberships_per_member <= 1 << 16);

    let keypair = SecretKey::from_bytes([7; 32])
        .map(Keypair::from_secret)
        .expect("a fixed test key");
    let endpoint = crate::daemon::endpoint_config(config, keypair, None);
    // Each peer holds a sender and a receiver, each bounded by the queue bound (and the
    // bound in effect never exceeds what the core can use), for at most max_peers peers.
    let per_peer = endpoint.reliable.queue_bound();
    assert!(per_peer <= MAX_QUEUE_BYTES);
    assert!(
        per_peer.saturating_mul(endpoint.max_peers) <= MAX_RELIABLE_TOTAL_BYTES,
        "{per_peer} bytes of Reliable queue per peer for {} peers",
        endpoint.max_peers
    );
    assert!(endpoint.handshakes_per_ip <= endpoint.handshakes_in_flight);
    assert!(endpoint.rate_pps >= 1 && endpoint.rate_burst >= 1);
    assert!(endpoint.keepalive_interval < endpoint.idle_timeout);
    assert!(endpoint.rekey_after < endpoint.reject_after);
    assert!(endpoint.handshake_retry <= endpoint.handshake_timeout);
    assert!(endpoint.idle_timeout <= Duration::from_secs(3_600));
    assert!(endpoint.strikes.threshold >= 1);
}

/// Reads `data` as a pcap or pcapng capture, as `intentra-replay` does: never panics,
/// terminates, and every frame is a slice of the input at an offset inside it, in order.
/// Unbounded allocation from a length field is caught by the fuzzer's malloc limit (run the
/// target with `-malloc_limit_mb`); the reader borrows every frame from the input.
pub fn fuzz_pcap(data: &[u8]) {
    let range = data.as_ptr_range();
    let (start, end) = (range.start as usize, range.end as usize);
    let mut frames = 0usize;
    let mut last_offset: Option<usize> = None;
    let mut warnings = 0usize;
    let result = replay_reader::read_frames(
        data,
        |frame: Frame<'_>| {
            let at = frame.data.as_ptr() as usize;
            assert!(
                at >= start && at + frame.data.len() <= end,
                "a frame outside the capture"
            );
            assert!(frame.offset < data.len(), "a frame offset past the end");
            assert!(
                last_offset.is_none_or(|last| frame.offset > last),
                "frames come in file order"
            );
            assert!(
                at >= start + frame.offset,
                "a frame starts before its record"
            );
            last_offset = Some(frame.offset);
            frames += 1;
        },
        |warning: Warning| {
            assert!(warning.offset < data.len(), "a warning offset past the end");
            assert_one_line("warning", &warning.to_string());
            warnings += 1;
        },
    );
    // Every record or block takes at least 12 bytes of the input.
    assert!(
        frames + warnings <= data.len() / 12 + 1,
        "{frames} frames from {} bytes",
        data.len()
    );
    match result {
        Ok(Format::Pcap | Format::PcapNg) => {}
        Err(err) => assert_one_line("capture error", &err.to_string()),
    }
}
