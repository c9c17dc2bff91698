#![no_main]
//! The `pcap` fuzz body of the daemon (`intentra_daemon::fuzz::fuzz_pcap`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| intentra_daemon::fuzz::fuzz_pcap(data));
