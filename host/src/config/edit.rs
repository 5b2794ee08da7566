//! A runtime change to a service, one type from the command line to the registry:
//! [`ServiceEdit`] is the options of `ringvs service add|edit` (clap), the fields of the admin
//! protocol's `service-add` and `service-edit` (serde, flattened into the request) and what
//! [`new_service`] and [`edit_service`] validate and apply, as a `[[service]]` of the config
//! file would be. A new option is a field here and a line in those two functions.

use super::{raw, ConfigError, HealthTable, Quantity, ServiceConfig, Validator};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// A runtime change to a service, in the config file's vocabulary: each field given
/// replaces the current value; `timeouts` replaces the states it names and keeps the others.
/// On the command line its fields are `ringvs service add|edit` options; on the admin socket
/// they are the fields of `service-add` and `service-edit` (the same names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct ServiceEdit {
    /// Virtual address:port (ipvsadm -t/-u). Required for a new service; on edit it must be
    /// the current one: a service's virtual address cannot change (add a new service, then
    /// remove this one).
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(default)]
    pub vip: Option<String>,
    /// Protocol: tcp (default) or udp (ipvsadm -t or -u); on edit it must be the current
    /// one, like --vip.
    #[arg(long, value_name = "PROTO")]
    #[serde(default)]
    pub proto: Option<String>,
    /// Forwarding method: nat (LVS-NAT, ipvsadm -m).
    #[arg(long, value_name = "METHOD")]
    #[serde(default)]
    pub forward: Option<String>,
    /// Scheduler: a built-in (rr, wlc) or a loaded plugin's name (ipvsadm -s).
    #[arg(long, value_name = "NAME")]
    #[serde(default)]
    pub scheduler: Option<String>,
    /// A state's timeout, e.g. established=900s, fin_wait=2m, udp=300s (repeatable; other
    /// states keep theirs; ipvsadm --set sets these director-wide). On the admin socket an
    /// object, state → duration (`"900s"` or seconds).
    #[arg(long = "timeout", value_name = "STATE=DURATION", value_parser = state_timeout)]
    #[serde(default, with = "timeouts_map")]
    pub timeouts: Vec<(String, Quantity)>,
    /// A defense plugin, in the order they apply (repeatable; on edit, replaces the list; on
    /// the admin socket `[]` removes every defense).
    #[arg(long = "defense", value_name = "PLUGIN")]
    #[serde(default)]
    pub defense: Option<Vec<String>>,
    /// Health check of the service's realservers, the keys of the config's `health` table:
    /// e.g. 'check = "http", path = "/health", interval = "1s", fall = 3' (keepalived's
    /// HTTP_GET; see docs/HEALTH.md). On edit, replaces the check, also for the servers
    /// that used the service's.
    #[arg(long, value_name = "KEYS", value_parser = health_keys)]
    #[serde(default)]
    pub health: Option<HealthTable>,
    /// When the SYN proxy opens the service's connections: auto (under pressure, the
    /// default), on or off (TCP only; see docs/DEFENSE.md).
    #[arg(long, value_name = "auto|on|off")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_proxy: Option<String>,
    /// Most connections the service may hold; 0 for no limit (enforced per queue, each
    /// its share).
    #[arg(long, value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_conns: Option<u32>,
    /// Stop checking the service's realservers (overrides included); down servers serve
    /// again. Edit only; not with --health.
    #[arg(long, conflicts_with = "health")]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_health: bool,
    /// Make the service persistent (ipvsadm -p [TIMEOUT]): a client's new connections go
    /// to the realserver of its earlier ones until TIMEOUT (default 300s) after the last
    /// ended. With the catalogue's persist-netmask unless --persistence names another
    /// plugin; on edit, changes only the timeout of a persistent service.
    #[arg(short = 'p', long = "persistent", value_name = "TIMEOUT", num_args = 0..=1,
          default_missing_value = "300", value_parser = quantity)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<Quantity>,
    /// Persistence granularity (ipvsadm -M): clients in one network of this mask share a
    /// realserver, e.g. 255.255.255.0 or 24 (default 255.255.255.255: per client). Makes
    /// the service persistent if it is not.
    #[arg(short = 'M', long = "netmask", value_name = "MASK")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netmask: Option<String>,
    /// The persistence plugin (default persist-netmask): a catalogue name or a loaded
    /// plugin's. Makes the service persistent if it is not.
    #[arg(long = "persistence", value_name = "PLUGIN")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<String>,
    /// A sorry server (keepalived's sorry_server): new flows go to it while no realserver
    /// can take them (all down, removed or at weight 0). A bare address takes the VIP's port.
    #[arg(long, value_name = "ADDR[:PORT]")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sorry_server: Option<String>,
    /// No sorry server any more (edit only).
    #[arg(long, conflicts_with = "sorry_server")]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_sorry_server: bool,
    /// No more persistence (edit only; the templates expire on their own).
    #[arg(long, conflicts_with_all = ["persistent", "netmask", "persistence"])]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_persistent: bool,
}

impl ServiceEdit {
    /// The persistence table the edit asks for on top of `base` (the service's now), or
    /// `None` if it does not touch persistence. `Some(None)`: no persistence.
    fn persistence_table(
        &self,
        base: Option<&super::PersistenceConfig>,
    ) -> Option<Option<raw::Persistence>> {
        if self.no_persistent {
            return Some(None);
        }
        if self.persistent.is_none() && self.netmask.is_none() && self.persistence.is_none() {
            return None;
        }
        let plugin = self
            .persistence
            .clone()
            .or_else(|| base.map(|b| b.plugin.clone()))
            .unwrap_or_else(|| super::DEFAULT_PERSISTENCE_PLUGIN.to_string());
        // Another plugin starts from an empty config; the same one keeps its keys.
        let mut config = match base {
            Some(b) if b.plugin == plugin => b.config.clone(),
            _ => serde_json::Value::Object(Default::default()),
        };
        if let (Some(m), Some(obj)) = (&self.netmask, config.as_object_mut()) {
            obj.insert("netmask".into(), serde_json::Value::String(m.clone()));
        }
        let timeout = self
            .persistent
            .clone()
            .or_else(|| base.map(|b| Quantity::Num(u64::from(b.timeout_secs))));
        Some(Some(raw::Persistence {
            plugin,
            timeout,
            config: Some(config),
        }))
    }
}

/// A duration for `--persistent`: seconds or a number with a unit.
fn quantity(s: &str) -> Result<Quantity, String> {
    Ok(Quantity::Text(s.trim().to_string()))
}

/// `STATE=DURATION` for `--timeout`.
fn state_timeout(s: &str) -> Result<(String, Quantity), String> {
    let (state, d) = s
        .split_once('=')
        .ok_or_else(|| format!("expected STATE=DURATION (e.g. established=900s), found {s:?}"))?;
    Ok((
        state.trim().to_string(),
        Quantity::Text(d.trim().to_string()),
    ))
}

/// `--health 'check = "tcp", interval = "1s"'`: the inside of a TOML inline table.
fn health_keys(s: &str) -> Result<HealthTable, String> {
    #[derive(serde::Deserialize)]
    struct Wrap {
        health: HealthTable,
    }
    toml::from_str::<Wrap>(&format!("health = {{ {s} }}"))
        .map(|w| w.health)
        .map_err(|e| {
            format!(
                "expected the keys of a health table, e.g. 'check = \"http\", path = \"/\"': {}",
                e.message()
            )
        })
}

/// `timeouts` on the wire: a JSON object, state → duration (the last of a state given twice
/// counts, as in a map).
mod timeouts_map {
    use super::Quantity;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(v: &[(String, Quantity)], s: S) -> Result<S::Ok, S::Error> {
        let map: BTreeMap<&String, &Quantity> = v.iter().map(|(k, q)| (k, q)).collect();
        s.collect_map(map)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, Quantity)>, D::Error> {
        BTreeMap::<String, Quantity>::deserialize(d).map(|m| m.into_iter().collect())
    }
}

/// A new service from a runtime request, validated as a `[[service]]` of the config file
/// would be, with no realservers. `is_plugin` tells which names are loaded plugins. Errors
/// name the service and the field.
pub fn new_service(
    name: &str,
    edit: ServiceEdit,
    is_plugin: &dyn Fn(&str) -> bool,
) -> Result<ServiceConfig, ConfigError> {
    let fig = Figment::new();
    let v = Validator {
        fig: &fig,
        file_origin: format!("service {name:?}"),
        base: None,
    };
    let persistence = edit.persistence_table(None).flatten();
    let Some(vip) = edit.vip else {
        return Err(v.err(
            "vip",
            "a new service needs a virtual address, e.g. 10.77.100.100:80",
        ));
    };
    if edit.no_health {
        return Err(v.err(
            "no_health",
            "a new service has no health check to remove (leave `health` out instead)",
        ));
    }
    if edit.no_persistent {
        return Err(v.err(
            "no_persistent",
            "a new service has no persistence to remove (leave `persistent` out instead)",
        ));
    }
    if edit.no_sorry_server {
        return Err(v.err(
            "no_sorry_server",
            "a new service has no sorry server to remove (leave `sorry_server` out instead)",
        ));
    }
    let raw = raw::Service {
        name: name.to_string(),
        vip,
        proto: edit.proto,
        forward: edit.forward,
        // Runtime edits tunnel with IPIP; GUE is set in the file.
        tunnel: None,
        tunnel_port: None,
        scheduler: edit.scheduler,
        persistence,
        health: edit.health,
        sorry_server: edit.sorry_server,
        notify: None,
        defense: edit.defense.unwrap_or_default(),
        timeouts: edit.timeouts.into_iter().collect(),
        server: Vec::new(),
        syn_proxy: edit.syn_proxy,
        max_conns: edit.max_conns.map(i64::from),
        sloppy: None,
    };
    v.service("", raw, is_plugin)
}

/// `base` with a runtime `edit` applied, validated field by field. The virtual address and
/// protocol identify a service and its connections, so they cannot change: add a new
/// service and remove the old one instead.
pub fn edit_service(
    base: &ServiceConfig,
    edit: ServiceEdit,
    is_plugin: &dyn Fn(&str) -> bool,
) -> Result<ServiceConfig, ConfigError> {
    let fig = Figment::new();
    let v = Validator {
        fig: &fig,
        file_origin: format!("service {:?}", base.name),
        base: None,
    };
    let mut out = base.clone();
    match edit.persistence_table(base.persistence.as_ref()) {
        None => {}
        Some(None) => out.persistence = None,
        Some(Some(p)) => out.persistence = Some(v.persistence("persistence", p, is_plugin)?),
    }
    if let Some(p) = &edit.proto {
        if v.proto("proto", p)? != base.proto {
            return Err(v.err(
                "proto",
                format!(
                    "the protocol identifies the service and its connections and stays {}; add a new service and remove this one instead",
                    base.proto.name()
                ),
            ));
        }
    }
    if let Some(a) = &edit.vip {
        if v.endpoint("vip", a, None)? != base.vip {
            return Err(v.err(
                "vip",
                format!(
                    "the virtual address identifies the service and its connections and stays {}; add a new service and remove this one instead",
                    base.vip
                ),
            ));
        }
    }
    if let Some(f) = &edit.forward {
        out.forward = v.forward("forward", f)?;
    }
    if edit.no_sorry_server {
        out.sorry_server = None;
    }
    if let Some(a) = &edit.sorry_server {
        out.sorry_server = Some(v.sorry_server("", a, base.vip, &base.servers)?);
    }
    if let Some(s) = edit.scheduler {
        v.scheduler("scheduler", &s, is_plugin)?;
        out.scheduler = s;
    }
    if let Some(d) = edit.defense {
        v.defense("defense", &d, is_plugin)?;
        out.defense = d;
    }
    if edit.no_health {
        if edit.health.is_some() {
            return Err(v.err("health", "give a new health check or remove it, not both"));
        }
        for s in &mut out.servers {
            s.health = None;
        }
        out.health = None;
    }
    if let Some(h) = edit.health {
        let new = v.health("", Some(&h), None, None)?;
        for s in out.servers.iter_mut().filter(|s| s.health == base.health) {
            s.health = new.clone();
        }
        out.health = new;
    }
    if let Some(m) = &edit.syn_proxy {
        out.syn_proxy = v.syn_proxy("syn_proxy", m, base.proto)?;
    }
    if let Some(n) = edit.max_conns {
        out.max_conns = n;
    }
    let timeouts = edit.timeouts.into_iter().collect();
    v.timeouts(
        "timeouts",
        timeouts,
        &mut out.timeouts,
        &mut out.udp_unreplied,
    )?;
    Ok(out)
}
