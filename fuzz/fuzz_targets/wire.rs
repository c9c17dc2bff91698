#![no_main]
//! The `wire` fuzz body of the protocol core (`intentra_proto::internals::fuzz_wire`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| intentra_proto::internals::fuzz_wire(data));
