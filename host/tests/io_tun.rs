//! The io_uring TUN backend against the real kernel.
//!
//! Each test runs in a fresh network namespace owned by one test thread (`unshare` is per
//! task): the namespace holds a TUN device with 10.77.250.1/24, a reflector ([`run_queue`]
//! with a pipeline that swaps the IPv4 addresses and UDP ports) on one thread per queue, and a
//! UDP client that sends datagrams to 10.77.250.2 and must get each back from there. Threads
//! spawned from the namespaced thread inherit its namespace; when they have all been joined
//! and their descriptors closed, the namespace and the device go away.
//!
//! Needs root (CAP_NET_ADMIN); without it the tests print a notice and pass, unless
//! `RINGVS_REQUIRE_ROOT=1`.

mod common;

use common::*;
use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringvs::dataplane::{Packet, Pipeline, Verdict};
use ringvs::io::{
    run_queue, IoCounters, IoSnapshot, QueueStats, TunDevice, TunOptions, UringOptions,
};

const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 77, 250, 1);
const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 77, 250, 2);
const PORT_BASE: u16 = 40_000;
/// How long a client waits for one reflected datagram.
const RECV_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a queue thread may take to return once told to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Reflects UDP over IPv4 (addresses and ports swapped, so checksums stay valid), drops the
/// rest, and stops when told to.
struct Reflector {
    stop: Arc<AtomicBool>,
    reflected: u64,
    other: u64,
    with_vnet: u64,
    /// Packets whose vnet header asked for checksum completion at the UDP checksum field.
    partial_csum: u64,
    /// GSO super-packets (the kernel left segmentation to whoever transmits them).
    gso: u64,
    largest: usize,
    /// Time spent on each packet (a slow reader), zero for most tests.
    delay: Duration,
}

impl Reflector {
    fn new(stop: Arc<AtomicBool>) -> Reflector {
        Reflector {
            delay: Duration::ZERO,
            stop,
            reflected: 0,
            other: 0,
            with_vnet: 0,
            partial_csum: 0,
            gso: 0,
            largest: 0,
        }
    }
}

impl Pipeline for Reflector {
    fn process(&mut self, pkt: &mut Packet<'_>) -> Verdict {
        if !self.delay.is_zero() {
            thread::sleep(self.delay);
        }
        let d = pkt.data_mut();
        let ihl = usize::from(d.first().copied().unwrap_or(0) & 0x0f) * 4;
        if d.len() < 28 || d[0] >> 4 != 4 || d[9] != 17 || ihl < 20 || d.len() < ihl + 8 {
            self.other += 1;
            return Verdict::Drop;
        }
        for i in 0..4 {
            d.swap(12 + i, 16 + i);
        }
        d.swap(ihl, ihl + 2);
        d.swap(ihl + 1, ihl + 3);
        if let Some(h) = pkt.vnet {
            self.with_vnet += 1;
            if h.needs_csum() && usize::from(h.csum_start) == ihl && h.csum_offset == 6 {
                self.partial_csum += 1;
            }
            if h.is_gso() {
                self.gso += 1;
            }
        }
        self.largest = self.largest.max(pkt.len());
        self.reflected += 1;
        Verdict::Forward
    }

    fn poll(&mut self, _now: Instant) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
}

/// What one queue thread reports.
#[derive(Debug)]
struct QueueReport {
    stats: QueueStats,
    /// What the queue published for the metrics when it returned.
    live: IoSnapshot,
    reflected: u64,
    other: u64,
    with_vnet: u64,
    partial_csum: u64,
    gso: u64,
    largest: usize,
    /// io-wq worker threads the queue's ring needed (counted right after it returned).
    io_wq_workers: usize,
    /// CPU time of the queue thread in `run_queue`.
    cpu: Duration,
    /// From `stop` being set to `run_queue` returning.
    stop_latency: Duration,
}

/// A device with its reflector threads running.
struct Lab {
    name: String,
    stop: Arc<AtomicBool>,
    results: mpsc::Receiver<Result<QueueReport, String>>,
    threads: Vec<thread::JoinHandle<()>>,
    stopped_at: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl Lab {
    /// Creates the device (in the caller's namespace), gives it 10.77.250.1/24 and starts one
    /// reflector per queue.
    fn start(opts: &TunOptions, uring: &UringOptions) -> Lab {
        let dev = TunDevice::create(opts).unwrap_or_else(|e| panic!("creating {}: {e}", opts.name));
        assert_eq!(dev.queue_fds().len(), opts.queues);
        assert_eq!(dev.vnet_hdr(), opts.vnet_hdr);
        assert!(dev.ifindex() > 0);
        let name = dev.name().to_owned();
        ip(&["addr", "replace", "10.77.250.1/24", "dev", &name]);
        Lab::spawn(name, dev.vnet_hdr(), dev.into_queues(), uring)
    }

    fn spawn(name: String, vnet: bool, queues: Vec<OwnedFd>, uring: &UringOptions) -> Lab {
        Lab::spawn_slow(name, vnet, queues, uring, Duration::ZERO)
    }

    /// [`Lab::spawn`] with reflectors that spend `delay` on each packet.
    fn spawn_slow(
        name: String,
        vnet: bool,
        queues: Vec<OwnedFd>,
        uring: &UringOptions,
        delay: Duration,
    ) -> Lab {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let (tx, results) = mpsc::channel();
        let threads = queues
            .into_iter()
            .map(|fd| {
                let (stop, tx, uring) = (stop.clone(), tx.clone(), uring.clone());
                let stopped_at = stopped_at.clone();
                thread::spawn(move || {
                    let mut p = Reflector::new(stop);
                    p.delay = delay;
                    let cpu0 = thread_cpu();
                    let live = IoCounters::default();
                    let r = run_queue(fd.as_fd(), vnet, &uring, &mut p, &live);
                    let cpu = thread_cpu().saturating_sub(cpu0);
                    let returned = Instant::now();
                    let io_wq_workers = io_wq_workers();
                    drop(fd);
                    let since = stopped_at.lock().unwrap().unwrap_or(returned);
                    let _ = tx.send(r.map_err(|e| e.to_string()).map(|stats| QueueReport {
                        live: live.load(),
                        stats,
                        reflected: p.reflected,
                        other: p.other,
                        with_vnet: p.with_vnet,
                        partial_csum: p.partial_csum,
                        gso: p.gso,
                        largest: p.largest,
                        io_wq_workers,
                        cpu,
                        stop_latency: returned.saturating_duration_since(since),
                    }));
                })
            })
            .collect();
        Lab {
            name,
            stop,
            results,
            threads,
            stopped_at,
        }
    }

    /// Stops the reflectors and returns their reports; every queue must stop cleanly within
    /// [`STOP_TIMEOUT`].
    fn stop(self) -> Vec<QueueReport> {
        *self.stopped_at.lock().unwrap() = Some(Instant::now());
        self.stop.store(true, Ordering::Relaxed);
        let reports: Vec<QueueReport> = (0..self.threads.len())
            .map(|q| match self.results.recv_timeout(STOP_TIMEOUT) {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => panic!("{}: queue failed: {e}", self.name),
                Err(e) => panic!(
                    "{}: queue {q} did not stop within {STOP_TIMEOUT:?}: {e}",
                    self.name
                ),
            })
            .collect();
        for t in self.threads {
            t.join().expect("queue thread");
        }
        for r in &reports {
            assert_eq!(
                r.live,
                r.stats.snapshot(),
                "{}: published counters",
                self.name
            );
        }
        reports
    }
}

/// A UDP socket on 10.77.250.1 with a receive buffer large enough for any window used
/// here (the default ~208 KiB holds only ~200 small datagrams received through TUN).
fn client_socket() -> UdpSocket {
    let sock = UdpSocket::bind(SocketAddrV4::new(LOCAL, 0)).expect("bind 10.77.250.1");
    sock.set_read_timeout(Some(RECV_TIMEOUT)).unwrap();
    let size: libc::c_int = 8 << 20;
    // Safety: SO_RCVBUFFORCE reads one c_int through the valid pointer of the given size.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", io::Error::last_os_error());
    sock
}

/// The payload of datagram `seq`: its number, then a pattern of `len` bytes in all.
fn payload(seq: u32, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| (i as u32 ^ seq) as u8).collect();
    p[..4].copy_from_slice(&seq.to_be_bytes());
    p
}

/// Sends `n` datagrams from 10.77.250.1 to 10.77.250.2 on `ports` destination ports, at most
/// `window` unanswered, and checks that each comes back once, intact, from where it was sent.
fn ping(n: u32, window: u32, ports: u16, len: usize) {
    let sock = client_socket();
    let mut seen = HashSet::new();
    let mut buf = vec![0u8; len + 64];
    let mut recv_one = |seen: &mut HashSet<u32>| {
        let (got, from) = sock
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("after {} of {n} datagrams came back: {e}", seen.len()));
        assert!(got >= 4, "runt datagram of {got} bytes from {from}");
        let seq = u32::from_be_bytes(buf[..4].try_into().unwrap());
        assert!(seq < n, "unknown datagram {seq}");
        let port = PORT_BASE + (seq % u32::from(ports)) as u16;
        assert_eq!(
            from,
            SocketAddrV4::new(REMOTE, port).into(),
            "datagram {seq}"
        );
        assert_eq!(
            &buf[..got],
            &payload(seq, len)[..],
            "datagram {seq} payload"
        );
        assert!(seen.insert(seq), "datagram {seq} came back twice");
    };
    for seq in 0..n {
        let port = PORT_BASE + (seq % u32::from(ports)) as u16;
        sock.send_to(&payload(seq, len), SocketAddrV4::new(REMOTE, port))
            .expect("send_to 10.77.250.2");
        while seq + 1 - seen.len() as u32 >= window {
            recv_one(&mut seen);
        }
    }
    while (seen.len() as u32) < n {
        recv_one(&mut seen);
    }
}

/// Checks the reports against `n` reflected datagrams and returns the summed stats.
fn check(name: &str, reports: &[QueueReport], n: u64, vnet: bool) -> QueueStats {
    let mut sum = QueueStats::default();
    for r in reports {
        let s = &r.stats;
        eprintln!("{name}: {r:?}");
        assert_eq!(s.write_errors, 0, "{name}: {s:?}");
        assert_eq!(
            s.writes, r.reflected,
            "{name}: every reflected packet is written"
        );
        assert_eq!(s.drops, r.other, "{name}: only non-UDP is dropped");
        assert_eq!(s.reads, s.writes + s.drops + s.discarded, "{name}: {s:?}");
        assert_eq!(r.with_vnet, if vnet { r.reflected } else { 0 }, "{name}");
        assert!(r.stop_latency < Duration::from_secs(1), "{name}: {r:?}");
        if s.multishot {
            // TUN handles non-blocking attempts: the multishot read waits by polling and
            // writes complete inline, so no worker thread is needed, blocking fd or not.
            assert_eq!(r.io_wq_workers, 0, "{name}: io-wq workers appeared: {r:?}");
        }
        sum.reads += s.reads;
        sum.writes += s.writes;
        sum.bytes_in += s.bytes_in;
        sum.bytes_out += s.bytes_out;
        sum.enobufs += s.enobufs;
        sum.discarded += s.discarded;
    }
    assert_eq!(sum.writes, n, "{name}: reflected datagrams");
    // 20 bytes of IPv4 and 8 of UDP around each payload at least.
    assert!(sum.bytes_out >= n * 28, "{name}: {sum:?}");
    sum
}

fn reflect(
    name: &'static str,
    opts: TunOptions,
    uring: UringOptions,
    n: u32,
    window: u32,
) -> Vec<QueueReport> {
    in_netns(move || {
        let lab = Lab::start(&opts, &uring);
        ping(n, window, 64, 100);
        let reports = lab.stop();
        check(name, &reports, u64::from(n), opts.vnet_hdr);
        assert!(
            gone(name),
            "{name}: device still there after closing its queues"
        );
        reports
    })
}

/// Waits up to a second for the device to disappear.
fn gone(name: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    while link_exists(name) {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
    true
}

fn tun(name: &str, queues: usize, vnet_hdr: bool) -> TunOptions {
    TunOptions {
        name: name.into(),
        queues,
        vnet_hdr,
        segmentation: true,
        mtu: None,
        txqueuelen: None,
        napi: false,
    }
}

#[test]
fn reflects_udp_without_vnet_header() {
    if !have_root() {
        return;
    }
    let r = reflect(
        "rvs-plain",
        tun("rvs-plain", 1, false),
        UringOptions::default(),
        500,
        32,
    );
    assert!(
        r[0].stats.multishot,
        "multishot read expected on Linux >= 6.7"
    );
}

#[test]
fn reflects_udp_with_vnet_header() {
    if !have_root() {
        return;
    }
    let r = reflect(
        "rvs-vnet",
        tun("rvs-vnet", 1, true),
        UringOptions::for_device(true),
        500,
        32,
    );
    // Locally sent UDP leaves through a checksum-offloading device with a partial checksum.
    assert!(r[0].partial_csum > 0, "{:?}", r[0]);
}

#[test]
fn recycles_buffers_multishot() {
    if !have_root() {
        return;
    }
    let uring = UringOptions {
        buffers: 64,
        ..UringOptions::default()
    };
    let r = reflect(
        "rvs-recycle",
        tun("rvs-recycle", 1, false),
        uring,
        5000,
        128,
    );
    assert!(r[0].stats.multishot);
    eprintln!(
        "rvs-recycle: ENOBUFS {} times, re-armed {} times",
        r[0].stats.enobufs, r[0].stats.rearms
    );
}

#[test]
fn recycles_buffers_plain_reads() {
    if !have_root() {
        return;
    }
    let uring = UringOptions {
        buffers: 64,
        reads_in_flight: 8,
        multishot: false,
        ..UringOptions::default()
    };
    let r = reflect(
        "rvs-plainrd",
        tun("rvs-plainrd", 1, true),
        UringOptions {
            buf_size: 4096,
            ..uring
        },
        5000,
        128,
    );
    assert!(!r[0].stats.multishot);
}

/// Datagrams queued before the reader starts outnumber the buffers: the multishot read must
/// run dry (ENOBUFS), be re-armed as buffers come back, and lose nothing.
#[test]
fn queued_burst_larger_than_the_buffer_ring() {
    if !have_root() {
        return;
    }
    in_netns(|| {
        let dev = TunDevice::create(&tun("rvs-burst", 1, false)).unwrap();
        ip(&["addr", "add", "10.77.250.1/24", "dev", "rvs-burst"]);
        let sock = client_socket();
        let n = 500u32;
        for seq in 0..n {
            sock.send_to(&payload(seq, 64), SocketAddrV4::new(REMOTE, PORT_BASE))
                .unwrap();
        }
        let uring = UringOptions {
            buffers: 16,
            reads_in_flight: 4,
            ..UringOptions::default()
        };
        let lab = Lab::spawn("rvs-burst".into(), false, dev.into_queues(), &uring);
        let mut buf = [0u8; 128];
        for seq in 0..n {
            let (len, from) = sock
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("after {seq} of {n} datagrams came back: {e}"));
            // One flow on one queue: the order is kept.
            assert_eq!(from, SocketAddrV4::new(REMOTE, PORT_BASE).into());
            assert_eq!(&buf[..len], &payload(seq, 64)[..], "datagram {seq}");
        }
        let reports = lab.stop();
        let sum = check("rvs-burst", &reports, u64::from(n), false);
        assert!(sum.enobufs > 0, "{:?}", reports[0].stats);
        assert!(reports[0].stats.rearms > 0, "{:?}", reports[0].stats);
    });
}

/// A reader too slow for a burst: the kernel drops what its queue of the device cannot hold
/// (the device's `tx_dropped`), and a queue asked to report them publishes that count as its
/// `kernel_queue_full` drops (a queue not asked reports none).
#[test]
fn reports_the_kernels_drops_when_the_device_queue_is_full() {
    if !have_root() {
        return;
    }
    in_netns(|| {
        let name = "rvs-kdrop";
        let dev = TunDevice::create(&TunOptions {
            txqueuelen: Some(16),
            ..tun(name, 1, false)
        })
        .unwrap();
        ip(&["addr", "add", "10.77.250.1/24", "dev", name]);
        // The kernel's count as `ip -s` shows it (in this namespace; sysfs shows another).
        let tx_dropped = || -> u64 {
            let j: serde_json::Value =
                serde_json::from_str(&ip(&["-j", "-s", "link", "show", "dev", name])).unwrap();
            j[0]["stats64"]["tx"]["dropped"]
                .as_u64()
                .expect("tx dropped")
        };
        let before = tx_dropped();
        let uring = UringOptions {
            buffers: 16,
            reads_in_flight: 4,
            report_device_drops: true,
            ..UringOptions::default()
        };
        let lab = Lab::spawn_slow(
            name.into(),
            false,
            dev.into_queues(),
            &uring,
            Duration::from_millis(1),
        );
        // The queue runs (and has read the device's count) once a datagram comes back.
        ping(1, 1, 1, 64);
        let sock = client_socket();
        let n = 400u32;
        for seq in 0..n {
            sock.send_to(&payload(seq, 64), SocketAddrV4::new(REMOTE, PORT_BASE))
                .unwrap();
        }
        // Everything the queue took is reflected within a second (1 ms each); then it reads
        // the device's count again (at most every 100 ms).
        thread::sleep(Duration::from_millis(1500));
        let dropped = tx_dropped() - before;
        let reports = lab.stop();
        let r = &reports[0];
        eprintln!("{name}: kernel dropped {dropped}; {r:?}");
        assert!(
            dropped > 0,
            "the burst must overflow the device's queue: {r:?}"
        );
        assert_eq!(r.stats.device_dropped, dropped, "{r:?}");
        let label = ringvs::io::IoDrop::KernelQueueFull;
        assert_eq!(r.live.drops[label as usize], dropped);
        // The burst and the first datagram, every one reflected or dropped by the kernel.
        assert!(r.reflected + dropped > u64::from(n), "{r:?}");
    });
}

/// With USO offload the kernel hands over one UDP GSO super-packet per `UDP_SEGMENT` send;
/// reflected as is (with its virtio-net header), the kernel segments it on the way back.
#[test]
fn reflects_udp_gso_super_packets() {
    if !have_root() {
        return;
    }
    in_netns(|| {
        let opts = tun("rvs-gso", 1, true);
        let dev = TunDevice::create(&opts).unwrap();
        let uso = dev.uso();
        ip(&["addr", "add", "10.77.250.1/24", "dev", "rvs-gso"]);
        let lab = Lab::spawn(
            "rvs-gso".into(),
            true,
            dev.into_queues(),
            &UringOptions::for_device(true),
        );
        let sock = client_socket();
        set_udp_segment(&sock, 1000);
        // 5 sends of 40 segments each (40 KB): datagram k of send s carries 40 * s + k.
        let (sends, segs) = (5u32, 40u32);
        for s in 0..sends {
            let big: Vec<u8> = (0..segs)
                .flat_map(|k| payload(segs * s + k, 1000))
                .collect();
            sock.send_to(&big, SocketAddrV4::new(REMOTE, PORT_BASE))
                .unwrap();
        }
        let mut seen = HashSet::new();
        let mut buf = [0u8; 2048];
        for _ in 0..sends * segs {
            let (len, from) = sock
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("after {} segments came back: {e}", seen.len()));
            assert_eq!(from, SocketAddrV4::new(REMOTE, PORT_BASE).into());
            assert_eq!(len, 1000);
            let seq = u32::from_be_bytes(buf[..4].try_into().unwrap());
            assert_eq!(&buf[..len], &payload(seq, 1000)[..], "segment {seq}");
            assert!(seen.insert(seq), "segment {seq} twice");
        }
        let reports = lab.stop();
        let r = &reports[0];
        eprintln!("rvs-gso: USO offload {uso}: {r:?}");
        assert_eq!(r.stats.write_errors, 0, "{r:?}");
        if uso {
            assert_eq!(r.gso, u64::from(sends), "{r:?}");
            assert_eq!(r.largest, 20 + 8 + (segs * 1000) as usize, "{r:?}");
        } else {
            assert_eq!(r.reflected, u64::from(sends * segs), "{r:?}");
        }
    });
}

/// A packet larger than the buffer (TUN truncates it silently, returning the truncated
/// length) is discarded, and the queue goes on.
#[test]
fn discards_packets_larger_than_the_buffer() {
    if !have_root() {
        return;
    }
    in_netns(|| {
        let uring = UringOptions {
            buf_size: 4096,
            ..UringOptions::for_device(true)
        };
        let lab = Lab::start(&tun("rvs-big", 1, true), &uring);
        let big = client_socket();
        set_udp_segment(&big, 1000);
        let data: Vec<u8> = (0..20).flat_map(|k| payload(k, 1000)).collect();
        big.send_to(&data, SocketAddrV4::new(REMOTE, PORT_BASE))
            .unwrap();
        big.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 2048];
        let e = big.recv_from(&mut buf).map(|(n, _)| n).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
        ping(10, 1, 1, 100);
        let reports = lab.stop();
        let s = &reports[0].stats;
        check("rvs-big", &reports, 10, true);
        assert_eq!(s.discarded, 1, "{s:?}");
        assert_eq!(
            reports[0].gso, 0,
            "the truncated GSO packet reached the pipeline"
        );
    });
}

#[test]
fn two_queues() {
    if !have_root() {
        return;
    }
    let r = reflect(
        "rvs-mq",
        tun("rvs-mq", 2, false),
        UringOptions::default(),
        2000,
        64,
    );
    assert_eq!(r.len(), 2);
    // 64 flows hash onto both queues (a miss has probability 2^-63).
    for q in &r {
        assert!(q.reflected > 0, "a queue saw no flow: {r:?}");
    }
}

#[test]
fn stops_cleanly_under_load() {
    if !have_root() {
        return;
    }
    in_netns(|| {
        let opts = tun("rvs-stop", 1, false);
        let lab = Lab::start(&opts, &UringOptions::default());
        ping(10, 1, 1, 64);
        // Leave a burst unanswered, so that reads and writes are in flight while stopping.
        let sock = client_socket();
        for seq in 0..2000u32 {
            let _ = sock.send_to(&payload(seq, 64), SocketAddrV4::new(REMOTE, PORT_BASE));
        }
        let t = Instant::now();
        let reports = lab.stop();
        let took = t.elapsed();
        eprintln!("rvs-stop: stopped in {took:?}: {:?}", reports[0]);
        assert!(took < Duration::from_secs(1), "stop took {took:?}");
        let s = &reports[0].stats;
        assert_eq!(s.write_errors, 0, "{s:?}");
        assert_eq!(s.reads, s.writes + s.drops + s.discarded, "{s:?}");
        assert!(s.writes >= 10, "{s:?}");
        drop(sock);
        assert!(gone("rvs-stop"));
    });
}

#[test]
fn reopens_the_same_device_right_after_stopping() {
    if !have_root() {
        return;
    }
    in_netns(|| {
        for round in 0..3 {
            let opts = tun("rvs-reopen", 1, round % 2 == 1);
            let t = Instant::now();
            let lab = Lab::start(&opts, &UringOptions::for_device(opts.vnet_hdr));
            eprintln!(
                "rvs-reopen: round {round}: device ready in {:?}",
                t.elapsed()
            );
            ping(100, 16, 4, 64);
            let reports = lab.stop();
            check("rvs-reopen", &reports, 100, opts.vnet_hdr);
        }
        assert!(gone("rvs-reopen"));
    });
}

/// A ring that had the queue in its registered-file table releases it only in its
/// asynchronous teardown: the device lingers, and `create` must wait for the name.
#[test]
fn reopens_a_device_a_ring_still_holds() {
    if !have_root() {
        return;
    }
    in_netns(|| {
        for _ in 0..3 {
            let dev = TunDevice::create(&tun("rvs-linger", 1, false)).unwrap();
            let ring = io_uring::IoUring::new(8).unwrap();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&dev.queue_fds()[0]);
            ring.submitter().register_files(&[fd]).unwrap();
            drop(dev);
            drop(ring);
            let lingers = link_exists("rvs-linger");
            let t = Instant::now();
            let dev = TunDevice::create(&tun("rvs-linger", 1, false))
                .unwrap_or_else(|e| panic!("recreating after the ring: {e}"));
            eprintln!(
                "rvs-linger: old device still listed: {lingers}; recreated in {:?}",
                t.elapsed()
            );
            drop(dev);
        }
        assert!(gone("rvs-linger"));
    });
}

#[test]
fn device_settings_and_errors() {
    if !have_root() {
        return;
    }
    in_netns(|| {
        let opts = TunOptions {
            mtu: Some(1400),
            txqueuelen: Some(4321),
            ..tun("rvs-set%d", 3, true)
        };
        let dev = TunDevice::create(&opts).unwrap();
        assert!(dev.name().starts_with("rvs-set"), "{}", dev.name());
        assert_eq!(dev.queue_fds().len(), 3);
        let link = ip(&["-d", "link", "show", "dev", dev.name()]);
        assert!(link.contains("mtu 1400"), "{link}");
        assert!(link.contains("qlen 4321"), "{link}");
        assert!(link.contains(",UP"), "{link}");
        assert!(link.contains("multi_queue numqueues 3"), "{link}");
        assert!(link.contains("vnet_hdr on"), "{link}");
        eprintln!("device_settings: USO offload accepted: {}", dev.uso());

        // The vnet flag of the queue is checked against what run_queue is told.
        let mut p = Reflector::new(Arc::new(AtomicBool::new(true)));
        let fd = dev.queue_fds()[0].as_fd();
        let live = IoCounters::default();
        let e = run_queue(fd, false, &UringOptions::default(), &mut p, &live).unwrap_err();
        assert!(e.to_string().contains("IFF_VNET_HDR = true"), "{e}");

        // A steering program must be a BPF program: the ioctl plumbing reports which device.
        let not_bpf = std::fs::File::open("/dev/null").unwrap();
        let e = ringvs::io::attach_steering_bpf(fd, not_bpf.as_fd()).unwrap_err();
        assert!(e.to_string().contains("TUNSETSTEERINGEBPF"), "{e}");
        ringvs::io::detach_steering_bpf(fd).unwrap();

        // A name in use is refused (after the EBUSY retry), naming device and queue.
        let t = Instant::now();
        let e = TunDevice::create(&tun(dev.name(), 1, false))
            .map(drop)
            .unwrap_err();
        let want = format!(
            "TUNSETIFF on {} queue 0 (a device with that name exists)",
            dev.name()
        );
        assert!(e.to_string().contains(&want), "{e}");
        assert_eq!(ringvs::io::os_error(&e), Some(libc::EBUSY), "{e}");
        assert!(
            t.elapsed() >= ringvs::io::tun::EBUSY_RETRY,
            "{:?}",
            t.elapsed()
        );

        let e = TunDevice::create(&tun("a-name-that-is-too-long", 1, false)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let e = TunDevice::create(&tun("rvs-zero", 0, false)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");

        let name = dev.name().to_owned();
        drop(dev);
        assert!(gone(&name));
    });
}

/// Not a benchmark: one client thread, one reflector, small packets, for orders of magnitude.
/// The client (one `send_to`/`recv_from` per datagram) is the bottleneck of the round-trip
/// rate; the reflector's own CPU time per packet (its TUN writes include the kernel's
/// delivery of the reflected datagram) says more about the backend.
#[test]
fn throughput_smoke() {
    if !have_root() {
        return;
    }
    for multishot in [true, false] {
        let (rate, r) = in_netns(move || {
            let uring = UringOptions {
                multishot,
                ..UringOptions::default()
            };
            let lab = Lab::start(&tun("rvs-perf", 1, false), &uring);
            let n = 50_000;
            let t = Instant::now();
            ping(n, 256, 256, 64);
            let rate = f64::from(n) / t.elapsed().as_secs_f64();
            (rate, lab.stop().into_iter().next().unwrap())
        });
        let s = &r.stats;
        let per_packet = r.cpu.as_secs_f64() / s.reads.max(1) as f64;
        eprintln!(
            "throughput_smoke: multishot={multishot}: {rate:.0} round trips/s; reflector {:.2} µs \
             CPU/packet (≈{:.0} kpps/core), {:.1} packets/batch, {} ENOBUFS, {} io-wq workers",
            per_packet * 1e6,
            1e-3 / per_packet,
            s.reads as f64 / s.batches.max(1) as f64,
            s.enobufs,
            r.io_wq_workers,
        );
        assert_eq!(s.multishot, multishot);
    }
}

/// Lets `sock` send GSO batches of `size`-byte datagrams (`UDP_SEGMENT`).
fn set_udp_segment(sock: &UdpSocket, size: libc::c_int) {
    // Safety: UDP_SEGMENT reads one c_int through the valid pointer of the given size.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(sock),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "UDP_SEGMENT: {}", io::Error::last_os_error());
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    // Safety: rusage is plain old data; getrusage fills it for RUSAGE_THREAD.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// io_uring worker threads (`iou-wrk-<tid>`) serving the calling thread's rings: requests
/// the kernel could neither complete nor wait for by polling.
fn io_wq_workers() -> usize {
    // Safety: gettid has no preconditions.
    let me = format!("iou-wrk-{}", unsafe { libc::gettid() });
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == me)
        .count()
}
