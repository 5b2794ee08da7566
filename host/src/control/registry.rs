//! The control plane's model of services and realservers: stable slots across reloads and
//! runtime edits, and the [`Snapshot`]s handed to the queues.
//!
//! Nothing is ever dropped abruptly. A removed realserver stays in its service, flagged
//! `DEST_F_REMOVED`: no new flows go to it and its connections drain (or, with
//! `expire_nodest_conn`, end on their next packet). A removed service keeps its virtual
//! address while connections drain, with no realserver open to new flows. Slots are never
//! reused, so a connection can never be confused with a later object in its slot.
//!
//! A server new to the director whose service has a health check is created `DEST_F_DOWN`
//! (pending, [`DestState::health_pending`]): no flow reaches it before the checker
//! (`crate::health`) has seen it pass. The registry never touches `DEST_F_DOWN` or
//! `DEST_F_HEALTH_REMOVED` otherwise; they belong to the checkers, as `DEST_F_REMOVED`,
//! `DEST_F_EXPIRE` and the weight belong to the registry ([`DestState`]'s operator methods).

use crate::config::{
    self, check_thresholds, check_weight, Forward, ServerConfig, ServiceConfig, MAX_WEIGHT,
};
use crate::dataplane::service::{
    Dest, DestState, OperatorState, Service, Snapshot, DEST_F_HEALTH, DEST_F_REMOVED,
};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

/// A realserver as the registry knows it.
#[derive(Debug, Clone)]
pub struct DestEntry {
    /// Slot.
    pub id: u32,
    /// Address.
    pub addr: SocketAddr,
    /// Configured weight (what health checks restore).
    pub weight: u32,
    /// Shared state.
    pub state: Arc<DestState>,
    /// The service's sorry server (`sorry_server`): weight 0 while a realserver can take
    /// new flows, 1 while none can ([`Registry::update_sorry`]).
    pub sorry: bool,
    /// How its packets are forwarded (the server's own method, or its service's).
    pub forward: Forward,
}

impl DestEntry {
    /// True once removed (draining).
    pub fn removed(&self) -> bool {
        self.state.flags() & DEST_F_REMOVED != 0
    }
}

/// The realservers' shared state before an edit (see [`Registry::save_shared`]).
#[derive(Debug)]
pub struct SavedShared(Vec<(Arc<DestState>, OperatorState)>);

/// A service as the registry knows it.
#[derive(Debug, Clone)]
pub struct ServiceEntry {
    /// Slot.
    pub id: u16,
    /// Its configuration.
    pub cfg: ServiceConfig,
    /// Realservers, configured ones first, then draining ones.
    pub dests: Vec<DestEntry>,
    /// Bumped on every change the queues must pick up.
    pub version: u64,
    /// Removed from the configuration; draining.
    pub removed: bool,
}

/// A runtime edit that cannot be applied. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditError {
    /// No such service.
    UnknownService(String),
    /// No such realserver in the service.
    UnknownServer(String, SocketAddr),
    /// The realserver is already in the service.
    DuplicateServer(String, SocketAddr),
    /// The service already exists.
    DuplicateService(String),
    /// Another service has this virtual address.
    VipInUse(String),
    /// Weight out of range.
    BadWeight(u64),
    /// Connection thresholds that do not fit together.
    BadThresholds(String),
    /// Too many services.
    TooManyServices,
    /// A realserver or sorry server at a service's virtual address.
    VipAsServer(config::VipAsServer),
    /// A forwarding method the service or server cannot take, explained.
    Forward(String),
}

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EditError::UnknownService(s) => write!(f, "no service named {s:?}"),
            EditError::UnknownServer(s, a) => write!(f, "service {s:?} has no server {a}"),
            EditError::DuplicateServer(s, a) => write!(f, "service {s:?} already has server {a}"),
            EditError::DuplicateService(s) => write!(f, "a service named {s:?} already exists"),
            EditError::VipInUse(s) => write!(f, "service {s:?} already uses that virtual address"),
            EditError::BadWeight(w) => write!(f, "weight {w} is out of range (0 to {MAX_WEIGHT})"),
            EditError::BadThresholds(m) => f.write_str(m),
            EditError::TooManyServices => f.write_str("too many services (65535 slots)"),
            EditError::VipAsServer(v) => v.fmt(f),
            EditError::Forward(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for EditError {}

/// A service's prepared plugins, for a snapshot.
#[derive(Debug, Default)]
pub struct ServicePlugins {
    /// Its plugin scheduler, if its scheduler is a plugin.
    pub sched: Option<Arc<crate::dataplane::sched::PluginSched>>,
    /// Its defenses, in order.
    pub defenses: Vec<Arc<crate::dataplane::defense::PluginDefense>>,
    /// Its persistence plugin, if it is persistent.
    pub persistence: Option<Arc<crate::dataplane::persist::PluginPersist>>,
}

/// Services and realservers with stable slots.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    services: Vec<ServiceEntry>,
    /// The next never-used service slot.
    next_service: u32,
    /// Slots of services that drained and were forgotten, with the snapshot generation at
    /// that moment: one is reused only once a later snapshot (which no longer has it) went to
    /// the queues, so a queue never takes a gone service's state for a new one.
    free_services: Vec<(u16, u64)>,
    /// Slots freed since [`Registry::take_freed`] was last called.
    freed: Vec<u16>,
    next_dest: u32,
    /// Realserver ids of forgotten (drained) realservers, reused as service slots are.
    free_dests: Vec<(u32, u64)>,
    /// Realserver ids freed since [`Registry::take_freed`] was last called.
    freed_dests: Vec<u32>,
    generation: u64,
    version: u64,
    /// The outer source address of tunnelled packets (see `control::forwarding`).
    tunnel_source: Option<Ipv4Addr>,
    /// The tunnels' MTU (0: the default).
    tunnel_mtu: u16,
    /// The outer source address of packets tunnelled to IPv6 realservers.
    tunnel_source6: Option<Ipv6Addr>,
    /// The IPv6 tunnels' MTU (0: the default).
    tunnel_mtu6: u16,
}

impl Registry {
    /// Sets the outer source address of tunnelled packets (the next snapshot carries it).
    pub fn set_tunnel_source(&mut self, a: Option<Ipv4Addr>) {
        self.tunnel_source = a;
    }

    /// Sets the MTU of the path to tunnelled realservers.
    pub fn set_tunnel_mtu(&mut self, mtu: u16) {
        self.tunnel_mtu = mtu;
    }

    /// The tunnels' MTU (0: not looked up).
    pub fn tunnel_mtu(&self) -> u16 {
        self.tunnel_mtu
    }

    /// The outer source address of tunnelled packets, if set.
    pub fn tunnel_source(&self) -> Option<Ipv4Addr> {
        self.tunnel_source
    }

    /// Sets the outer source address of packets tunnelled to IPv6 realservers.
    pub fn set_tunnel_source6(&mut self, a: Option<Ipv6Addr>) {
        self.tunnel_source6 = a;
    }

    /// Sets the MTU of the path to tunnelled IPv6 realservers.
    pub fn set_tunnel_mtu6(&mut self, mtu: u16) {
        self.tunnel_mtu6 = mtu;
    }

    /// The IPv6 tunnels' MTU (0: not looked up).
    pub fn tunnel_mtu6(&self) -> u16 {
        self.tunnel_mtu6
    }

    /// The outer source address of packets tunnelled to IPv6 realservers, if set.
    pub fn tunnel_source6(&self) -> Option<Ipv6Addr> {
        self.tunnel_source6
    }

    /// True if a live service forwards by direct routing by default.
    pub fn routes_directly(&self) -> bool {
        self.services
            .iter()
            .any(|e| !e.removed && e.cfg.forward == Forward::Dr)
    }

    /// Realservers (not draining) forwarded by direct routing (`forward = "dr"`), either
    /// family.
    pub fn routed(&self) -> Vec<IpAddr> {
        self.services
            .iter()
            .filter(|e| !e.removed)
            .flat_map(|e| &e.dests)
            .filter(|d| d.forward == Forward::Dr && !d.removed())
            .map(|d| d.addr.ip())
            .collect()
    }

    /// The first IPv4 realserver (not draining) forwarded through a tunnel.
    pub fn first_tunnelled(&self) -> Option<Ipv4Addr> {
        self.tunnelled().find_map(|a| match a {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
    }

    /// The first IPv6 realserver (not draining) forwarded through a tunnel.
    pub fn first_tunnelled6(&self) -> Option<Ipv6Addr> {
        self.tunnelled().find_map(|a| match a {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        })
    }

    /// The realservers (not draining) forwarded through a tunnel.
    fn tunnelled(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.services
            .iter()
            .filter(|e| !e.removed)
            .flat_map(|e| &e.dests)
            .filter(|d| d.forward == Forward::Tun && !d.removed())
            .map(|d| d.addr.ip())
    }

    /// A registry holding `services`.
    pub fn new(services: &[ServiceConfig]) -> Result<Registry, EditError> {
        let mut r = Registry::default();
        r.apply(services)?;
        Ok(r)
    }

    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    fn new_dest(&mut self, s: &ServerConfig, service_forward: Forward) -> DestEntry {
        let generation = self.generation;
        let id = match self.free_dests.iter().position(|&(_, g)| g < generation) {
            Some(k) => self.free_dests.swap_remove(k).0,
            None => {
                self.next_dest += 1;
                self.next_dest - 1
            }
        };
        let state = DestState::new(s.weight);
        if s.health.is_some() {
            state.health_pending();
        }
        state.set_thresholds(s.upper, s.lower);
        DestEntry {
            id,
            addr: s.addr,
            weight: s.weight,
            state,
            sorry: false,
            forward: s.forward.unwrap_or(service_forward),
        }
    }

    /// A sorry server's slot: weight 0 until every realserver is out.
    fn new_sorry(&mut self, addr: SocketAddr, service_forward: Forward) -> DestEntry {
        let mut d = self.new_dest(&ServerConfig::new(addr, 0), service_forward);
        d.sorry = true;
        d
    }

    /// Makes the registry match a (validated) configuration: new services and servers are
    /// added, changed ones updated in place, missing ones start draining. Returns the names
    /// of services whose definition changed.
    pub fn apply(&mut self, services: &[ServiceConfig]) -> Result<Vec<String>, EditError> {
        // Checked before anything changes: a refused edit leaves the registry as it was.
        if let Some(v) = config::vip_as_server(services) {
            return Err(EditError::VipAsServer(v));
        }
        let mut changed = Vec::new();
        let live: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        for e in self.services.iter_mut() {
            if !e.removed && !live.contains(&e.cfg.name.as_str()) {
                e.removed = true;
                for d in &e.dests {
                    d.state.remove();
                }
                e.version += 1;
                changed.push(e.cfg.name.clone());
            }
        }
        for cfg in services {
            // A service whose virtual address or protocol changed is another service to the
            // queues (its connections are matched by address): the old one drains as if
            // removed, and the new one starts beside it.
            for e in self.services.iter_mut() {
                if !e.removed
                    && e.cfg.name == cfg.name
                    && (e.cfg.proto, e.cfg.vip) != (cfg.proto, cfg.vip)
                {
                    e.removed = true;
                    for d in &e.dests {
                        d.state.remove();
                    }
                    e.version += 1;
                }
            }
            let pos = self.services.iter().position(|e| {
                e.cfg.name == cfg.name && (e.cfg.proto, e.cfg.vip) == (cfg.proto, cfg.vip)
            });
            // A draining service with the same virtual address gives it up.
            if let Some(other) = self.services.iter_mut().find(|e| {
                e.removed
                    && e.cfg.name != cfg.name
                    && e.cfg.proto == cfg.proto
                    && e.cfg.vip == cfg.vip
            }) {
                other.cfg.vip = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into();
            }
            match pos {
                None => {
                    let generation = self.generation;
                    let reuse = self.free_services.iter().position(|&(_, g)| g < generation);
                    let id = match reuse {
                        Some(k) => self.free_services.swap_remove(k).0,
                        None if self.next_service < u32::from(u16::MAX) => {
                            self.next_service += 1;
                            (self.next_service - 1) as u16
                        }
                        None => return Err(EditError::TooManyServices),
                    };
                    let mut dests: Vec<DestEntry> = cfg
                        .servers
                        .iter()
                        .map(|s| self.new_dest(s, cfg.forward))
                        .collect();
                    if let Some(a) = cfg.sorry_server {
                        dests.push(self.new_sorry(a, cfg.forward));
                    }
                    let version = self.bump();
                    self.services.push(ServiceEntry {
                        id,
                        cfg: cfg.clone(),
                        dests,
                        version,
                        removed: false,
                    });
                    changed.push(cfg.name.clone());
                }
                Some(i) => {
                    if self.services[i].cfg == *cfg && !self.services[i].removed {
                        continue;
                    }
                    let mut dests = Vec::with_capacity(cfg.servers.len());
                    for s in &cfg.servers {
                        let existing = self.services[i]
                            .dests
                            .iter()
                            .find(|d| d.addr == s.addr)
                            .cloned();
                        let d = match existing {
                            Some(mut d) => {
                                // A former sorry server may come back as a realserver.
                                d.sorry = false;
                                d.weight = s.weight;
                                d.state.set_weight(s.weight);
                                // Back from draining: as new to a checked service, pending
                                // before it is open again.
                                if d.removed() && s.health.is_some() {
                                    d.state.health_pending();
                                }
                                d.state.reinstate();
                                if (d.state.upper(), d.state.lower()) != (s.upper, s.lower) {
                                    d.state.set_thresholds(s.upper, s.lower);
                                }
                                // Its connections follow a change of method too (see
                                // docs/FORWARDING.md).
                                d.forward = s.forward.unwrap_or(cfg.forward);
                                d
                            }
                            None => self.new_dest(s, cfg.forward),
                        };
                        dests.push(d);
                    }
                    if let Some(a) = cfg.sorry_server {
                        let existing = self.services[i]
                            .dests
                            .iter()
                            .find(|d| d.addr == a && !dests.iter().any(|x| x.addr == a))
                            .cloned();
                        let d = match existing {
                            Some(d) if d.sorry && !d.removed() => d,
                            Some(mut d) => {
                                // Back from draining, or a former realserver: standby.
                                d.sorry = true;
                                d.forward = cfg.forward;
                                d.weight = 0;
                                d.state.set_weight(0);
                                d.state.reinstate();
                                d
                            }
                            None => self.new_sorry(a, cfg.forward),
                        };
                        dests.push(d);
                    }
                    for old in &self.services[i].dests {
                        if !dests.iter().any(|d| d.addr == old.addr) {
                            old.state.remove();
                            dests.push(old.clone());
                        }
                    }
                    let version = self.bump();
                    let e = &mut self.services[i];
                    e.cfg = cfg.clone();
                    e.dests = dests;
                    e.version = version;
                    e.removed = false;
                    changed.push(cfg.name.clone());
                }
            }
        }
        Ok(changed)
    }

    /// Turns each service's sorry server on (weight 1) when none of its realservers can take
    /// a new flow (each removed, held down by its check, or at weight 0), and off again when
    /// one can, as keepalived adds and removes its `sorry_server`. Returns the services whose
    /// sorry server changed, with its new state. Weights are read by the queues at each new
    /// flow: no snapshot is needed.
    pub fn update_sorry(&self) -> Vec<(String, SocketAddr, bool)> {
        let mut out = Vec::new();
        for e in self.services() {
            let Some(sorry) = e.dests.iter().find(|d| d.sorry && !d.removed()) else {
                continue;
            };
            let serving = e.dests.iter().any(|d| {
                !d.sorry
                    && d.state.weight() > 0
                    && d.state.flags() & (DEST_F_REMOVED | DEST_F_HEALTH) == 0
            });
            let on = sorry.state.weight() > 0;
            if on == serving {
                sorry.state.set_weight(u32::from(!serving));
                out.push((e.cfg.name.clone(), sorry.addr, !serving));
            }
        }
        out
    }

    /// Sets the weight a dynamic script check gave a realserver (keepalived `misc_dynamic`),
    /// in the shared state only: the configured weight stays what `save` writes and a reload
    /// restores (until the next check). True if it changed.
    pub fn set_dynamic_weight(&self, svc: &str, addr: SocketAddr, weight: u32) -> bool {
        let weight = weight.min(MAX_WEIGHT);
        let Some(d) = self.service(svc).and_then(|e| {
            e.dests
                .iter()
                .find(|d| d.addr == addr && !d.sorry && !d.removed())
        }) else {
            return false;
        };
        if d.state.weight() == weight {
            return false;
        }
        d.state.set_weight(weight);
        true
    }

    /// Forgets draining realservers and services with no connections left; a forgotten
    /// service's slot becomes free for a new service (after the next snapshot; see
    /// [`Registry::take_freed`]).
    pub fn collect_garbage(&mut self) -> bool {
        let mut any = false;
        let generation = self.generation;
        for e in self.services.iter_mut() {
            let before = e.dests.len();
            let (free, freed) = (&mut self.free_dests, &mut self.freed_dests);
            e.dests.retain(|d| {
                let gone = d.removed()
                    && d.state.counters.active() == 0
                    && d.state.counters.inactive() == 0;
                if gone {
                    free.push((d.id, generation));
                    freed.push(d.id);
                }
                !gone
            });
            if e.dests.len() != before {
                e.version += 1;
                any = true;
            }
        }
        let (free, freed) = (&mut self.free_services, &mut self.freed);
        self.services.retain(|e| {
            let gone = e.removed && e.dests.is_empty();
            if gone {
                free.push((e.id, generation));
                freed.push(e.id);
                any = true;
            }
            !gone
        });
        any
    }

    /// The service slots and realserver ids freed by [`Registry::collect_garbage`] since
    /// the last call: their counters in the queues go on from where the gone object left
    /// them, so what shows them must start a new occupant from there.
    pub fn take_freed(&mut self) -> (Vec<u16>, Vec<u32>) {
        (
            std::mem::take(&mut self.freed),
            std::mem::take(&mut self.freed_dests),
        )
    }

    /// Realserver ids in use or free for reuse: what the queues' per-realserver vectors span.
    pub fn dest_ids_used(&self) -> usize {
        self.next_dest as usize
    }

    /// Service slots in use or free for reuse: what the queues' per-service vectors span.
    pub fn service_slots_used(&self) -> usize {
        self.next_service as usize
    }

    /// The snapshot for the queues (a new generation each call), with built-in schedulers
    /// only.
    pub fn snapshot(&mut self) -> Snapshot {
        self.snapshot_with(&mut |_| ServicePlugins::default())
    }

    /// The snapshot for the queues, `plugin` giving each service its prepared plugins
    /// (scheduler, defenses, persistence).
    pub fn snapshot_with(
        &mut self,
        plugin: &mut dyn FnMut(&ServiceEntry) -> ServicePlugins,
    ) -> Snapshot {
        self.generation += 1;
        let services = self
            .services
            .iter()
            .filter(|e| !(e.removed && e.dests.is_empty()))
            .filter(|e| e.cfg.vip.port() != 0)
            .map(|e| {
                let p = plugin(e);
                Service {
                    id: e.id,
                    name: e.cfg.name.as_str().into(),
                    proto: e.cfg.proto,
                    vip: e.cfg.vip,
                    forward: e.cfg.forward,
                    tunnel: e.cfg.tunnel,
                    scheduler: e.cfg.scheduler.as_str().into(),
                    timeouts: e.cfg.timeouts,
                    dests: e
                        .dests
                        .iter()
                        .map(|d| Dest {
                            id: d.id,
                            svc: e.id,
                            addr: d.addr,
                            forward: d.forward,
                            state: d.state.clone(),
                        })
                        .collect(),
                    version: e.version,
                    plugin: p.sched,
                    defenses: p.defenses,
                    persist_timeout: e.cfg.persistence.as_ref().map_or(0, |p| p.timeout_secs),
                    udp_unreplied: e.cfg.udp_unreplied,
                    syn_proxy: e.cfg.syn_proxy,
                    max_conns: e.cfg.max_conns,
                    sloppy: e.cfg.sloppy,
                    persistence: p.persistence,
                }
            })
            .collect();
        let mut snap = Snapshot::new(self.generation, services);
        snap.set_tunnel_source(self.tunnel_source.unwrap_or(Ipv4Addr::UNSPECIFIED));
        if self.tunnel_mtu > 0 {
            snap.set_tunnel_mtu(self.tunnel_mtu);
        }
        snap.set_tunnel_source6(self.tunnel_source6.unwrap_or(Ipv6Addr::UNSPECIFIED));
        if self.tunnel_mtu6 > 0 {
            snap.set_tunnel_mtu6(self.tunnel_mtu6);
        }
        snap
    }

    /// What an edit may change in the realservers' shared state (weight, registry-owned
    /// flags, thresholds): a copy of the registry shares that state, so an edit tried on a
    /// copy that then fails must put it back with [`Registry::restore`].
    pub fn save_shared(&self) -> SavedShared {
        let mut v = Vec::new();
        for e in &self.services {
            for d in &e.dests {
                v.push((d.state.clone(), d.state.operator()));
            }
        }
        SavedShared(v)
    }

    /// Puts back what [`Registry::save_shared`] saved. Flags the health checkers own
    /// (`DEST_F_DOWN`, `DEST_F_HEALTH_REMOVED`) and the overload flag are left as they are now.
    pub fn restore(saved: SavedShared) {
        for (state, operator) in saved.0 {
            state.restore_operator(operator);
        }
    }

    /// Live (not draining) services.
    pub fn services(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.services.iter().filter(|e| !e.removed)
    }

    /// Every service including draining ones.
    pub fn all_services(&self) -> &[ServiceEntry] {
        &self.services
    }

    /// The live service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceEntry> {
        self.services().find(|e| e.cfg.name == name)
    }

    fn service_mut(&mut self, name: &str) -> Result<&mut ServiceEntry, EditError> {
        self.services
            .iter_mut()
            .find(|e| !e.removed && e.cfg.name == name)
            .ok_or_else(|| EditError::UnknownService(name.to_string()))
    }

    /// The configuration the registry now amounts to (for `reload` diffs after edits).
    pub fn service_configs(&self) -> Vec<ServiceConfig> {
        self.services().map(|e| e.cfg.clone()).collect()
    }

    /// The realservers that should be health-checked now: those of live services that are
    /// not draining and have a check.
    pub fn health_wants(&self) -> Vec<crate::health::Want> {
        let mut out = Vec::new();
        for e in self.services() {
            for s in &e.cfg.servers {
                let Some(cfg) = &s.health else { continue };
                let Some(d) = e.dests.iter().find(|d| d.addr == s.addr && !d.removed()) else {
                    continue;
                };
                out.push(crate::health::Want {
                    service: e.cfg.name.clone(),
                    server: s.addr,
                    dest: d.state.clone(),
                    cfg: cfg.clone(),
                    notify: e.cfg.notify.clone(),
                });
            }
        }
        out
    }

    /// Adds a realserver (with its weight and connection thresholds) to a service.
    pub fn add_server(&mut self, svc: &str, server: ServerConfig) -> Result<(), EditError> {
        let addr = server.addr;
        if check_weight(server.weight).is_none() {
            return Err(EditError::BadWeight(server.weight.into()));
        }
        check_thresholds(server.upper, server.lower).map_err(EditError::BadThresholds)?;
        let e = self.service_mut(svc)?;
        if e.cfg.servers.iter().any(|s| s.addr == addr) {
            return Err(EditError::DuplicateServer(svc.to_string(), addr));
        }
        // The config's rules for one-way methods.
        server
            .forward
            .unwrap_or(e.cfg.forward)
            .check_server(addr, e.cfg.vip, e.cfg.syn_proxy)
            .map_err(EditError::Forward)?;
        let mut cfg = e.cfg.clone();
        let mut server = server;
        if server.health.is_none() {
            server.health = cfg.health.clone();
        }
        cfg.servers.push(server);
        let mut all = self.service_configs();
        if let Some(c) = all.iter_mut().find(|c| c.name == svc) {
            *c = cfg;
        }
        self.apply(&all).map(|_| ())
    }

    /// Removes a realserver from a service (its connections drain).
    pub fn remove_server(&mut self, svc: &str, addr: SocketAddr) -> Result<(), EditError> {
        let e = self.service_mut(svc)?;
        if !e.cfg.servers.iter().any(|s| s.addr == addr) {
            return Err(EditError::UnknownServer(svc.to_string(), addr));
        }
        let mut all = self.service_configs();
        if let Some(c) = all.iter_mut().find(|c| c.name == svc) {
            c.servers.retain(|s| s.addr != addr);
        }
        self.apply(&all).map(|_| ())
    }

    /// Sets a realserver's weight (0 quiesces it).
    pub fn set_weight(
        &mut self,
        svc: &str,
        addr: SocketAddr,
        weight: u64,
    ) -> Result<(), EditError> {
        let weight = check_weight(weight).ok_or(EditError::BadWeight(weight))?;
        let e = self.service_mut(svc)?;
        let Some(s) = e.cfg.servers.iter_mut().find(|s| s.addr == addr) else {
            return Err(EditError::UnknownServer(svc.to_string(), addr));
        };
        s.weight = weight;
        if let Some(d) = e.dests.iter_mut().find(|d| d.addr == addr) {
            d.weight = weight;
            d.state.set_weight(weight);
        }
        Ok(())
    }

    /// Adds a service.
    pub fn add_service(&mut self, cfg: ServiceConfig) -> Result<(), EditError> {
        if self.service(&cfg.name).is_some() {
            return Err(EditError::DuplicateService(cfg.name));
        }
        if let Some(o) = self
            .services()
            .find(|e| e.cfg.proto == cfg.proto && e.cfg.vip == cfg.vip)
        {
            return Err(EditError::VipInUse(o.cfg.name.clone()));
        }
        let mut all = self.service_configs();
        all.push(cfg);
        self.apply(&all).map(|_| ())
    }

    /// Switches a service's scheduler (a built-in or a loaded plugin's name).
    pub fn set_scheduler(&mut self, svc: &str, scheduler: &str) -> Result<(), EditError> {
        if self.service_mut(svc)?.cfg.scheduler == scheduler {
            return Ok(());
        }
        let v = self.bump();
        let e = self.service_mut(svc)?;
        e.cfg.scheduler = scheduler.to_string();
        e.version = v;
        Ok(())
    }

    /// Replaces a service's definition (same name).
    pub fn edit_service(&mut self, cfg: ServiceConfig) -> Result<(), EditError> {
        self.service_mut(&cfg.name)?;
        if let Some(o) = self
            .services()
            .find(|e| e.cfg.name != cfg.name && e.cfg.proto == cfg.proto && e.cfg.vip == cfg.vip)
        {
            return Err(EditError::VipInUse(o.cfg.name.clone()));
        }
        let mut all = self.service_configs();
        if let Some(c) = all.iter_mut().find(|c| c.name == cfg.name) {
            *c = cfg;
        }
        self.apply(&all).map(|_| ())
    }

    /// Makes the connections of removed realservers end on their next packet instead of
    /// draining (`--expire`, IPVS's `expire_nodest_conn` for one removal): every realserver
    /// of the draining service `svc`, or, with `addr`, that removed realserver of the live
    /// service `svc`. Returns how many realservers were marked.
    pub fn expire_removed(&mut self, svc: &str, addr: Option<SocketAddr>) -> usize {
        let mut n = 0;
        for e in self.services.iter().filter(|e| e.cfg.name == svc) {
            if addr.is_none() != e.removed {
                continue;
            }
            for d in e.dests.iter().filter(|d| addr.is_none_or(|a| a == d.addr)) {
                if d.removed() {
                    d.state.expire();
                    n += 1;
                }
            }
        }
        n
    }

    /// Removes a service (its connections drain).
    pub fn remove_service(&mut self, name: &str) -> Result<(), EditError> {
        self.service_mut(name)?;
        let all: Vec<_> = self
            .service_configs()
            .into_iter()
            .filter(|c| c.name != name)
            .collect();
        self.apply(&all).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_str;
    use crate::dataplane::service::DEST_F_DOWN;

    const CFG: &str = r#"
[[service]]
name = "web"
vip = "10.77.100.100:80"
[[service.server]]
addr = "10.77.1.1:8080"
[[service.server]]
addr = "10.77.1.2:8080"
"#;

    fn cfg(text: &str) -> Vec<ServiceConfig> {
        from_str(text, "t.toml").unwrap().services
    }

    #[test]
    fn an_edit_tried_on_a_copy_is_undone_in_the_shared_state() {
        let live = Registry::new(&cfg(CFG)).unwrap();
        let state = |addr: &str| {
            live.service("web")
                .unwrap()
                .dests
                .iter()
                .find(|d| d.addr == addr.parse().unwrap())
                .unwrap()
                .state
                .clone()
        };
        let (a, b) = (state("10.77.1.1:8080"), state("10.77.1.2:8080"));
        b.health_pending(); // a health checker's bit
        let saved = live.save_shared();
        // The copy drops 10.77.1.1, reweights and sets thresholds on 10.77.1.2.
        let mut trial = live.clone();
        let edited = CFG
            .replace("addr = \"10.77.1.1:8080\"\n", "addr = \"10.77.1.3:8080\"\n")
            .replace(
                "addr = \"10.77.1.2:8080\"",
                "addr = \"10.77.1.2:8080\"\nweight = 9\nupper = 10\nlower = 5",
            );
        trial.apply(&cfg(&edited)).unwrap();
        assert!(
            a.flags() & DEST_F_REMOVED != 0,
            "the copy's edit reached the shared state"
        );
        assert_eq!((b.weight(), b.upper(), b.lower()), (9, 10, 5));
        // The edit failed later on: the live registry's realservers are as they were.
        Registry::restore(saved);
        assert_eq!(a.flags(), 0);
        assert_eq!(b.flags(), DEST_F_DOWN, "the checker's bit is kept");
        assert_eq!((b.weight(), b.upper(), b.lower()), (1, 0, 0));
    }

    #[test]
    fn a_reload_that_moves_a_service_drains_the_old_address() {
        let mut r = Registry::new(&cfg(CFG)).unwrap();
        let old = r.service("web").unwrap().dests[0].state.clone();
        let moved = CFG.replace("10.77.100.100:80", "10.77.100.101:80");
        assert_eq!(r.apply(&cfg(&moved)).unwrap(), vec!["web".to_string()]);
        let snap = r.snapshot();
        let tcp = 6;
        let at = |ip: &str| snap.service_at(tcp, ip.parse().unwrap(), 80);
        let (a, b) = (at("10.77.100.100").unwrap(), at("10.77.100.101").unwrap());
        assert_ne!(
            a, b,
            "two services: the old address still matches its connections"
        );
        assert!(
            old.flags() & DEST_F_REMOVED != 0,
            "the old address's servers drain"
        );
        let live = r.service("web").unwrap();
        assert_eq!(live.cfg.vip, "10.77.100.101:80".parse().unwrap());
        assert!(live.dests.iter().all(|d| !d.removed()));
        // Moving back revives the draining service with its connections.
        assert_eq!(r.apply(&cfg(CFG)).unwrap(), vec!["web".to_string()]);
        assert_eq!(r.service("web").unwrap().id, a_id(&r, "10.77.100.100:80"));
        assert_eq!(old.flags() & DEST_F_REMOVED, 0);
    }

    fn a_id(r: &Registry, vip: &str) -> u16 {
        let vip: SocketAddr = vip.parse().unwrap();
        r.all_services()
            .iter()
            .find(|e| e.cfg.vip == vip)
            .unwrap()
            .id
    }

    #[test]
    fn slots_are_stable_across_reloads() {
        let mut r = Registry::new(&cfg(CFG)).unwrap();
        let s1 = r.snapshot();
        let web = s1
            .service_at(6, "10.77.100.100".parse().unwrap(), 80)
            .unwrap();
        let ids: Vec<u32> = s1
            .service(web)
            .unwrap()
            .dests
            .iter()
            .map(|d| d.id)
            .collect();
        // Reload with a server added and one removed.
        let text = CFG.replace("10.77.1.1:8080", "10.77.1.3:8080");
        let changed = r.apply(&cfg(&text)).unwrap();
        assert_eq!(changed, vec!["web".to_string()]);
        let s2 = r.snapshot();
        assert!(s2.generation > s1.generation);
        let svc = s2.service(web).unwrap();
        // .2 kept its slot; .3 is new; .1 drains.
        let by_addr = |a: &str| svc.dests.iter().find(|d| d.addr.to_string() == a).unwrap();
        assert_eq!(by_addr("10.77.1.2:8080").id, ids[1]);
        assert!(!ids.contains(&by_addr("10.77.1.3:8080").id));
        assert!(by_addr("10.77.1.3:8080").state.schedulable());
        assert!(!by_addr("10.77.1.1:8080").state.schedulable());
        // With no connections, the drained server goes away.
        assert!(r.collect_garbage());
        assert_eq!(r.snapshot().service(web).unwrap().dests.len(), 2);
        // An unchanged reload changes nothing.
        assert!(r.apply(&cfg(&text)).unwrap().is_empty());
    }

    /// Issue 11: service slots were never freed, so after 65,535 adds `TooManyServices` held
    /// until restart. A drained, forgotten service's slot is reused, once a snapshot without
    /// it has gone out.
    #[test]
    fn service_slots_of_forgotten_services_are_reused() {
        let mut r = Registry::new(&cfg(CFG)).unwrap();
        let base = cfg(CFG);
        let api = cfg(&CFG
            .replace("\"web\"", "\"api\"")
            .replace(".100:80", ".101:80"));
        let mut ids = std::collections::BTreeSet::new();
        for round in 0..70_000 {
            let mut all = base.clone();
            all.extend(api.iter().cloned());
            r.apply(&all)
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            ids.insert(r.service("api").unwrap().id);
            r.apply(&base).unwrap();
            // No connections: forgotten at once; the slot is free after the next snapshot.
            assert!(r.collect_garbage());
            let (services, dests) = r.take_freed();
            assert_eq!((services.len(), dests.len()), (1, 2));
            r.snapshot();
            if round == 100 {
                assert_eq!(ids.len(), 1, "one slot for api, reused: {ids:?}");
            }
        }
        assert_eq!(ids.len(), 1);
        assert!(r.service_slots_used() <= 2);
        // The realserver ids too (web's two, api's two, reused).
        assert!(r.dest_ids_used() <= 4, "{} ids", r.dest_ids_used());
        // Not before a snapshot without it went out.
        let mut all = base.clone();
        all.extend(api.iter().cloned());
        r.apply(&all).unwrap();
        let first = r.service("api").unwrap().id;
        r.apply(&base).unwrap();
        r.collect_garbage();
        r.apply(&all).unwrap();
        assert_ne!(
            r.service("api").unwrap().id,
            first,
            "reused before a snapshot"
        );
    }

    #[test]
    fn removed_service_drains_then_disappears() {
        let mut r = Registry::new(&cfg(CFG)).unwrap();
        let d = r.service("web").unwrap().dests[0].state.clone();
        d.counters.bind(true);
        r.apply(&[]).unwrap();
        let s = r.snapshot();
        let web = s
            .service_at(6, "10.77.100.100".parse().unwrap(), 80)
            .expect("draining service keeps its VIP");
        assert!(s
            .service(web)
            .unwrap()
            .dests
            .iter()
            .all(|d| !d.state.schedulable()));
        r.collect_garbage();
        assert!(r
            .snapshot()
            .service_at(6, "10.77.100.100".parse().unwrap(), 80)
            .is_some());
        d.counters.unbind(true);
        r.collect_garbage();
        assert!(r
            .snapshot()
            .service_at(6, "10.77.100.100".parse().unwrap(), 80)
            .is_none());
    }

    #[test]
    fn checked_servers_start_down_and_only_live_ones_are_wanted() {
        use crate::dataplane::service::DEST_F_HEALTH_REMOVED;
        let text = CFG.replace(
            "vip = \"10.77.100.100:80\"",
            "vip = \"10.77.100.100:80\"\nhealth = { check = \"tcp\" }",
        );
        let mut r = Registry::new(&cfg(&text)).unwrap();
        let a: SocketAddr = "10.77.1.1:8080".parse().unwrap();
        let n: SocketAddr = "10.77.1.9:8080".parse().unwrap();
        let state = |r: &Registry, x| {
            r.all_services()[0]
                .dests
                .iter()
                .find(|d| d.addr == x)
                .unwrap()
                .state
                .clone()
        };
        // New to the director: pending (down) before any snapshot is built.
        assert_eq!(state(&r, a).flags(), DEST_F_DOWN);
        assert_eq!(r.health_wants().len(), 2);
        // The checker brought it up; a connection is open; the operator removes it.
        state(&r, a).health_up();
        state(&r, a).counters.bind(true);
        r.remove_server("web", a).unwrap();
        assert_eq!(state(&r, a).flags(), DEST_F_REMOVED);
        assert_eq!(
            r.health_wants().len(),
            1,
            "a draining server is not checked"
        );
        // Re-added while draining: the same slot, pending again.
        r.add_server("web", ServerConfig::new(a, 1)).unwrap();
        assert_eq!(state(&r, a).flags(), DEST_F_DOWN);
        // Added at runtime: the service's check, pending.
        r.add_server("web", ServerConfig::new(n, 1)).unwrap();
        let w = r.health_wants();
        assert_eq!(w.len(), 3);
        assert!(w
            .iter()
            .any(|w| w.server == n && w.cfg.kind == crate::config::CheckKind::Tcp));
        assert_eq!(state(&r, n).flags(), DEST_F_DOWN);
        // The registry never sets or clears the checkers' bits otherwise.
        state(&r, n).health_down(true);
        r.set_weight("web", n, 4).unwrap();
        let mut reload = r.service_configs();
        for s in reload[0].servers.iter_mut() {
            s.weight = 7;
        }
        assert_eq!(r.apply(&reload).unwrap(), vec!["web".to_string()]);
        assert_eq!(state(&r, n).weight(), 7);
        assert_eq!(
            state(&r, n).flags() & (DEST_F_DOWN | DEST_F_HEALTH_REMOVED),
            DEST_F_DOWN | DEST_F_HEALTH_REMOVED
        );
        // No check configured: created ready, nothing wanted.
        let plain = Registry::new(&cfg(CFG)).unwrap();
        assert_eq!(state(&plain, a).flags(), 0);
        assert!(plain.health_wants().is_empty());
    }

    #[test]
    fn edits_check_their_input() {
        let mut r = Registry::new(&cfg(CFG)).unwrap();
        let a: SocketAddr = "10.77.1.1:8080".parse().unwrap();
        let n: SocketAddr = "10.77.1.9:8080".parse().unwrap();
        assert_eq!(
            r.add_server("nope", ServerConfig::new(n, 1)),
            Err(EditError::UnknownService("nope".into()))
        );
        assert_eq!(
            r.add_server("web", ServerConfig::new(a, 1)),
            Err(EditError::DuplicateServer("web".into(), a))
        );
        let bad = ServerConfig {
            upper: 10,
            lower: 20,
            ..ServerConfig::new(n, 1)
        };
        assert!(matches!(
            r.add_server("web", bad),
            Err(EditError::BadThresholds(m)) if m.contains("above the upper threshold")
        ));
        assert!(r.service("web").unwrap().dests.iter().all(|d| d.addr != n));
        assert_eq!(
            r.set_weight("web", a, 70_000),
            Err(EditError::BadWeight(70_000))
        );
        assert_eq!(
            r.remove_server("web", n),
            Err(EditError::UnknownServer("web".into(), n))
        );
        r.add_server(
            "web",
            ServerConfig {
                upper: 100,
                lower: 50,
                ..ServerConfig::new(n, 5)
            },
        )
        .unwrap();
        let st = &r
            .service("web")
            .unwrap()
            .dests
            .iter()
            .find(|d| d.addr == n)
            .unwrap()
            .state;
        assert_eq!((st.upper(), st.lower()), (100, 50));
        r.set_weight("web", n, 0).unwrap();
        let e = r.service("web").unwrap();
        let d = e.dests.iter().find(|d| d.addr == n).unwrap();
        assert_eq!(d.state.weight(), 0);
        r.remove_server("web", a).unwrap();
        assert!(r
            .service("web")
            .unwrap()
            .dests
            .iter()
            .find(|d| d.addr == a)
            .unwrap()
            .removed());
        let mut dup = r.service("web").unwrap().cfg.clone();
        assert_eq!(
            r.add_service(dup.clone()),
            Err(EditError::DuplicateService("web".into()))
        );
        dup.name = "web2".into();
        assert_eq!(r.add_service(dup), Err(EditError::VipInUse("web".into())));
    }

    #[test]
    fn a_sorry_server_serves_only_while_no_realserver_can() {
        let mut services = cfg(CFG);
        services[0].sorry_server = Some("10.77.9.9:80".parse().unwrap());
        let mut r = Registry::new(&services).unwrap();
        let web = |r: &Registry| r.service("web").unwrap().dests.clone();
        let sorry = |r: &Registry| web(r).into_iter().find(|d| d.sorry).unwrap();
        assert_eq!(web(&r).len(), 3);
        assert_eq!(sorry(&r).addr, "10.77.9.9:80".parse().unwrap());
        assert_eq!(sorry(&r).state.weight(), 0, "standby");
        assert!(r.update_sorry().is_empty());
        assert!(r.health_wants().iter().all(|w| !w
            .server
            .ip()
            .to_string()
            .starts_with("10.77.9.")));
        // Both realservers quiesced by the operator: the sorry server takes over.
        r.set_weight("web", "10.77.1.1:8080".parse().unwrap(), 0)
            .unwrap();
        assert!(r.update_sorry().is_empty(), "one realserver still serves");
        r.set_weight("web", "10.77.1.2:8080".parse().unwrap(), 0)
            .unwrap();
        assert_eq!(
            r.update_sorry(),
            [("web".to_string(), "10.77.9.9:80".parse().unwrap(), true)]
        );
        assert_eq!(sorry(&r).state.weight(), 1);
        assert!(r.update_sorry().is_empty(), "no change, no report");
        // One back: standby again.
        r.set_weight("web", "10.77.1.1:8080".parse().unwrap(), 2)
            .unwrap();
        assert!(!r.update_sorry()[0].2);
        assert_eq!(sorry(&r).state.weight(), 0);
        // A health check holding the last one down counts as down.
        web(&r)[0].state.health_down(false);
        assert!(r.update_sorry()[0].2);
        web(&r)[0].state.health_up();
        assert!(!r.update_sorry()[0].2);
        // A reload without the sorry server drains it; with another address, a new one.
        let id = sorry(&r).id;
        let mut again = services.clone();
        again[0].servers[0].weight = 2;
        again[0].sorry_server = Some("10.77.9.10:80".parse().unwrap());
        r.apply(&again).unwrap();
        let d = web(&r);
        assert!(
            d.iter().any(|x| x.id == id && x.removed()),
            "the old one drains"
        );
        let new = d.iter().find(|x| x.sorry && !x.removed()).unwrap();
        assert_eq!(new.addr, "10.77.9.10:80".parse().unwrap());
        assert_eq!(r.service_configs()[0].sorry_server, again[0].sorry_server);
        again[0].sorry_server = None;
        r.apply(&again).unwrap();
        assert!(web(&r).iter().all(|x| !x.sorry || x.removed()));
    }
}
