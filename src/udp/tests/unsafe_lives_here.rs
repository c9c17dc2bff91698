//! All of the project's unsafe code lives in this crate, and every unsafe block or impl
//! says why it is sound on the line above it: checked over every Rust file of the
//! workspace, so a new crate or file cannot slip either rule.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// Lines that open unsafe code: blocks, impls and functions (not lint names or comments).
fn unsafe_lines(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let code = line.split("//").next().unwrap_or("");
            code.contains("unsafe {")
                || code.contains("unsafe impl")
                || code.contains("unsafe fn")
                || code.trim_end().ends_with("unsafe")
        })
        .map(|(n, line)| (n + 1, line))
        .collect()
}

#[test]
fn unsafe_code_lives_only_in_the_driver_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for top in ["src", "tools", "bench"] {
        rust_files(&root.join(top), &mut files);
    }
    let udp = root.join("src/udp");
    let mut outside = Vec::new();
    for path in &files {
        if path.starts_with(&udp) {
            continue;
        }
        let text = fs::read_to_string(path).unwrap();
        for (line, code) in unsafe_lines(&text) {
            outside.push(format!("{}:{line}: {}", path.display(), code.trim()));
        }
    }
    assert!(files.len() > 50, "only {} files found", files.len());
    assert!(
        outside.is_empty(),
        "unsafe code outside src/udp:\n{}",
        outside.join("\n")
    );
}

#[test]
fn every_unsafe_block_and_impl_says_why_it_is_sound() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests"),
        &mut files,
    );
    let mut undocumented = Vec::new();
    let mut seen = 0;
    for path in &files {
        if path.ends_with("unsafe_lives_here.rs") {
            continue; // its string literals name what it looks for
        }
        let text = fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (line, code) in unsafe_lines(&text) {
            // `unsafe fn` in a trait impl carries its contract in the trait; blocks and
            // impls must each justify themselves.
            if code.contains("unsafe fn") {
                continue;
            }
            seen += 1;
            // The justification is the comment block right above (attributes may sit
            // between), or on the same line for a one-line block.
            let mut above = line - 1;
            let mut justified = code.contains("SAFETY:");
            while !justified && above > 0 {
                let prev = lines[above - 1].trim();
                if prev.starts_with("//") {
                    if prev.contains("SAFETY:") {
                        justified = true;
                    }
                    above -= 1;
                } else if prev.starts_with("#[") || prev.ends_with('(') || prev.ends_with('=') {
                    above -= 1;
                } else {
                    break;
                }
            }
            if !justified {
                undocumented.push(format!("{}:{line}: {}", path.display(), code.trim()));
            }
        }
    }
    assert!(
        seen > 20,
        "only {seen} unsafe sites found: the scan is broken"
    );
    assert!(
        undocumented.is_empty(),
        "unsafe without a `// SAFETY:` comment:\n{}",
        undocumented.join("\n")
    );
}
