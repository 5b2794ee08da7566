//! Connection-table scale and hash-flooding evidence, on one core:
//!
//! - `lookup/one_by_one/N`: a hit lookup (hash + chain walk) in a table of N live IPv4 entries,
//!   N from 10 thousand to 10 million, keys in random order; `lookup/prefetched/N` the same in
//!   batches of 32 whose buckets and first entries are prefetched first, as the data plane
//!   does. Chains stay short at every N (printed), so what grows is only the memory latency of
//!   a table larger than the caches, which the prefetching hides. Bytes per entry are printed
//!   at each N.
//! - `collisions/*`: 1 million entries whose client endpoints were chosen so that the old IPVS
//!   hash (LVS HOWTO §33.15: `(proto ^ addr ^ (addr >> 12) ^ port) & 4095`) puts every one of
//!   them in the same bucket, against 1 million random endpoints. The keyed hash must make
//!   both cost the same; the longest chains are printed.
//!
//! `cargo bench -p ringvs --bench conntable` (needs about 1 GiB of memory for 10 M entries).
//! `CONNTABLE_MAX=1000000` stops at that size (e.g. on a small machine).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringvs::conn::{ConnTable, HashKey, NewConn, State};
use ringvs::dataplane::testkit::Rng;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

const TCP: u8 = 6;
/// Lookups per measured iteration (random keys from the table).
const PROBES: usize = 4096;

/// The IPVS connection hash before keyed hashing (HOWTO §33.15, `IP_VS_CONN_TAB_BITS` = 12).
fn old_ipvs_hash(proto: u8, addr: u32, port: u16) -> u32 {
    (u32::from(proto) ^ addr ^ (addr >> 12) ^ u32::from(port)) & 4095
}

/// `n` distinct client endpoints that all land in old-IPVS bucket `target`: the address's
/// high 20 bits and the port are free; the low 12 bits are solved for.
fn colliding(n: usize, target: u32) -> Vec<(Ipv4Addr, u16)> {
    let mut out = Vec::with_capacity(n);
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let mut seen = std::collections::HashSet::with_capacity(n);
    while out.len() < n {
        let r = rng.next_u64();
        let hi = ((r >> 32) as u32) << 12;
        let port = (r as u16).max(1);
        let lo = (target ^ u32::from(TCP) ^ (hi >> 12) ^ u32::from(port)) & 4095;
        let addr = hi | lo;
        debug_assert_eq!(old_ipvs_hash(TCP, addr, port), target);
        if seen.insert((addr, port)) {
            out.push((Ipv4Addr::from(addr), port));
        }
    }
    out
}

/// `n` distinct random client endpoints.
fn random(n: usize, seed: u64) -> Vec<(Ipv4Addr, u16)> {
    let mut out = Vec::with_capacity(n);
    let mut rng = Rng::new(seed);
    let mut seen = std::collections::HashSet::with_capacity(n);
    while out.len() < n {
        let r = rng.next_u64();
        let key = ((r >> 32) as u32, (r as u16).max(1));
        if seen.insert(key) {
            out.push((Ipv4Addr::from(key.0), key.1));
        }
    }
    out
}

/// A table sized for `keys` (with ~10 % room), filled with them.
fn filled(keys: &[(Ipv4Addr, u16)]) -> ConnTable<Ipv4Addr> {
    let per = ConnTable::<Ipv4Addr>::ENTRY_BYTES + 8;
    let budget = keys.len() * per + keys.len() / 10 * per + (4 << 20);
    let mut t = ConnTable::<Ipv4Addr>::new(budget, HashKey::random(), 0).expect("budget");
    for &(caddr, cport) in keys {
        let h = t.hash(TCP, caddr, cport);
        let c = NewConn {
            proto: TCP,
            caddr,
            cport,
            svc: 0,
            dest: 0,
            state: State::Established,
            flags: 0,
        };
        t.insert(h, c, 1_000_000).expect("sized for every key");
    }
    t
}

/// A random sample of `keys` to look up, in random order.
fn probes(keys: &[(Ipv4Addr, u16)]) -> Vec<(Ipv4Addr, u16)> {
    let mut rng = Rng::new(0xdead_beef_cafe_f00d);
    (0..PROBES)
        .map(|_| keys[(rng.next_u64() % keys.len() as u64) as usize])
        .collect()
}

fn lookup_all(t: &ConnTable<Ipv4Addr>, probes: &[(Ipv4Addr, u16)]) -> usize {
    let mut hits = 0;
    for &(caddr, cport) in probes {
        let h = t.hash(TCP, caddr, cport);
        hits += usize::from(t.lookup(h, TCP, caddr, cport, |_| true).is_some());
    }
    hits
}

/// The data plane's way: a batch's buckets are prefetched, then its first entries, then the
/// lookups run (`Pipeline` does this for each batch of packets read from the ring).
fn lookup_prefetched(t: &ConnTable<Ipv4Addr>, probes: &[(Ipv4Addr, u16)]) -> usize {
    const BATCH: usize = 32;
    let mut hits = 0;
    let mut hashes = [0u32; BATCH];
    for chunk in probes.chunks(BATCH) {
        for (h, &(caddr, cport)) in hashes.iter_mut().zip(chunk) {
            *h = t.hash(TCP, caddr, cport);
            t.prefetch_bucket(*h);
        }
        for h in &hashes[..chunk.len()] {
            t.prefetch_entry(*h);
        }
        for (h, &(caddr, cport)) in hashes.iter().zip(chunk) {
            hits += usize::from(t.lookup(*h, TCP, caddr, cport, |_| true).is_some());
        }
    }
    hits
}

fn scale(c: &mut Criterion) {
    let max: usize = std::env::var("CONNTABLE_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let mut g = c.benchmark_group("lookup");
    g.throughput(Throughput::Elements(PROBES as u64));
    g.measurement_time(Duration::from_secs(4));
    for n in [10_000usize, 100_000, 1_000_000, 10_000_000] {
        if n > max {
            break;
        }
        let keys = random(n, n as u64 | 1);
        let t = filled(&keys);
        eprintln!(
            "conntable: {n} entries: {} B per entry in the slab, {:.1} B per entry with buckets and wheel ({} bytes), longest chain {}",
            ConnTable::<Ipv4Addr>::ENTRY_BYTES,
            t.memory_bytes() as f64 / n as f64,
            t.memory_bytes(),
            t.longest_chain()
        );
        let p = probes(&keys);
        assert_eq!(lookup_all(&t, &p), PROBES, "every probe is in the table");
        assert_eq!(lookup_prefetched(&t, &p), PROBES);
        g.bench_with_input(BenchmarkId::new("one_by_one", n), &p, |b, p| {
            b.iter(|| black_box(lookup_all(&t, black_box(p))))
        });
        g.bench_with_input(BenchmarkId::new("prefetched", n), &p, |b, p| {
            b.iter(|| black_box(lookup_prefetched(&t, black_box(p))))
        });
    }
    g.finish();
}

fn collisions(c: &mut Criterion) {
    const N: usize = 1_000_000;
    let crafted = colliding(N, 0x2a);
    let plain = random(N, 7);
    let mut g = c.benchmark_group("collisions");
    g.throughput(Throughput::Elements(PROBES as u64));
    g.measurement_time(Duration::from_secs(4));
    for (name, keys) in [("old_ipvs_one_bucket", &crafted), ("random", &plain)] {
        let old = keys
            .iter()
            .filter(|(a, p)| old_ipvs_hash(TCP, u32::from(*a), *p) == 0x2a)
            .count();
        let t = filled(keys);
        eprintln!(
            "conntable: {name}: {N} entries, {old} of them in old-IPVS bucket 0x2a (an old-IPVS chain of {old}); ringvs longest chain {}",
            t.longest_chain()
        );
        let p = probes(keys);
        assert_eq!(lookup_all(&t, &p), PROBES);
        g.bench_with_input(BenchmarkId::from_parameter(name), &p, |b, p| {
            b.iter(|| black_box(lookup_all(&t, black_box(p))))
        });
    }
    g.finish();
}

criterion_group!(benches, scale, collisions);
criterion_main!(benches);
