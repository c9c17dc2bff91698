#![no_main]
//! The `reliable` fuzz body of the protocol core (`intentra_proto::internals::fuzz_reliable`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| intentra_proto::internals::fuzz_reliable(data));
