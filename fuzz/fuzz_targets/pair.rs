#![no_main]
//! The `pair` fuzz body of the protocol core (`intentra_proto::internals::fuzz_pair`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| intentra_proto::internals::fuzz_pair(data));
