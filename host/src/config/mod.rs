//! Configuration: TOML read with figment, overridden by `RINGVS_…` environment variables,
//! validated into typed values.
//!
//! Environment variables use `__` between key parts: `RINGVS_DIRECTOR__QUEUES=4` sets
//! `director.queues`. Variables without `__` (such as `RINGVS_REQUIRE_ROOT`, used by the
//! tests) are not configuration and are ignored. Every error names where the value came from (the file, or the
//! variable), the key, and what was expected. Validation is all-or-nothing: a config that
//! fails anywhere changes nothing.

pub mod diff;
mod edit;
mod health;
pub mod keys;
mod raw;
pub mod save;
mod sync;
pub mod units;

pub use edit::{edit_service, new_service, ServiceEdit};
pub use health::{
    user_ids, CheckKind, HealthConfig, HttpCheck, NotifyConfig, OnFail, ScriptCheck,
    DEFAULT_SCRIPT_USER,
};
pub use raw::{Health as HealthTable, Quantity};
pub use sync::{SyncConfig, SyncRole, MIN_KEY_BYTES};

use crate::conn::{State, Timeouts};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Built-in schedulers, always available (and the fallback of plugin schedulers).
pub use crate::plugin::builtin::NAMES as BUILTIN_SCHEDULERS;
use crate::plugin::catalogue;
use crate::plugin::Kind;

/// Largest realserver weight (as ipvsadm).
pub const MAX_WEIGHT: u32 = 65_535;

/// A realserver weight checked against its range, 0 (quiesced) to [`MAX_WEIGHT`]: the one
/// check every way a weight comes in goes through (the config file, the admin protocol's
/// `server-add` and `server-weight`, the registry's edits). `None` when out of range; the
/// caller names the key or the request.
pub fn check_weight<T: TryInto<u32>>(weight: T) -> Option<u32> {
    weight.try_into().ok().filter(|w| *w <= MAX_WEIGHT)
}

/// Default persistence timeout (`persistence.timeout`, ipvsadm `-p` without a value).
pub const DEFAULT_PERSISTENCE_SECS: u32 = 300;
/// The persistence plugin `ringvs service add -p` uses unless told another.
pub const DEFAULT_PERSISTENCE_PLUGIN: &str = "persist-netmask";

/// Default `director.template_memory_limit`: 16 MiB, about 380,000 persistence templates.
pub const DEFAULT_TEMPLATE_MEMORY: u64 = 16 << 20;
/// Least `director.template_memory_limit`.
pub const MIN_TEMPLATE_MEMORY: u64 = 64 << 10;
/// Largest `director.template_memory_limit` (template ids are 32-bit).
pub const MAX_TEMPLATE_MEMORY: u64 = 64 << 30;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[director]`.
    pub director: Director,
    /// `[plugins.NAME]`, by name.
    pub plugins: BTreeMap<String, PluginDecl>,
    /// `[[service]]`, in file order.
    pub services: Vec<ServiceConfig>,
}

/// How virtual-address routes reach the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// The operator adds them (the documented recipe).
    Manual,
    /// ringvs installs and removes exactly the recipe's routes.
    Auto,
}

/// The packet I/O backend (`director.io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// A multi-queue TUN device driven by io_uring (`"tun"`, the default).
    Tun,
    /// AF_XDP sockets on `director.interfaces` (`"af_xdp"`).
    AfXdp,
}

impl Io {
    /// The config's spelling.
    pub fn label(self) -> &'static str {
        match self {
            Io::Tun => "tun",
            Io::AfXdp => "af_xdp",
        }
    }
}

/// How the XDP program is attached (`director.xdp_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Native where the driver supports it, else generic (`"auto"`, the default).
    Auto,
    /// The driver's hook only (`"native"`).
    Native,
    /// The generic hook only (`"generic"`).
    Generic,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (`"human"`, also spelt `"text"`).
    Text,
    /// One JSON object per line (`"json"`).
    Json,
}

impl LogFormat {
    /// `human` (or `text`) or `json`.
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "human" | "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// `[director]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Director {
    /// TUN device to create and drive.
    pub device: String,
    /// Queues: one io_uring and one thread each.
    pub queues: usize,
    /// Hard cap of the connection tables (all queues together), bytes.
    pub conn_memory_limit: usize,
    /// Admin socket path.
    pub admin_socket: PathBuf,
    /// Group allowed on the admin socket besides root.
    pub admin_group: Option<String>,
    /// Prometheus listener, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// Route management.
    pub routes: Routes,
    /// Use the virtio-net header with checksum and segmentation offload.
    pub offload: bool,
    /// Device MTU, if set.
    pub mtu: Option<u32>,
    /// Expire a connection on its next packet when its realserver was removed.
    pub expire_nodest_conn: bool,
    /// IPVS `expire_quiescent_template`: a persistence template whose realserver has weight
    /// 0 is invalid (its clients are scheduled afresh). Applied again on reload.
    pub expire_quiescent_template: bool,
    /// Budget of the shared persistence template store, bytes (fixed at start).
    pub template_memory_limit: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Packet I/O backend.
    pub io: Io,
    /// With `io = "af_xdp"`: the client- and realserver-facing interfaces (one may be both).
    pub interfaces: Vec<String>,
    /// With `io = "af_xdp"`: how the XDP program is attached.
    pub xdp_mode: XdpMode,
    /// Directories searched for catalogue plugins before the default ones
    /// (`crate::plugin::catalogue::search_path`); relative ones are relative to the file.
    pub plugin_dirs: Vec<PathBuf>,
    /// The user the daemon runs as once set up (`director.user`), giving up root and every
    /// capability (`control::privileges`); `None`: it stays root.
    pub user: Option<String>,
    /// The outer source address of tunnelled packets (`director.tunnel_source`); `None`:
    /// the address the kernel would use to reach the first tunnelled realserver.
    pub tunnel_source: Option<Ipv4Addr>,
    /// The outer source address of packets tunnelled to IPv6 realservers
    /// (`director.tunnel_source6`); `None`: the address the kernel would use to reach the
    /// first of them.
    pub tunnel_source6: Option<Ipv6Addr>,
    /// Seconds between SIGTERM and the data plane's stop (`director.stop_delay`, 0 by
    /// default): meanwhile the director forwards on but is not ready (`ringvs ha ready`), so
    /// that its BGP speaker withdraws the virtual addresses before it stops.
    pub stop_delay: u32,
    /// The nice value of the queue threads (`director.queue_nice`, -20 to 19; -10 by default,
    /// 0 leaves them at the daemon's): under a flood a queue competes for CPU with every
    /// process on the machine, whereas the kernel's own forwarding runs in softirq, ahead of
    /// them all.
    pub queue_nice: i32,
    /// `[director.sync]`: connection sync with other directors (`crate::sync`); `None`: off.
    pub sync: Option<SyncConfig>,
}

impl Director {
    /// Where catalogue plugins are looked for: `plugin_dirs`, then the defaults.
    pub fn catalogue_dirs(&self) -> Vec<PathBuf> {
        catalogue::search_path(&self.plugin_dirs)
    }
}

/// Where a plugin's file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginSource {
    /// `[plugins.NAME] path = …`.
    Path,
    /// `[plugins.NAME]` of a catalogue plugin without `path`: the catalogue's file, with the
    /// entry's `config` and `sha256`.
    Catalogue,
    /// No entry: a catalogue name a service uses.
    Implicit,
}

/// `[plugins.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginDecl {
    /// The name the services refer to.
    pub name: String,
    /// The component file (relative paths are relative to the config file).
    pub path: PathBuf,
    /// Pinned SHA-256 of the file, if any.
    pub sha256: Option<[u8; 32]>,
    /// Handed to the plugin at load.
    pub config: serde_json::Value,
    /// Where `path` comes from.
    pub source: PluginSource,
}

/// Transport protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// Forwarding method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// LVS-NAT (`"nat"`, ipvsadm `-m`): the destination is rewritten to the realserver, and
    /// its replies come back through the director.
    Nat,
    /// LVS-TUN with IPIP (`"tun"`, ipvsadm `-i`): the client's packet, unchanged, inside an
    /// IPv4 header to the realserver, which answers the client directly.
    Tun,
    /// LVS-DR (`"dr"`, ipvsadm `-g`): the client's packet, unchanged, in a frame to the
    /// realserver's MAC on a shared segment; it answers the client directly. Needs
    /// `director.io = "af_xdp"` (the director writes Ethernet frames).
    Dr,
}

impl Forward {
    /// ipvsadm's name of the method.
    pub fn ipvsadm_name(self) -> &'static str {
        match self {
            Forward::Nat => "Masq",
            Forward::Tun => "Tunnel",
            Forward::Dr => "Route",
        }
    }

    /// The config's spelling.
    pub fn label(self) -> &'static str {
        match self {
            Forward::Nat => "nat",
            Forward::Tun => "tun",
            Forward::Dr => "dr",
        }
    }

    /// True if the director sees both directions (only then can it proxy or translate).
    pub fn two_way(self) -> bool {
        self == Forward::Nat
    }

    /// The config's spelling parsed (the file's `forward`, `server-add`'s).
    pub fn parse(s: &str) -> Result<Forward, String> {
        match s {
            "nat" => Ok(Forward::Nat),
            "tun" => Ok(Forward::Tun),
            "dr" => Ok(Forward::Dr),
            other => Err(format!(
                "expected \"nat\", \"tun\" or \"dr\", found {other:?}"
            )),
        }
    }

    /// What a realserver at `addr` forwarded this way needs of its service (`vip`,
    /// `syn_proxy`): a one-way method hands it the client's packet unchanged, so its port is
    /// the service's, and the SYN proxy cannot be on for good.
    pub fn check_server(
        self,
        addr: SocketAddr,
        vip: SocketAddr,
        syn_proxy: SynProxyMode,
    ) -> Result<(), String> {
        // A tunnel carries either family in either (IPVS since Linux 5.3).
        if let Some(m) = family_mismatch(addr, vip).filter(|_| self != Forward::Tun) {
            return Err(m);
        }
        if self.two_way() {
            return Ok(());
        }
        if addr.port() != vip.port() {
            return Err(format!(
                "forward = \"{}\" hands the realserver the client's packet unchanged, to {vip}: its port must be the virtual service's ({}) or left out, found {addr}",
                self.label(),
                vip.port()
            ));
        }
        if syn_proxy == SynProxyMode::On {
            return Err(format!(
                "syn_proxy = \"on\" needs both directions of every connection, but server {addr} is forwarded with \"{}\" (its replies bypass the director); use \"auto\" (off for such a service) or \"off\"",
                self.label()
            ));
        }
        Ok(())
    }
}

/// How tunnelled packets are encapsulated (`tunnel`, ipvsadm `--tun-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tunnel {
    /// IPv4 in IPv4 (`"ipip"`, the default).
    #[default]
    Ipip,
    /// Generic UDP Encapsulation (`"gue"`, ipvsadm `--tun-type gue --tun-port PORT`): UDP to
    /// this port, a 4-byte GUE header, the packet.
    Gue {
        /// The realservers' GUE port.
        port: u16,
    },
}

impl Tunnel {
    /// The config's spelling.
    pub fn label(self) -> &'static str {
        match self {
            Tunnel::Ipip => "ipip",
            Tunnel::Gue { .. } => "gue",
        }
    }
}

/// When a TCP service's connections are opened through the SYN proxy
/// (`dataplane::synproxy`): the client's handshake answered with a cookie, the realserver's
/// opened only for a client that proved it is real.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SynProxyMode {
    /// Under pressure only: switched on by the data plane when a queue's table fills or new
    /// flows turn into unanswered handshakes, or by a defense plugin; off again when calm.
    #[default]
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

impl SynProxyMode {
    /// Its config value.
    pub fn name(self) -> &'static str {
        match self {
            SynProxyMode::Auto => "auto",
            SynProxyMode::On => "on",
            SynProxyMode::Off => "off",
        }
    }
}

/// Seconds an unreplied UDP entry lives by default (`timeouts.udp_unreplied`; conntrack's
/// `nf_conntrack_udp_timeout`).
pub const UDP_UNREPLIED_SECS: u32 = 30;

/// Persistence settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PersistenceConfig {
    /// The plugin name.
    pub plugin: String,
    /// Template timeout in seconds.
    pub timeout_secs: u32,
    /// Handed to the plugin.
    pub config: serde_json::Value,
}

impl PersistenceConfig {
    /// The IPv4 netmask a `netmask` key of the plugin's config names (a dotted mask or a
    /// prefix length), as ipvsadm shows it after `persistent N`: `None` when there is no
    /// such key, it is not a valid contiguous mask, or it is 255.255.255.255 (ipvsadm then
    /// prints no mask either). For display only: the plugin interprets its own config.
    pub fn display_mask(&self) -> Option<std::net::Ipv4Addr> {
        let v = self.config.get("netmask")?;
        let text = match v {
            serde_json::Value::String(s) => s.trim().to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let len = text.strip_prefix('/').unwrap_or(&text);
        let mask = if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) {
            let n: u32 = len.parse().ok().filter(|n| *n <= 32)?;
            if n == 0 {
                0
            } else {
                u32::MAX << (32 - n)
            }
        } else {
            let m = u32::from(text.parse::<std::net::Ipv4Addr>().ok()?);
            if m.checked_shl(m.leading_ones()).unwrap_or(0) != 0 {
                return None;
            }
            m
        };
        (mask != u32::MAX).then(|| std::net::Ipv4Addr::from(mask))
    }
}

/// `[[service]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Unique name.
    pub name: String,
    /// Protocol.
    pub proto: Proto,
    /// Virtual address.
    pub vip: SocketAddr,
    /// Forwarding method.
    pub forward: Forward,
    /// How its tunnelled realservers' packets are encapsulated.
    pub tunnel: Tunnel,
    /// A built-in scheduler or a plugin name.
    pub scheduler: String,
    /// Persistence, if any.
    pub persistence: Option<PersistenceConfig>,
    /// Defense plugins, in order.
    pub defense: Vec<String>,
    /// Timeouts per state, seconds.
    pub timeouts: Timeouts,
    /// Seconds a UDP entry that has not seen a reply lives (`timeouts.udp_unreplied`; at
    /// most `timeouts.udp`).
    pub udp_unreplied: u32,
    /// When the SYN proxy opens the service's connections (TCP only).
    pub syn_proxy: SynProxyMode,
    /// Most connections the service may hold (0: no limit besides the table's).
    pub max_conns: u32,
    /// IPVS's `sloppy_tcp`: a TCP segment other than a SYN for a connection the table does
    /// not know is scheduled like a SYN and its entry created, so that a connection another
    /// director started continues here (active-active behind ECMP, with a consistent-hash
    /// scheduler such as sched-mh on every director). One-way methods (dr, tun) only.
    pub sloppy: bool,
    /// Realservers.
    pub servers: Vec<ServerConfig>,
    /// The service's health check (what servers added at runtime get), if any.
    pub health: Option<HealthConfig>,
    /// keepalived's `sorry_server`: takes the new flows while no realserver can (every one
    /// down, removed or at weight 0); not health-checked.
    pub sorry_server: Option<SocketAddr>,
    /// Commands run when a realserver goes up or down (keepalived notify_up/notify_down).
    pub notify: Option<NotifyConfig>,
}

/// `director.queue_nice` when the config does not set it: the queue threads run ahead of
/// ordinary processes, as the kernel's softirq forwarding does (docs/PERFORMANCE.md, "Floods
/// (lab)", has what it did to the 1-queue SYN flood's p99).
pub const DEFAULT_QUEUE_NICE: i32 = -10;

/// Why `sloppy = true` is refused for a service with a NAT realserver at `addr`.
pub fn sloppy_needs_one_way(addr: SocketAddr) -> String {
    format!(
        "sloppy = true takes a connection up in its middle, which only a one-way method (\"dr\", \"tun\") allows, but server {addr} is forwarded with \"nat\": its replies are translated by the director that holds its entry (give NAT services their entries with director.sync)"
    )
}

/// Why an IPv6 service's SYN proxy cannot be on.
pub const IPV6_NO_PROXY: &str = "the SYN proxy answers IPv4 only so far; an IPv6 service takes syn_proxy = \"auto\" (for it: a queue that falls behind sheds unknown sources' SYNs, docs/DEFENSE.md) or \"off\"";

/// Why `forward = "dr"` is refused with the TUN backend.
pub const DR_NEEDS_L2: &str = "forward = \"dr\" (LVS-DR) sends the client's packet to the realserver's MAC, which needs director.io = \"af_xdp\" (the TUN device has no link layer); use \"nat\" or \"tun\" with TUN";

/// `[[service.server]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Realserver address.
    pub addr: SocketAddr,
    /// Weight (0 = quiesced).
    pub weight: u32,
    /// Its health check: the service's with this server's overrides; None = not checked.
    pub health: Option<HealthConfig>,
    /// Upper connection threshold (ipvsadm `-x`): at `active + inactive >= upper` the server
    /// is overloaded and gets no new flows. 0: none.
    pub upper: u32,
    /// Lower connection threshold (ipvsadm `-y`): an overloaded server takes new flows again
    /// below it (0: below 3/4 of `upper`).
    pub lower: u32,
    /// Its forwarding method, if not the service's (ipvsadm's `-m`/`-i` are per server).
    pub forward: Option<Forward>,
}

impl ServerConfig {
    /// A server with a weight and no thresholds, forwarded as its service says.
    pub fn new(addr: impl Into<SocketAddr>, weight: u32) -> ServerConfig {
        ServerConfig {
            addr: addr.into(),
            weight,
            upper: 0,
            lower: 0,
            health: None,
            forward: None,
        }
    }
}

/// Checks a pair of connection thresholds as IPVS does (`ip_vs_add_dest`): the lower one
/// may not exceed the upper one, and with no upper threshold (0) there is no lower one.
pub fn check_thresholds(upper: u32, lower: u32) -> Result<(), String> {
    if lower > upper {
        return Err(if upper == 0 {
            format!("lower threshold {lower} without an upper one (upper = 0 means none); set upper >= {lower} or lower = 0")
        } else {
            format!("lower threshold {lower} is above the upper threshold {upper}; expected lower <= upper")
        });
    }
    Ok(())
}

/// Physical memory in bytes (`MemTotal` of `/proc/meminfo`), if it can be read: what the
/// memory budgets are checked against at load.
pub fn physical_memory() -> Option<u64> {
    mem_total(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// A realserver or sorry server whose address is the virtual address of a service (found by
/// [`vip_as_server`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipAsServer {
    /// Index of the service that lists it.
    pub service: usize,
    /// Index of the realserver in that service; `None` for its sorry server.
    pub server: Option<usize>,
    /// The address.
    pub addr: SocketAddr,
    /// The service whose virtual address it is.
    pub vip_of: String,
}

impl fmt::Display for VipAsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is the virtual address of service {:?}; packets sent to it would come back \
             into the director (a loop bounded only by the TTL), so it cannot be a {}",
            self.addr.ip(),
            self.vip_of,
            if self.server.is_some() {
                "realserver"
            } else {
                "sorry server"
            }
        )
    }
}

/// The first realserver or sorry server of `services` whose IP address is the virtual
/// address of any service (any port or protocol: the routing contract sends every packet
/// for a VIP into the director). Config loading and every runtime edit refuse one.
pub fn vip_as_server(services: &[ServiceConfig]) -> Option<VipAsServer> {
    let vip_of = |a: &SocketAddr| services.iter().find(|s| s.vip.ip() == a.ip());
    for (i, s) in services.iter().enumerate() {
        let servers = s.servers.iter().map(|x| x.addr).enumerate();
        let listed = servers
            .map(|(j, a)| (Some(j), a))
            .chain(s.sorry_server.map(|a| (None, a)));
        for (server, addr) in listed {
            if let Some(v) = vip_of(&addr) {
                return Some(VipAsServer {
                    service: i,
                    server,
                    addr,
                    vip_of: v.name.clone(),
                });
            }
        }
    }
    None
}

/// A realserver's `addr:port` given at runtime (`server-add`), checked as the config file's
/// `service.N.server.N.addr` is: a specific address, a nonzero port.
pub fn server_endpoint(s: &str) -> Result<SocketAddr, ConfigError> {
    let fig = Figment::new();
    let v = Validator {
        fig: &fig,
        file_origin: "server-add".into(),
        base: None,
    };
    v.endpoint("addr", s, None)
}

/// A configuration error: where, which key, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file or environment variable the value came from.
    pub origin: String,
    /// The key, e.g. `service[1].server[0].addr` (empty for the whole file).
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: key `{}`: {}", self.origin, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the config at `path`, with `RINGVS_…` environment overrides.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_env(path, true)
}

/// Reads and validates a config; `env` selects whether `RINGVS_…` variables apply.
pub fn load_with_env(path: &Path, env: bool) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| ConfigError {
        origin: origin.clone(),
        key: String::new(),
        message: format!("cannot read the config file: {e}"),
    })?;
    if !meta.is_file() {
        return Err(ConfigError {
            origin,
            key: String::new(),
            message: "is not a regular file".into(),
        });
    }
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if let Ok(text) = std::fs::read_to_string(&abs) {
        unknown_keys(&text, &origin)?;
    }
    let mut fig = Figment::new().merge(Toml::file_exact(&abs));
    if env {
        check_env()?;
        fig = fig.merge(env_overrides());
    }
    let file: raw::File = fig.extract().map_err(|e| figment_error(&origin, e))?;
    let v = Validator {
        fig: &fig,
        file_origin: origin,
        base: abs.parent().map(Path::to_path_buf),
    };
    v.validate(file, abs.clone())
}

/// The `RINGVS_SECTION__KEY` environment variables as config. Only names with `__` are
/// config; other RINGVS_ variables (used by tools and tests) are not keys and must not be
/// refused as unknown ones.
fn env_overrides() -> Env {
    Env::prefixed("RINGVS_")
        .filter(|k| k.as_str().contains("__"))
        .split("__")
}

/// Refuses the `RINGVS_…__…` variables figment 0.10 cannot read: one whose value holds both
/// a backslash and a non-ASCII character makes its string unescaping index bytes by
/// characters and panic (found by the config fuzz target). Checked before figment sees them.
fn check_env() -> Result<(), ConfigError> {
    for (k, v) in std::env::vars_os() {
        let Some(k) = k
            .to_str()
            .filter(|k| k.starts_with("RINGVS_") && k.contains("__"))
        else {
            continue;
        };
        let v = v.to_string_lossy();
        if v.contains('\\') && !v.is_ascii() {
            return Err(ConfigError {
                origin: "environment".into(),
                key: k.to_string(),
                message: "a value with both a backslash and non-ASCII characters cannot be read \
                          from the environment: put it in the config file"
                    .into(),
            });
        }
    }
    Ok(())
}

/// Parses a config from TOML text (no environment), for tests and `--dry-run` tools.
pub fn from_str(text: &str, name: &str) -> Result<Config, ConfigError> {
    from_figment(text, name, false)
}

/// Parses a config from TOML text with the `RINGVS_…` environment overrides, as [`load`]
/// applies them (for the config fuzz target, which has no file).
pub fn from_str_with_env(text: &str, name: &str) -> Result<Config, ConfigError> {
    from_figment(text, name, true)
}

fn from_figment(text: &str, name: &str, env: bool) -> Result<Config, ConfigError> {
    unknown_keys(text, name)?;
    let mut fig = Figment::new().merge(Toml::string(text));
    if env {
        check_env()?;
        fig = fig.merge(env_overrides());
    }
    let file: raw::File = fig.extract().map_err(|e| figment_error(name, e))?;
    let v = Validator {
        fig: &fig,
        file_origin: name.to_string(),
        base: None,
    };
    v.validate(file, PathBuf::from(name))
}

/// Refuses a file with keys this version does not know, naming and explaining every one
/// ([`keys::unknown`]). A file that is not TOML is left to the reader's error.
fn unknown_keys(text: &str, origin: &str) -> Result<(), ConfigError> {
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Ok(());
    };
    let found = keys::unknown(&doc);
    let Some(first) = found.first() else {
        return Ok(());
    };
    let mut message = first.explanation.clone();
    if found.len() > 1 {
        message += &format!(
            "; and {} more key(s) this version of ringvs does not know:",
            found.len() - 1
        );
        for u in &found[1..] {
            message += &format!("\n  key `{}`: {}", u.key, u.explanation);
        }
    }
    Err(ConfigError {
        origin: origin.to_string(),
        key: first.key.clone(),
        message,
    })
}

fn figment_error(origin: &str, e: figment::Error) -> ConfigError {
    let key = e.path.join(".");
    let source = match &e.metadata {
        Some(md) if md.name.contains("environment") => {
            let var = format!(
                "RINGVS_{}",
                e.path
                    .iter()
                    .map(|p| p.to_uppercase())
                    .collect::<Vec<_>>()
                    .join("__")
            );
            format!("environment variable {var}")
        }
        _ => origin.to_string(),
    };
    let message = e.kind.to_string();
    ConfigError {
        origin: source,
        key: pretty_key(&key),
        message,
    }
}

/// `service.1.server.0.addr` → `service[1].server[0].addr`.
fn pretty_key(key: &str) -> String {
    let mut out = String::new();
    for part in key.split('.') {
        if part.chars().all(|c| c.is_ascii_digit()) && !part.is_empty() && !out.is_empty() {
            out.push('[');
            out.push_str(part);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

struct Validator<'a> {
    fig: &'a Figment,
    file_origin: String,
    base: Option<PathBuf>,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        let key = key.into();
        // A scalar key may have come from the environment.
        let origin = match self.fig.find_metadata(&key) {
            Some(md) if md.name.contains("environment") => format!(
                "environment variable RINGVS_{}",
                key.split('.')
                    .map(str::to_uppercase)
                    .collect::<Vec<_>>()
                    .join("__")
            ),
            _ => self.file_origin.clone(),
        };
        ConfigError {
            origin,
            key: pretty_key(&key),
            message: message.into(),
        }
    }

    fn validate(&self, f: raw::File, path: PathBuf) -> Result<Config, ConfigError> {
        let director = self.director(f.director.unwrap_or_default())?;
        let dirs = director.catalogue_dirs();
        let mut plugins = BTreeMap::new();
        for (name, p) in f.plugins {
            let decl = self.plugin(&name, p, &dirs)?;
            plugins.insert(name, decl);
        }
        let mut services = Vec::with_capacity(f.service.len());
        let mut names = HashSet::new();
        let mut vips = HashSet::new();
        for (i, s) in f.service.into_iter().enumerate() {
            let key = format!("service.{i}");
            let svc = self.service(&key, s, &|n| plugins.contains_key(n))?;
            if !names.insert(svc.name.clone()) {
                return Err(self.err(
                    format!("{key}.name"),
                    format!(
                        "service name {:?} is used twice; names must be unique",
                        svc.name
                    ),
                ));
            }
            if !vips.insert((svc.proto, svc.vip)) {
                return Err(self.err(
                    format!("{key}.vip"),
                    format!(
                        "{} {} is already the virtual address of another service",
                        svc.proto.name(),
                        svc.vip
                    ),
                ));
            }
            services.push(svc);
        }
        if director.io != Io::AfXdp {
            if let Some((i, j)) = services.iter().enumerate().find_map(|(i, s)| {
                s.servers
                    .iter()
                    .position(|x| x.forward.unwrap_or(s.forward) == Forward::Dr)
                    .map(|j| (i, j))
            }) {
                return Err(self.err(
                    format!("service.{i}.server.{j}.forward"),
                    DR_NEEDS_L2.to_string(),
                ));
            }
        }
        if let Some(v) = vip_as_server(&services) {
            let key = match v.server {
                Some(j) => format!("service.{}.server.{j}.addr", v.service),
                None => format!("service.{}.sorry_server", v.service),
            };
            return Err(self.err(key, v.to_string()));
        }
        self.implicit_plugins(&services, &dirs, &mut plugins)?;
        Ok(Config {
            path,
            director,
            plugins,
            services,
        })
    }

    fn director(&self, d: raw::Director) -> Result<Director, ConfigError> {
        let device = d.device.unwrap_or_else(|| "ringvs0".into());
        if device.is_empty()
            || device.len() > 15
            || device.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
        {
            return Err(self.err(
                "director.device",
                format!("{device:?} is not a valid interface name (1 to 15 characters, no '/', ':' or spaces)"),
            ));
        }
        let queues = d.queues.unwrap_or(1);
        if !(1..=64).contains(&queues) {
            return Err(self.err(
                "director.queues",
                format!("expected 1 to 64 queues, found {queues}"),
            ));
        }
        let conn_memory_limit = match d.conn_memory_limit {
            None => 256 << 20,
            Some(q) => self.size("director.conn_memory_limit", q)?,
        };
        let min = queues as u64 * (1 << 20);
        if conn_memory_limit < min {
            return Err(self.err(
                "director.conn_memory_limit",
                format!(
                    "expected at least 1MiB per queue ({}), found {conn_memory_limit} bytes",
                    units::format_size(min)
                ),
            ));
        }
        let template_memory_limit = match d.template_memory_limit {
            None => DEFAULT_TEMPLATE_MEMORY,
            Some(q) => self.size("director.template_memory_limit", q)?,
        };
        if !(MIN_TEMPLATE_MEMORY..=MAX_TEMPLATE_MEMORY).contains(&template_memory_limit) {
            return Err(self.err(
                "director.template_memory_limit",
                format!(
                    "expected {} to {}, found {template_memory_limit} bytes",
                    units::format_size(MIN_TEMPLATE_MEMORY),
                    units::format_size(MAX_TEMPLATE_MEMORY)
                ),
            ));
        }
        let admin_socket = PathBuf::from(
            d.admin_socket
                .unwrap_or_else(|| "/run/ringvs/admin.sock".into()),
        );
        if admin_socket.as_os_str().is_empty() {
            return Err(self.err(
                "director.admin_socket",
                "expected a path, found an empty string",
            ));
        }
        let metrics_listen = match d.metrics_listen.as_deref() {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9406))),
            Some("" | "off") => None,
            Some(s) => Some(s.parse().map_err(|_| {
                self.err(
                    "director.metrics_listen",
                    format!(
                        "expected an address like \"127.0.0.1:9406\" (or \"off\"), found {s:?}"
                    ),
                )
            })?),
        };
        let routes = match d.routes.as_deref().unwrap_or("manual") {
            "manual" => Routes::Manual,
            "auto" => Routes::Auto,
            other => {
                return Err(self.err(
                    "director.routes",
                    format!("expected \"manual\" or \"auto\", found {other:?}"),
                ))
            }
        };
        let mtu = match d.mtu {
            None => None,
            Some(m) if (576..=65_535).contains(&m) => Some(m as u32),
            Some(m) => {
                return Err(self.err("director.mtu", format!("expected 576 to 65535, found {m}")))
            }
        };
        let log_format = d.log_format.as_deref().unwrap_or("human");
        let log_format = LogFormat::parse(log_format).ok_or_else(|| {
            self.err(
                "director.log_format",
                format!("expected \"human\" (or \"text\") or \"json\", found {log_format:?}"),
            )
        })?;
        let io = match d.io.as_deref().unwrap_or("tun") {
            "tun" => Io::Tun,
            "af_xdp" => Io::AfXdp,
            other => {
                return Err(self.err(
                    "director.io",
                    format!("expected \"tun\" or \"af_xdp\", found {other:?}"),
                ))
            }
        };
        let interfaces = d.interfaces.unwrap_or_default();
        for (i, name) in interfaces.iter().enumerate() {
            if name.is_empty()
                || name.len() > 15
                || name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
            {
                return Err(self.err(
                    format!("director.interfaces.{i}"),
                    format!("{name:?} is not a valid interface name (1 to 15 characters, no '/', ':' or spaces)"),
                ));
            }
            if interfaces[..i].contains(name) {
                return Err(self.err(
                    format!("director.interfaces.{i}"),
                    format!("interface {name:?} is named twice"),
                ));
            }
        }
        match io {
            Io::AfXdp if interfaces.is_empty() => {
                return Err(self.err(
                    "director.interfaces",
                    "io = \"af_xdp\" needs the client- and realserver-facing interfaces, e.g. interfaces = [\"eth0\", \"eth1\"]",
                ))
            }
            Io::Tun if !interfaces.is_empty() => {
                return Err(self.err(
                    "director.interfaces",
                    "only used with io = \"af_xdp\" (the TUN backend takes its traffic from routes into director.device)",
                ))
            }
            Io::AfXdp if routes == Routes::Auto => {
                return Err(self.err(
                    "director.routes",
                    "\"auto\" installs routes into the TUN device; with io = \"af_xdp\" traffic is taken on the interfaces and needs no routes: use \"manual\"",
                ))
            }
            _ => {}
        }
        let xdp_mode = match d.xdp_mode.as_deref().unwrap_or("auto") {
            "auto" => XdpMode::Auto,
            "native" => XdpMode::Native,
            "generic" => XdpMode::Generic,
            other => {
                return Err(self.err(
                    "director.xdp_mode",
                    format!("expected \"auto\", \"native\" or \"generic\", found {other:?}"),
                ))
            }
        };
        let offload = d.offload.unwrap_or(true);
        if let (Io::Tun, Some(m)) = (&io, mtu) {
            let largest = crate::io::uring::largest_packet(offload);
            if m as usize > largest {
                return Err(self.err(
                    "director.mtu",
                    format!(
                        "expected at most {largest} with offload = {offload} (an I/O buffer of {} bytes, less {} of headroom, holds one packet; longer ones would be discarded), found {m}; lower mtu{}",
                        crate::io::uring::UringOptions::for_device(offload).buf_size,
                        crate::dataplane::HEADROOM,
                        if offload { "" } else { " or set offload = true" }
                    ),
                ));
            }
        }
        if let Some(total) = physical_memory() {
            let asked = conn_memory_limit.saturating_add(template_memory_limit);
            if asked > total {
                return Err(self.err(
                    "director.conn_memory_limit",
                    format!(
                        "{} (with template_memory_limit {}) is more than this machine's memory, {:.1} GiB (MemTotal in /proc/meminfo)",
                        units::format_size(conn_memory_limit),
                        units::format_size(template_memory_limit),
                        total as f64 / f64::from(1u32 << 30)
                    ),
                ));
            }
        }
        let user = d.user.filter(|u| !u.is_empty());
        if let Some(u) = &user {
            crate::control::privileges::lookup(u).map_err(|e| self.err("director.user", e))?;
            if routes == Routes::Auto {
                return Err(self.err(
                    "director.user",
                    "routes = \"auto\" installs and removes routes while running, which needs root (CAP_NET_ADMIN): use routes = \"manual\" with a user, or no user",
                ));
            }
        }
        let tunnel_source = match d.tunnel_source.as_deref() {
            None | Some("") => None,
            Some(s) => match s.parse::<Ipv4Addr>() {
                Ok(a) if !a.is_unspecified() && !a.is_multicast() && !a.is_broadcast() => Some(a),
                _ => {
                    return Err(self.err(
                        "director.tunnel_source",
                        format!("expected a unicast IPv4 address of this machine, found {s:?}"),
                    ))
                }
            },
        };
        let tunnel_source6 = match d.tunnel_source6.as_deref() {
            None | Some("") => None,
            Some(s) => match s.parse::<Ipv6Addr>() {
                Ok(a)
                    if !a.is_unspecified()
                        && !a.is_multicast()
                        && !a.is_loopback()
                        && a.to_ipv4_mapped().is_none() =>
                {
                    Some(a)
                }
                _ => {
                    return Err(self.err(
                        "director.tunnel_source6",
                        format!("expected a unicast IPv6 address of this machine, found {s:?}"),
                    ))
                }
            },
        };
        let plugin_dirs = d
            .plugin_dirs
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                if p.is_empty() {
                    return Err(self.err(
                        format!("director.plugin_dirs.{i}"),
                        "expected a directory, found an empty string",
                    ));
                }
                Ok(self.relative(&p))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Director {
            io,
            interfaces,
            xdp_mode,
            device,
            queues: queues as usize,
            conn_memory_limit: usize::try_from(conn_memory_limit).unwrap_or(usize::MAX),
            admin_socket,
            admin_group: d.admin_group.filter(|g| !g.is_empty()),
            metrics_listen,
            routes,
            offload,
            mtu,
            expire_nodest_conn: d.expire_nodest_conn.unwrap_or(false),
            expire_quiescent_template: d.expire_quiescent_template.unwrap_or(false),
            template_memory_limit: template_memory_limit as usize,
            log_format,
            plugin_dirs,
            user,
            tunnel_source,
            tunnel_source6,
            stop_delay: match d.stop_delay {
                None => 0,
                Some(raw::Quantity::Num(0)) => 0,
                Some(q) => {
                    let secs = self.seconds("director.stop_delay", q)?;
                    if secs > 300 {
                        return Err(self.err(
                            "director.stop_delay",
                            format!("expected at most 300s, found {secs}s"),
                        ));
                    }
                    secs
                }
            },
            queue_nice: match d.queue_nice {
                None => DEFAULT_QUEUE_NICE,
                Some(n) if (-20..=19).contains(&n) => n as i32,
                Some(n) => {
                    return Err(self.err(
                        "director.queue_nice",
                        format!(
                            "expected a nice value from -20 to 19 (0: the daemon's), found {n}"
                        ),
                    ))
                }
            },
            sync: match d.sync {
                Some(s) => Some(self.sync(s)?),
                None => None,
            },
        })
    }

    /// A path from the file: relative ones are relative to the file's directory.
    fn relative(&self, p: &str) -> PathBuf {
        let path = PathBuf::from(p);
        match &self.base {
            Some(base) if path.is_relative() => base.join(path),
            _ => path,
        }
    }

    /// Declares the catalogue plugins the services use by name without a `[plugins.NAME]`
    /// entry, with their files from `dirs`; a name whose file is in none of them is an
    /// error at the first key that uses it.
    fn implicit_plugins(
        &self,
        services: &[ServiceConfig],
        dirs: &[PathBuf],
        plugins: &mut BTreeMap<String, PluginDecl>,
    ) -> Result<(), ConfigError> {
        for (i, s) in services.iter().enumerate() {
            let mut uses = vec![(format!("service.{i}.scheduler"), s.scheduler.as_str())];
            if let Some(p) = &s.persistence {
                uses.push((format!("service.{i}.persistence.plugin"), p.plugin.as_str()));
            }
            for (j, d) in s.defense.iter().enumerate() {
                uses.push((format!("service.{i}.defense.{j}"), d.as_str()));
            }
            for (key, name) in uses {
                if plugins.contains_key(name) {
                    continue;
                }
                let Some(entry) = catalogue::get(name) else {
                    continue;
                };
                let path = catalogue::locate(entry, dirs)
                    .ok_or_else(|| self.err(&key, catalogue::not_found(entry, dirs)))?;
                plugins.insert(
                    name.to_string(),
                    PluginDecl {
                        name: name.to_string(),
                        path,
                        sha256: None,
                        config: serde_json::Value::Object(Default::default()),
                        source: PluginSource::Implicit,
                    },
                );
            }
        }
        Ok(())
    }

    /// A plugin a service names as `kind`: one `is_plugin` knows (a `[plugins.*]` entry, a
    /// loaded plugin), or a catalogue plugin of that kind. `what` names the list of
    /// alternatives in the error.
    fn plugin_ref(
        &self,
        key: &str,
        name: &str,
        kind: Kind,
        is_plugin: &dyn Fn(&str) -> bool,
        unknown: impl FnOnce(&str) -> String,
    ) -> Result<(), ConfigError> {
        if is_plugin(name) {
            return Ok(());
        }
        match catalogue::get(name) {
            Some(e) if e.kind == kind => Ok(()),
            Some(e) => Err(self.err(
                key,
                format!(
                    "{name:?} is a catalogue {} plugin ({}), not a {} plugin",
                    e.kind.name(),
                    e.about,
                    kind.name()
                ),
            )),
            None => {
                let names: Vec<&str> = catalogue::ENTRIES
                    .iter()
                    .filter(|e| e.kind == kind)
                    .map(|e| e.name)
                    .collect();
                Err(self.err(
                    key,
                    format!("{}; the catalogue's: {}", unknown(name), names.join(", ")),
                ))
            }
        }
    }

    fn size(&self, key: &str, q: raw::Quantity) -> Result<u64, ConfigError> {
        match q {
            raw::Quantity::Num(n) => Ok(n),
            raw::Quantity::Text(s) => units::parse_size(&s).map_err(|m| self.err(key, m)),
        }
    }

    fn seconds(&self, key: &str, q: raw::Quantity) -> Result<u32, ConfigError> {
        let ms = match q {
            raw::Quantity::Num(n) => n.saturating_mul(1000),
            raw::Quantity::Text(s) => units::parse_duration_ms(&s).map_err(|m| self.err(key, m))?,
        };
        if ms == 0 {
            return Err(self.err(key, "expected a duration of at least 1s, found 0"));
        }
        if ms % 1000 != 0 {
            return Err(self.err(key, format!("expected whole seconds, found {ms}ms")));
        }
        u32::try_from(ms / 1000).map_err(|_| self.err(key, "duration is too large"))
    }

    fn plugin(
        &self,
        name: &str,
        p: raw::Plugin,
        dirs: &[PathBuf],
    ) -> Result<PluginDecl, ConfigError> {
        let key = format!("plugins.{name}");
        if !valid_name(name) {
            return Err(self.err(
                &key,
                format!("plugin name {name:?} must be letters, digits, '-' or '_'"),
            ));
        }
        if BUILTIN_SCHEDULERS.contains(&name) {
            return Err(self.err(
                &key,
                format!("{name:?} is the name of a built-in scheduler; choose another name"),
            ));
        }
        let (path, source) = match (p.path, catalogue::get(name)) {
            (Some(p), _) if p.is_empty() => {
                return Err(self.err(
                    format!("{key}.path"),
                    "expected the path of a .wasm component, found an empty string",
                ))
            }
            (Some(p), _) => (self.relative(&p), PluginSource::Path),
            (None, Some(entry)) => (
                catalogue::locate(entry, dirs)
                    .ok_or_else(|| self.err(&key, catalogue::not_found(entry, dirs)))?,
                PluginSource::Catalogue,
            ),
            (None, None) => {
                return Err(self.err(
                    format!("{key}.path"),
                    format!("expected the path of a .wasm component: {name:?} is not a catalogue plugin, so its entry needs one"),
                ))
            }
        };
        let sha256 = match p.sha256 {
            None => None,
            Some(h) => Some(parse_sha256(&h).ok_or_else(|| {
                self.err(
                    format!("{key}.sha256"),
                    format!("expected 64 hexadecimal digits, found {h:?}"),
                )
            })?),
        };
        Ok(PluginDecl {
            name: name.to_string(),
            path,
            sha256,
            config: p
                .config
                .unwrap_or(serde_json::Value::Object(Default::default())),
            source,
        })
    }

    fn service(
        &self,
        key: &str,
        s: raw::Service,
        is_plugin: &dyn Fn(&str) -> bool,
    ) -> Result<ServiceConfig, ConfigError> {
        if !valid_name(&s.name) {
            return Err(self.err(
                format!("{key}.name"),
                format!("expected letters, digits, '-' or '_', found {:?}", s.name),
            ));
        }
        let proto = self.proto(&format!("{key}.proto"), s.proto.as_deref().unwrap_or("tcp"))?;
        let vip = self.endpoint(&format!("{key}.vip"), &s.vip, None)?;
        let forward = self.forward(
            &format!("{key}.forward"),
            s.forward.as_deref().unwrap_or("nat"),
        )?;
        let tunnel = self.tunnel(key, s.tunnel.as_deref(), s.tunnel_port)?;
        let scheduler = s.scheduler.unwrap_or_else(|| "wlc".into());
        self.scheduler(&format!("{key}.scheduler"), &scheduler, is_plugin)?;
        let persistence = match s.persistence {
            None => None,
            Some(p) => Some(self.persistence(&format!("{key}.persistence"), p, is_plugin)?),
        };
        self.defense(&format!("{key}.defense"), &s.defense, is_plugin)?;
        let mut timeouts = Timeouts::IPVS;
        let mut udp_unreplied = UDP_UNREPLIED_SECS;
        self.timeouts(
            &format!("{key}.timeouts"),
            s.timeouts,
            &mut timeouts,
            &mut udp_unreplied,
        )?;
        let syn_proxy = match &s.syn_proxy {
            None => SynProxyMode::Auto,
            Some(m) => self.syn_proxy(&format!("{key}.syn_proxy"), m, proto)?,
        };
        if vip.is_ipv6() && syn_proxy == SynProxyMode::On {
            return Err(self.err(format!("{key}.syn_proxy"), IPV6_NO_PROXY));
        }
        let max_conns = match s.max_conns {
            None => 0,
            Some(n) => self.max_conns(&format!("{key}.max_conns"), n)?,
        };
        let health = self.health(key, s.health.as_ref(), None, None)?;
        let mut servers = Vec::with_capacity(s.server.len());
        for (i, srv) in s.server.into_iter().enumerate() {
            let k = format!("{key}.server.{i}");
            let addr = self.endpoint(&format!("{k}.addr"), &srv.addr, Some(vip.port()))?;
            let given = srv.weight.unwrap_or(1);
            let Some(weight) = check_weight(given) else {
                return Err(self.err(
                    format!("{k}.weight"),
                    format!("expected 0 to {MAX_WEIGHT}, found {given}"),
                ));
            };
            if servers.iter().any(|x: &ServerConfig| x.addr == addr) {
                return Err(self.err(
                    format!("{k}.addr"),
                    format!("server {addr} is listed twice in this service"),
                ));
            }
            let health = match &srv.health {
                None => health.clone(),
                Some(h) => self.health(key, s.health.as_ref(), Some(&k), Some(h))?,
            };
            let threshold = |name: &str, v: Option<i64>| -> Result<u32, ConfigError> {
                match v {
                    None => Ok(0),
                    Some(n) if (0..=u32::MAX as i64).contains(&n) => Ok(n as u32),
                    Some(n) => Err(self.err(
                        format!("{k}.{name}"),
                        format!(
                            "expected a connection count 0 to {} (0: no threshold), found {n}",
                            u32::MAX
                        ),
                    )),
                }
            };
            let upper = threshold("upper", srv.upper)?;
            let lower = threshold("lower", srv.lower)?;
            check_thresholds(upper, lower).map_err(|m| self.err(format!("{k}.lower"), m))?;
            let own = match srv.forward.as_deref() {
                None => None,
                Some(f) => Some(self.forward(&format!("{k}.forward"), f)?),
            };
            let method = own.unwrap_or(forward);
            if let Err(m) = method.check_server(addr, vip, SynProxyMode::Auto) {
                return Err(self.err(format!("{k}.addr"), m));
            }
            servers.push(ServerConfig {
                addr,
                weight,
                health,
                upper,
                lower,
                forward: own,
            });
        }
        for x in &servers {
            let method = x.forward.unwrap_or(forward);
            if let Err(m) = method.check_server(x.addr, vip, syn_proxy) {
                return Err(self.err(format!("{key}.syn_proxy"), m));
            }
        }
        let sloppy = s.sloppy.unwrap_or(false);
        if sloppy {
            if let Some(x) = servers
                .iter()
                .find(|x| x.forward.unwrap_or(forward).two_way())
            {
                return Err(self.err(format!("{key}.sloppy"), sloppy_needs_one_way(x.addr)));
            }
        }
        let sorry_server = match &s.sorry_server {
            None => None,
            Some(a) => Some(self.sorry_server(key, a, vip, &servers)?),
        };
        let notify = match &s.notify {
            None => None,
            Some(n) => Some(self.notify(&format!("{key}.notify"), n)?),
        };
        Ok(ServiceConfig {
            name: s.name,
            proto,
            vip,
            forward,
            tunnel,
            scheduler,
            persistence,
            defense: s.defense,
            timeouts,
            udp_unreplied,
            syn_proxy,
            max_conns,
            sloppy,
            servers,
            health,
            sorry_server,
            notify,
        })
    }

    /// A service's `sorry_server`: an address (a bare one takes the VIP's port) that is not
    /// one of its realservers.
    fn sorry_server(
        &self,
        key: &str,
        s: &str,
        vip: SocketAddr,
        servers: &[ServerConfig],
    ) -> Result<SocketAddr, ConfigError> {
        let k = format!("{key}.sorry_server");
        let a = self.endpoint(&k, s, Some(vip.port()))?;
        if let Some(m) = family_mismatch(a, vip) {
            return Err(self.err(k, m));
        }
        if servers.iter().any(|x| x.addr == a) {
            return Err(self.err(
                k,
                format!("{a} is a realserver of this service; a sorry server stands in for them, so it must be another address"),
            ));
        }
        Ok(a)
    }

    /// A service's `persistence` table (`key` is its key).
    fn persistence(
        &self,
        key: &str,
        p: raw::Persistence,
        is_plugin: &dyn Fn(&str) -> bool,
    ) -> Result<PersistenceConfig, ConfigError> {
        self.plugin_ref(
            &format!("{key}.plugin"),
            &p.plugin,
            Kind::Persistence,
            is_plugin,
            |n| format!("{n:?} is not a [plugins.*] entry nor a catalogue persistence plugin"),
        )?;
        let timeout_secs = match p.timeout {
            None => DEFAULT_PERSISTENCE_SECS,
            Some(q) => self.seconds(&format!("{key}.timeout"), q)?,
        };
        Ok(PersistenceConfig {
            plugin: p.plugin,
            timeout_secs,
            config: p
                .config
                .unwrap_or(serde_json::Value::Object(Default::default())),
        })
    }

    /// `syn_proxy = "auto" | "on" | "off"`; only a TCP service can be proxied.
    pub(crate) fn syn_proxy(
        &self,
        key: &str,
        s: &str,
        proto: Proto,
    ) -> Result<SynProxyMode, ConfigError> {
        let m = match s {
            "auto" => SynProxyMode::Auto,
            "on" => SynProxyMode::On,
            "off" => SynProxyMode::Off,
            other => {
                return Err(self.err(
                    key,
                    format!("expected \"auto\", \"on\" or \"off\", found {other:?}"),
                ))
            }
        };
        if proto != Proto::Tcp && m == SynProxyMode::On {
            return Err(self.err(
                key,
                "the SYN proxy opens TCP connections; a UDP service cannot use it",
            ));
        }
        Ok(m)
    }

    /// `max_conns`: a connection count, 0 for none.
    pub(crate) fn max_conns(&self, key: &str, n: i64) -> Result<u32, ConfigError> {
        u32::try_from(n).map_err(|_| {
            self.err(
                key,
                format!(
                    "expected a connection count 0 to {} (0: no limit), found {n}",
                    u32::MAX
                ),
            )
        })
    }

    fn proto(&self, key: &str, s: &str) -> Result<Proto, ConfigError> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            other => Err(self.err(key, format!("expected \"tcp\" or \"udp\", found {other:?}"))),
        }
    }

    fn forward(&self, key: &str, s: &str) -> Result<Forward, ConfigError> {
        Forward::parse(s).map_err(|m| self.err(key, m))
    }

    /// `tunnel = "ipip" | "gue"` and `tunnel_port` (GUE only, required there).
    fn tunnel(
        &self,
        key: &str,
        kind: Option<&str>,
        port: Option<i64>,
    ) -> Result<Tunnel, ConfigError> {
        match (kind.unwrap_or("ipip"), port) {
            ("ipip", None) => Ok(Tunnel::Ipip),
            ("ipip", Some(_)) => Err(self.err(
                format!("{key}.tunnel_port"),
                "tunnel_port is for tunnel = \"gue\"; IPIP has no port",
            )),
            ("gue", Some(p)) if (1..=65535).contains(&p) => Ok(Tunnel::Gue { port: p as u16 }),
            ("gue", Some(p)) => Err(self.err(
                format!("{key}.tunnel_port"),
                format!("expected a UDP port 1 to 65535, found {p}"),
            )),
            ("gue", None) => Err(self.err(
                format!("{key}.tunnel_port"),
                "tunnel = \"gue\" needs the realservers' GUE port (ipvsadm --tun-port), e.g. tunnel_port = 6080",
            )),
            ("gre", _) => Err(self.err(
                format!("{key}.tunnel"),
                "tunnel = \"gre\" is not implemented yet; use \"ipip\" or \"gue\"",
            )),
            (other, _) => Err(self.err(
                format!("{key}.tunnel"),
                format!("expected \"ipip\" or \"gue\", found {other:?}"),
            )),
        }
    }

    fn scheduler(
        &self,
        key: &str,
        s: &str,
        is_plugin: &dyn Fn(&str) -> bool,
    ) -> Result<(), ConfigError> {
        if BUILTIN_SCHEDULERS.contains(&s) {
            return Ok(());
        }
        self.plugin_ref(key, s, Kind::Scheduler, is_plugin, |s| {
            format!(
                "{s:?} is neither a built-in scheduler ({}), a catalogue scheduler, nor a [plugins.{s}] entry",
                BUILTIN_SCHEDULERS.join(", ")
            )
        })
    }

    fn defense(
        &self,
        key: &str,
        list: &[String],
        is_plugin: &dyn Fn(&str) -> bool,
    ) -> Result<(), ConfigError> {
        for (i, d) in list.iter().enumerate() {
            self.plugin_ref(&format!("{key}.{i}"), d, Kind::Defense, is_plugin, |d| {
                format!("{d:?} is not a [plugins.*] entry nor a catalogue defense plugin")
            })?;
        }
        Ok(())
    }

    /// Sets the timeouts `given` (state key → duration) in `timeouts`, and
    /// `udp_unreplied` from its key of the same name.
    fn timeouts(
        &self,
        key: &str,
        given: BTreeMap<String, raw::Quantity>,
        timeouts: &mut Timeouts,
        udp_unreplied: &mut u32,
    ) -> Result<(), ConfigError> {
        for (name, q) in given {
            let k = format!("{key}.{name}");
            if name == "udp_unreplied" {
                *udp_unreplied = self.seconds(&k, q)?;
                continue;
            }
            let state = State::from_key(&name).ok_or_else(|| {
                let all: Vec<_> = State::ALL.iter().map(|s| s.key()).collect();
                self.err(
                    &k,
                    format!(
                        "unknown state {name:?}; expected one of {}, or udp_unreplied",
                        all.join(", ")
                    ),
                )
            })?;
            timeouts.set(state, self.seconds(&k, q)?);
        }
        Ok(())
    }

    /// An `addr:port` (`"10.77.1.1:80"`, `"[fd77::1]:80"`); with `default_port`, a bare
    /// address (`"10.77.1.1"`, `"fd77::1"`, `"[fd77::1]"`) takes that port.
    fn endpoint(
        &self,
        key: &str,
        s: &str,
        default_port: Option<u16>,
    ) -> Result<SocketAddr, ConfigError> {
        let bare = |t: &str| {
            let t = t
                .strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .unwrap_or(t);
            t.parse::<IpAddr>()
        };
        let parsed = match s.parse::<SocketAddr>() {
            Ok(a) => Ok(a),
            Err(_) => match (default_port, bare(s)) {
                (Some(p), Ok(ip)) => Ok(SocketAddr::new(ip, p)),
                _ => Err(()),
            },
        };
        let want = if default_port.is_some() {
            "an address like \"10.77.1.1:8080\" (or without port)"
        } else {
            "an address like \"10.77.100.100:80\""
        };
        const SIX: &str = "(IPv6 is written \"[fd77::1]:80\")";
        let specific = |ip: IpAddr| match ip {
            IpAddr::V4(a) => !a.is_unspecified() && !a.is_multicast() && !a.is_broadcast(),
            IpAddr::V6(a) => {
                !a.is_unspecified() && !a.is_multicast() && a.to_ipv4_mapped().is_none()
            }
        };
        match parsed {
            // A zone or a flow label means nothing to a director's tables.
            Ok(SocketAddr::V6(v)) if v.scope_id() != 0 || v.flowinfo() != 0 => Err(self.err(
                key,
                format!("expected {want} {SIX} without a zone (%) or flow label, found {s:?}"),
            )),
            Ok(a) if a.port() != 0 && specific(a.ip()) => Ok(a),
            Ok(a) => Err(self.err(
                key,
                format!("expected {want} with a nonzero port and a specific address (unicast, not IPv4-mapped), found {a}"),
            )),
            Err(()) => Err(self.err(key, format!("expected {want}, found {s:?} {SIX}"))),
        }
    }
}

/// Why a realserver or sorry server at `addr` cannot serve virtual address `vip`: another
/// address family (IPVS refuses it too, except for tunnels since Linux 5.3, as ringvs does:
/// `Forward::check_server` lets a tunnelled realserver of the other family through).
pub fn family_mismatch(addr: SocketAddr, vip: SocketAddr) -> Option<String> {
    let fam = |a: SocketAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
    (addr.is_ipv4() != vip.is_ipv4()).then(|| {
        format!(
            "{addr} is an {} address but the virtual service {vip} is {}: a service and its realservers share one address family (except tunnelled ones, forward = \"tun\")",
            fam(addr),
            fam(vip)
        )
    })
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Parses 64 hex digits.
pub fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
