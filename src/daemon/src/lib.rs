//! The intentra daemon and its command line: configuration, logging, the metrics
//! endpoint and the `intentra` subcommands. Applications embed the `intentra`
//! crate instead; this one adds what running a node as a service needs.
#![forbid(unsafe_code)]

/// `print!` for what a command prints on stdout: a reader that went away (`| head`) ends
/// the command quietly with exit 0, where `print!` would panic (`cli::write_stdout`).
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::write_stdout(format_args!($($arg)*)) };
}

/// `println!` for what a command prints on stdout, as `out!`.
macro_rules! outln {
    () => { out!("\n") };
    ($($arg:tt)*) => { out!("{}\n", format_args!($($arg)*)) };
}

pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod fuzz;
pub mod hub;
pub mod logging;
pub mod metrics_http;
pub mod pubsub_cli;
pub mod redial;
/// The pcap and pcapng reader of `intentra-replay`, in the library so that its fuzz body
/// (`fuzz::fuzz_pcap`) reads captures with exactly the code the tool runs.
#[path = "../../../tools/replay/reader.rs"]
pub mod replay_reader;
