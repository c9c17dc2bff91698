//! The protocol core never reads a clock, touches a socket or draws randomness of its own:
//! checked mechanically over every file of `src/proto`, so a slip cannot land unnoticed.

use std::fs;
use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime",
    "quanta::",
    "UdpSocket",
    "std::net::TcpStream",
    "OsRng",
    "thread_rng",
    "getrandom",
    "std::thread::sleep",
    "Mutex",
    "RwLock",
    "Atomic",
];

#[test]
fn the_protocol_core_reads_no_clock_socket_or_random_source() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/proto");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        // Test modules may seed their own RNGs; only the code above them counts.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (number, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for word in FORBIDDEN {
                assert!(
                    !line.contains(word),
                    "{}:{}: the core must not use {word}: {line}",
                    path.display(),
                    number + 1
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} files checked");
}
