//! The admin protocol, version 1: newline-delimited JSON over a Unix socket.
//!
//! A request is one line: a JSON object with `"v": 1`, a `"cmd"` and the command's fields.
//! The answer is one line: `{"v":1,"ok":true,"result":…}` or
//! `{"v":1,"ok":false,"error":"…"}`. A connection may carry several requests in turn. Lines
//! longer than [`MAX_REQUEST`] bytes, invalid JSON, unknown commands or fields, and a missing
//! or different `v` are answered with an error and change nothing. See `docs/ADMIN.md`.

use crate::config::ServiceEdit;
use crate::dataplane::stats::Traffic;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Protocol version.
pub const VERSION: u32 = 1;
/// Largest request line, bytes.
pub const MAX_REQUEST: usize = 64 * 1024;

/// A request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Daemon status: table occupancy, drops, queues.
    Status {},
    /// Services and realservers with counts, stats and rates.
    List {},
    /// Tracked connections.
    Connections {
        /// At most this many (default 10,000).
        #[serde(default)]
        max: Option<usize>,
    },
    /// Re-read the config file.
    Reload {
        /// Say what a reload would change (runtime edits it would revert included); change
        /// nothing.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        dry_run: bool,
        /// Keep the runtime edits the file does not contradict.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        keep_runtime: bool,
    },
    /// The running state as a config file (ipvsadm-save).
    Save {},
    /// Switch a service's scheduler at runtime.
    PluginSwap {
        /// Service name.
        service: String,
        /// A built-in scheduler, a loaded plugin's name, or the path of a `.wasm` file.
        target: String,
    },
    /// Loaded plugins.
    Plugins {},
    /// Top sources, blocks and defenses (`ringvs top`).
    Top {},
    /// Zero the statistics shown by `list` (all services, or one).
    Zero {
        /// Only this service.
        #[serde(default)]
        service: Option<String>,
    },
    /// Add a realserver.
    ServerAdd {
        /// Service name.
        service: String,
        /// `addr:port`.
        addr: String,
        /// Weight (default 1).
        #[serde(default)]
        weight: Option<u64>,
        /// Upper connection threshold (ipvsadm `-x`; default 0: none).
        #[serde(default)]
        upper: Option<u32>,
        /// Lower connection threshold (ipvsadm `-y`; default 0: 3/4 of the upper one).
        #[serde(default)]
        lower: Option<u32>,
        /// Its forwarding method, `nat`, `tun` or `dr` (ipvsadm `-m`/`-i`/`-g`; default: the
        /// service's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        forward: Option<String>,
    },
    /// Remove a realserver (its connections drain, or, with `expire`, end on their next
    /// packet). With `expire`, a realserver already draining has its connections expired.
    ServerRemove {
        /// Service name.
        service: String,
        /// `addr:port`.
        addr: String,
        /// End its connections on their next packet (IPVS `expire_nodest_conn`).
        #[serde(default)]
        expire: bool,
    },
    /// Add a virtual service (with no realservers: add them with `server-add`).
    ServiceAdd {
        /// Unique name.
        name: String,
        /// Its definition: `vip` (required), `proto` (default `tcp`), `forward` (`nat`),
        /// `scheduler` (`wlc`), `timeouts` (unnamed states keep IPVS's defaults), `defense`,
        /// `health` (the keys of the config's `health` table). Not `no_health`.
        #[serde(flatten)]
        edit: ServiceEdit,
    },
    /// Change a service: only the fields given. `vip` and `proto` identify the service and
    /// cannot change. Existing connections are kept.
    ServiceEdit {
        /// The service.
        name: String,
        /// What changes: `vip` and `proto` (must equal the current ones if given),
        /// `forward`, `scheduler`, `timeouts` (only the states named), `defense` (replaces
        /// the list), `health` (replaces the check, also for the servers that used the
        /// service's rather than their own), `no_health` (removes the check, the servers'
        /// overrides included; not with `health`).
        #[serde(flatten)]
        edit: ServiceEdit,
    },
    /// Remove a service: its connections drain, or, with `expire`, end on their next packet.
    /// With `expire`, a service already draining has its connections expired.
    ServiceRemove {
        /// The service.
        name: String,
        /// End its connections on their next packet.
        #[serde(default)]
        expire: bool,
    },
    /// Connection sync's role and counters (`ringvs ha status`), or a new role
    /// (`ringvs ha master|backup|active`: keepalived's notify scripts).
    Ha {
        /// `master`, `backup` or `active`; absent: change nothing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
    },
    /// Set a realserver's weight.
    ServerWeight {
        /// Service name.
        service: String,
        /// `addr:port`.
        addr: String,
        /// New weight, 0 to 65535.
        weight: u64,
    },
}

/// Answer envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// Protocol version.
    pub v: u32,
    /// Success.
    pub ok: bool,
    /// The result, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The error, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// A success.
    pub fn ok(result: serde_json::Value) -> Response {
        Response {
            v: VERSION,
            ok: true,
            result: Some(result),
            error: None,
        }
    }
    /// A failure.
    pub fn err(e: impl Into<String>) -> Response {
        Response {
            v: VERSION,
            ok: false,
            result: None,
            error: Some(e.into()),
        }
    }
}

/// Parses one request line.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    if line.len() > MAX_REQUEST {
        return Err(format!(
            "request too large: {} bytes (limit {MAX_REQUEST})",
            line.len()
        ));
    }
    let text = std::str::from_utf8(line).map_err(|_| "request is not UTF-8".to_string())?;
    let mut v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("request is not valid JSON: {e}"))?;
    let obj = v.as_object_mut().ok_or("request must be a JSON object")?;
    match obj.remove("v") {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(VERSION as u64) => {}
        Some(other) => {
            return Err(format!(
                "unsupported protocol version {other}; this daemon speaks {VERSION}"
            ))
        }
        None => {
            return Err(format!(
                "request lacks \"v\" (the protocol version, {VERSION})"
            ))
        }
    }
    serde_json::from_value(v).map_err(|e| format!("bad request: {e}"))
}

/// Serializes a request with its version.
pub fn encode_request(r: &Request) -> String {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("v".into(), VERSION.into());
    }
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// Rates over the last seconds (ipvsadm `--rate`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Connections per second.
    pub cps: f64,
    /// Incoming packets per second.
    pub in_pps: f64,
    /// Outgoing packets per second.
    pub out_pps: f64,
    /// Incoming bytes per second.
    pub in_bps: f64,
    /// Outgoing bytes per second.
    pub out_bps: f64,
}

/// A realserver in `list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// `addr:port`.
    pub addr: String,
    /// ipvsadm's forwarding name (`Masq`).
    pub forward: String,
    /// Current weight.
    pub weight: u32,
    /// ActiveConn.
    pub active: u32,
    /// InActConn.
    pub inactive: u32,
    /// PersistConn.
    pub persistent: u32,
    /// Upper connection threshold (Uthreshold; 0: none).
    #[serde(default)]
    pub upper: u32,
    /// Lower connection threshold (Lthreshold).
    #[serde(default)]
    pub lower: u32,
    /// Over its upper threshold: no new flows until below the lower one.
    #[serde(default)]
    pub overloaded: bool,
    /// Removed, connections draining.
    pub draining: bool,
    /// Health (`up`, `down`, or `unchecked`). A checked server not yet seen passing is
    /// `down` with the reason "not checked yet".
    pub health: String,
    /// Why it is down: the last failed check (`connection refused`, `HTTP 500 (expected
    /// 200)`, `connect timeout (1s)`, …); absent while up or unchecked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
    /// Seconds since its health last changed (checked servers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_since_secs: Option<u64>,
    /// Counters since the last zero.
    pub stats: Traffic,
    /// Rates.
    pub rate: Rates,
}

/// A service in `list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Name.
    pub name: String,
    /// `tcp` or `udp`.
    pub proto: String,
    /// `addr:port`.
    pub vip: String,
    /// Scheduler in use.
    pub scheduler: String,
    /// Flags as ipvsadm shows them (`persistent 300`, …).
    pub flags: Vec<String>,
    /// Removed from the config, connections draining.
    pub draining: bool,
    /// The SYN proxy's mode (`auto`, `on`, `off`).
    #[serde(default)]
    pub syn_proxy: String,
    /// The SYN proxy answers the service's new connections now (in at least one queue).
    #[serde(default)]
    pub syn_proxy_active: bool,
    /// Counters since the last zero.
    pub stats: Traffic,
    /// Rates.
    pub rate: Rates,
    /// Realservers.
    pub servers: Vec<ServerInfo>,
}

/// Result of `list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResult {
    /// Services.
    pub services: Vec<ServiceInfo>,
}

/// A connection in `connections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRow {
    /// `TCP` or `UDP`.
    pub proto: String,
    /// Seconds until expiry.
    pub expire_secs: u64,
    /// State name.
    pub state: String,
    /// Client `addr:port`.
    pub source: String,
    /// Virtual `addr:port`.
    pub virtual_addr: String,
    /// Realserver `addr:port`.
    pub destination: String,
    /// A persistence template (its source is the affinity key with port 0), not a
    /// connection.
    #[serde(default)]
    pub template: bool,
}

/// Result of `connections`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionsResult {
    /// Connections (at most the requested number).
    pub conns: Vec<ConnRow>,
    /// Whether the list was cut at the limit.
    pub truncated: bool,
}

/// A loaded plugin in `plugins`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// `scheduler`, `persistence` or `defense`.
    pub kind: String,
    /// Its file.
    pub path: String,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Services whose scheduler it is.
    pub services: Vec<String>,
    /// Calls so far (all queues, all functions).
    pub calls: u64,
    /// Faults so far.
    pub faults: u64,
    /// Decisions taken by a fallback while it was poisoned.
    pub fallbacks: u64,
}

/// A block in `top`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockInfo {
    /// `addr/len`.
    pub prefix: String,
    /// Seconds left.
    pub secs_left: u32,
    /// Drop or tarpit.
    pub mode: crate::dataplane::blocks::BlockMode,
    /// The defense that asked.
    pub by: String,
    /// The service it applies to (the asking defense's).
    #[serde(default)]
    pub service: String,
}

/// A defense of a service in `top`, over all queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefenseInfo {
    /// Service.
    pub service: String,
    /// Plugin.
    pub plugin: String,
    /// Highest level over the queues.
    pub level: u8,
    /// Highest drop rate over the queues.
    pub drop_rate: u32,
    /// Active in any queue.
    pub active: bool,
    /// Queues where its instance is poisoned (no defense action there until replaced).
    pub poisoned_queues: u32,
}

/// Result of `ha`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HaResult {
    /// `master`, `backup` or `active`.
    pub role: String,
    /// This director's `sync.id`.
    pub id: u32,
    /// The address sync receives on.
    pub listen: String,
    /// The peers, as last heard.
    pub peers: Vec<crate::sync::node::PeerStatus>,
    /// Received entries held (not yet live).
    pub held: u64,
    /// The longest an entry waited to be sent over the last second, milliseconds.
    pub lag_ms: f64,
    /// Entries queued to be sent, and those a queue could not queue.
    pub queued: u64,
    /// Entries the queues could not queue (the sync thread behind).
    pub queue_full: u64,
    /// Entries sent.
    pub sent_entries: u64,
    /// Messages sent (every peer counted).
    pub sent_messages: u64,
    /// Messages the socket refused.
    pub send_errors: u64,
    /// Messages received and taken.
    pub received_messages: u64,
    /// Entries in them.
    pub received_entries: u64,
    /// Received entries the table took.
    pub applied: u64,
    /// Received entries not taken (unknown service or realserver, full table, or a live
    /// connection of this director's own).
    pub ignored: u64,
    /// Peers' messages that never arrived (sequence numbers that left the 64-message replay
    /// window untaken).
    pub lost_messages: u64,
    /// Messages refused, by reason (`length`, `magic`, `version`, `oversized`, `mac`,
    /// `header`, `entry`, `replay`).
    pub rejected: BTreeMap<String, u64>,
    /// Bulk transfers sent to peers that joined.
    pub bulk_sent: u64,
    /// Bulk transfers received complete.
    pub bulk_received: u64,
}

/// Result of `top`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopResult {
    /// The heaviest sources of the last second, by new flows.
    pub sources: Vec<crate::dataplane::sources::SourceCount>,
    /// Active blocks.
    pub blocks: Vec<BlockInfo>,
    /// Defenses.
    pub defenses: Vec<DefenseInfo>,
    /// Connections tracked.
    pub entries: u64,
    /// The table's capacity.
    pub capacity: u64,
    /// Embryonic entries (SYN_RECV + SYNACK).
    pub embryonic: u64,
}

/// Result of `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResult {
    /// ringvs version.
    pub version: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Device.
    pub device: String,
    /// Queues.
    pub queues: usize,
    /// Virtio-net header offload in use.
    pub offload: bool,
    /// Config snapshot generation.
    pub generation: u64,
    /// Tracked connections.
    pub entries: u64,
    /// Entries the budget allows.
    pub capacity: u64,
    /// Bytes used by the tables.
    pub memory_bytes: u64,
    /// The budget.
    pub memory_limit: u64,
    /// Entries per state.
    pub by_state: BTreeMap<String, u64>,
    /// Drops per reason.
    pub drops: BTreeMap<String, u64>,
    /// Packets passed through unchanged.
    pub passthrough: u64,
    /// Realservers with a health check.
    #[serde(default)]
    pub servers_checked: u64,
    /// Of those, the ones held out of scheduling (down, or not checked yet).
    #[serde(default)]
    pub servers_down: u64,
    /// The persistence template store.
    #[serde(default)]
    pub templates: Option<TemplateStatus>,
    /// Why the director should not be announced (`ringvs ha ready`); empty: ready.
    #[serde(default)]
    pub unready: Vec<String>,
}

/// The persistence template store in `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateStatus {
    /// Live templates.
    pub entries: u64,
    /// Most templates `director.template_memory_limit` allows.
    pub capacity: u64,
    /// Bytes used.
    pub memory_bytes: u64,
    /// Bytes the store uses full (within `director.template_memory_limit`).
    pub memory_limit: u64,
    /// Templates refused at the budget (their flows dropped as `template_full`).
    pub refused: u64,
    /// Bytes of the queues' link columns (4 per connection slot of a queue with a
    /// persistent service).
    pub link_bytes: u64,
    /// `director.expire_quiescent_template`.
    pub expire_quiescent_template: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Quantity;

    #[test]
    fn round_trip() {
        let r = Request::ServerWeight {
            service: "web".into(),
            addr: "10.77.1.1:8080".into(),
            weight: 3,
        };
        let line = encode_request(&r);
        assert!(
            line.contains("\"cmd\":\"server-weight\"") && line.contains("\"v\":1"),
            "{line}"
        );
        assert_eq!(parse_request(line.trim_end().as_bytes()), Ok(r));
        assert_eq!(
            parse_request(br#"{"v":1,"cmd":"list"}"#),
            Ok(Request::List {})
        );
    }

    #[test]
    fn service_commands_and_compatible_additions() {
        let r = parse_request(
            br#"{"v":1,"cmd":"service-add","name":"dns","vip":"10.77.100.100:53","proto":"udp","timeouts":{"udp":"30s","established":900}}"#,
        )
        .unwrap();
        let Request::ServiceAdd { name, edit } = &r else {
            panic!("{r:?}")
        };
        assert_eq!((name.as_str(), edit.proto.as_deref()), ("dns", Some("udp")));
        assert_eq!(edit.scheduler, None);
        let timeout = |state: &str| edit.timeouts.iter().find(|(s, _)| s == state).unwrap();
        assert_eq!(timeout("udp").1, Quantity::Text("30s".into()));
        assert_eq!(timeout("established").1, Quantity::Num(900));
        assert_eq!(
            parse_request(encode_request(&r).trim_end().as_bytes()),
            Ok(r)
        );
        // A version-1 client that knows nothing of `expire` still removes servers.
        assert_eq!(
            parse_request(
                br#"{"v":1,"cmd":"server-remove","service":"web","addr":"10.77.1.1:80"}"#
            ),
            Ok(Request::ServerRemove {
                service: "web".into(),
                addr: "10.77.1.1:80".into(),
                expire: false
            })
        );
        assert!(parse_request(br#"{"v":1,"cmd":"service-remove"}"#)
            .unwrap_err()
            .contains("name"));
    }

    #[test]
    fn service_edits_keep_their_wire_names() {
        // Every field of version 1's service-edit, by its name.
        let line = br#"{"v":1,"cmd":"service-edit","name":"web","vip":"10.77.100.100:80","proto":"tcp","forward":"nat","scheduler":"rr","timeouts":{"udp":30,"established":"600s"},"defense":[],"health":{"check":"tcp"},"no_health":false}"#;
        let r = parse_request(line).unwrap();
        let Request::ServiceEdit { name, edit } = &r else {
            panic!("{r:?}")
        };
        assert_eq!(name, "web");
        assert_eq!(edit.vip.as_deref(), Some("10.77.100.100:80"));
        assert_eq!(edit.proto.as_deref(), Some("tcp"));
        assert_eq!(edit.forward.as_deref(), Some("nat"));
        assert_eq!(edit.scheduler.as_deref(), Some("rr"));
        assert_eq!(
            edit.timeouts,
            vec![
                ("established".to_string(), Quantity::Text("600s".into())),
                ("udp".to_string(), Quantity::Num(30)),
            ]
        );
        assert_eq!(edit.defense, Some(Vec::new()));
        assert!(edit.health.is_some() && !edit.no_health);
        assert_eq!(
            parse_request(encode_request(&r).trim_end().as_bytes()),
            Ok(r)
        );
        // Unknown fields are refused next to the flattened ones too.
        assert!(
            parse_request(br#"{"v":1,"cmd":"service-edit","name":"web","schedular":"rr"}"#)
                .unwrap_err()
                .contains("unknown field `schedular`")
        );
        // What a client sends: timeouts as an object (a state given twice: the last), and
        // `no_health` only when set, so a daemon that knows nothing of it still takes a
        // service-add.
        let add = Request::ServiceAdd {
            name: "dns".into(),
            edit: ServiceEdit {
                vip: Some("10.77.100.100:53".into()),
                timeouts: vec![
                    ("udp".into(), Quantity::Text("30s".into())),
                    ("udp".into(), Quantity::Text("40s".into())),
                ],
                ..ServiceEdit::default()
            },
        };
        let v: serde_json::Value = serde_json::from_str(&encode_request(&add)).unwrap();
        assert_eq!(v["timeouts"], serde_json::json!({"udp": "40s"}));
        assert_eq!(v["vip"], "10.77.100.100:53");
        assert!(v.get("no_health").is_none(), "{v}");
    }

    #[test]
    fn bad_requests_are_explained() {
        let e = |b: &[u8]| parse_request(b).unwrap_err();
        assert!(e(b"\xff\xfe").contains("UTF-8"));
        assert!(e(b"{nope").contains("not valid JSON"));
        assert!(e(b"[1,2]").contains("JSON object"));
        assert!(e(br#"{"cmd":"list"}"#).contains("lacks \"v\""));
        assert!(e(br#"{"v":2,"cmd":"list"}"#).contains("unsupported protocol version"));
        assert!(e(br#"{"v":1,"cmd":"format-disk"}"#).contains("bad request"));
        assert!(e(br#"{"v":1,"cmd":"list","extra":1}"#).contains("bad request"));
        assert!(
            e(br#"{"v":1,"cmd":"server-weight","service":"web","addr":"x"}"#).contains("weight")
        );
        assert!(e(&vec![b' '; MAX_REQUEST + 1]).contains("too large"));
    }
}
