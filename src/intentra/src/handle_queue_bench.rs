//! A benchmark, not a test (ignored by default): the Handle's command mailbox (one lock per
//! message for a writer, one lock and a swap per batch for the reader) against two
//! alternatives carrying the same 128-byte messages between threads:
//!
//! - `sync_channel`: std's bounded channel, a lock-free array queue (crossbeam's design)
//!   with one slot per message, each slot a fixed `[u8; 128]` (a layout that favours it:
//!   the mailbox takes any length up to 1,420 bytes in the same bounds);
//! - `mutex-per-message`: a `Mutex<VecDeque>` the reader locks once per message.
//!
//! Run (release, figures in perf/handle.md):
//!
//! ```text
//! cargo test --release -p intentra --lib handle::queue_bench -- --ignored --nocapture
//! ```

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Batch, Mailbox};

const MESSAGES: u64 = 2_000_000;
const SIZE: usize = 128;
const CAPACITY: usize = 8_192;
const RUNS: usize = 3;

/// This thread's CPU time so far (utime + stime), in seconds (10 ms ticks).
fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// One queue design: runs it with this many producers.
type Design = fn(u64) -> Figures;

struct Figures {
    messages_per_s: f64,
    reader_ns_per_message: f64,
}

/// Runs `producers` writer threads of `MESSAGES / producers` each and one reader in this
/// thread; `write` retries until its message is in, `read` returns messages taken (0 if none).
fn measure(
    producers: u64,
    write: impl Fn(u64) + Send + Sync + 'static,
    mut read: impl FnMut(&mut u64) -> u64,
) -> Figures {
    let write = Arc::new(write);
    let start = Instant::now();
    let cpu = thread_cpu();
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let write = write.clone();
            std::thread::spawn(move || {
                for i in 0..MESSAGES / producers {
                    write(p << 40 | i);
                }
            })
        })
        .collect();
    let mut seen = 0u64;
    let mut checksum = 0u64;
    while seen < MESSAGES / producers * producers {
        let got = read(&mut checksum);
        if got == 0 {
            std::thread::yield_now();
        }
        seen += got;
    }
    let took = start.elapsed().as_secs_f64();
    let reader_cpu = thread_cpu() - cpu;
    for t in threads {
        t.join().unwrap();
    }
    assert_ne!(checksum, 1, "keeps the reads observable");
    Figures {
        messages_per_s: seen as f64 / took,
        reader_ns_per_message: reader_cpu * 1e9 / seen as f64,
    }
}

fn message(tag: u64) -> [u8; SIZE] {
    let mut out = [0u8; SIZE];
    out[..8].copy_from_slice(&tag.to_le_bytes());
    out
}

fn mailbox(producers: u64) -> Figures {
    let mailbox: Arc<Mailbox<(usize, usize)>> = Arc::new(Mailbox::new(CAPACITY, CAPACITY * SIZE));
    let mut batch: Batch<(usize, usize)> = mailbox.reader_batch();
    let writer = mailbox.clone();
    measure(
        producers,
        move |tag| {
            let payload = message(tag);
            while writer.push(&payload, |at, len| (at, len)).is_err() {
                std::thread::yield_now();
            }
        },
        move |checksum| {
            if !mailbox.take(&mut batch) {
                return 0;
            }
            for &(at, len) in &batch.items {
                *checksum = checksum.wrapping_add(u64::from(batch.payload(at, len)[0]));
            }
            batch.items.len() as u64
        },
    )
}

fn channel(producers: u64) -> Figures {
    let (tx, rx) = sync_channel::<[u8; SIZE]>(CAPACITY);
    measure(
        producers,
        move |tag| {
            let mut payload = message(tag);
            loop {
                match tx.try_send(payload) {
                    Ok(()) => return,
                    Err(TrySendError::Full(back)) => {
                        payload = back;
                        std::thread::yield_now();
                    }
                    Err(TrySendError::Disconnected(_)) => return,
                }
            }
        },
        move |checksum| {
            let mut got = 0;
            while let Ok(m) = rx.try_recv() {
                *checksum = checksum.wrapping_add(u64::from(m[0]));
                got += 1;
            }
            got
        },
    )
}

fn mutex_per_message(producers: u64) -> Figures {
    let queue = Arc::new(Mutex::new(VecDeque::<[u8; SIZE]>::with_capacity(CAPACITY)));
    let writer = queue.clone();
    measure(
        producers,
        move |tag| {
            let payload = message(tag);
            loop {
                let mut q = writer.lock().unwrap();
                if q.len() < CAPACITY {
                    q.push_back(payload);
                    return;
                }
                drop(q);
                std::thread::yield_now();
            }
        },
        move |checksum| {
            let mut got = 0;
            loop {
                let Some(m) = queue.lock().unwrap().pop_front() else {
                    return got;
                };
                *checksum = checksum.wrapping_add(u64::from(m[0]));
                got += 1;
            }
        },
    )
}

#[test]
#[ignore = "a benchmark: run in release with --ignored --nocapture"]
fn queue_bench() {
    println!("queue | producers | messages/s per run | reader CPU ns/message per run");
    for producers in [1u64, 4] {
        let designs: [(&str, Design); 3] = [
            ("mailbox (lock per batch)", mailbox),
            ("sync_channel (lock-free)", channel),
            ("mutex per message", mutex_per_message),
        ];
        for (name, run) in designs {
            let figures: Vec<Figures> = (0..RUNS).map(|_| run(producers)).collect();
            let rates: Vec<String> = figures
                .iter()
                .map(|f| format!("{:.0}", f.messages_per_s))
                .collect();
            let cpu: Vec<String> = figures
                .iter()
                .map(|f| format!("{:.0}", f.reader_ns_per_message))
                .collect();
            println!(
                "{name} | {producers} | {} | {}",
                rates.join(", "),
                cpu.join(", ")
            );
        }
    }
}
