//! Drives the Reliable fuzz body (`reliable::fuzz::fuzz_reliable`) with many random
//! inputs under `cargo test`: operation streams of random bytes, and streams biased
//! towards plausible traffic (mostly pushes, deliveries and ACKs).

use intentra_proto::internals::fuzz_reliable;
use proptest::prelude::*;

/// One operation with its arguments, as the fuzz body reads it.
fn op() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (0u8..2, any::<u16>()).prop_map(|(op, len)| {
            let [lo, hi] = (len % 600).to_le_bytes();
            vec![op, lo, hi]
        }),
        4 => any::<u8>().prop_map(|index| vec![2, index]),
        1 => any::<u8>().prop_map(|index| vec![3, index]),
        1 => any::<u8>().prop_map(|index| vec![4, index]),
        1 => Just(vec![5]),
        2 => Just(vec![6]),
        2 => any::<u8>().prop_map(|index| vec![7, index]),
        1 => any::<u8>().prop_map(|index| vec![8, index]),
        1 => any::<u8>().prop_map(|ms| vec![9, ms]),
    ]
}

fn plausible() -> impl Strategy<Value = Vec<u8>> {
    (any::<[u8; 3]>(), proptest::collection::vec(op(), 0..400)).prop_map(|(header, ops)| {
        header
            .into_iter()
            .chain(ops.into_iter().flatten())
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_break_reliable(data in proptest::collection::vec(any::<u8>(), 0..2_000)) {
        fuzz_reliable(&data);
    }

    #[test]
    fn plausible_traffic_never_breaks_reliable(data in plausible()) {
        fuzz_reliable(&data);
    }
}
