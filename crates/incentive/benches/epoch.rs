//! Criterion benchmark of one epoch on the incentive issue's three cases.
//! `agora bench epoch` times the same cases and prints `bench <name> <ms> ms` lines.

use agora_incentive::{epoch, synthetic};
use criterion::{Criterion, criterion_group, criterion_main};

fn epochs(c: &mut Criterion) {
    for (name, shape) in synthetic::bench_cases() {
        let input = synthetic::subnet(shape, 7);
        c.bench_function(name, |b| b.iter(|| epoch(std::hint::black_box(&input))));
    }
}

criterion_group!(benches, epochs);
criterion_main!(benches);
