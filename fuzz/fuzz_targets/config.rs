#![no_main]
//! The `config` fuzz body of the daemon (`intentra_daemon::fuzz::fuzz_config`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| intentra_daemon::fuzz::fuzz_config(data));
