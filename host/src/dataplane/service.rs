//! Services and realservers as the data plane sees them: an immutable [`Snapshot`] that the
//! control plane builds and hands to every queue, plus per-realserver state shared by all
//! queues ([`DestState`]).
//!
//! Slots are stable: a service keeps its slot (`u16`) and a realserver its slot (`u32`) across
//! snapshots, so connections (which store slots) survive reloads and runtime edits.

use crate::config::{Forward, Proto, Tunnel};
use crate::conn::{DestCounters, Timeouts, TICKS_PER_SEC};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

/// Realserver flag: removed from its service; existing connections drain. Operator's.
pub const DEST_F_REMOVED: u32 = 1;
/// Realserver flag: over its connection threshold (no new flows). Threshold's.
pub const DEST_F_OVERLOAD: u32 = 2;
/// Realserver flag: a health check marks it down (no new flows; existing flows kept).
/// Health's.
pub const DEST_F_DOWN: u32 = 4;
/// Realserver flag, set with [`DEST_F_REMOVED`] when the operator asked for it (`--expire`):
/// its connections end on their next packet, as with IPVS's `expire_nodest_conn`. Operator's.
pub const DEST_F_EXPIRE: u32 = 8;
/// Realserver flag: a health check removed it (`on_fail = "remove"`, always together with
/// `DEST_F_DOWN`): for its connections it counts as removed, as `DEST_F_REMOVED` does.
/// Health's.
pub const DEST_F_HEALTH_REMOVED: u32 = 16;
/// The flags under which a realserver's connections drain as those of a removed server.
pub const DEST_F_GONE: u32 = DEST_F_REMOVED | DEST_F_HEALTH_REMOVED;
/// The flags the operator's side (the registry: removals, `--expire`) owns.
pub const DEST_F_OPERATOR: u32 = DEST_F_REMOVED | DEST_F_EXPIRE;
/// The flags the health checkers own.
pub const DEST_F_HEALTH: u32 = DEST_F_DOWN | DEST_F_HEALTH_REMOVED;

/// A realserver's state shared by every queue, the schedulers and the control plane.
///
/// Three owners write it, each only through its own methods, so none can undo another's
/// bits:
/// - the operator (the registry: configuration, runtime edits): the weight,
///   [`DEST_F_REMOVED`] and [`DEST_F_EXPIRE`] ([`DestState::remove`],
///   [`DestState::restore_operator`] …);
/// - the health checkers: [`DEST_F_DOWN`] and [`DEST_F_HEALTH_REMOVED`]
///   ([`DestState::health_up`], [`DestState::health_down`], [`DestState::health_pending`]);
/// - the thresholds, kept by the queues as connections come and go: [`DEST_F_OVERLOAD`]
///   ([`DestState::bind`], [`DestState::unbind`], [`DestState::set_thresholds`]).
#[derive(Debug)]
pub struct DestState {
    /// Current weight (0 = quiesced).
    weight: AtomicU32,
    /// `DEST_F_*` flags, each bit written only by its owner's methods.
    flags: AtomicU32,
    /// Connection counts.
    pub counters: DestCounters,
    /// Upper connection threshold (0: none); see [`overloads`].
    upper: AtomicU32,
    /// Lower connection threshold (0: 3/4 of the upper one); see [`unloads`].
    lower: AtomicU32,
}

/// What the operator's side owns of a realserver, saved to be put back
/// ([`DestState::operator`], [`DestState::restore_operator`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorState {
    /// The weight.
    pub weight: u32,
    /// The operator's flags (within [`DEST_F_OPERATOR`]).
    pub flags: u32,
    /// Upper connection threshold.
    pub upper: u32,
    /// Lower connection threshold.
    pub lower: u32,
}

/// IPVS `ip_vs_bind_dest`: after a connection is bound, the server is overloaded when its
/// connections (`active + inactive`, templates not counted) reach the upper threshold.
#[inline]
pub fn overloads(total: u64, upper: u32) -> bool {
    upper != 0 && total >= upper as u64
}

/// IPVS `ip_vs_unbind_dest`: after a connection ends, an overloaded server takes new flows
/// again when its connections are below the lower threshold, or, without one, below 3/4 of
/// the upper one (`total × 4 < upper × 3`); with no threshold at all it is never overloaded.
/// The gap between the two thresholds is the hysteresis that keeps the flag from flapping.
#[inline]
pub fn unloads(total: u64, upper: u32, lower: u32) -> bool {
    if lower != 0 {
        total < lower as u64
    } else if upper != 0 {
        total * 4 < upper as u64 * 3
    } else {
        true
    }
}

impl DestState {
    /// A realserver with `weight` and no thresholds.
    pub fn new(weight: u32) -> Arc<DestState> {
        Arc::new(DestState {
            weight: AtomicU32::new(weight),
            flags: AtomicU32::new(0),
            counters: DestCounters::default(),
            upper: AtomicU32::new(0),
            lower: AtomicU32::new(0),
        })
    }

    /// Upper connection threshold (0: none).
    #[inline]
    pub fn upper(&self) -> u32 {
        self.upper.load(Relaxed)
    }

    /// Lower connection threshold (0: 3/4 of the upper one).
    #[inline]
    pub fn lower(&self) -> u32 {
        self.lower.load(Relaxed)
    }

    fn total(&self) -> u64 {
        self.counters.active() as u64 + self.counters.inactive() as u64
    }

    #[inline]
    fn set(&self, bits: u32) {
        self.flags.fetch_or(bits, Relaxed);
    }

    #[inline]
    fn clear(&self, bits: u32) {
        self.flags.fetch_and(!bits, Relaxed);
    }

    // Thresholds: DEST_F_OVERLOAD.

    /// Sets the thresholds (checked by the caller: `lower <= upper`) and the overload flag
    /// for the connections the server has now: set at the upper threshold, cleared where an
    /// unbind would clear it, else kept (as IPVS's `ip_vs_dest_update_overload`).
    pub fn set_thresholds(&self, upper: u32, lower: u32) {
        self.upper.store(upper, Relaxed);
        self.lower.store(lower, Relaxed);
        let total = self.total();
        if overloads(total, upper) {
            self.set(DEST_F_OVERLOAD);
        } else if unloads(total, upper, lower) {
            self.clear(DEST_F_OVERLOAD);
        }
    }

    /// A new connection was bound here (counted as active or not): IPVS `ip_vs_bind_dest`.
    #[inline]
    pub fn bind(&self, active: bool) {
        self.counters.bind(active);
        let upper = self.upper();
        if upper != 0 && overloads(self.total(), upper) {
            self.set(DEST_F_OVERLOAD);
        }
    }

    /// A connection bound here ended: IPVS `ip_vs_unbind_dest`.
    #[inline]
    pub fn unbind(&self, active: bool) {
        self.counters.unbind(active);
        if self.flags() & DEST_F_OVERLOAD != 0 && unloads(self.total(), self.upper(), self.lower())
        {
            self.clear(DEST_F_OVERLOAD);
        }
    }

    // Operator: the weight, DEST_F_REMOVED, DEST_F_EXPIRE.

    /// Sets the weight (checked by the caller: [`crate::config::check_weight`]; 0 quiesces).
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Relaxed);
    }

    /// Removed from its service: no new flows; its connections drain.
    pub fn remove(&self) {
        self.set(DEST_F_REMOVED);
    }

    /// A removed realserver's connections end on their next packet (`--expire`).
    pub fn expire(&self) {
        self.set(DEST_F_EXPIRE);
    }

    /// Back in its service: neither removed nor expiring.
    pub fn reinstate(&self) {
        self.clear(DEST_F_OPERATOR);
    }

    /// What the operator's side owns now: weight, flags and thresholds.
    pub fn operator(&self) -> OperatorState {
        OperatorState {
            weight: self.weight(),
            flags: self.flags() & DEST_F_OPERATOR,
            upper: self.upper(),
            lower: self.lower(),
        }
    }

    /// Puts back what [`DestState::operator`] saved. The health checkers' flags are left as
    /// they are, and the overload flag follows the thresholds as [`DestState::set_thresholds`]
    /// sets it (only if they change).
    pub fn restore_operator(&self, saved: OperatorState) {
        self.set_weight(saved.weight);
        self.clear(DEST_F_OPERATOR);
        self.set(saved.flags & DEST_F_OPERATOR);
        if (self.upper(), self.lower()) != (saved.upper, saved.lower) {
            self.set_thresholds(saved.upper, saved.lower);
        }
    }

    // Health: DEST_F_DOWN, DEST_F_HEALTH_REMOVED.

    /// Held out of scheduling until a health check passes (a server new to a checked
    /// service, or back from draining). Sets `DEST_F_DOWN` only.
    pub fn health_pending(&self) {
        self.set(DEST_F_DOWN);
    }

    /// Healthy, or no longer checked: clears the health flags.
    pub fn health_up(&self) {
        self.clear(DEST_F_HEALTH);
    }

    /// Down: quiesced (`DEST_F_DOWN`), and with `remove` its connections drain as those of
    /// a removed server (`DEST_F_HEALTH_REMOVED` too). Never a moment without `DEST_F_DOWN`
    /// when going from one down mode to the other.
    pub fn health_down(&self, remove: bool) {
        if remove {
            self.set(DEST_F_HEALTH);
        } else {
            self.set(DEST_F_DOWN);
            self.clear(DEST_F_HEALTH_REMOVED);
        }
    }

    // Readers.

    /// Current weight.
    #[inline]
    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    /// Current flags.
    #[inline]
    pub fn flags(&self) -> u32 {
        self.flags.load(Relaxed)
    }

    /// True if new flows may go here: weight above zero and no flag set.
    #[inline]
    pub fn schedulable(&self) -> bool {
        self.weight() > 0 && self.flags() == 0
    }
}

/// One realserver of a service.
#[derive(Debug, Clone)]
pub struct Dest {
    /// Slot.
    pub id: u32,
    /// Service slot.
    pub svc: u16,
    /// Address and port (the service's family).
    pub addr: SocketAddr,
    /// How its packets are forwarded.
    pub forward: Forward,
    /// Shared state.
    pub state: Arc<DestState>,
}

/// A virtual service.
#[derive(Debug, Clone)]
pub struct Service {
    /// Slot.
    pub id: u16,
    /// Name.
    pub name: Arc<str>,
    /// Protocol.
    pub proto: Proto,
    /// Virtual address.
    pub vip: SocketAddr,
    /// Forwarding method.
    pub forward: Forward,
    /// How its tunnelled realservers' packets are encapsulated.
    pub tunnel: Tunnel,
    /// Scheduler name (a built-in or a plugin).
    pub scheduler: Arc<str>,
    /// Timeouts in seconds.
    pub timeouts: Timeouts,
    /// Realservers in configuration order, including removed ones still draining.
    pub dests: Vec<Dest>,
    /// Changes whenever anything a queue caches about the service changes.
    pub version: u64,
    /// The plugin scheduler and its prepared instances, if the scheduler is a plugin.
    pub plugin: Option<Arc<super::sched::PluginSched>>,
    /// Defense plugins in configuration order, with their prepared instances.
    pub defenses: Vec<Arc<super::defense::PluginDefense>>,
    /// The persistence plugin and its prepared instances, if the service is persistent (and
    /// plugins run: without one its flows are scheduled normally).
    pub persistence: Option<Arc<super::persist::PluginPersist>>,
    /// Template timeout in seconds (`persistence.timeout`; 0 if not persistent).
    pub persist_timeout: u32,
    /// Seconds an unreplied UDP entry lives.
    pub udp_unreplied: u32,
    /// When the SYN proxy opens its connections.
    pub syn_proxy: crate::config::SynProxyMode,
    /// Most connections it may hold (0: no limit); each queue enforces its share.
    pub max_conns: u32,
    /// A TCP segment of a connection the table does not know opens an entry (`sloppy`).
    pub sloppy: bool,
}

impl Service {
    /// Timeouts converted to ticks.
    pub fn timeout_ticks(&self) -> [u32; crate::conn::state::STATES] {
        self.timeouts.0.map(|s| s.saturating_mul(TICKS_PER_SEC))
    }

    /// The virtual address if it is IPv4.
    #[inline]
    pub fn vip4(&self) -> Option<SocketAddrV4> {
        match self.vip {
            SocketAddr::V4(a) => Some(a),
            SocketAddr::V6(_) => None,
        }
    }

    /// The virtual address if it is IPv6.
    #[inline]
    pub fn vip6(&self) -> Option<SocketAddrV6> {
        match self.vip {
            SocketAddr::V6(a) => Some(a),
            SocketAddr::V4(_) => None,
        }
    }
}

/// A fast hasher for the tiny service maps (keys are not attacker-chosen beyond the few
/// configured services).
#[derive(Default)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64)
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.write_u64(i as u64)
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(i as u64)
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// `(protocol, address, port)` packed in one word.
#[inline]
fn endpoint_key(proto: u8, addr: Ipv4Addr, port: u16) -> u64 {
    (proto as u64) << 48 | (u32::from(addr) as u64) << 16 | port as u64
}

/// `(protocol, address, port)` of IPv6 packed in two words.
#[inline]
fn endpoint_key6(proto: u8, addr: Ipv6Addr, port: u16) -> (u128, u32) {
    (u128::from(addr), (proto as u32) << 16 | port as u32)
}

/// A set of keys mapped to values: a linear scan while small (the usual handful of
/// services beats any hashing), a hash map beyond.
#[derive(Debug)]
struct SmallIndex<V: Copy, K = u64> {
    small: Vec<(K, V)>,
    map: FxMap<K, V>,
}

impl<V: Copy, K> Default for SmallIndex<V, K> {
    fn default() -> Self {
        SmallIndex {
            small: Vec::new(),
            map: FxMap::default(),
        }
    }
}

impl<V: Copy, K: Copy + Eq + std::hash::Hash> SmallIndex<V, K> {
    const LINEAR: usize = 16;

    fn insert(&mut self, k: K, v: V) {
        if !self.map.is_empty() {
            self.map.insert(k, v);
        } else if let Some(e) = self.small.iter_mut().find(|e| e.0 == k) {
            e.1 = v;
        } else if self.small.len() < Self::LINEAR {
            self.small.push((k, v));
        } else {
            self.map.extend(self.small.drain(..));
            self.map.insert(k, v);
        }
    }

    #[inline]
    fn get(&self, k: K) -> Option<V> {
        if self.map.is_empty() {
            self.small.iter().find(|e| e.0 == k).map(|e| e.1)
        } else {
            self.get_mapped(k)
        }
    }

    /// [`SmallIndex::get`] past [`Self::LINEAR`] keys, out of the packet path's inline code.
    #[inline(never)]
    fn get_mapped(&self, k: K) -> Option<V> {
        self.map.get(&k).copied()
    }
}

/// How a realserver's packets leave the director, as the packet path needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Way {
    /// Rewritten to it (LVS-NAT).
    #[default]
    Nat,
    /// Inside this tunnel's headers (LVS-TUN).
    Tunnel(Tunnel),
    /// Unchanged, to its MAC (LVS-DR).
    Route,
}

/// Everything a queue needs to know about services, immutable once built.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every snapshot.
    pub generation: u64,
    services: Vec<Option<Service>>,
    /// Realserver address per slot, for the packet path (IPv4 realservers).
    dest_addrs: Vec<Option<SocketAddrV4>>,
    /// The same for IPv6 realservers.
    dest_addrs6: Vec<Option<SocketAddrV6>>,
    /// Per slot: how its packets leave (one lookup per packet).
    dest_way: Vec<Way>,
    /// The outer source address of tunnelled packets.
    tunnel_source: Option<Ipv4Addr>,
    /// The tunnels' MTU, if not the default.
    tunnel_mtu: Option<u16>,
    /// The outer source address of packets tunnelled to IPv6 realservers.
    tunnel_source6: Option<Ipv6Addr>,
    /// The IPv6 tunnels' MTU, if not the default.
    tunnel_mtu6: Option<u16>,
    dest_svc: Vec<u16>,
    vips: SmallIndex<u16>,
    vip_addrs: SmallIndex<()>,
    endpoints: SmallIndex<()>,
    /// Addresses of realservers by NAT (their answers come back through the director).
    nat_addrs: SmallIndex<()>,
    /// The IPv6 counterparts of the four indexes above.
    vips6: SmallIndex<u16, (u128, u32)>,
    vip_addrs6: SmallIndex<(), u128>,
    endpoints6: SmallIndex<(), (u128, u32)>,
    nat_addrs6: SmallIndex<(), u128>,
}

impl Snapshot {
    /// Builds a snapshot. Service and realserver slots must be unique.
    pub fn new(generation: u64, services: Vec<Service>) -> Snapshot {
        let mut s = Snapshot {
            generation,
            ..Snapshot::default()
        };
        for svc in services {
            let proto = svc.proto.number();
            match svc.vip {
                SocketAddr::V4(v) => {
                    s.vips
                        .insert(endpoint_key(proto, *v.ip(), v.port()), svc.id);
                    s.vip_addrs.insert(u32::from(*v.ip()) as u64, ());
                }
                SocketAddr::V6(v) => {
                    s.vips6
                        .insert(endpoint_key6(proto, *v.ip(), v.port()), svc.id);
                    s.vip_addrs6.insert(u128::from(*v.ip()), ());
                }
            }
            for d in &svc.dests {
                let i = d.id as usize;
                if s.dest_addrs.len() <= i {
                    s.dest_addrs.resize(i + 1, None);
                    s.dest_addrs6.resize(i + 1, None);
                    s.dest_way.resize(i + 1, Way::Nat);
                    s.dest_svc.resize(i + 1, u16::MAX);
                }
                match d.addr {
                    SocketAddr::V4(a) => {
                        s.dest_addrs[i] = Some(a);
                        s.endpoints
                            .insert(endpoint_key(proto, *a.ip(), a.port()), ());
                        if d.forward == Forward::Nat {
                            s.nat_addrs.insert(u32::from(*a.ip()) as u64, ());
                        }
                    }
                    SocketAddr::V6(a) => {
                        s.dest_addrs6[i] = Some(a);
                        s.endpoints6
                            .insert(endpoint_key6(proto, *a.ip(), a.port()), ());
                        if d.forward == Forward::Nat {
                            s.nat_addrs6.insert(u128::from(*a.ip()), ());
                        }
                    }
                }
                s.dest_way[i] = match d.forward {
                    Forward::Nat => Way::Nat,
                    Forward::Tun => Way::Tunnel(svc.tunnel),
                    Forward::Dr => Way::Route,
                };
                s.dest_svc[i] = svc.id;
            }
            let i = svc.id as usize;
            if s.services.len() <= i {
                s.services.resize_with(i + 1, || None);
            }
            s.services[i] = Some(svc);
        }
        s
    }

    /// The service listening on `(proto, addr, port)`.
    #[inline]
    pub fn service_at(&self, proto: u8, addr: Ipv4Addr, port: u16) -> Option<u16> {
        self.vips.get(endpoint_key(proto, addr, port))
    }

    /// True if `addr` is the address of some service.
    #[inline]
    pub fn is_vip(&self, addr: Ipv4Addr) -> bool {
        self.vip_addrs.get(u32::from(addr) as u64).is_some()
    }

    /// True if `addr` is the address of a realserver some service reaches by NAT.
    #[inline]
    pub fn is_nat_realserver_addr(&self, addr: Ipv4Addr) -> bool {
        self.nat_addrs.get(u32::from(addr) as u64).is_some()
    }

    /// The service listening on IPv6 `(proto, addr, port)`.
    #[inline]
    pub fn service_at6(&self, proto: u8, addr: Ipv6Addr, port: u16) -> Option<u16> {
        self.vips6.get(endpoint_key6(proto, addr, port))
    }

    /// True if IPv6 `addr` is the address of some service.
    #[inline]
    pub fn is_vip6(&self, addr: Ipv6Addr) -> bool {
        self.vip_addrs6.get(u128::from(addr)).is_some()
    }

    /// True if IPv6 `addr` is the address of a realserver some service reaches by NAT.
    #[inline]
    pub fn is_nat_realserver_addr6(&self, addr: Ipv6Addr) -> bool {
        self.nat_addrs6.get(u128::from(addr)).is_some()
    }

    /// True if IPv6 `(proto, addr, port)` is a realserver of some service.
    #[inline]
    pub fn is_realserver6(&self, proto: u8, addr: Ipv6Addr, port: u16) -> bool {
        self.endpoints6
            .get(endpoint_key6(proto, addr, port))
            .is_some()
    }

    /// True if any service is IPv6.
    pub fn any_ipv6(&self) -> bool {
        self.services().any(|s| s.vip.is_ipv6())
    }

    /// The IPv4 virtual services as queue steering keys them: `(protocol, VIP, port)`,
    /// sorted.
    pub fn steered(&self) -> Vec<(u8, Ipv4Addr, u16)> {
        let mut v: Vec<_> = self
            .services()
            .filter_map(|s| Some((s.proto.number(), s.vip4()?)))
            .map(|(p, a)| (p, *a.ip(), a.port()))
            .collect();
        v.sort_unstable();
        v
    }

    /// The IPv6 virtual services as queue steering keys them, sorted.
    pub fn steered6(&self) -> Vec<(u8, Ipv6Addr, u16)> {
        let mut v: Vec<_> = self
            .services()
            .filter_map(|s| Some((s.proto.number(), s.vip6()?)))
            .map(|(p, a)| (p, *a.ip(), a.port()))
            .collect();
        v.sort_unstable();
        v
    }

    /// True if `(proto, addr, port)` is a realserver of some service.
    #[inline]
    pub fn is_realserver(&self, proto: u8, addr: Ipv4Addr, port: u16) -> bool {
        self.endpoints
            .get(endpoint_key(proto, addr, port))
            .is_some()
    }

    /// The service in slot `id`.
    #[inline]
    pub fn service(&self, id: u16) -> Option<&Service> {
        self.services.get(id as usize).and_then(Option::as_ref)
    }

    /// All services.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.iter().flatten()
    }

    /// Number of service slots (the largest slot + 1).
    pub fn service_slots(&self) -> usize {
        self.services.len()
    }

    /// Number of realserver slots (the largest slot + 1).
    pub fn dest_slots(&self) -> usize {
        self.dest_addrs.len()
    }

    /// The address of realserver slot `id` if it is IPv4.
    #[inline]
    pub fn dest_addr(&self, id: u32) -> Option<SocketAddrV4> {
        self.dest_addrs.get(id as usize).copied().flatten()
    }

    /// The address of realserver slot `id` if it is IPv6.
    #[inline]
    pub fn dest_addr6(&self, id: u32) -> Option<SocketAddrV6> {
        self.dest_addrs6.get(id as usize).copied().flatten()
    }

    /// The address and port of realserver slot `id`, either family.
    pub fn dest_sock(&self, id: u32) -> Option<SocketAddr> {
        match self.dest_addr(id) {
            Some(a) => Some(SocketAddr::V4(a)),
            None => self.dest_addr6(id).map(SocketAddr::V6),
        }
    }

    /// The address of realserver slot `id`, either family (a tunnel may cross families).
    #[inline]
    pub fn dest_ip(&self, id: u32) -> Option<IpAddr> {
        match self.dest_addr(id) {
            Some(a) => Some(IpAddr::V4(*a.ip())),
            None => self.dest_addr6(id).map(|a| IpAddr::V6(*a.ip())),
        }
    }

    /// How realserver slot `id`'s packets leave (NAT for a slot the snapshot lacks).
    #[inline]
    pub fn dest_way(&self, id: u32) -> Way {
        self.dest_way.get(id as usize).copied().unwrap_or(Way::Nat)
    }

    /// The outer source address of tunnelled packets (unspecified until the control plane
    /// sets it).
    #[inline]
    pub fn tunnel_source(&self) -> Ipv4Addr {
        self.tunnel_source.unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// Sets the outer source address of tunnelled packets.
    pub fn set_tunnel_source(&mut self, a: Ipv4Addr) {
        self.tunnel_source = Some(a);
    }

    /// The MTU of the path to tunnelled realservers.
    #[inline]
    pub fn tunnel_mtu(&self) -> u16 {
        self.tunnel_mtu
            .unwrap_or(crate::dataplane::tunnel::DEFAULT_MTU)
    }

    /// Sets the MTU of the path to tunnelled realservers.
    pub fn set_tunnel_mtu(&mut self, mtu: u16) {
        self.tunnel_mtu = Some(mtu);
    }

    /// The outer source address of packets tunnelled to IPv6 realservers (unspecified
    /// until the control plane sets it).
    #[inline]
    pub fn tunnel_source6(&self) -> Ipv6Addr {
        self.tunnel_source6.unwrap_or(Ipv6Addr::UNSPECIFIED)
    }

    /// Sets the outer source address of packets tunnelled to IPv6 realservers.
    pub fn set_tunnel_source6(&mut self, a: Ipv6Addr) {
        self.tunnel_source6 = Some(a);
    }

    /// The MTU of the path to tunnelled IPv6 realservers.
    #[inline]
    pub fn tunnel_mtu6(&self) -> u16 {
        self.tunnel_mtu6
            .unwrap_or(crate::dataplane::tunnel::DEFAULT_MTU)
    }

    /// Sets the MTU of the path to tunnelled IPv6 realservers.
    pub fn set_tunnel_mtu6(&mut self, mtu: u16) {
        self.tunnel_mtu6 = Some(mtu);
    }

    /// True if any realserver is reached through a tunnel.
    pub fn any_tunnelled(&self) -> bool {
        self.dest_way.iter().any(|w| matches!(w, Way::Tunnel(_)))
    }

    /// The realserver in slot `id`.
    pub fn dest(&self, id: u32) -> Option<&Dest> {
        let svc = *self.dest_svc.get(id as usize)?;
        self.service(svc)?.dests.iter().find(|d| d.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overloaded(d: &DestState) -> bool {
        d.flags() & DEST_F_OVERLOAD != 0
    }

    #[test]
    fn thresholds_have_hysteresis() {
        // upper 4, lower 2: overloaded at 4 connections, back below 2.
        let d = DestState::new(1);
        d.set_thresholds(4, 2);
        for i in 1..=3 {
            d.bind(i % 2 == 0);
            assert!(!overloaded(&d), "{i} connections < upper 4");
        }
        d.bind(false);
        assert!(overloaded(&d), "4 connections reach upper 4");
        assert!(!d.schedulable(), "an overloaded server takes no new flow");
        d.unbind(false);
        d.unbind(false);
        assert!(overloaded(&d), "2 connections: not below lower 2 yet");
        d.unbind(true);
        assert!(!overloaded(&d), "1 connection < lower 2");
        assert!(d.schedulable());
        // Flipping between active and inactive changes nothing.
        d.counters.flip(true);
        assert!(!overloaded(&d));
    }

    #[test]
    fn without_a_lower_threshold_three_quarters_of_upper() {
        let d = DestState::new(1);
        d.set_thresholds(8, 0);
        for _ in 0..8 {
            d.bind(false);
        }
        assert!(overloaded(&d));
        d.unbind(false); // 7
        d.unbind(false); // 6 = 3/4 of 8: 24 < 24 is false
        assert!(overloaded(&d), "6 × 4 = 24 is not below 8 × 3 = 24");
        d.unbind(false); // 5
        assert!(!overloaded(&d), "5 × 4 = 20 < 24");
        // Odd uppers round as IPVS's integer test does: upper 2, clear at 1 (4 < 6).
        let e = DestState::new(1);
        e.set_thresholds(2, 0);
        e.bind(true);
        e.bind(true);
        assert!(overloaded(&e));
        e.unbind(true);
        assert!(!overloaded(&e));
    }

    #[test]
    fn no_thresholds_never_overload_and_edits_recompute() {
        let d = DestState::new(1);
        for _ in 0..1000 {
            d.bind(true);
        }
        assert!(!overloaded(&d), "no upper threshold: never overloaded");
        // A new upper threshold below the current count overloads at once …
        d.set_thresholds(500, 100);
        assert!(overloaded(&d));
        // … raising it above keeps the flag inside the hysteresis band …
        d.set_thresholds(2000, 900);
        assert!(overloaded(&d), "1000 connections are not below lower 900");
        // … and removing the thresholds clears it.
        d.set_thresholds(0, 0);
        assert!(!overloaded(&d));
        assert!(overloads(10, 10) && !overloads(9, 10) && !overloads(u64::MAX, 0));
        assert!(unloads(0, 0, 0) && unloads(9, 100, 10) && !unloads(10, 100, 10));
        assert!(
            unloads(3, u32::MAX, 0),
            "no overflow in total × 4 < upper × 3"
        );
    }

    #[test]
    fn each_owner_sets_and_clears_only_its_own_bits() {
        let d = DestState::new(3);
        d.set_thresholds(1, 0);
        d.bind(true); // threshold: overloaded
        d.health_down(true); // health: down, removed by the check
        d.remove(); // operator: removed …
        d.expire(); // … and expiring
        let all = DEST_F_OVERLOAD | DEST_F_HEALTH | DEST_F_OPERATOR;
        assert_eq!(d.flags(), all);
        d.health_up();
        assert_eq!(
            d.flags(),
            all & !DEST_F_HEALTH,
            "a recovery keeps the removal"
        );
        d.health_down(false);
        d.reinstate();
        assert_eq!(
            d.flags(),
            DEST_F_OVERLOAD | DEST_F_DOWN,
            "a re-add keeps the check's bit"
        );
        d.unbind(true);
        assert_eq!(
            d.flags(),
            DEST_F_DOWN,
            "unloaded: only the overload bit goes"
        );
        // Quiescing down-and-removed to down alone is never a moment without DEST_F_DOWN.
        d.health_down(true);
        d.health_down(false);
        assert_eq!(d.flags(), DEST_F_DOWN);
        // The operator's state is saved and put back without touching the others' bits.
        let saved = d.operator();
        d.set_weight(0);
        d.remove();
        d.set_thresholds(5, 2);
        d.restore_operator(saved);
        assert_eq!(
            saved,
            OperatorState {
                weight: 3,
                flags: 0,
                upper: 1,
                lower: 0
            }
        );
        assert_eq!(d.operator(), saved);
        assert_eq!((d.weight(), d.flags()), (3, DEST_F_DOWN));
    }

    #[test]
    fn small_index_grows_into_a_map() {
        let mut ix = SmallIndex::default();
        for i in 0..100u64 {
            ix.insert(i * 7, i as u16);
            assert_eq!(ix.get(i * 7), Some(i as u16));
        }
        assert!(!ix.map.is_empty());
        for i in 0..100u64 {
            assert_eq!(ix.get(i * 7), Some(i as u16));
            assert_eq!(ix.get(i * 7 + 1), None);
        }
        ix.insert(7, 999);
        assert_eq!(ix.get(7), Some(999));
        assert_ne!(
            endpoint_key(6, Ipv4Addr::new(1, 2, 3, 4), 80),
            endpoint_key(17, Ipv4Addr::new(1, 2, 3, 4), 80)
        );
    }
}
