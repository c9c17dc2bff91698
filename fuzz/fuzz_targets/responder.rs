#![no_main]
//! The `responder` fuzz body of the protocol core (`intentra_proto::internals::fuzz_responder`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| intentra_proto::internals::fuzz_responder(data));
