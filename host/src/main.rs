//! The `ringvs` command: the daemon and its operator tools. One function per subcommand;
//! the client commands send one admin request (see `ringvs::control::protocol`) each.

use clap::{Args, Parser, Subcommand};
use ringvs::config::{self, ServiceEdit};
use ringvs::control::client::{self, ListView};
use ringvs::control::protocol::{
    ConnectionsResult, HaResult, ListResult, PluginInfo, Request, StatusResult, TopResult,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A userspace Linux Virtual Server: an io_uring L4 director with WebAssembly policies.
///
/// Operators run it like ipvsadm + keepalived: `ringvs run -c FILE` starts the daemon,
/// the other commands talk to it over its admin socket.
#[derive(Parser, Debug)]
#[command(name = "ringvs", version = ringvs::LONG_VERSION, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// How a client command finds the daemon.
#[derive(Args, Debug, Clone)]
struct Target {
    /// Read the admin socket path from this config file (`director.admin_socket`).
    #[arg(short = 'c', long = "config", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// The admin socket path (default /run/ringvs/admin.sock).
    #[arg(
        short = 's',
        long = "socket",
        value_name = "PATH",
        global = true,
        conflicts_with = "config"
    )]
    socket: Option<PathBuf>,
}

impl Target {
    fn socket(&self) -> Result<PathBuf, String> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        if let Some(c) = &self.config {
            return config::load(c)
                .map(|c| c.director.admin_socket)
                .map_err(|e| e.to_string());
        }
        Ok(PathBuf::from("/run/ringvs/admin.sock"))
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the daemon with a config file (SIGHUP re-reads it; SIGTERM stops).
    Run(RunArgs),
    /// Validate a config file without touching the network.
    Check {
        /// The config file.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
    },
    /// List services and realservers like `ipvsadm -Ln`.
    List(ListArgs),
    /// Show table occupancy, drops by reason and queues.
    Status {
        /// Print the raw JSON result instead.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Re-read the daemon's config file (same as SIGHUP). Runtime edits the file does not
    /// repeat are reverted, and the answer names them.
    Reload {
        /// Print what a reload would change, runtime edits it would revert included, and
        /// change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Keep runtime edits (weights, servers, services, schedulers changed with the CLI)
        /// where the file left the same thing unchanged since it was last applied.
        #[arg(long)]
        keep_runtime: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print the running state as a config file (ipvsadm-save): `ringvs check` accepts it,
    /// and as the config file it reproduces what runs now, runtime edits included.
    Save {
        /// Write it to FILE instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Zero the statistics of all services, or of one (ipvsadm -Z).
    Zero {
        /// Only this service.
        service: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Run a capture through the data plane offline (no privileges, no device) and report
    /// decisions, drops and table occupancy.
    Replay(ReplayArgs),
    /// Live top talkers, blocks and defenses (refreshed every second; Ctrl-C to quit).
    Top {
        /// Print once and exit.
        #[arg(long)]
        once: bool,
        /// Print the daemon's JSON answer (implies --once).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Add, edit or remove virtual services at runtime (ipvsadm -A/-E/-D).
    Service {
        #[command(subcommand)]
        cmd: ServiceCmd,
    },
    /// Connection sync between directors: the role (keepalived's notify scripts call
    /// `ringvs ha master` and `ringvs ha backup`) and the sync status (docs/HA.md).
    Ha {
        #[command(subcommand)]
        cmd: HaCmd,
    },
    /// Change realservers at runtime (existing connections are kept).
    Server {
        #[command(subcommand)]
        cmd: ServerCmd,
    },
    /// WebAssembly plugins: list them, swap a service's scheduler at runtime.
    Plugin {
        #[command(subcommand)]
        cmd: PluginCmd,
    },
    /// Write the man pages or a shell completion script (for packagers).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: GenerateCmd,
    },
}

/// `ringvs generate`.
#[derive(Subcommand, Debug)]
enum GenerateCmd {
    /// Man pages into DIR: ringvs.1 and one per command (ringvs-list.1, …).
    Man {
        /// The directory to write them to (created if missing).
        dir: PathBuf,
    },
    /// A completion script for SHELL, on standard output.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// `ringvs run`.
#[derive(Args, Debug)]
struct RunArgs {
    /// The config file.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: PathBuf,
    /// Log lines as human-readable text or one JSON object each (overrides
    /// director.log_format). The level comes from RUST_LOG (default info), e.g.
    /// RUST_LOG=debug or RUST_LOG=ringvs::control=debug.
    #[arg(long, value_name = "FORMAT", value_parser = ["human", "text", "json"])]
    log_format: Option<String>,
}

/// `ringvs list`.
#[derive(Args, Debug)]
struct ListArgs {
    /// List tracked connections and persistence templates like `ipvsadm -Lnc`.
    #[arg(long, conflicts_with_all = ["stats", "rate", "thresholds", "persistent_conn"])]
    connections: bool,
    /// Show packet, byte and connection counters (`ipvsadm --stats`).
    #[arg(long, conflicts_with_all = ["rate", "thresholds", "persistent_conn"])]
    stats: bool,
    /// Show rates (`ipvsadm --rate`).
    #[arg(long, conflicts_with_all = ["thresholds", "persistent_conn"])]
    rate: bool,
    /// Show the realservers' connection thresholds (`ipvsadm --thresholds`).
    #[arg(long, conflicts_with = "persistent_conn")]
    thresholds: bool,
    /// Show the persistence templates per realserver (`ipvsadm --persistent-conn`).
    #[arg(long)]
    persistent_conn: bool,
    /// Zero the counters after listing them (`ipvsadm -Z`).
    #[arg(long)]
    zero: bool,
    /// At most this many connections with --connections.
    #[arg(long, default_value_t = 10_000)]
    max: usize,
    /// Print the daemon's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

impl ListArgs {
    /// Which table the flags ask for.
    fn view(&self) -> ListView {
        if self.stats {
            ListView::Stats
        } else if self.rate {
            ListView::Rate
        } else if self.thresholds {
            ListView::Thresholds
        } else if self.persistent_conn {
            ListView::PersistConn
        } else {
            ListView::Counts
        }
    }
}

/// `ringvs replay`.
#[derive(Args, Debug)]
struct ReplayArgs {
    /// The config file (validated as `check` does).
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        required_unless_present = "compare"
    )]
    config: Option<PathBuf>,
    /// Replay the capture through two configs and compare them side by side: new flows per
    /// server, flows on a different server, defense drops and when, table entries over time.
    #[arg(long, num_args = 2, value_names = ["A.toml", "B.toml"], conflicts_with_all = ["config", "out"])]
    compare: Option<Vec<PathBuf>>,
    /// The capture: pcap or pcapng (Ethernet, raw IP, Linux cooked or loopback).
    #[arg(value_name = "PCAP")]
    pcap: PathBuf,
    /// Write every forwarded packet, as rewritten, to this pcap (raw IP).
    #[arg(long, value_name = "OUT.pcap")]
    out: Option<PathBuf>,
    /// Print the report as a JSON object.
    #[arg(long)]
    json: bool,
}

/// A plugin's kind, for `plugin new`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum KindArg {
    /// Picks a realserver for each new flow (`Scheduler`).
    Scheduler,
    /// Maps a new flow to an affinity key (`Persistence`).
    Persistence,
    /// Admits new flows and acts once a second (`Defense`).
    Defense,
}

impl From<KindArg> for ringvs::plugin::Kind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Scheduler => ringvs::plugin::Kind::Scheduler,
            KindArg::Persistence => ringvs::plugin::Kind::Persistence,
            KindArg::Defense => ringvs::plugin::Kind::Defense,
        }
    }
}

#[derive(Subcommand, Debug)]
enum PluginCmd {
    /// Write a new plugin crate from a template: Cargo.toml (the SDK, a `plugin` build
    /// profile), src/lib.rs (the kind's trait implemented, with tests on the SDK's harness)
    /// and ringvs.toml (a config using it, for `ringvs check`). Then: `cargo test`, `cargo
    /// build --profile plugin --target wasm32-wasip2`, `ringvs plugin swap SERVICE FILE`.
    New {
        /// The crate's name, and the plugin's (`[plugins.NAME]`).
        name: String,
        /// What it decides.
        #[arg(long, value_enum)]
        kind: KindArg,
        /// Where to write it (default: ./NAME); must be empty or missing.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The ringvs-sdk to depend on: a directory (by path) or a version (crates.io).
        /// Default: the SDK of the source tree this ringvs was built from, if it is there,
        /// else this ringvs's version.
        #[arg(long, value_name = "PATH|VERSION")]
        sdk: Option<String>,
    },
    /// Switch a service's scheduler without dropping a connection: to a built-in (rr, wlc),
    /// a plugin of the config, or a .wasm file. The plugin is compiled, checked and
    /// self-tested first; a failure changes nothing. The config file is not edited.
    Swap {
        /// Service name.
        service: String,
        /// A built-in scheduler, a `[plugins.NAME]` name, or a path to a .wasm component.
        target: String,
        #[command(flatten)]
        target_daemon: Target,
    },
    /// Which realserver a scheduler gives each of many flows, and how many flows move when a
    /// realserver is removed (no daemon, no network: the component runs here, as the
    /// director would run it).
    Test {
        /// A catalogue scheduler (wrr, mh, sched-wlc, …) or a .wasm file.
        plugin: String,
        /// The realservers: ADDR:PORT[=WEIGHT],… (weight 1 by default).
        #[arg(long, value_name = "LIST")]
        servers: String,
        /// How many new flows (pseudo-random clients, the same every run).
        #[arg(long, default_value_t = 100_000)]
        flows: u64,
        /// The realserver to remove for the second run (default: the last).
        #[arg(long, value_name = "ADDR:PORT")]
        remove: Option<std::net::SocketAddrV4>,
    },
    /// Loaded plugins with their kind, file hash, services, calls and faults; with
    /// --available, the plugins usable by name (built-ins and the catalogue) with their
    /// versions, hashes and files, read on this machine without a daemon.
    List {
        /// Show the built-ins and the catalogue instead (looked for in the directories of
        /// the config's director.plugin_dirs with -c, then the default ones).
        #[arg(long)]
        available: bool,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand, Debug)]
enum ServiceCmd {
    /// Add a virtual service with no realservers yet (ipvsadm -A -t|-u VIP -s SCHED); add
    /// them with `ringvs server add`.
    #[command(mut_arg("vip", |a| a.required(true)), mut_arg("no_health", |a| a.hide(true)))]
    Add {
        /// Service name (letters, digits, '-' and '_').
        name: String,
        #[command(flatten)]
        edit: Box<ServiceEdit>,
        #[command(flatten)]
        target: Target,
    },
    /// Change only the options given (ipvsadm -E); connections are kept. A new scheduler
    /// takes new flows between two packets.
    Edit {
        /// Service name.
        name: String,
        #[command(flatten)]
        edit: Box<ServiceEdit>,
        /// Remove every defense of the service.
        #[arg(long, conflicts_with = "defense")]
        no_defense: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a service (ipvsadm -D): its connections drain until they end, or with
    /// --expire end on their next packet.
    Remove {
        /// Service name.
        name: String,
        /// End its connections on their next packet instead of letting them drain (IPVS
        /// expire_nodest_conn, for this removal); also works on a service already draining.
        #[arg(long)]
        expire: bool,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand, Debug)]
enum HaCmd {
    /// Become master: send changes to the peers; held entries go live.
    Master {
        #[command(flatten)]
        target: Target,
    },
    /// Become backup: send nothing; hold what the master sends.
    Backup {
        #[command(flatten)]
        target: Target,
    },
    /// Active-active (behind ECMP): send and receive; held entries go live.
    Active {
        #[command(flatten)]
        target: Target,
    },
    /// Role, peers, lag and counters.
    Status {
        /// Print the daemon's JSON answer.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Exit 0 if this director should be announced to a router (a BGP speaker's check): the
    /// daemon answers, is not stopping (director.stop_delay), and every service has a
    /// realserver that can take a new flow; else say why and exit 1.
    Ready {
        #[command(flatten)]
        target: Target,
    },
    /// Keep a BGP speaker's announcement in step with `ha ready`: run --up when the director
    /// becomes ready, --down when it is not or does not answer, and --down on SIGTERM or
    /// SIGINT before exiting (docs/HA.md, "Active-active behind ECMP").
    Announce {
        /// Command that announces (run with sh -c), e.g. "birdc enable vip".
        #[arg(long, value_name = "CMD")]
        up: String,
        /// Command that withdraws, e.g. "birdc disable vip".
        #[arg(long, value_name = "CMD")]
        down: String,
        /// Seconds between checks (0.1 to 60); an answer must come within it (at most 3 s).
        #[arg(long, value_name = "SECS", default_value_t = 1.0)]
        interval: f64,
        #[command(flatten)]
        target: Target,
    },
    /// Measure connection sync on this machine, to size sync.max_rate: two directors in
    /// this process (no device, no privileges) over loopback UDP with the defaults. A master
    /// opens --rate connections a second for --seconds (lag, bandwidth, entries kept), then
    /// a backup that starts late gets --bulk connections in a bulk transfer. Exits 1 if the
    /// backup misses any.
    Bench {
        /// New connections a second on the master.
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        /// Seconds of new connections.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Connections in the bulk transfer (0: skip it).
        #[arg(long, default_value_t = 1_000_000)]
        bulk: u32,
    },
}

#[derive(Subcommand, Debug)]
enum ServerCmd {
    /// Add a realserver to a service.
    Add {
        /// Service name.
        service: String,
        /// Realserver address:port.
        addr: String,
        /// Weight (0 to 65535; 0 = quiesced).
        #[arg(short, long, default_value_t = 1)]
        weight: u64,
        /// Upper connection threshold (ipvsadm -x): at active + inactive >= N the server
        /// gets no new flows. 0: none.
        #[arg(short = 'x', long = "upper", value_name = "N", default_value_t = 0)]
        upper: u32,
        /// Lower connection threshold (ipvsadm -y): an overloaded server takes new flows
        /// again below N (0: below 3/4 of the upper threshold).
        #[arg(short = 'y', long = "lower", value_name = "N", default_value_t = 0)]
        lower: u32,
        /// Forwarding method: nat, tun or dr (default: the service's; docs/FORWARDING.md).
        #[arg(long, value_name = "METHOD", value_parser = ["nat", "tun", "dr"])]
        forward: Option<String>,
        /// ipvsadm -m: forward = nat.
        #[arg(short = 'm', long = "masquerading", conflicts_with_all = ["forward", "ipip", "gatewaying"])]
        masquerading: bool,
        /// ipvsadm -i: forward = tun.
        #[arg(short = 'i', long = "ipip", conflicts_with_all = ["forward", "gatewaying"])]
        ipip: bool,
        /// ipvsadm -g: forward = dr.
        #[arg(short = 'g', long = "gatewaying", conflicts_with = "forward")]
        gatewaying: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a realserver (ipvsadm -d); its connections drain until they end, or with
    /// --expire (or director.expire_nodest_conn) end on their next packet.
    Remove {
        /// Service name.
        service: String,
        /// Realserver address:port.
        addr: String,
        /// End its connections on their next packet instead of letting them drain (IPVS
        /// expire_nodest_conn, for this removal); also works on a server already draining.
        #[arg(long)]
        expire: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Set a realserver's weight (ipvsadm -e -w; 0 quiesces: no new flows, existing ones
    /// kept).
    Weight {
        /// Service name.
        service: String,
        /// Realserver address:port.
        addr: String,
        /// New weight, 0 to 65535.
        weight: u64,
        #[command(flatten)]
        target: Target,
    },
}

fn call<T: serde::de::DeserializeOwned>(t: &Target, req: Request) -> Result<T, String> {
    let v = client::call(&t.socket()?, &req)?;
    serde_json::from_value(v).map_err(|e| format!("unexpected answer from the daemon: {e}"))
}

fn simple(t: &Target, req: Request) -> Result<(), String> {
    let v = client::call(&t.socket()?, &req)?;
    match v {
        serde_json::Value::String(s) => println!("{s}"),
        other => println!("{other}"),
    }
    Ok(())
}

/// Pretty JSON of an answer.
fn pretty<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// `ringvs run`.
fn run(a: RunArgs) -> Result<(), String> {
    let log_format = a.log_format.as_deref().and_then(config::LogFormat::parse);
    ringvs::control::daemon::run(&a.config, log_format).map_err(|e| e.to_string())
}

/// `ringvs check`.
fn check(path: &Path) -> Result<(), String> {
    let c = config::load(path).map_err(|e| e.to_string())?;
    // Compile every plugin, check its world, imports and pin, and run its self-test with
    // its config: what `run` would refuse, `check` refuses.
    let mut pm = ringvs::control::plugins::PluginManager::default();
    let loaded = pm.load_config(&c)?;
    for (name, p) in &loaded {
        let from = match c.plugins.get(name).map(|d| d.source) {
            Some(config::PluginSource::Path) | None => "",
            Some(_) => " (catalogue)",
        };
        println!(
            "plugin {name}: {} {} sha256 {} OK{from}",
            p.kind.name(),
            p.path.display(),
            ringvs::plugin::hex(&p.sha256)
        );
    }
    for s in &c.services {
        check_health(s);
    }
    if let Some(line) = ringvs::control::daemon::check_io(&c)? {
        println!("{line}");
    }
    if let Some(s) = &c.director.sync {
        let line = ringvs::sync::node::check(s.listen, &s.peers)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("{line}");
    }
    let servers: usize = c.services.iter().map(|s| s.servers.len()).sum();
    println!(
        "{}: OK: {} service(s), {} server(s), {} plugin(s); device {} with {} queue(s), conn_memory_limit {}",
        path.display(),
        c.services.len(),
        servers,
        c.plugins.len(),
        c.director.device,
        c.director.queues,
        config::units::format_size(c.director.conn_memory_limit as u64)
    );
    Ok(())
}

/// `ringvs check`'s line about a service's health check, if it has one.
fn check_health(s: &config::ServiceConfig) {
    let Some(h) = &s.health else { return };
    let checked = s.servers.iter().filter(|x| x.health.is_some()).count();
    let what = match &h.kind {
        config::CheckKind::Tcp => "tcp".to_string(),
        config::CheckKind::Http(x) => {
            let scheme = if x.tls { "https" } else { "http" };
            format!("{scheme} GET {} expect {}", x.path, x.expected())
        }
        config::CheckKind::Script(x) => format!(
            "script {} as {}{}",
            x.command.join(" "),
            x.user,
            if x.dynamic { " (dynamic weight)" } else { "" }
        ),
    };
    println!(
        "service {}: health {what} every {:?}, timeout {:?}, rise {}, fall {}, on_fail {}; {checked} of {} server(s) checked; detection window {:?}",
        s.name,
        h.interval,
        h.timeout,
        h.rise,
        h.fall,
        h.on_fail.name(),
        s.servers.len(),
        h.detection_window()
    );
}

/// `ringvs list`.
fn list(a: ListArgs) -> Result<(), String> {
    if a.connections {
        let c: ConnectionsResult = call(&a.target, Request::Connections { max: Some(a.max) })?;
        if a.json {
            println!("{}", pretty(&c));
        } else {
            print!("{}", client::format_connections(&c));
        }
    } else {
        let s: StatusResult = call(&a.target, Request::Status {})?;
        let l: ListResult = call(&a.target, Request::List {})?;
        if a.json {
            println!("{}", pretty(&l));
        } else {
            print!("{}", client::format_list(&l, Some(&s), a.view()));
        }
    }
    if a.zero {
        client::call(&a.target.socket()?, &Request::Zero { service: None })?;
    }
    Ok(())
}

/// `ringvs status`.
fn status(json: bool, target: &Target) -> Result<(), String> {
    let s: StatusResult = call(target, Request::Status {})?;
    if json {
        println!("{}", pretty(&s));
    } else {
        print!("{}", client::format_status(&s));
    }
    Ok(())
}

/// `ringvs ha bench`.
fn ha_bench(rate: u64, seconds: u64, bulk: u32) -> Result<(), String> {
    use ringvs::control::syncload;
    let mut missed = Vec::new();
    if seconds > 0 {
        let r = syncload::steady(rate, seconds)?;
        println!("{r}");
        if !r.complete() {
            missed.push("steady: the backup misses connections");
        }
    }
    if bulk > 0 {
        let r = syncload::bulk(bulk)?;
        println!("{r}");
        if !r.complete() {
            missed.push("bulk: the backup misses connections");
        }
    }
    if missed.is_empty() {
        Ok(())
    } else {
        Err(missed.join("; "))
    }
}

/// `ringvs ha`.
fn ha(cmd: HaCmd) -> Result<(), String> {
    let (role, json, target) = match cmd {
        HaCmd::Master { target } => (Some("master"), false, target),
        HaCmd::Backup { target } => (Some("backup"), false, target),
        HaCmd::Active { target } => (Some("active"), false, target),
        HaCmd::Status { json, target } => (None, json, target),
        HaCmd::Ready { target } => {
            let s: StatusResult = call(&target, Request::Status {})?;
            if !s.unready.is_empty() {
                return Err(format!("not ready: {}", s.unready.join("; ")));
            }
            println!("ready");
            return Ok(());
        }
        HaCmd::Announce {
            up,
            down,
            interval,
            target,
        } => return ringvs::control::announce::run(target.socket()?, &up, &down, interval),
        HaCmd::Bench {
            rate,
            seconds,
            bulk,
        } => return ha_bench(rate, seconds, bulk),
    };
    let h: HaResult = call(
        &target,
        Request::Ha {
            role: role.map(str::to_string),
        },
    )?;
    if json {
        println!("{}", pretty(&h));
    } else if role.is_some() {
        println!("role: {}", h.role);
    } else {
        print!("{}", client::format_ha(&h));
    }
    Ok(())
}

/// `ringvs save`.
fn save(output: Option<&Path>, target: &Target) -> Result<(), String> {
    let text: String = call(target, Request::Save {})?;
    match output {
        None => {
            print!("{text}");
            Ok(())
        }
        Some(p) => {
            std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
        }
    }
}

/// `ringvs top`.
fn top(once: bool, json: bool, target: &Target) -> Result<(), String> {
    loop {
        let t: TopResult = call(target, Request::Top {})?;
        if json {
            println!("{}", pretty(&t));
            return Ok(());
        }
        if !once {
            // Clear the screen and go home, like top(1).
            print!("\x1b[2J\x1b[H");
        }
        print!("{}", client::format_top(&t));
        if once {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// `ringvs replay`.
fn replay(a: ReplayArgs) -> Result<(), String> {
    use ringvs::control::replay::replay_files;
    let text = if let Some(pair) = &a.compare {
        let ra = replay_files(&pair[0], &a.pcap, None).map_err(|e| e.to_string())?;
        let rb = replay_files(&pair[1], &a.pcap, None).map_err(|e| e.to_string())?;
        let c = ringvs::control::compare::compare(&ra, &rb);
        if a.json {
            pretty(&c) + "\n"
        } else {
            c.to_string() + "\n"
        }
    } else {
        let config = a
            .config
            .as_deref()
            .ok_or("--config FILE or --compare A B")?;
        let r = replay_files(config, &a.pcap, a.out.as_deref()).map_err(|e| e.to_string())?;
        if a.json {
            pretty(&r) + "\n"
        } else {
            r.to_string()
        }
    };
    // A reader that stops early (`| head`) is not a failed replay.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(())
}

/// `ringvs plugin …`.
fn plugin(cmd: PluginCmd) -> Result<(), String> {
    match cmd {
        PluginCmd::New {
            name,
            kind,
            dir,
            sdk,
        } => plugin_new(&name, kind.into(), dir, sdk.as_deref()),
        PluginCmd::Test {
            plugin,
            servers,
            flows,
            remove,
        } => plugin_test(&plugin, &servers, flows, remove),
        PluginCmd::Swap {
            service,
            target,
            target_daemon,
        } => {
            // A relative path means relative to where the operator is, not the daemon.
            let target = if target.ends_with(".wasm") {
                std::fs::canonicalize(&target)
                    .map(|p| p.display().to_string())
                    .unwrap_or(target)
            } else {
                target
            };
            simple(&target_daemon, Request::PluginSwap { service, target })
        }
        PluginCmd::List {
            available: true,
            target,
        } => plugin_available(&target),
        PluginCmd::List { target, .. } => plugin_list(&target),
    }
}

/// `ringvs plugin test`.
fn plugin_test(
    plugin: &str,
    servers: &str,
    flows: u64,
    remove: Option<std::net::SocketAddrV4>,
) -> Result<(), String> {
    use ringvs::control::simulate::{parse_servers, simulate};
    let servers = parse_servers(servers)?;
    let remove = match remove {
        None => None,
        Some(a) => Some(
            servers
                .iter()
                .position(|s| s.0 == a)
                .ok_or_else(|| format!("--remove {a}: not among --servers"))?,
        ),
    };
    let mut pm = ringvs::control::plugins::PluginManager::default();
    let p = if plugin.ends_with(".wasm") || Path::new(plugin).is_file() {
        let path = Path::new(plugin);
        let bytes = ringvs::plugin::read_plugin_file(path).map_err(|e| e.to_string())?;
        match pm.load_path(path, bytes, None)? {
            ringvs::control::plugins::PathLoad::New(p)
            | ringvs::control::plugins::PathLoad::Unchanged(p)
            | ringvs::control::plugins::PathLoad::Rebuilt { plugin: p, .. } => p,
        }
    } else {
        let dirs = ringvs::plugin::catalogue::default_dirs();
        pm.load_catalogue(&[plugin], &dirs)?
            .remove(plugin)
            .ok_or_else(|| {
                format!("{plugin:?} is neither a catalogue scheduler nor a .wasm file")
            })?
    };
    if p.kind != ringvs::plugin::Kind::Scheduler {
        return Err(format!(
            "{plugin:?} is a {} plugin, not a scheduler",
            p.kind.name()
        ));
    }
    println!("{plugin}: sha256 {}", &ringvs::plugin::hex(&p.sha256)[..16]);
    println!("{}", simulate(&p, &servers, flows, remove)?);
    Ok(())
}

/// `ringvs plugin new`.
fn plugin_new(
    name: &str,
    kind: ringvs::plugin::Kind,
    dir: Option<PathBuf>,
    sdk: Option<&str>,
) -> Result<(), String> {
    use ringvs::control::template::{render, Sdk};
    let sdk = sdk.map_or_else(Sdk::default_for_this_build, Sdk::parse);
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let krate = render(name, kind, &sdk).map_err(|e| e.to_string())?;
    krate.write(&dir, &sdk).map_err(|e| e.to_string())?;
    let from = match &sdk {
        Sdk::Path(p) => format!("ringvs-sdk from {}", p.display()),
        Sdk::Version(v) => format!("ringvs-sdk {v} from crates.io"),
    };
    let file = name.replace('-', "_");
    println!(
        "{} plugin {name} written in {} ({from})",
        kind.name(),
        dir.display()
    );
    println!("  cd {} && cargo test", dir.display());
    println!("  cargo build --profile plugin --target wasm32-wasip2   # target/wasm32-wasip2/plugin/{file}.wasm");
    println!("  ringvs check -c ringvs.toml");
    if kind == ringvs::plugin::Kind::Scheduler {
        println!("  ringvs plugin swap SERVICE target/wasm32-wasip2/plugin/{file}.wasm");
    }
    Ok(())
}

/// `ringvs plugin list`.
fn plugin_list(target: &Target) -> Result<(), String> {
    let list: Vec<PluginInfo> = call(target, Request::Plugins {})?;
    println!("NAME             KIND         SERVICES       CALLS  FAULTS FALLBACKS  SHA256");
    for p in list {
        println!(
            "{:<16} {:<12} {:<9} {:>10} {:>7} {:>9}  {}",
            p.name,
            p.kind,
            p.services.join(","),
            p.calls,
            p.faults,
            p.fallbacks,
            &p.sha256[..16]
        );
    }
    Ok(())
}

/// `ringvs plugin list --available`: built-ins and the catalogue, from this machine's files.
fn plugin_available(target: &Target) -> Result<(), String> {
    let first = match &target.config {
        Some(c) => {
            config::load(c)
                .map_err(|e| e.to_string())?
                .director
                .plugin_dirs
        }
        None => Vec::new(),
    };
    let dirs = ringvs::plugin::catalogue::search_path(&first);
    let list = ringvs::plugin::catalogue::available(&dirs);
    print!("{}", client::format_available(&list, &dirs));
    Ok(())
}

/// `ringvs service …`: the options go to the daemon as they were parsed.
fn service(cmd: ServiceCmd) -> Result<(), String> {
    match cmd {
        ServiceCmd::Add { name, edit, target } => {
            simple(&target, Request::ServiceAdd { name, edit: *edit })
        }
        ServiceCmd::Edit {
            name,
            mut edit,
            no_defense,
            target,
        } => {
            if no_defense {
                edit.defense = Some(Vec::new());
            }
            simple(&target, Request::ServiceEdit { name, edit: *edit })
        }
        ServiceCmd::Remove {
            name,
            expire,
            target,
        } => simple(&target, Request::ServiceRemove { name, expire }),
    }
}

/// `ringvs server …`.
fn server(cmd: ServerCmd) -> Result<(), String> {
    match cmd {
        ServerCmd::Add {
            service,
            addr,
            weight,
            upper,
            lower,
            forward,
            masquerading,
            ipip,
            gatewaying,
            target,
        } => {
            let forward = forward.or_else(|| {
                [(masquerading, "nat"), (ipip, "tun"), (gatewaying, "dr")]
                    .into_iter()
                    .find(|(on, _)| *on)
                    .map(|(_, m)| m.to_string())
            });
            let req = Request::ServerAdd {
                service,
                addr,
                weight: Some(weight),
                upper: Some(upper),
                lower: Some(lower),
                forward,
            };
            simple(&target, req)
        }
        ServerCmd::Remove {
            service,
            addr,
            expire,
            target,
        } => {
            let req = Request::ServerRemove {
                service,
                addr,
                expire,
            };
            simple(&target, req)
        }
        ServerCmd::Weight {
            service,
            addr,
            weight,
            target,
        } => {
            let req = Request::ServerWeight {
                service,
                addr,
                weight,
            };
            simple(&target, req)
        }
    }
}

/// `ringvs generate`: man pages or a completion script, from the command's own definition.
fn generate(what: GenerateCmd) -> Result<(), String> {
    use clap::CommandFactory;
    match what {
        GenerateCmd::Man { dir } => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .map_err(|e| format!("cannot write man pages to {}: {e}", dir.display()))
        }
        GenerateCmd::Completion { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "ringvs", &mut std::io::stdout());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Run(_)) {
        // Client commands behave like other Unix tools when their reader goes away
        // (`ringvs list | head`): end quietly instead of panicking in `println!`. The daemon
        // keeps Rust's default (SIGPIPE ignored) so a vanished admin client cannot kill it.
        // Safety: resetting a signal disposition before any thread is started.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let res = match cli.cmd {
        Cmd::Run(a) => run(a),
        Cmd::Check { config } => check(&config),
        Cmd::List(a) => list(a),
        Cmd::Status { json, target } => status(json, &target),
        Cmd::Reload {
            dry_run,
            keep_runtime,
            target,
        } => simple(
            &target,
            Request::Reload {
                dry_run,
                keep_runtime,
            },
        ),
        Cmd::Save { output, target } => save(output.as_deref(), &target),
        Cmd::Top { once, json, target } => top(once, json, &target),
        Cmd::Zero { service, target } => simple(&target, Request::Zero { service }),
        Cmd::Replay(a) => replay(a),
        Cmd::Plugin { cmd } => plugin(cmd),
        Cmd::Service { cmd } => service(cmd),
        Cmd::Server { cmd } => server(cmd),
        Cmd::Ha { cmd } => ha(cmd),
        Cmd::Generate { what } => generate(what),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringvs: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command and every argument of `cmd` and below, with its path.
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>, count: &mut usize) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            *count += 1;
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            if help.trim().is_empty() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            let p = format!("{path} {}", sub.get_name());
            *count += 1;
            if sub
                .get_about()
                .is_none_or(|a| a.to_string().trim().is_empty())
            {
                missing.push(p.clone());
            }
            walk(sub, &p, missing, count);
        }
    }

    #[test]
    fn every_command_and_argument_has_help() {
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        let mut count = 0;
        walk(&cmd, "ringvs", &mut missing, &mut count);
        assert!(missing.is_empty(), "without help text: {missing:#?}");
        assert!(count > 60, "the walk saw only {count} items");
    }

    #[test]
    fn top_level_help_lists_commands_with_one_line_descriptions() {
        let mut cmd = Cli::command();
        let help = cmd.render_help().to_string();
        for sub in Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
        {
            let about = sub.get_about().unwrap().to_string();
            let line = help
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{} ", sub.get_name())))
                .unwrap_or_else(|| panic!("{} is not listed:\n{help}", sub.get_name()));
            // The line may wrap; its start is on the command's line.
            let start: String = about.chars().take(30).collect();
            assert!(line.contains(&start), "{line}");
        }
        assert!(help.contains("service"), "{help}");
    }

    #[test]
    fn ipvsadm_users_find_their_options() {
        let help = |path: &[&str]| {
            let mut c = Cli::command();
            for p in path {
                c = c.find_subcommand(p).unwrap().clone();
            }
            c.render_long_help().to_string()
        };
        assert!(help(&["service", "add"]).contains("ipvsadm -A"));
        assert!(help(&["service", "edit"]).contains("ipvsadm -E"));
        assert!(help(&["service", "remove"]).contains("ipvsadm -D"));
        assert!(help(&["service", "remove"]).contains("expire_nodest_conn"));
        assert!(help(&["server", "remove"]).contains("ipvsadm -d"));
        assert!(help(&["list"]).contains("ipvsadm -Ln"));
    }

    #[test]
    fn version_names_the_revision_and_the_wit() {
        let v = Cli::command().render_version().to_string();
        assert!(
            v.starts_with(&format!("ringvs {} (git ", env!("CARGO_PKG_VERSION"))),
            "{v}"
        );
        assert!(v.contains(ringvs::REVISION), "{v}");
        assert!(
            v.contains(&format!("WIT ringvs:plugin@{}", ringvs_abi::WIT_VERSION)),
            "{v}"
        );
        assert!(!ringvs::REVISION.is_empty());
    }

    #[test]
    fn man_pages_and_completions_are_generated() {
        let dir = std::env::temp_dir().join(format!("ringvs-man-{}", std::process::id()));
        generate(GenerateCmd::Man { dir: dir.clone() }).unwrap();
        let page = std::fs::read_to_string(dir.join("ringvs.1")).unwrap();
        assert!(page.contains(".TH ringvs 1"), "{page}");
        assert!(page.contains("Linux Virtual Server"), "{page}");
        for sub in [
            "ringvs-run.1",
            "ringvs-list.1",
            "ringvs-service-add.1",
            "ringvs-check.1",
        ] {
            assert!(dir.join(sub).is_file(), "{sub} missing");
        }
        assert!(
            !dir.join("ringvs-generate.1").exists(),
            "the hidden command has no page"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let mut cmd = Cli::command();
        let mut out = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "ringvs", &mut out);
        let script = String::from_utf8(out).unwrap();
        assert!(script.contains("complete -F _ringvs"), "bash completion");
        assert!(script.contains("--scheduler"), "options of service add");
    }

    #[test]
    fn service_flags_parse() {
        let cli = Cli::try_parse_from([
            "ringvs",
            "service",
            "edit",
            "web",
            "--timeout",
            "established=600s",
            "--timeout",
            "udp = 30",
            "--defense",
            "secure-tcp",
        ])
        .unwrap();
        let Cmd::Service {
            cmd: ServiceCmd::Edit { edit, .. },
        } = cli.cmd
        else {
            panic!()
        };
        assert_eq!(
            edit.timeouts,
            vec![
                (
                    "established".to_string(),
                    config::Quantity::Text("600s".into())
                ),
                ("udp".to_string(), config::Quantity::Text("30".into()))
            ]
        );
        assert_eq!(edit.defense, Some(vec!["secure-tcp".to_string()]));
        assert!(Cli::try_parse_from([
            "ringvs",
            "service",
            "edit",
            "web",
            "--defense",
            "x",
            "--no-defense"
        ])
        .is_err());
        assert!(Cli::try_parse_from(["ringvs", "service", "add", "web"]).is_err());
        assert!(Cli::try_parse_from(["ringvs", "run", "-c", "x", "--log-format", "yaml"]).is_err());
    }
}
