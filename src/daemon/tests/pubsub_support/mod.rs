//! Helpers for the pubsub process tests: keys, hub configurations, child processes whose
//! output lines are collected by threads, bounded waits. A `Proc` is killed when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_intentra");

/// `prefix` runs every command through another (e.g. `ip netns exec NS`).
pub fn command(prefix: &[String]) -> Command {
    match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(BIN);
            c
        }
        None => Command::new(BIN),
    }
}

pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        path,
        String::from_utf8(out.stdout).unwrap().trim().to_owned(),
    )
}

pub fn free_udp() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child whose stdout and stderr lines are collected as they come.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub out: Arc<Mutex<Vec<String>>>,
    pub err: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(name: &str, mut command: Command) -> Proc {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = collect(child.stdout.take().unwrap());
        let err = collect(child.stderr.take().unwrap());
        Proc {
            name: name.to_owned(),
            child,
            out,
            err,
        }
    }

    /// Like `spawn` with `input` written to stdin, which is then closed.
    pub fn spawn_with_input(name: &str, mut command: Command, input: &str) -> Proc {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_owned();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(input.as_bytes());
        });
        let out = collect(child.stdout.take().unwrap());
        let err = collect(child.stderr.take().unwrap());
        Proc {
            name: name.to_owned(),
            child,
            out,
            err,
        }
    }

    pub fn out_lines(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }

    pub fn err_text(&self) -> String {
        self.err.lock().unwrap().join("\n")
    }

    /// Waits until `done(stdout lines)` holds; panics with both streams after `limit`.
    pub fn wait_out(&self, limit: Duration, done: impl Fn(&[String]) -> bool) {
        let end = Instant::now() + limit;
        loop {
            if done(&self.out_lines()) {
                return;
            }
            assert!(
                Instant::now() < end,
                "{}: timed out; stdout:\n{}\nstderr:\n{}",
                self.name,
                self.out_lines().join("\n"),
                self.err_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a stderr line contains `needle`.
    pub fn wait_err(&self, limit: Duration, needle: &str) {
        let end = Instant::now() + limit;
        while !self.err.lock().unwrap().iter().any(|l| l.contains(needle)) {
            assert!(
                Instant::now() < end,
                "{}: no {needle:?} on stderr in time:\n{}",
                self.name,
                self.err_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the exit; panics (after killing it) past `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{}: did not exit in time; stdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.out_lines().join("\n"),
                    self.err_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: i32) {
        let pid = self.child.id() as i32;
        // SAFETY-free: the libc call only takes integers.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::try_from(signal).unwrap(),
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// A hub's TOML: one bind address, its key, rules `(key, topic, allow)`, links (hex
/// keys) and peers to dial `(address, hex key)`.
pub struct HubSpec<'a> {
    pub bind: String,
    pub key_file: &'a Path,
    pub rules: Vec<(&'a str, &'a str, &'a str)>,
    pub links: Vec<String>,
    pub dial: Vec<(String, String)>,
    pub detection_ms: u64,
}

pub fn hub_toml(spec: &HubSpec<'_>) -> String {
    let mut s = format!(
        "[node]\nbind = [\"{}\"]\nkey_file = \"{}\"\n",
        spec.bind,
        spec.key_file.display()
    );
    for (addr, key) in &spec.dial {
        s.push_str(&format!(
            "[[node.peers]]\naddress = \"{addr}\"\npublic_key = \"{key}\"\n"
        ));
    }
    s.push_str("[metrics]\nlisten = \"off\"\n[log]\nlevel = \"info\"\n[limits]\nreliable_queue_bytes = 65536\n");
    s.push_str(&format!(
        "[hub]\nenabled = true\ndetection_time_ms = {}\n",
        spec.detection_ms
    ));
    let links: Vec<String> = spec.links.iter().map(|k| format!("\"{k}\"")).collect();
    s.push_str(&format!("links = [{}]\n", links.join(", ")));
    for (key, topic, allow) in &spec.rules {
        let allow: Vec<String> = allow.split(',').map(|a| format!("\"{a}\"")).collect();
        s.push_str(&format!(
            "[[hub.rules]]\nkey = \"{key}\"\ntopic = \"{topic}\"\nallow = [{}]\n",
            allow.join(", ")
        ));
    }
    s
}

/// Starts `intentra serve` with `toml` and waits until it listens.
pub fn start_hub(prefix: &[String], dir: &Path, name: &str, toml: &str) -> Proc {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    let mut c = command(prefix);
    c.args(["serve", "--config"]).arg(&path);
    let p = Proc::spawn(name, c);
    p.wait_err(Duration::from_secs(20), "listening");
    p
}

/// `intentra <tool> --peer ADDR --peer-key HEX --topic T --key FILE <extra>`.
pub fn tool(
    prefix: &[String],
    tool: &str,
    hub: &str,
    hub_key: &str,
    topic: &str,
    key: &Path,
    extra: &[&str],
) -> Command {
    let mut c = command(prefix);
    c.args([
        tool,
        "--peer",
        hub,
        "--peer-key",
        hub_key,
        "--topic",
        topic,
        "--key",
    ])
    .arg(key)
    .args(extra);
    c
}
