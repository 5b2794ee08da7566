//! Data-plane benchmarks on one core, no I/O: the established-flow packet path and new-flow
//! setup through a [`Shard`] with the built-in `wlc` scheduler.
//!
//! `cargo bench -p ringvs --bench dataplane`

mod common;

use common::*;
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use ringvs::control::registry::Registry;
use ringvs::dataplane::testkit::{tcp, tcp6, udp};
use ringvs::dataplane::{Pipeline, Shard, HEADROOM};
use ringvs::wire::tcp::flags::{ACK, PSH, SYN};
use std::hint::black_box;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, Instant};

fn shard(memory: usize) -> (Shard, Registry) {
    shard_from(CONFIG, memory)
}

/// A shard whose service schedules with the WebAssembly build of wlc.
fn wasm_shard(memory: usize) -> (Shard, Registry) {
    let text = format!(
        "[plugins.sched-wlc]\npath = \"{}\"\n{}",
        plugin("sched_wlc").display(),
        CONFIG.replace("scheduler = \"wlc\"", "scheduler = \"sched-wlc\"")
    );
    shard_from(&text, memory)
}

/// Feeds every packet of `batch` through the shard, restoring the original bytes first.
#[inline]
fn run_batch(s: &mut Shard, batch: &[Vec<u8>], buf: &mut [u8]) -> usize {
    run_batch_with(s, batch, buf, false)
}

/// As [`run_batch`], in I/O batches of 32 given to `Pipeline::prefetch` first when asked
/// (what the io_uring backend does).
#[inline]
fn run_batch_with(s: &mut Shard, batch: &[Vec<u8>], buf: &mut [u8], prefetch: bool) -> usize {
    let mut fwd = 0;
    for chunk in batch.chunks(32) {
        if prefetch {
            let mut views: [&[u8]; 32] = [&[]; 32];
            for (v, p) in views.iter_mut().zip(chunk) {
                *v = p;
            }
            s.prefetch(&views[..chunk.len()]);
        }
        fwd += run_chunk(s, chunk, buf);
    }
    fwd
}

/// As [`run_batch_with`] with prefetching one I/O batch ahead: batch `i + 1` is shown to
/// `Pipeline::prefetch` before batch `i` is processed, so its cache misses overlap a whole
/// batch of work (what the AF_XDP backend does with the RX ring it can see ahead in).
#[inline]
fn run_batch_ahead(s: &mut Shard, batch: &[Vec<u8>], buf: &mut [u8]) -> usize {
    let show = |s: &mut Shard, chunk: &[Vec<u8>]| {
        let mut views: [&[u8]; 32] = [&[]; 32];
        for (v, p) in views.iter_mut().zip(chunk) {
            *v = p;
        }
        s.prefetch(&views[..chunk.len()]);
    };
    let chunks: Vec<&[Vec<u8>]> = batch.chunks(32).collect();
    let mut fwd = 0;
    if let Some(first) = chunks.first() {
        show(s, first);
    }
    for (i, chunk) in chunks.iter().enumerate() {
        if let Some(next) = chunks.get(i + 1) {
            show(s, next);
        }
        fwd += run_chunk(s, chunk, buf);
    }
    fwd
}

/// 1024 packets, `packet(i)` of flows `i` drawn at random (xorshift, fixed seed) below
/// `flows`.
fn random_flows(flows: u32, packet: impl Fn(u32) -> Vec<u8>) -> Vec<Vec<u8>> {
    let mut x = 0x1234_5678u32;
    (0..1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            packet(x % flows)
        })
        .collect()
}

/// `batch` (established flows of a table of `flows`) through `s`, checked forwarded once,
/// then measured without prefetching, with each 32 packets shown to `Pipeline::prefetch`
/// first, and (with `ahead`) one batch ahead.
fn bench_batch(
    g: &mut BenchmarkGroup<'_, WallTime>,
    flows: u32,
    s: &mut Shard,
    batch: &[Vec<u8>],
    ahead: bool,
) {
    let mut buf = vec![0u8; 2048];
    assert_eq!(run_batch(s, batch, &mut buf), batch.len());
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_with_input(BenchmarkId::new("inbound_64B", flows), batch, |b, batch| {
        b.iter(|| black_box(run_batch(s, batch, &mut buf)))
    });
    g.bench_with_input(
        BenchmarkId::new("inbound_64B_prefetch32", flows),
        batch,
        |b, batch| b.iter(|| black_box(run_batch_with(s, batch, &mut buf, true))),
    );
    if ahead {
        g.bench_with_input(
            BenchmarkId::new("inbound_64B_prefetch_ahead", flows),
            batch,
            |b, batch| b.iter(|| black_box(run_batch_ahead(s, batch, &mut buf))),
        );
    }
}

fn established(c: &mut Criterion) {
    let mut g = c.benchmark_group("established");
    for flows in [1_000u32, 100_000, 1_000_000] {
        let (mut s, _reg) = shard(256 << 20);
        let mut buf = vec![0u8; 2048];
        // Establish every flow (SYN, SYN-ACK, ACK).
        for i in 0..flows {
            let c = client(i);
            let syn = tcp(c, VIP, SYN, b"");
            assert_eq!(run_batch(&mut s, &[syn], &mut buf), 1);
        }
        assert_eq!(s.table().len(), flows as usize);
        // 1024 data packets (64-byte frames: 20 IP + 20 TCP + 24 payload) of random flows.
        let batch = random_flows(flows, |i| tcp(client(i), VIP, PSH | ACK, &[0x55; 24]));
        bench_batch(&mut g, flows, &mut s, &batch, true);
    }
    // The copy alone, to subtract.
    let batch: Vec<Vec<u8>> = (0..1024)
        .map(|i| tcp(client(i), VIP, PSH | ACK, &[0x55; 24]))
        .collect();
    let mut buf = vec![0u8; 2048];
    g.bench_function("copy_only_64B", |b| {
        b.iter(|| {
            for p in &batch {
                buf[HEADROOM..HEADROOM + p.len()].copy_from_slice(p);
                black_box(&buf);
            }
        })
    });
    g.finish();
}

/// The IPv6 service of `established6` and `conversation` (appended to [`CONFIG`]), with two
/// of its realservers.
const WEB6: &str = "[[service]]\nname = \"web6\"\nvip = \"[fd77:100::100]:80\"\nscheduler = \"wlc\"\n[[service.server]]\naddr = \"[fd77:1::1]:8080\"\n[[service.server]]\naddr = \"[fd77:1::2]:8080\"\n";
/// Its virtual address.
const VIP6: SocketAddrV6 =
    SocketAddrV6::new(Ipv6Addr::new(0xfd77, 0x100, 0, 0, 0, 0, 0, 0x100), 80, 0, 0);

/// The IPv6 (NAT66) established-flow path, as `established`'s `inbound_64B`: 64-byte packets
/// (40 IP + 20 TCP + 4 payload) of random established flows of an IPv6 service, beside the
/// IPv4 one. The IPv6 table has a quarter of the queue's memory on top of it, hence 1 GiB.
fn established6(c: &mut Criterion) {
    let text = format!("{CONFIG}\n{WEB6}[[service.server]]\naddr = \"[fd77:1::3]:8080\"\n");
    let client6 = |i: u32| {
        SocketAddrV6::new(
            Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, (i >> 14) as u16, 1),
            1024 + (i & 0x3fff) as u16,
            0,
            0,
        )
    };
    let mut g = c.benchmark_group("established6");
    for flows in [1_000u32, 1_000_000] {
        let (mut s, _reg) = shard_from(&text, 1 << 30);
        let mut buf = vec![0u8; 2048];
        for i in 0..flows {
            let syn = tcp6(client6(i), VIP6, SYN, b"");
            assert_eq!(run_batch(&mut s, &[syn], &mut buf), 1);
        }
        assert_eq!(s.table6().map_or(0, |t| t.len()), flows as usize);
        let batch = random_flows(flows, |i| tcp6(client6(i), VIP6, PSH | ACK, &[0x55; 4]));
        assert_eq!(batch[0].len(), 64);
        bench_batch(&mut g, flows, &mut s, &batch, false);
    }
    g.finish();
}

/// Both directions of established flows: 1024 packets, each flow's packet to the VIP
/// followed by its realserver's reply (`outbound`: NAT back to the VIP), of random flows of
/// 1000, for TCP and UDP over IPv4 and TCP over IPv6, each 32 shown to `Pipeline::prefetch`
/// first. Besides the reply path's figure, what the profile-guided build
/// (`scripts/build-pgo.sh`) learns the reply and UDP paths from.
fn conversation(c: &mut Criterion) {
    let text = format!(
        "{CONFIG}\n[[service]]\nname = \"dns\"\nvip = \"10.77.100.100:53\"\nproto = \"udp\"\nscheduler = \"wlc\"\n[[service.server]]\naddr = \"10.77.1.1:5353\"\n[[service.server]]\naddr = \"10.77.1.2:5353\"\n{WEB6}"
    );
    let dns = SocketAddrV4::new(*VIP.ip(), 53);
    let client6 = |i: u32| {
        SocketAddrV6::new(
            Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1),
            1024 + i as u16,
            0,
            0,
        )
    };
    // (name, the client's first packet of flow i, its next ones, the reply from realserver
    // `rs` to the client of flow i)
    type Make = Box<dyn Fn(u32) -> Vec<u8>>;
    type Reply = Box<dyn Fn(u32, SocketAddr) -> Vec<u8>>;
    let kinds: [(&str, Make, Make, Reply); 3] = [
        (
            "tcp",
            Box::new(|i| tcp(client(i), VIP, SYN, b"")),
            Box::new(|i| tcp(client(i), VIP, PSH | ACK, &[0x55; 24])),
            Box::new(|i, rs| tcp(v4(rs), client(i), PSH | ACK, &[0x55; 24])),
        ),
        (
            "udp",
            Box::new(move |i| udp(client(i), dns, &[0x55; 36])),
            Box::new(move |i| udp(client(i), dns, &[0x55; 36])),
            Box::new(|i, rs| udp(v4(rs), client(i), &[0x55; 36])),
        ),
        (
            "tcp6",
            Box::new(move |i| tcp6(client6(i), VIP6, SYN, b"")),
            Box::new(move |i| tcp6(client6(i), VIP6, PSH | ACK, &[0x55; 4])),
            Box::new(move |i, rs| tcp6(v6(rs), client6(i), PSH | ACK, &[0x55; 4])),
        ),
    ];
    let mut g = c.benchmark_group("conversation");
    let flows = 1000u32;
    for (name, open, make, reply) in kinds {
        let (mut s, _reg) = shard_from(&text, 256 << 20);
        let mut buf = vec![0u8; 2048];
        // Open every flow and learn its realserver from the rewritten destination.
        let rs: Vec<SocketAddr> = (0..flows)
            .map(|i| {
                assert_eq!(run_batch(&mut s, &[open(i)], &mut buf), 1);
                let d = &buf[HEADROOM..];
                let (ip, at): (IpAddr, usize) = if d[0] >> 4 == 6 {
                    (<[u8; 16]>::try_from(&d[24..40]).unwrap().into(), 40)
                } else {
                    (<[u8; 4]>::try_from(&d[16..20]).unwrap().into(), 20)
                };
                SocketAddr::new(ip, u16::from_be_bytes([d[at + 2], d[at + 3]]))
            })
            .collect();
        // 512 flows drawn as `established`'s are, each packet followed by its reply.
        let batch: Vec<Vec<u8>> = random_flows(flows, |i| i.to_be_bytes().to_vec())
            .into_iter()
            .take(512)
            .flat_map(|id| {
                let i = u32::from_be_bytes(id.try_into().unwrap());
                [make(i), reply(i, rs[i as usize])]
            })
            .collect();
        assert_eq!(batch.len(), 1024);
        // Replies to a TCP flow move it to ESTABLISHED; then every packet is forwarded.
        run_batch(&mut s, &batch, &mut buf);
        assert_eq!(run_batch(&mut s, &batch, &mut buf), batch.len(), "{name}");
        g.throughput(Throughput::Elements(batch.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("in_out_prefetch32", name),
            &batch,
            |b, batch| b.iter(|| black_box(run_batch_with(&mut s, batch, &mut buf, true))),
        );
    }
    g.finish();
}

/// The IPv4 endpoint of a realserver of an IPv4 service.
fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!("an IPv4 service's realserver"),
    }
}

/// The IPv6 endpoint of a realserver of an IPv6 service.
fn v6(a: SocketAddr) -> SocketAddrV6 {
    match a {
        SocketAddr::V6(a) => a,
        SocketAddr::V4(_) => unreachable!("an IPv6 service's realserver"),
    }
}

fn new_flows(c: &mut Criterion) {
    let mut g = c.benchmark_group("new_flow");
    let batch: Vec<Vec<u8>> = (0..4096).map(|i| tcp(client(i), VIP, SYN, b"")).collect();
    g.throughput(Throughput::Elements(batch.len() as u64));
    for (name, make) in [
        ("syn_wlc_native", shard as fn(usize) -> (Shard, Registry)),
        ("syn_wlc_wasm", wasm_shard),
    ] {
        g.bench_function(name, |b| {
            let (mut s, _reg) = make(64 << 20);
            let mut buf = vec![0u8; 2048];
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let n = run_batch(&mut s, &batch, &mut buf);
                    total += t.elapsed();
                    assert_eq!(n, batch.len());
                    // Expire the batch (SYN_RECV: 60 s) outside the measurement.
                    let now = s.now();
                    s.set_now(now + 61 * ringvs::conn::TICKS_PER_SEC);
                    assert!(s.table().is_empty());
                }
                total
            })
        });
    }
    g.finish();
}

/// The time a queue's thread spends on one second's defense ticks, against a tick with no
/// defense. `100k_actions` loads a defense whose tick returns 100 000 actions (the host
/// applies at most `MAX_TICK_ACTIONS` and refuses the rest). `on_queue`: the tick runs on
/// the queue's thread at the second's boundary (tests, replay); `tick_thread`: on the
/// queue's tick thread (the daemon), the queue's share being the boundary's `poll` (hand
/// over) and the `poll`s until the tick is back (apply); each `poll` is timed, the waits
/// between them (the queue forwarding other packets) are not. What an established flow's
/// packets wait meanwhile, packet by packet: the `tick_latency` bench.
fn defense_tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("defense_tick");
    let hostile = hostile("", "", "");
    // (name, config, tick thread)
    for (name, text, threaded) in [
        ("no_defense", CONFIG.to_string(), false),
        ("100k_actions/on_queue", hostile.clone(), false),
        ("100k_actions/tick_thread", hostile, true),
    ] {
        if threaded {
            // One tick a second of real time, as in the daemon (the tick thread expects
            // them so): 10 samples of one tick each.
            g.sampling_mode(criterion::SamplingMode::Flat)
                .sample_size(10)
                .warm_up_time(Duration::from_secs(2))
                .measurement_time(Duration::from_secs(10));
        }
        g.bench_function(name, |b| {
            if threaded {
                pin_to_cpu0();
            }
            let mut s = shard_in(&text, 64 << 20, threaded).0;
            let t0 = Instant::now();
            let mut secs = 0u64;
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    secs += 1;
                    let now = t0 + Duration::from_secs(secs);
                    if threaded {
                        // The queue's clock is the real one here.
                        std::thread::sleep(now.saturating_duration_since(Instant::now()));
                    }
                    let t = Instant::now();
                    s.poll(now);
                    total += t.elapsed();
                    while s.ticks_in_flight() > 0 {
                        std::thread::sleep(Duration::from_micros(100));
                        let t = Instant::now();
                        s.poll(now);
                        total += t.elapsed();
                    }
                }
                total
            })
        });
    }
    g.finish();
}

/// The SYN proxy answering SYNs with cookies (no state), per SYN.
fn syn_cookies(c: &mut Criterion) {
    let mut g = c.benchmark_group("syn_proxy");
    let batch: Vec<Vec<u8>> = (0..4096).map(|i| tcp(client(i), VIP, SYN, b"")).collect();
    g.throughput(Throughput::Elements(batch.len() as u64));
    let text = CONFIG.replace("syn_proxy = \"off\"", "syn_proxy = \"on\"");
    g.bench_function("syn_to_cookie_syn_ack", |b| {
        let mut s = shard_from(&text, 64 << 20).0;
        let mut buf = vec![0u8; 2048];
        b.iter(|| {
            let n = run_batch(&mut s, &batch, &mut buf);
            assert_eq!(n, batch.len());
            assert!(s.table().is_empty());
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    established,
    established6,
    conversation,
    new_flows,
    defense_tick,
    syn_cookies
);
criterion_main!(benches);
