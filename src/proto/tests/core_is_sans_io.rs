//! The protocol core never reads a clock, touches a socket or draws randomness of its own:
//! checked mechanically over every Rust file under the crate's `src/`, however deep, so a
//! slip cannot land unnoticed and a new file cannot escape the check.

use std::fs;
use std::path::{Path, PathBuf};

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
    "std::fs",
    "std::io::stdin",
    "libc::",
    "unsafe ",
];

/// Every `.rs` file under `dir`, recursively, in a stable order.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn the_protocol_core_reads_no_clock_socket_or_random_source() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src);
    for path in &files {
        let text = fs::read_to_string(path).unwrap();
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
    }
    // Every file the compiler sees is a file this test read: count the modules the
    // crate declares against the files found, so a module in a new folder is covered.
    let declared: usize = files
        .iter()
        .map(|p| {
            fs::read_to_string(p)
                .unwrap()
                .lines()
                .filter(|l| {
                    let l = l.trim_start();
                    (l.starts_with("mod ")
                        || l.starts_with("pub mod ")
                        || l.starts_with("pub(crate) mod "))
                        && l.ends_with(';')
                })
                .count()
        })
        .sum();
    assert_eq!(
        files.len(),
        declared + 1,
        "every module file under src/ is checked (lib.rs plus one file per `mod x;`)"
    );
}

#[test]
fn the_walk_descends_into_folders() {
    let dir = std::env::temp_dir().join(format!("intentra-walk-{}", std::process::id()));
    let nested = dir.join("a/b");
    fs::create_dir_all(&nested).unwrap();
    fs::write(dir.join("top.rs"), "").unwrap();
    fs::write(nested.join("deep.rs"), "").unwrap();
    fs::write(nested.join("notes.txt"), "").unwrap();
    let found = rust_files(&dir);
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
}
