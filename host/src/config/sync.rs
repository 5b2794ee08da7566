//! `[director.sync]`: connection sync between directors (`crate::sync`, docs/HA.md).
//!
//! ```toml
//! [director.sync]
//! id = 1                              # unique among the directors that sync together
//! key_file = "/etc/ringvs/sync.key"   # or key = "…": 64+ hex digits (32+ bytes), shared
//! listen = "10.77.9.1:8848"           # UDP, an address of this machine
//! peers = ["10.77.9.2:8848"]          # where this director's changes go
//! role = "backup"                     # "master", "backup" or "active" (active-active)
//! threshold = 3                       # IPVS sync_threshold: sent at the 3rd packet…
//! period = 50                         # …then every 50 (IPVS sync_period)
//! max_rate = 10000                    # messages a second, at most
//! ```

use super::raw;
use super::{ConfigError, Validator};
use std::fmt;
use std::net::SocketAddrV4;
use std::path::PathBuf;

/// The shortest key: 32 bytes.
pub const MIN_KEY_BYTES: usize = crate::sync::Key::MIN_LEN;

/// What a director does with sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncRole {
    /// Sends its changes to the peers; the entries it receives are live at once.
    Master,
    /// Sends nothing; holds what it receives, counted for scheduling only once it becomes
    /// master (`ringvs ha master`, keepalived's `notify_master`) or a packet uses it.
    Backup,
    /// Active-active (behind ECMP): sends its changes and receives the others'.
    Active,
}

impl SyncRole {
    /// The config's and `ringvs ha`'s word.
    pub fn name(self) -> &'static str {
        match self {
            SyncRole::Master => "master",
            SyncRole::Backup => "backup",
            SyncRole::Active => "active",
        }
    }

    /// From the config's or `ringvs ha`'s word.
    pub fn parse(s: &str) -> Option<SyncRole> {
        Some(match s {
            "master" => SyncRole::Master,
            "backup" => SyncRole::Backup,
            "active" => SyncRole::Active,
            _ => return None,
        })
    }

    /// True if this role sends its changes.
    pub fn sends(self) -> bool {
        self != SyncRole::Backup
    }
}

/// `[director.sync]`, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// This director's id, unique among those that sync together (1 or more).
    pub id: u32,
    /// The shared HMAC key.
    pub key: crate::sync::Key,
    /// Where the key came from, if a file (kept for `ringvs save`).
    pub key_file: Option<PathBuf>,
    /// The UDP address sync binds.
    pub listen: SocketAddrV4,
    /// Where changes are sent (unicast addresses, or one multicast group).
    pub peers: Vec<SocketAddrV4>,
    /// The role at start.
    pub role: SyncRole,
    /// IPVS `sync_threshold`: an entry is sent when its client has sent this many packets…
    pub threshold: u32,
    /// …and again every `period` packets after (IPVS `sync_period`).
    pub period: u32,
    /// Messages a second, at most (bulk transfers included).
    pub max_rate: u32,
}

impl fmt::Debug for SyncConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncConfig")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("key_file", &self.key_file)
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("role", &self.role)
            .field("threshold", &self.threshold)
            .field("period", &self.period)
            .field("max_rate", &self.max_rate)
            .finish()
    }
}

const KEY_HELP: &str = "generate one with `openssl rand -hex 32`, the same on every director";

impl Validator<'_> {
    pub(super) fn sync(&self, s: raw::Sync) -> Result<SyncConfig, ConfigError> {
        const K: &str = "director.sync";
        let id = match s.id {
            Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => n as u32,
            Some(n) => {
                return Err(self.err(
                    format!("{K}.id"),
                    format!("expected 1 to {}, found {n}", u32::MAX),
                ))
            }
            None => {
                return Err(self.err(
                    format!("{K}.id"),
                    "missing: each director needs an id of its own (1, 2, …)",
                ))
            }
        };
        let (key, key_file) = match (s.key, s.key_file) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    format!("{K}.key_file"),
                    "give the key once: `key` or `key_file`, not both",
                ))
            }
            (None, None) => {
                return Err(self.err(
                    format!("{K}.key"),
                    format!(
                        "missing: sync messages are authenticated with a shared key \
                         (`key_file` or `key`, {MIN_KEY_BYTES}+ bytes in hex); {KEY_HELP}"
                    ),
                ))
            }
            (Some(k), None) => (self.key(&format!("{K}.key"), &k, "")?, None),
            (None, Some(f)) => {
                let path = self.relative(&f);
                let text =
                    read_key_file(&path).map_err(|m| self.err(format!("{K}.key_file"), m))?;
                let what = format!(" in {}", path.display());
                (
                    self.key(&format!("{K}.key_file"), &text, &what)?,
                    Some(path),
                )
            }
        };
        let listen = match s.listen.as_deref() {
            None => {
                return Err(self.err(
                    format!("{K}.listen"),
                    "missing: the UDP address (an address of this machine and a port) sync \
                     receives on",
                ))
            }
            Some(a) => match a.parse::<SocketAddrV4>() {
                Ok(a) if a.port() != 0 && !a.ip().is_multicast() && !a.ip().is_broadcast() => a,
                _ => {
                    return Err(self.err(
                        format!("{K}.listen"),
                        format!("expected an IPv4 address of this machine and a port, such as \"10.77.9.1:8848\", found {a:?}"),
                    ))
                }
            },
        };
        let raw_peers = s.peers.unwrap_or_default();
        if raw_peers.is_empty() {
            return Err(self.err(
                format!("{K}.peers"),
                "missing: the other directors' sync addresses (or one multicast group)",
            ));
        }
        let mut peers = Vec::with_capacity(raw_peers.len());
        for (i, p) in raw_peers.iter().enumerate() {
            let key = format!("{K}.peers.{i}");
            let a = p
                .parse::<SocketAddrV4>()
                .ok()
                .filter(|a| a.port() != 0 && !a.ip().is_unspecified() && !a.ip().is_broadcast())
                .ok_or_else(|| {
                    self.err(
                        &key,
                        format!("expected an IPv4 address and a port, found {p:?}"),
                    )
                })?;
            if a == listen {
                return Err(self.err(
                    &key,
                    format!("{a} is this director's own `listen` address, not a peer"),
                ));
            }
            if peers.contains(&a) {
                return Err(self.err(&key, format!("{a} is listed twice")));
            }
            peers.push(a);
        }
        let role = match s.role.as_deref() {
            None => SyncRole::Backup,
            Some(r) => SyncRole::parse(r).ok_or_else(|| {
                self.err(
                    format!("{K}.role"),
                    format!("expected \"master\", \"backup\" or \"active\", found {r:?}"),
                )
            })?,
        };
        let count = |key: &str, v: Option<i64>, default: u32, max: i64| match v {
            None => Ok(default),
            Some(n) if (1..=max).contains(&n) => Ok(n as u32),
            Some(n) => Err(self.err(
                format!("{K}.{key}"),
                format!("expected 1 to {max}, found {n}"),
            )),
        };
        let threshold = count("threshold", s.threshold, 3, 1 << 20)?;
        let period = count("period", s.period, 50, 1 << 20)?;
        let max_rate = count("max_rate", s.max_rate, 10_000, 1_000_000)?;
        Ok(SyncConfig {
            id,
            key,
            key_file,
            listen,
            peers,
            role,
            threshold,
            period,
            max_rate,
        })
    }

    fn key(&self, key: &str, text: &str, what: &str) -> Result<crate::sync::Key, ConfigError> {
        crate::sync::Key::from_hex(text)
            .map_err(|e| self.err(key, format!("the key{what}: {e}; {KEY_HELP}")))
    }
}

/// A key file's text. Refused when others than its owner and group may read it.
fn read_key_file(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(format!(
            "the key file {} can be read by every user; `chmod o-rwx` it (a sync key lets \
             its holder write into the connection table)",
            path.display()
        ));
    }
    std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))
}

/// `[director.sync]` as written back by `ringvs save`: the key file's path if it came from
/// one, else the key.
pub(super) fn save(s: &SyncConfig) -> raw::Sync {
    raw::Sync {
        id: Some(i64::from(s.id)),
        key: s
            .key_file
            .is_none()
            .then(|| crate::plugin::hex(s.key.bytes())),
        key_file: s.key_file.as_ref().map(|p| p.display().to_string()),
        listen: Some(s.listen.to_string()),
        peers: Some(s.peers.iter().map(ToString::to_string).collect()),
        role: Some(s.role.name().to_string()),
        threshold: Some(i64::from(s.threshold)),
        period: Some(i64::from(s.period)),
        max_rate: Some(i64::from(s.max_rate)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn cfg(sync: &str) -> Result<crate::config::Config, ConfigError> {
        crate::config::from_str(&format!("[director.sync]\n{sync}\n"), "t.toml")
    }

    fn ok(sync: &str) -> SyncConfig {
        cfg(sync).unwrap().director.sync.unwrap()
    }

    fn err(sync: &str) -> String {
        cfg(sync).unwrap_err().to_string()
    }

    const BASE: &str = "id = 1\nlisten = \"10.77.9.1:8848\"\npeers = [\"10.77.9.2:8848\"]";

    #[test]
    fn a_full_section_is_read_with_its_defaults() {
        let s = ok(&format!("{BASE}\nkey = \"{KEY}\""));
        assert_eq!(s.id, 1);
        assert_eq!(s.key.bytes().len(), 32);
        assert_eq!(s.key.bytes()[1], 0x11);
        assert_eq!(s.role, SyncRole::Backup);
        assert_eq!((s.threshold, s.period, s.max_rate), (3, 50, 10_000));
        assert_eq!(s.peers, ["10.77.9.2:8848".parse().unwrap()]);
        assert!(
            !format!("{s:?}").contains("112233"),
            "the key is never logged"
        );
        let s = ok(&format!(
            "{BASE}\nkey = \"{KEY}\"\nrole = \"active\"\nthreshold = 1\nperiod = 10\nmax_rate = 500"
        ));
        assert_eq!(s.role, SyncRole::Active);
        assert_eq!((s.threshold, s.period, s.max_rate), (1, 10, 500));
    }

    #[test]
    fn no_config_no_sync() {
        let c = crate::config::from_str("", "t.toml").unwrap();
        assert!(c.director.sync.is_none());
    }

    #[test]
    fn bad_sections_are_refused_by_key() {
        let cases = [
            (BASE.to_string(), "director.sync.key`: missing"),
            (
                format!("{BASE}\nkey = \"{}\"", &KEY[..62]),
                "the key: 31 bytes: a key needs at least 32",
            ),
            (format!("{BASE}\nkey = \"zz{}\"", &KEY[2..]), "the key: expected hex digits"),
            (
                format!("{BASE}\nkey = \"{KEY}\"\nkey_file = \"k\""),
                "not both",
            ),
            (
                format!("listen = \"10.77.9.1:8848\"\npeers = [\"10.77.9.2:1\"]\nkey = \"{KEY}\""),
                "director.sync.id`: missing",
            ),
            (
                format!("id = 0\nlisten = \"10.77.9.1:1\"\npeers = [\"10.77.9.2:1\"]\nkey = \"{KEY}\""),
                "director.sync.id`: expected 1",
            ),
            (
                format!("id = 1\npeers = [\"10.77.9.2:1\"]\nkey = \"{KEY}\""),
                "director.sync.listen`: missing",
            ),
            (
                format!("id = 1\nlisten = \"10.77.9.1\"\npeers = [\"10.77.9.2:1\"]\nkey = \"{KEY}\""),
                "director.sync.listen`: expected an IPv4 address",
            ),
            (
                format!("id = 1\nlisten = \"10.77.9.1:1\"\nkey = \"{KEY}\""),
                "director.sync.peers`: missing",
            ),
            (
                format!("id = 1\nlisten = \"10.77.9.1:1\"\npeers = [\"10.77.9.1:1\"]\nkey = \"{KEY}\""),
                "own `listen` address",
            ),
            (
                format!("id = 1\nlisten = \"10.77.9.1:1\"\npeers = [\"10.77.9.2:1\", \"10.77.9.2:1\"]\nkey = \"{KEY}\""),
                "director.sync.peers[1]`: 10.77.9.2:1 is listed twice",
            ),
            (
                format!("id = 1\nlisten = \"10.77.9.1:1\"\npeers = [\"nowhere\"]\nkey = \"{KEY}\""),
                "director.sync.peers[0]`: expected an IPv4 address",
            ),
            (
                format!("{BASE}\nkey = \"{KEY}\"\nrole = \"primary\""),
                "director.sync.role`: expected \"master\"",
            ),
            (
                format!("{BASE}\nkey = \"{KEY}\"\nthreshold = 0"),
                "director.sync.threshold`: expected 1 to",
            ),
            (
                format!("{BASE}\nkey = \"{KEY}\"\nsloppy = true"),
                "director.sync.sloppy",
            ),
        ];
        for (text, want) in cases {
            let e = err(&text);
            assert!(e.contains(want), "{text}\n→ {e}\nwanted {want:?}");
        }
    }

    #[test]
    fn the_key_file_is_read_and_must_not_be_world_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ringvs-sync-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sync.key");
        std::fs::write(&path, format!("{KEY}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let text = format!("{BASE}\nkey_file = {:?}", path.display().to_string());
        let s = ok(&text);
        assert_eq!(s.key, crate::sync::Key::from_hex(KEY).unwrap());
        assert_eq!(s.key_file.as_deref(), Some(path.as_path()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            err(&text).contains("can be read by every user"),
            "{}",
            err(&text)
        );
        let missing = format!("{BASE}\nkey_file = \"/nonexistent/sync.key\"");
        assert!(err(&missing).contains("cannot read the key file /nonexistent/sync.key"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn save_writes_back_what_was_read() {
        let text =
            format!("[director.sync]\n{BASE}\nkey = \"{KEY}\"\nrole = \"master\"\nperiod = 7\n");
        let c = crate::config::from_str(&text, "t.toml").unwrap();
        let saved = crate::config::save::to_toml(&c.director, &c.plugins, &c.services).unwrap();
        let again = crate::config::from_str(&saved, "saved.toml").unwrap();
        assert_eq!(again.director.sync, c.director.sync);
    }
}
