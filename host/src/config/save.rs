//! A running state written back as a config file (`ringvs save`, ipvsadm-save): the
//! `[director]` the daemon runs with, the `[plugins.*]` it has loaded, and its services as the
//! registry holds them (runtime edits included). What [`to_toml`] writes, [`super::load`]
//! reads back to the same [`Director`] and [`ServiceConfig`]s (a test checks it).

use super::{
    raw, CheckKind, Director, HealthConfig, LogFormat, OnFail, PluginDecl, PluginSource, Quantity,
    Routes, ServiceConfig, XdpMode,
};
use crate::conn::{State, Timeouts};
use std::collections::BTreeMap;

fn ms(d: std::time::Duration) -> Quantity {
    let ms = d.as_millis() as u64;
    if ms.is_multiple_of(1000) {
        Quantity::Text(format!("{}s", ms / 1000))
    } else {
        Quantity::Text(format!("{ms}ms"))
    }
}

fn director(d: &Director) -> raw::Director {
    raw::Director {
        io: Some(d.io.label().to_string()),
        interfaces: (!d.interfaces.is_empty()).then(|| d.interfaces.clone()),
        xdp_mode: match d.xdp_mode {
            XdpMode::Auto => None,
            XdpMode::Native => Some("native".to_string()),
            XdpMode::Generic => Some("generic".to_string()),
        },
        device: Some(d.device.clone()),
        queues: Some(d.queues as i64),
        conn_memory_limit: Some(Quantity::Num(d.conn_memory_limit as u64)),
        admin_socket: Some(d.admin_socket.display().to_string()),
        admin_group: d.admin_group.clone(),
        metrics_listen: Some(
            d.metrics_listen
                .map_or_else(|| "off".to_string(), |a| a.to_string()),
        ),
        routes: Some(
            match d.routes {
                Routes::Manual => "manual",
                Routes::Auto => "auto",
            }
            .to_string(),
        ),
        offload: Some(d.offload),
        mtu: d.mtu.map(i64::from),
        expire_nodest_conn: Some(d.expire_nodest_conn),
        expire_quiescent_template: Some(d.expire_quiescent_template),
        template_memory_limit: Some(Quantity::Num(d.template_memory_limit as u64)),
        log_format: Some(
            match d.log_format {
                LogFormat::Text => "human",
                LogFormat::Json => "json",
            }
            .to_string(),
        ),
        plugin_dirs: (!d.plugin_dirs.is_empty()).then(|| {
            d.plugin_dirs
                .iter()
                .map(|p| p.display().to_string())
                .collect()
        }),
        user: d.user.clone(),
        tunnel_source: d.tunnel_source.map(|a| a.to_string()),
        tunnel_source6: d.tunnel_source6.map(|a| a.to_string()),
        queue_nice: Some(i64::from(d.queue_nice)),
        stop_delay: (d.stop_delay != 0).then(|| Quantity::Text(format!("{}s", d.stop_delay))),
        sync: d.sync.as_ref().map(super::sync::save),
    }
}

/// A health check as the keys of a `health` table (every key written).
pub fn health_table(h: &HealthConfig) -> raw::Health {
    let (command, user, dynamic) = match &h.kind {
        CheckKind::Script(s) => (
            Some(s.command.clone()),
            Some(s.user.clone()),
            s.dynamic.then_some(true),
        ),
        _ => (None, None, None),
    };
    let (path, expect, host) = match &h.kind {
        CheckKind::Tcp | CheckKind::Script(_) => (None, None, None),
        CheckKind::Http(x) => (
            Some(x.path.clone()),
            match x.expect.as_slice() {
                [] => None,
                [one] => Some(raw::Expect::One(i64::from(*one))),
                many => Some(raw::Expect::Many(
                    many.iter().map(|c| i64::from(*c)).collect(),
                )),
            },
            x.host.clone(),
        ),
    };
    raw::Health {
        check: Some(h.kind.name().to_string()),
        interval: Some(ms(h.interval)),
        timeout: Some(ms(h.timeout)),
        rise: Some(i64::from(h.rise)),
        fall: Some(i64::from(h.fall)),
        path,
        expect,
        host,
        on_fail: Some(
            match h.on_fail {
                OnFail::Quiesce => "quiesce",
                OnFail::Remove => "remove",
            }
            .to_string(),
        ),
        port: h.port.map(i64::from),
        addr: h.addr.map(|a| {
            if a.port() == 0 {
                a.ip().to_string()
            } else {
                a.to_string()
            }
        }),
        command,
        user,
        dynamic,
    }
}

/// A `notify` table.
fn notify_table(n: &super::NotifyConfig) -> raw::Notify {
    raw::Notify {
        up: n.up.clone(),
        down: n.down.clone(),
        timeout: Some(ms(n.timeout)),
        user: Some(n.user.clone()),
        max_per_minute: Some(i64::from(n.max_per_minute)),
    }
}

/// The states whose timeout is not IPVS's default, in seconds.
fn timeouts(t: &Timeouts) -> BTreeMap<String, Quantity> {
    State::ALL
        .iter()
        .filter(|s| t.get(**s) != Timeouts::IPVS.get(**s))
        .map(|s| {
            (
                s.key().to_string(),
                Quantity::Text(format!("{}s", t.get(*s))),
            )
        })
        .collect()
}

fn service(s: &ServiceConfig) -> raw::Service {
    raw::Service {
        name: s.name.clone(),
        vip: s.vip.to_string(),
        proto: Some(s.proto.name().to_string()),
        forward: Some(s.forward.label().to_string()),
        tunnel: (s.tunnel != super::Tunnel::Ipip).then(|| s.tunnel.label().to_string()),
        tunnel_port: match s.tunnel {
            super::Tunnel::Gue { port } => Some(i64::from(port)),
            super::Tunnel::Ipip => None,
        },
        scheduler: Some(s.scheduler.clone()),
        persistence: s.persistence.as_ref().map(|p| raw::Persistence {
            plugin: p.plugin.clone(),
            timeout: Some(Quantity::Text(format!("{}s", p.timeout_secs))),
            config: p
                .config
                .as_object()
                .is_some_and(|o| !o.is_empty())
                .then(|| p.config.clone()),
        }),
        defense: s.defense.clone(),
        timeouts: {
            let mut t = timeouts(&s.timeouts);
            if s.udp_unreplied != super::UDP_UNREPLIED_SECS {
                t.insert(
                    "udp_unreplied".into(),
                    Quantity::Text(format!("{}s", s.udp_unreplied)),
                );
            }
            t
        },
        syn_proxy: (s.syn_proxy != super::SynProxyMode::Auto)
            .then(|| s.syn_proxy.name().to_string()),
        max_conns: (s.max_conns != 0).then_some(i64::from(s.max_conns)),
        sloppy: s.sloppy.then_some(true),
        health: s.health.as_ref().map(health_table),
        sorry_server: s.sorry_server.map(|a| a.to_string()),
        notify: s.notify.as_ref().map(notify_table),
        server: s
            .servers
            .iter()
            .map(|x| raw::Server {
                addr: x.addr.to_string(),
                weight: Some(i64::from(x.weight)),
                upper: (x.upper != 0).then_some(i64::from(x.upper)),
                lower: (x.lower != 0).then_some(i64::from(x.lower)),
                // A server checked as its service is written without a table of its own; one
                // with its own check gets every key (they override the service's).
                health: match (&x.health, &s.health) {
                    (Some(h), Some(svc)) if h != svc => Some(health_table(h)),
                    _ => None,
                },
                forward: x.forward.map(|f| f.label().to_string()),
            })
            .collect(),
    }
}

fn plugin(p: &PluginDecl) -> raw::Plugin {
    raw::Plugin {
        path: match p.source {
            PluginSource::Path => Some(p.path.display().to_string()),
            PluginSource::Catalogue | PluginSource::Implicit => None,
        },
        sha256: p.sha256.map(|h| crate::plugin::hex(&h)),
        config: p
            .config
            .as_object()
            .is_some_and(|o| !o.is_empty())
            .then(|| p.config.clone()),
    }
}

/// The TOML text of a config with this director, these plugin entries (catalogue plugins used
/// by name need none: leave [`PluginSource::Implicit`] ones out) and these services.
pub fn to_toml(
    d: &Director,
    plugins: &BTreeMap<String, PluginDecl>,
    services: &[ServiceConfig],
) -> Result<String, String> {
    let file = raw::File {
        director: Some(director(d)),
        plugins: plugins
            .iter()
            .filter(|(_, p)| p.source != PluginSource::Implicit)
            .map(|(n, p)| (n.clone(), plugin(p)))
            .collect(),
        service: services.iter().map(service).collect(),
    };
    toml::to_string(&file).map_err(|e| format!("cannot write the state as TOML: {e}"))
}
