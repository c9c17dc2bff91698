//! Seal and open in place at the sizes intentra carries, on every AEAD backend the build
//! compiles: `cargo bench -p intentra-proto --bench aead --features rustcrypto` measures both.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use intentra_proto::internals::PacketCipher;
use intentra_proto::wire::{Counter, TAG_LEN, TRANSPORT_HEADER_LEN};
use std::hint::black_box;
use std::time::Duration;

const SIZES: [usize; 4] = [64, 128, 512, 1200];

fn packet(size: usize) -> Vec<u8> {
    vec![0x5a; TRANSPORT_HEADER_LEN + size + TAG_LEN]
}

fn seal<C: PacketCipher>(c: &mut Criterion, name: &str) {
    let mut group = c.benchmark_group(format!("seal/{name}"));
    let cipher = C::new(&[7u8; 32]);
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut buf = packet(size);
        let mut counter = 0u64;
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                counter += 1;
                cipher
                    .seal_in_place(Counter(counter), black_box(&mut buf))
                    .unwrap();
            })
        });
    }
    group.finish();
}

fn open<C: PacketCipher>(c: &mut Criterion, name: &str) {
    let mut group = c.benchmark_group(format!("open/{name}"));
    let cipher = C::new(&[7u8; 32]);
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut sealed = packet(size);
        cipher.seal_in_place(Counter(1), &mut sealed).unwrap();
        let mut work = sealed.clone();
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                // Restore the ciphertext (a memcpy, measured too, ~10 ns) and open it again.
                work.copy_from_slice(&sealed);
                cipher
                    .open_in_place(Counter(1), black_box(&mut work))
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn backends(c: &mut Criterion) {
    #[cfg(feature = "ring")]
    {
        use intentra_proto::internals::RingCipher;
        seal::<RingCipher>(c, "ring");
        open::<RingCipher>(c, "ring");
    }
    #[cfg(feature = "rustcrypto")]
    {
        use intentra_proto::internals::RustCryptoCipher;
        seal::<RustCryptoCipher>(c, "rustcrypto");
        open::<RustCryptoCipher>(c, "rustcrypto");
    }
}

criterion_group! {
    name = aead;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    targets = backends
}
criterion_main!(aead);
