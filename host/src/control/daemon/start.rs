//! Starting and running the daemon: [`run`] (the device, the queues, the control loop,
//! the shutdown) and [`Daemon::detached`] (the same daemon on queues attached to nothing).

use super::super::admin;
use super::super::notify;
use super::super::plugins::PluginManager;
use super::super::registry::Registry;
use super::super::routes::{self, AutoRoutes};
use super::queues::{service_set, steered, IoControl, Queue, Queues, Steering};
use super::state::{Daemon, DaemonError, Plugins, Sources};
use crate::config::{self, Config, Io, Routes};
use crate::conn::HashKey;
use crate::dataplane::service::Snapshot;
use crate::dataplane::sources::SourceSketch;
use crate::dataplane::synproxy::cookie::CookieKeys;
use crate::dataplane::templates::TemplateStore;
use crate::dataplane::{Control, PluginEvent, Shard, ShardConfig};
use crate::io::bpf::XdpMode;
use crate::io::steer;
use crate::io::tun::{attach_steering_bpf, TunDevice, TunOptions};
use crate::io::uring::UringOptions;
use crate::io::xdp::{XdpOptions, XdpPlane};
use crate::io::{AnyQueue, IoCounters, QueueIo, TunQueue};
use crossbeam_channel::Sender;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

fn pin_to_cpu(i: usize) {
    // Safety: `set` is a plain bitmask owned by this frame; sched_setaffinity only reads it.
    unsafe {
        let n = libc::sysconf(libc::_SC_NPROCESSORS_ONLN);
        if n <= 0 {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(i % n as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Gives the calling queue thread the nice value `nice` (`director.queue_nice`). Linux keeps
/// a nice value per thread; lowering it needs CAP_SYS_NICE (root has it while setting up, and
/// the value stays when capabilities are dropped). Without it the queue runs at the daemon's
/// and the log says so.
fn set_nice(nice: i32, queue: usize) {
    // Safety: gettid has no preconditions; setpriority reads its three integers only, and
    // for PRIO_PROCESS Linux applies it to the one thread named.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if rc != 0 {
        warn!(
            queue,
            nice,
            "cannot set the queue thread's nice value (director.queue_nice): {}; it runs at the daemon's",
            std::io::Error::last_os_error()
        );
    }
}

/// What every queue of a daemon shares; each gets its [`ShardConfig`] from it.
struct QueueSetup {
    /// How many queues.
    n: usize,
    /// `director.conn_memory_limit`, shared out.
    memory_limit: usize,
    expire_nodest_conn: bool,
    hash_key: HashKey,
    start: Instant,
    events: Sender<PluginEvent>,
    sources: Arc<SourceSketch>,
    templates: Arc<TemplateStore>,
    cookies: Arc<CookieKeys>,
    /// The queue steering secret (the TUN steering program's, the AF_XDP hand-off's).
    steer_key: HashKey,
    /// With several queues, reassembled datagrams' way to the queue owning their flow.
    handoff: Option<Arc<crate::dataplane::defrag::Handoff>>,
    /// With `[director.sync]`: the link and each queue's way to the sync thread.
    sync: Option<(Arc<crate::sync::Link>, Vec<Sender<crate::sync::Entry>>)>,
    /// `director.queue_nice`.
    nice: i32,
}

impl QueueSetup {
    /// Queue `id`: its share of the memory budget and what all queues share.
    fn shard_config(&self, id: usize) -> ShardConfig {
        ShardConfig {
            id,
            memory_limit: crate::dataplane::shard::queue_share(self.memory_limit, self.n),
            hash_key: self.hash_key,
            start: self.start,
            expire_nodest_conn: self.expire_nodest_conn,
            events: Some(self.events.clone()),
            sources: self.sources.clone(),
            queues: self.n,
            templates: self.templates.clone(),
            cookies: self.cookies.clone(),
            tick_thread: true,
            handoff: self.handoff.clone(),
            sync: self
                .sync
                .as_ref()
                .map(|(link, txs)| crate::sync::QueueSync {
                    link: link.clone(),
                    tx: txs[id].clone(),
                }),
        }
    }
}

/// The persistence template store every queue shares (`director.template_memory_limit`).
fn template_store(cfg: &Config) -> Result<Arc<TemplateStore>, String> {
    let templates = TemplateStore::new(cfg.director.template_memory_limit, HashKey::random())
        .map_err(|e| format!("{}: director.{e}", cfg.path.display()))?;
    templates.set_expire_quiescent(cfg.director.expire_quiescent_template);
    Ok(Arc::new(templates))
}

/// What a daemon starts from: the registry, its plugins (compiled, checked and
/// self-tested, one instance per queue), the first snapshot, and what the queues will
/// share. Touches nothing outside the process.
struct Startup {
    registry: Registry,
    plugins: Plugins,
    snap: Arc<Snapshot>,
    setup: QueueSetup,
    /// With `[director.sync]`: each queue's outgoing entries, for the sync thread.
    sync_rx: Vec<crossbeam_channel::Receiver<crate::sync::Entry>>,
}

fn startup(cfg: &Config) -> Result<Startup, String> {
    let start = Instant::now();
    let mut registry = Registry::new(&cfg.services).map_err(|e| e.to_string())?;
    let d = &cfg.director;
    crate::control::forwarding::resolve(&mut registry, d.tunnel_source, d.tunnel_source6)?;
    crate::control::forwarding::check_routed(&registry, cfg.director.io == Io::AfXdp)?;
    if let (Some(a), true) = (
        registry.tunnel_source(),
        registry.first_tunnelled().is_some(),
    ) {
        info!(
            tunnel_source = %a,
            tunnel_mtu = registry.tunnel_mtu(),
            "tunnelled realservers: outer source {a}"
        );
    }
    if let (Some(a), true) = (
        registry.tunnel_source6(),
        registry.first_tunnelled6().is_some(),
    ) {
        info!(
            tunnel_source6 = %a,
            tunnel_mtu6 = registry.tunnel_mtu6(),
            "tunnelled IPv6 realservers: outer source {a}"
        );
    }
    let mut manager = PluginManager::default();
    let loaded = manager.load_config(cfg)?;
    let prepared = manager.prepare(&registry, cfg.director.queues, &loaded)?;
    manager.commit(loaded);
    let snap = Arc::new(manager.snapshot(&mut registry, prepared));
    let (events_tx, events) = crossbeam_channel::unbounded();
    let templates = template_store(cfg)?;
    let steer_key = HashKey::random();
    let setup = QueueSetup {
        nice: cfg.director.queue_nice,
        n: cfg.director.queues,
        memory_limit: cfg.director.conn_memory_limit,
        expire_nodest_conn: cfg.director.expire_nodest_conn,
        hash_key: HashKey::random(),
        start,
        events: events_tx,
        sources: Arc::new(SourceSketch::new()),
        templates: templates.clone(),
        cookies: Arc::new(CookieKeys::new()),
        steer_key,
        handoff: (cfg.director.queues > 1).then(|| {
            Arc::new(crate::dataplane::defrag::Handoff::new(
                steer_key,
                cfg.director.queues,
            ))
        }),
        sync: None,
    };
    let mut setup = setup;
    let mut sync_rx = Vec::new();
    if let Some(s) = &cfg.director.sync {
        let link = Arc::new(crate::sync::Link::new(s.role, s.threshold, s.period));
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..cfg.director.queues)
            .map(|_| crossbeam_channel::bounded(crate::sync::link::QUEUE_DEPTH))
            .unzip();
        setup.sync = Some((link, txs));
        sync_rx = rxs;
    }
    let plugins = Plugins {
        manager,
        events,
        templates,
    };
    Ok(Startup {
        registry,
        plugins,
        snap,
        setup,
        sync_rx,
    })
}

impl Startup {
    /// The daemon, once its queues are `queues`.
    /// The daemon, once its queues are `queues`; with `[director.sync]`, its sync thread
    /// started.
    fn into_daemon(self, cfg: Config, queues: Vec<Queue>, io: IoControl) -> Result<Daemon, String> {
        let node = match (&cfg.director.sync, &self.setup.sync) {
            (Some(s), Some((link, _))) => Some(crate::sync::node::Node::start(
                crate::sync::node::Settings {
                    id: s.id,
                    key: s.key.clone(),
                    listen: s.listen,
                    peers: s.peers.clone(),
                    max_rate: s.max_rate,
                    steer_key: self.setup.steer_key,
                },
                link.clone(),
                self.sync_rx,
                queues.iter().map(|q| q.tx.clone()).collect(),
            )?),
            _ => None,
        };
        let queues = Queues::new(queues, self.setup.start, io);
        let sources = Sources::new(self.setup.sources);
        let mut d = Daemon::new(cfg, self.registry, queues, self.plugins, sources);
        d.sync = node;
        Ok(d)
    }
}

impl Daemon {
    /// A daemon whose `director.queues` queues are attached to no device: the caller drives
    /// the returned shards (e.g. with [`crate::io::mem::process_packets`], whose `poll`
    /// applies what the control plane sent). Everything else is the real daemon: the admin
    /// protocol, runtime edits, reloads and plugin swaps, with no privileges needed and no
    /// route, device or steering program touched. Tests drive the admin socket with it.
    /// (`connections` asks every queue and waits for its answer: it needs the shards polled
    /// meanwhile; `tick` is not run, so drained realservers are not collected.)
    pub fn detached(cfg: Config) -> Result<(Daemon, Vec<Shard>), String> {
        let s = startup(&cfg)?;
        let n = s.setup.n;
        let mut queues = Vec::with_capacity(n);
        let mut shards = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = crossbeam_channel::unbounded();
            let shard = Shard::new(s.setup.shard_config(i), s.snap.clone(), Some(rx))
                .map_err(|e| e.to_string())?;
            queues.push(Queue {
                tx,
                shared: shard.shared(),
                io: Arc::default(),
                thread: None,
            });
            shards.push(shard);
        }
        Ok((s.into_daemon(cfg, queues, IoControl::None)?, shards))
    }
}

/// [`Startup::into_daemon`]; if that fails (the sync thread did not start), the queues
/// are stopped.
fn into_daemon_or_stop(
    s: Startup,
    cfg: Config,
    queues: Vec<Queue>,
    io: IoControl,
) -> Result<Daemon, String> {
    let txs: Vec<_> = queues.iter().map(|q| q.tx.clone()).collect();
    s.into_daemon(cfg, queues, io).inspect_err(|_| {
        for tx in txs {
            let _ = tx.send(Control::Stop);
        }
    })
}

/// Starts one thread per I/O queue, each driving its shard; waits until each is running.
fn start_queues(
    setup: &QueueSetup,
    io: Vec<AnyQueue>,
    snap: &Arc<Snapshot>,
) -> Result<Vec<Queue>, String> {
    let n = io.len();
    let mut queues = Vec::with_capacity(n);
    for (i, q) in io.into_iter().enumerate() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut shard =
            Shard::new(setup.shard_config(i), snap.clone(), Some(rx)).map_err(|e| e.to_string())?;
        let shared = shard.shared();
        let io = Arc::new(IoCounters::default());
        let live = io.clone();
        let pin = n > 1;
        let nice = setup.nice;
        let thread = std::thread::Builder::new()
            .name(format!("ringvs-q{i}"))
            .spawn(move || {
                if pin {
                    pin_to_cpu(i);
                }
                if nice != 0 {
                    set_nice(nice, i);
                }
                q.run(&mut shard, &live)
            })
            .map_err(|e| format!("cannot start queue thread {i}: {e}"))?;
        queues.push(Queue {
            tx,
            shared,
            io,
            thread: Some(thread),
        });
    }
    wait_running(queues)
}

/// Waits until every queue has polled once (its ring is up) or one has failed.
fn wait_running(mut queues: Vec<Queue>) -> Result<Vec<Queue>, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut all = true;
        for (i, q) in queues.iter_mut().enumerate() {
            if q.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let res = q.thread.take().map(|t| t.join());
                for q in &queues {
                    let _ = q.tx.send(Control::Stop);
                }
                return Err(match res {
                    Some(Ok(Err(e))) => format!("queue {i} could not start: {e}"),
                    _ => format!("queue {i} could not start"),
                });
            }
            all &= q.shared.ready.load(std::sync::atomic::Ordering::Acquire);
        }
        if all {
            return Ok(queues);
        }
        if Instant::now() > deadline {
            for q in &queues {
                let _ = q.tx.send(Control::Stop);
            }
            return Err("queues did not start within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the daemon until SIGTERM or SIGINT; `log_format` overrides `director.log_format`.
pub fn run(path: &Path, log_format: Option<config::LogFormat>) -> Result<(), DaemonError> {
    let cfg = config::load(path).map_err(|e| e.to_string())?;
    super::super::logging::init(log_format.unwrap_or(cfg.director.log_format));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the control runtime: {e}"))?;
    rt.block_on(run_async(cfg))
}

/// What fails without touching the network: the admin socket, the metrics listener, and
/// forwarding when `routes = "auto"` needs it.
fn bind_listeners(cfg: &Config) -> Result<admin::Listener, DaemonError> {
    let listener = admin::bind(
        &cfg.director.admin_socket,
        cfg.director.admin_group.as_deref(),
    )?;
    if let Some(addr) = cfg.director.metrics_listen {
        crate::metrics::install(addr)?;
    }
    for p in routes::check_forwarding() {
        if cfg.director.routes == Routes::Auto {
            return Err(DaemonError(format!(
                "routes = \"auto\" needs forwarding: {p}"
            )));
        }
        warn!("{p}");
    }
    Ok(listener)
}

/// With several queues, both directions of a flow must reach the same queue: steers on the
/// client endpoint, keyed with the queues' steering secret, before any queue runs.
fn attach_steering(
    tun: &TunDevice,
    queues: usize,
    snap: &Snapshot,
    key: HashKey,
) -> Result<Option<Steering>, String> {
    if queues <= 1 {
        return Ok(None);
    }
    let fd = tun.queue_fds()[0]
        .try_clone()
        .map_err(|e| format!("cannot duplicate a queue descriptor: {e}"))?;
    let (services, services6) = (steered(snap), snap.steered6());
    let prog = steer::load(&steer::program(&services, &services6, queues as u32, &key)).map_err(|e| {
        format!("director.queues = {queues} needs the TUN steering program: {e}; use queues = 1 or run as root with BPF allowed")
    })?;
    attach_steering_bpf(fd.as_fd(), prog.as_fd())
        .map_err(|e| format!("cannot attach the steering program to {}: {e}", tun.name()))?;
    Ok(Some(Steering {
        fd,
        services,
        services6,
        key,
    }))
}

/// For `ringvs check`: with `director.io = "af_xdp"`, that the interfaces exist and have
/// `director.queues` receive queues, that AF_XDP sockets open and that the XDP program loads
/// and attaches (a program that passes everything, detached at once). `Ok(None)` for TUN.
pub fn check_io(cfg: &Config) -> Result<Option<String>, String> {
    match cfg.director.io {
        Io::Tun => Ok(None),
        Io::AfXdp => crate::io::xdp::check(&xdp_options(cfg))
            .map(Some)
            .map_err(|e| format!("{}: director.io = \"af_xdp\": {e}", cfg.path.display())),
    }
}

/// `director.io = "af_xdp"`: what `XdpPlane` takes from the config.
fn xdp_options(cfg: &Config) -> XdpOptions {
    XdpOptions {
        mode: match cfg.director.xdp_mode {
            config::XdpMode::Auto => None,
            config::XdpMode::Native => Some(XdpMode::Native),
            config::XdpMode::Generic => Some(XdpMode::Generic),
        },
        ..XdpOptions::new(cfg.director.interfaces.clone(), cfg.director.queues)
    }
}

/// The AF_XDP plane (program on every interface, sockets, resolver) and its queues.
fn start_xdp(cfg: &Config, s: &Startup) -> Result<(IoControl, Vec<Queue>, String), String> {
    let opts = xdp_options(cfg);
    let (plane, io) = XdpPlane::start(&opts, &service_set(&s.snap), s.setup.steer_key)
        .map_err(|e| format!("director.io = \"af_xdp\": {e}"))?;
    let what = format!(
        "af_xdp on {} ({} XDP)",
        cfg.director.interfaces.join(", "),
        match plane.mode() {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    );
    let queues = start_queues(
        &s.setup,
        io.into_iter().map(AnyQueue::Xdp).collect(),
        &s.snap,
    )?;
    Ok((IoControl::Xdp(plane), queues, what))
}

/// The packet I/O (TUN device and steering program, or the AF_XDP plane) and the queues;
/// then the daemon with its health checks and routes. Returns it with what it forwards on.
fn start_director(cfg: Config, s: Startup) -> Result<(Daemon, String), DaemonError> {
    if cfg.director.io == Io::AfXdp {
        let (io, queues, what) = start_xdp(&cfg, &s)?;
        let mut daemon = into_daemon_or_stop(s, cfg, queues, io)?;
        daemon.sync_health();
        return Ok((daemon, what));
    }
    let tun = TunDevice::create(&TunOptions {
        name: cfg.director.device.clone(),
        queues: cfg.director.queues,
        vnet_hdr: cfg.director.offload,
        // GSO super-packets cannot be tunnelled through TUN (dataplane::tunnel).
        segmentation: !s.snap.any_tunnelled(),
        mtu: cfg.director.mtu,
        txqueuelen: None,
        napi: false,
    })
    .map_err(|e| format!("cannot create device {}: {e}", cfg.director.device))?;
    for w in routes::device_sysctls(tun.name()) {
        warn!("{w}");
    }
    let device = tun.name().to_string();
    let steering = attach_steering(&tun, cfg.director.queues, &s.snap, s.setup.steer_key)?;
    let vnet_hdr = cfg.director.offload;
    let io = tun
        .into_queues()
        .into_iter()
        .enumerate()
        .map(|(i, fd)| {
            AnyQueue::Tun(TunQueue {
                fd,
                vnet_hdr,
                opts: UringOptions {
                    // The kernel counts the device's drops, not a queue's: queue 0 reports.
                    report_device_drops: i == 0,
                    ..UringOptions::for_device(vnet_hdr)
                },
            })
        })
        .collect();
    let queues = start_queues(&s.setup, io, &s.snap)?;
    let routes = (cfg.director.routes == Routes::Auto).then(|| AutoRoutes::new(&device));
    let io = steering.map_or(IoControl::None, IoControl::Tun);
    let mut daemon = into_daemon_or_stop(s, cfg, queues, io)?;
    daemon.routes = routes;
    daemon.sync_health();
    if let Err(e) = daemon.sync_routes() {
        daemon.shutdown();
        return Err(DaemonError(format!("cannot install routes: {e}")));
    }
    Ok((daemon, device))
}

async fn run_async(cfg: Config) -> Result<(), DaemonError> {
    // Plugins are compiled, checked and self-tested before anything touches the network.
    let s = startup(&cfg)?;
    // Fail early, before touching the network.
    let listener = bind_listeners(&cfg)?;
    let (mut daemon, device) = start_director(cfg, s)?;
    daemon.attach_admin(listener.access());
    // Everything that needs root is done: give it up if configured.
    if let Some(name) = daemon.cfg.director.user.clone() {
        let dropped = crate::control::privileges::lookup(&name).and_then(|u| {
            crate::control::privileges::drop_to(&u, &daemon.cfg.director.admin_socket)
        });
        if let Err(e) = dropped {
            daemon.shutdown();
            return Err(DaemonError(e));
        }
        info!(user = %name, "running as {name}, without root or capabilities");
    } else {
        // Staying root (or started with ambient capabilities): keep only what running needs.
        let tun_queues = if daemon.cfg.director.io == Io::Tun {
            daemon.cfg.director.queues
        } else {
            0
        };
        let want = crate::control::privileges::needed(
            daemon.cfg.director.routes == Routes::Auto,
            daemon.cfg.director.io == Io::AfXdp,
            tun_queues,
            // Safety: geteuid has no preconditions.
            unsafe { libc::geteuid() } == 0,
        );
        match crate::control::privileges::keep_only(want) {
            Ok(kept) => info!(
                capabilities = %crate::control::privileges::names(kept),
                "setup done: every other capability dropped on every thread"
            ),
            Err(e) => warn!("{e}; running on with the capabilities the daemon started with"),
        }
    }
    let table = daemon.report();
    info!(
        device = %device,
        queues = daemon.queues.len(),
        offload = daemon.cfg.director.offload,
        services = daemon.registry.services().count(),
        table_entries = table.capacity,
        bytes_per_entry = crate::conn::ConnTable::<std::net::Ipv4Addr>::ENTRY_BYTES,
        "ringvs running"
    );
    let socket_path: PathBuf = daemon.cfg.director.admin_socket.clone();
    let daemon = Arc::new(Mutex::new(daemon));
    let server = tokio::spawn(admin::serve(listener, daemon.clone()));
    if let Err(e) = notify::notify(&format!(
        "READY=1\nSTATUS=forwarding on {device}, admin socket {}",
        socket_path.display()
    )) {
        warn!("sd_notify: {e}");
    }
    let outcome = control_loop(&daemon).await;
    let _ = notify::notify("STOPPING=1");
    server.abort();
    let _ = std::fs::remove_file(&socket_path);
    let d = daemon.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Ok(mut d) = d.lock() {
            d.shutdown();
        }
    })
    .await;
    info!("ringvs stopped");
    outcome
}

/// Signals and the once-a-second tick, until SIGTERM, SIGINT or a failed tick.
async fn control_loop(daemon: &Arc<Mutex<Daemon>>) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // With director.stop_delay: when SIGTERM was received, the data plane stops.
    let mut stop_at: Option<tokio::time::Instant> = None;
    let stop = async |at: Option<tokio::time::Instant>| match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    };
    loop {
        tokio::select! {
            _ = hup.recv() => on_hangup(daemon).await,
            _ = term.recv() => {
                let delay = daemon.lock().map_or(0, |d| d.cfg.director.stop_delay);
                if delay == 0 || stop_at.is_some() {
                    info!("SIGTERM: stopping");
                    return Ok(());
                }
                let delay = Duration::from_secs(u64::from(delay));
                info!(
                    delay_secs = delay.as_secs(),
                    "SIGTERM: not ready from now on (ringvs ha ready), forwarding for director.stop_delay, then stopping; another SIGTERM stops at once"
                );
                if let Ok(mut d) = daemon.lock() {
                    d.stopping = Some(std::time::Instant::now() + delay);
                }
                stop_at = Some(tokio::time::Instant::now() + delay);
            }
            _ = int.recv() => { info!("SIGINT: stopping"); return Ok(()); }
            _ = stop(stop_at) => { info!("director.stop_delay over: stopping"); return Ok(()); }
            _ = tick.tick() => on_tick(daemon).await?,
        }
    }
}

/// SIGHUP: a reload.
async fn on_hangup(daemon: &Arc<Mutex<Daemon>>) {
    let _ = notify::notify(&notify::reloading());
    let d = daemon.clone();
    let res =
        tokio::task::spawn_blocking(move || d.lock().map_err(|_| "lock".to_string())?.reload())
            .await;
    match res {
        Ok(Ok(m)) => info!("SIGHUP: {m}"),
        Ok(Err(e)) => error!("SIGHUP: reload refused: {e}"),
        Err(e) => error!("SIGHUP: {e}"),
    }
    let _ = notify::notify("READY=1");
}

/// The once-a-second tick; an error ends the daemon.
async fn on_tick(daemon: &Arc<Mutex<Daemon>>) -> Result<(), DaemonError> {
    let d = daemon.clone();
    let res = tokio::task::spawn_blocking(move || match d.lock() {
        Ok(mut d) => d.tick(),
        Err(_) => Err("daemon state poisoned".to_string()),
    })
    .await;
    match res {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            error!("{e}");
            Err(DaemonError(e))
        }
        Err(e) => Err(DaemonError(e.to_string())),
    }
}
