//! The queues as the control plane holds them: a channel and the published report of each,
//! its thread (none for a detached daemon), their common clock, and what keeps the packet
//! I/O in step with the services (the TUN device's steering program, or the AF_XDP plane).

use crate::conn::{HashKey, Tick, TICKS_PER_SEC};
use crate::dataplane::service::Snapshot;
use crate::dataplane::shard::{ConnInfo, ShardShared};
use crate::dataplane::sources::SourceCount;
use crate::dataplane::stats::ShardReport;
use crate::dataplane::Control;
use crate::io::steer;
use crate::io::tun::attach_steering_bpf;
use crate::io::xdp::{ServiceSet, XdpPlane};
use crate::io::{IoCounters, IoSnapshot, IoStats};
use crossbeam_channel::Sender;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// A queue thread and how to reach it.
pub(super) struct Queue {
    pub(super) tx: Sender<Control>,
    pub(super) shared: Arc<ShardShared>,
    /// What its packet I/O counts, published by its thread.
    pub(super) io: Arc<IoCounters>,
    pub(super) thread: Option<JoinHandle<std::io::Result<IoStats>>>,
}

/// The services a steering program knows: `(protocol, address, port)`, sorted.
pub(super) type Steered = Vec<(u8, Ipv4Addr, u16)>;

/// The steering program attached to a multi-queue device.
pub(super) struct Steering {
    /// A queue descriptor kept for device-wide ioctls.
    pub(super) fd: OwnedFd,
    /// The services the attached program knows.
    pub(super) services: Steered,
    /// The IPv6 services it knows.
    pub(super) services6: Vec<(u8, std::net::Ipv6Addr, u16)>,
    /// The steering secret, drawn at start.
    pub(super) key: HashKey,
}

/// The services of `snap` as a steering program knows them.
pub(super) fn steered(snap: &Snapshot) -> Steered {
    snap.steered()
}

/// The services of `snap` as the AF_XDP plane knows them: the steering list and every
/// realserver endpoint (draining ones included: their replies still come).
pub(super) fn service_set(snap: &Snapshot) -> ServiceSet {
    let mut reals: Vec<(u8, std::net::IpAddr, u16)> = snap
        .services()
        .flat_map(|s| {
            let p = s.proto.number();
            s.dests.iter().map(move |d| (p, d.addr.ip(), d.addr.port()))
        })
        .collect();
    reals.sort_unstable();
    reals.dedup();
    ServiceSet {
        services: steered(snap),
        services6: snap.steered6(),
        reals,
    }
}

/// What keeps the packet I/O in step with the services.
pub(super) enum IoControl {
    /// Queues attached to nothing (a detached daemon), or one TUN queue.
    None,
    /// A multi-queue TUN device and its steering program.
    Tun(Steering),
    /// The AF_XDP plane: XDP programs, endpoint map, steering list, neighbours. Dropping it
    /// detaches the programs.
    Xdp(XdpPlane),
}

/// Every queue, their clock and the packet I/O's control.
pub(super) struct Queues {
    list: Vec<Queue>,
    /// The queues' clock starts here.
    started: Instant,
    io: IoControl,
    /// The timed plugin calls collected each second, in a buffer reserved (and touched)
    /// once: a flood of new flows does not grow the control plane's memory.
    samples: Vec<Sample>,
}

/// A timed plugin call: plugin, function, seconds.
type Sample = (Arc<str>, crate::dataplane::policy::Func, f64);

impl Queues {
    pub(super) fn new(list: Vec<Queue>, started: Instant, io: IoControl) -> Queues {
        let mut samples = Vec::new();
        crate::dataplane::policy::reserve_touched(
            &mut samples,
            list.len().max(1) * 10 * crate::dataplane::policy::MAX_SAMPLES,
        );
        Queues {
            list,
            started,
            io,
            samples,
        }
    }

    /// How many.
    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    /// Since the queues' clock started.
    pub(super) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Ticks since start (the queues' clock).
    pub(super) fn now_tick(&self) -> Tick {
        (self.started.elapsed().as_millis() / (1000 / TICKS_PER_SEC as u128)) as Tick
    }

    /// Sends every queue the message `msg` makes (a failed send means the queue is gone,
    /// which [`Queues::check_threads`] reports).
    pub(super) fn send_all(&self, mut msg: impl FnMut() -> Control) {
        for q in &self.list {
            let _ = q.tx.send(msg());
        }
    }

    /// Sends queue `i` a message, if it exists.
    pub(super) fn send(&self, i: usize, msg: Control) {
        if let Some(q) = self.list.get(i) {
            let _ = q.tx.send(msg);
        }
    }

    /// Every queue's report, merged.
    pub(super) fn report(&self) -> ShardReport {
        let mut total = ShardReport::default();
        for q in &self.list {
            if let Ok(r) = q.shared.report.lock() {
                total.merge(&r);
            }
        }
        total
    }

    /// What each queue's packet I/O counted, in queue order.
    pub(super) fn io(&self) -> Vec<IoSnapshot> {
        self.list.iter().map(|q| q.io.load()).collect()
    }

    /// The timed plugin calls the queues collected since the last call.
    pub(super) fn take_samples(&mut self) -> &[Sample] {
        self.samples.clear();
        for q in &self.list {
            if let Ok(mut r) = q.shared.report.lock() {
                let room = self.samples.capacity() - self.samples.len();
                let n = r.plugin_samples.len().min(room);
                self.samples.extend(r.plugin_samples.drain(..n));
                r.plugin_samples.clear();
            }
        }
        &self.samples
    }

    /// Each queue's top sources of the last second.
    pub(super) fn tops(&self) -> Vec<Vec<SourceCount>> {
        self.list
            .iter()
            .filter_map(|q| q.shared.report.lock().ok().map(|r| r.top.clone()))
            .collect()
    }

    /// Up to `max` connections of every queue (each asked, then waited for up to 2 s).
    pub(super) fn connections(&self, max: usize) -> Vec<ConnInfo> {
        let mut all: Vec<ConnInfo> = Vec::new();
        let mut replies = Vec::new();
        for q in &self.list {
            let (tx, rx) = crossbeam_channel::bounded(1);
            if q.tx.send(Control::ListConns { max, reply: tx }).is_ok() {
                replies.push(rx);
            }
        }
        for rx in replies {
            if let Ok(mut v) = rx.recv_timeout(Duration::from_secs(2)) {
                all.append(&mut v);
            }
        }
        all
    }

    /// Keeps the device's steering program (or the AF_XDP plane's endpoint map and steering
    /// list) in step with the services (before the queues see them, so that a new service's
    /// flows are keyed on their clients from the start).
    pub(super) fn update_steering(&mut self, snap: &Snapshot) -> Result<(), String> {
        let n = self.list.len() as u32;
        let steering = match &mut self.io {
            IoControl::None => return Ok(()),
            IoControl::Xdp(plane) => return plane.update(&service_set(snap)),
            IoControl::Tun(s) => s,
        };
        let (services, services6) = (steered(snap), snap.steered6());
        if services == steering.services && services6 == steering.services6 {
            return Ok(());
        }
        let prog = steer::program(&services, &services6, n, &steering.key);
        let prog_fd = steer::load(&prog).map_err(|e| e.to_string())?;
        attach_steering_bpf(steering.fd.as_fd(), prog_fd.as_fd())
            .map_err(|e| format!("cannot attach the steering program: {e}"))?;
        steering.services = services;
        steering.services6 = services6;
        Ok(())
    }

    /// An error if a queue thread has ended (it never should while the daemon runs).
    pub(super) fn check_threads(&mut self) -> Result<(), String> {
        for (i, q) in self.list.iter_mut().enumerate() {
            if q.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let res = q.thread.take().map(|t| t.join());
                return Err(match res {
                    Some(Ok(Ok(_))) => format!("queue {i} stopped unexpectedly"),
                    Some(Ok(Err(e))) => format!("queue {i} failed: {e}"),
                    _ => format!("queue {i} panicked"),
                });
            }
        }
        Ok(())
    }

    /// Stops every queue and waits for its thread; then detaches the XDP programs.
    pub(super) fn stop(&mut self) {
        self.send_all(|| Control::Stop);
        for (i, q) in self.list.iter_mut().enumerate() {
            if let Some(t) = q.thread.take() {
                match t.join() {
                    Ok(Ok(stats)) => info!(queue = i, ?stats, "queue stopped"),
                    Ok(Err(e)) => warn!(queue = i, "queue ended with an error: {e}"),
                    Err(_) => warn!(queue = i, "queue thread panicked"),
                }
            }
        }
        self.io = IoControl::None;
    }
}
