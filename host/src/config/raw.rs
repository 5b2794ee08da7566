//! The config file as written: what figment deserializes before validation.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A size or duration: a string with a unit (`"900s"`, `"256MiB"`), or a bare number (seconds
/// or bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    /// A bare number (bytes, or seconds).
    Num(u64),
    /// A number with a unit.
    Text(String),
}

// Serialize: `ringvs save` writes a running state back as a config file (config/save.rs).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub director: Option<Director>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugins: BTreeMap<String, Plugin>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service: Vec<Service>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Director {
    pub device: Option<String>,
    pub queues: Option<i64>,
    pub conn_memory_limit: Option<Quantity>,
    pub admin_socket: Option<String>,
    pub admin_group: Option<String>,
    pub metrics_listen: Option<String>,
    pub routes: Option<String>,
    pub offload: Option<bool>,
    pub mtu: Option<i64>,
    pub expire_nodest_conn: Option<bool>,
    pub expire_quiescent_template: Option<bool>,
    pub template_memory_limit: Option<Quantity>,
    pub log_format: Option<String>,
    pub io: Option<String>,
    pub interfaces: Option<Vec<String>>,
    pub xdp_mode: Option<String>,
    pub plugin_dirs: Option<Vec<String>>,
    pub user: Option<String>,
    pub tunnel_source: Option<String>,
    pub tunnel_source6: Option<String>,
    pub stop_delay: Option<Quantity>,
    pub queue_nice: Option<i64>,
    pub sync: Option<Sync>,
}

/// `[director.sync]`: connection sync between directors (config/sync.rs).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sync {
    pub id: Option<i64>,
    pub key: Option<String>,
    pub key_file: Option<String>,
    pub listen: Option<String>,
    pub peers: Option<Vec<String>>,
    pub role: Option<String>,
    pub threshold: Option<i64>,
    pub period: Option<i64>,
    pub max_rate: Option<i64>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Plugin {
    pub path: Option<String>,
    pub sha256: Option<String>,
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub vip: String,
    pub proto: Option<String>,
    pub forward: Option<String>,
    pub tunnel: Option<String>,
    pub tunnel_port: Option<i64>,
    pub scheduler: Option<String>,
    pub persistence: Option<Persistence>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub defense: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub timeouts: BTreeMap<String, Quantity>,
    pub health: Option<Health>,
    pub sorry_server: Option<String>,
    pub notify: Option<Notify>,
    pub syn_proxy: Option<String>,
    pub max_conns: Option<i64>,
    pub sloppy: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server: Vec<Server>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Persistence {
    pub plugin: String,
    pub timeout: Option<Quantity>,
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub addr: String,
    pub weight: Option<i64>,
    pub upper: Option<i64>,
    pub lower: Option<i64>,
    pub health: Option<Health>,
    pub forward: Option<String>,
}

/// Health check settings: a service's table, or a server's override of some of its keys.
/// Also what `ringvs service add|edit --health` sends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub check: Option<String>,
    pub interval: Option<Quantity>,
    pub timeout: Option<Quantity>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub path: Option<String>,
    pub expect: Option<Expect>,
    pub host: Option<String>,
    pub on_fail: Option<String>,
    pub port: Option<i64>,
    pub addr: Option<String>,
    pub command: Option<Vec<String>>,
    pub user: Option<String>,
    pub dynamic: Option<bool>,
}

/// `notify = { up = [...], down = [...], timeout, user, max_per_minute }`: commands run when
/// a realserver of the service goes up or down (keepalived's notify_up/notify_down).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    pub up: Option<Vec<String>>,
    pub down: Option<Vec<String>>,
    pub timeout: Option<Quantity>,
    pub user: Option<String>,
    pub max_per_minute: Option<i64>,
}

/// `expect = 200` or `expect = [200, 204]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Expect {
    /// One status code.
    One(i64),
    /// Several.
    Many(Vec<i64>),
}
