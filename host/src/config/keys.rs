//! Keys this version does not know, all of them at once and each explained: a config left
//! over from an older version (a key that was renamed or removed: [`RETIRED`]), one written
//! with keepalived's or ipvsadm's words ([`FOREIGN`]), or a typo (the nearest known key).
//!
//! The known keys are the fields of the structs the file is read into (`raw`), as serde
//! itself lists them: nothing here repeats them.

use super::raw;
use serde::de::{self, Visitor};
use serde::Deserialize;

/// Keys an older ringvs knew and this one does not, with what to write instead. When a key
/// is renamed or removed, it goes here (as `section.key`, `service.key`, `server.key`,
/// `health.key`, `plugins.key`), so an old config is explained rather than just refused.
pub const RETIRED: &[(&str, &str)] = &[];

/// keepalived's and ipvsadm's words for what ringvs calls otherwise (any section).
pub const FOREIGN: &[(&str, &str)] = &[
    ("virtual_server", "keepalived's virtual_server is a `[[service]]` here"),
    ("real_server", "keepalived's real_server is a `[[service.server]]` here"),
    ("lb_algo", "keepalived's lb_algo is `scheduler` here (e.g. scheduler = \"wrr\")"),
    ("lvs_sched", "keepalived's lvs_sched is `scheduler` here (e.g. scheduler = \"wrr\")"),
    ("lb_kind", "keepalived's lb_kind is `forward` here (forward = \"nat\" or \"tun\", per service or server)"),
    ("lvs_method", "keepalived's lvs_method is `forward` here (forward = \"nat\" or \"tun\", per service or server)"),
    ("protocol", "`proto` here (\"tcp\" or \"udp\")"),
    ("persistence_timeout", "keepalived's persistence_timeout is `persistence = { plugin = \"persist-netmask\", timeout = \"300s\" }` here"),
    ("persistence_granularity", "keepalived's persistence_granularity is `persistence.config.netmask` here"),
    ("persistent", "ipvsadm's -p is `persistence = { plugin = \"persist-netmask\", timeout = \"300s\" }` here"),
    ("netmask", "ipvsadm's -M is `persistence.config.netmask` here"),
    ("delay_loop", "keepalived's delay_loop is `health.interval` here"),
    ("connect_timeout", "keepalived's connect_timeout is `health.timeout` here"),
    ("connect_port", "keepalived's connect_port is `health.port` here"),
    ("connect_ip", "keepalived's connect_ip is `health.addr` here"),
    ("retry", "keepalived's retry is `health.fall` here (retry + 1)"),
    ("inhibit_on_failure", "keepalived's inhibit_on_failure is `health.on_fail = \"quiesce\"` here"),
    ("status_code", "keepalived's status_code is `health.expect` here"),
    ("virtualhost", "keepalived's virtualhost is `health.host` here"),
    ("u_threshold", "keepalived's uthreshold is `upper` here (ipvsadm -x)"),
    ("uthreshold", "keepalived's uthreshold is `upper` here (ipvsadm -x)"),
    ("lthreshold", "keepalived's lthreshold is `lower` here (ipvsadm -y)"),
    ("misc_path", "keepalived's MISC_CHECK misc_path is `health = { check = \"script\", command = [\"/path\", \"arg\"] }` here"),
    ("misc_timeout", "keepalived's misc_timeout is `health.timeout` here"),
    ("misc_dynamic", "keepalived's misc_dynamic is `health.dynamic = true` here"),
    ("notify_up", "keepalived's notify_up is `notify = { up = [\"/path\", \"arg\"] }` here"),
    ("notify_down", "keepalived's notify_down is `notify = { down = [\"/path\", \"arg\"] }` here"),
];

/// The field names serde's derive gives a struct's `deserialize_struct`.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut found = None;
    let _ = T::deserialize(Recorder(&mut found));
    found.unwrap_or(&[])
}

/// A deserializer that only records the fields a struct asks for.
struct Recorder<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> de::Deserializer<'de> for Recorder<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only structs"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// Edit distance (Levenshtein), for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// An unknown key found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    /// Where, e.g. `service[0].lb_algo`.
    pub key: String,
    /// What it is and what to write instead.
    pub explanation: String,
}

fn explain(section: &str, name: &str, known: &[&str]) -> String {
    explain_with(RETIRED, section, name, known)
}

fn explain_with(retired: &[(&str, &str)], section: &str, name: &str, known: &[&str]) -> String {
    let scoped = format!("{section}.{name}");
    if let Some((_, why)) = retired.iter().find(|(k, _)| *k == scoped || *k == name) {
        return format!("`{name}` is no longer a key of ringvs: {why}");
    }
    if let Some((_, why)) = FOREIGN.iter().find(|(k, _)| *k == name) {
        return format!("`{name}` is not a ringvs key: {why}");
    }
    let near = known
        .iter()
        .map(|k| (distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min();
    match near {
        Some((_, k)) => format!("unknown key `{name}`; did you mean `{k}`?"),
        None => format!(
            "unknown key `{name}` of {}; known: {}",
            if section.is_empty() {
                "the file"
            } else {
                section
            },
            known.join(", ")
        ),
    }
}

/// The keys of `table` (a `section`) not in `known`, explained, with their full keys.
fn check_table(
    path: &str,
    section: &str,
    table: &toml::Table,
    known: &[&str],
    out: &mut Vec<Unknown>,
) {
    for name in table.keys() {
        if !known.contains(&name.as_str()) {
            out.push(Unknown {
                key: if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                },
                explanation: explain(section, name, known),
            });
        }
    }
}

/// Every key of the file `doc` this version does not know, in file order per table. Values
/// of the wrong type are left to the reader, which names them.
pub fn unknown(doc: &toml::Table) -> Vec<Unknown> {
    let mut out = Vec::new();
    check_table("", "", doc, fields_of::<raw::File>(), &mut out);
    if let Some(toml::Value::Table(d)) = doc.get("director") {
        check_table(
            "director",
            "director",
            d,
            fields_of::<raw::Director>(),
            &mut out,
        );
        if let Some(toml::Value::Table(s)) = d.get("sync") {
            check_table(
                "director.sync",
                "sync",
                s,
                fields_of::<raw::Sync>(),
                &mut out,
            );
        }
    }
    if let Some(toml::Value::Table(plugins)) = doc.get("plugins") {
        for (name, p) in plugins {
            if let toml::Value::Table(p) = p {
                let path = format!("plugins.{name}");
                check_table(&path, "plugins", p, fields_of::<raw::Plugin>(), &mut out);
            }
        }
    }
    let health = fields_of::<raw::Health>();
    if let Some(toml::Value::Array(services)) = doc.get("service") {
        for (i, s) in services.iter().enumerate() {
            let toml::Value::Table(s) = s else { continue };
            let path = format!("service[{i}]");
            check_table(&path, "service", s, fields_of::<raw::Service>(), &mut out);
            if let Some(toml::Value::Table(p)) = s.get("persistence") {
                let path = format!("{path}.persistence");
                check_table(
                    &path,
                    "persistence",
                    p,
                    fields_of::<raw::Persistence>(),
                    &mut out,
                );
            }
            if let Some(toml::Value::Table(h)) = s.get("health") {
                check_table(&format!("{path}.health"), "health", h, health, &mut out);
            }
            if let Some(toml::Value::Array(servers)) = s.get("server") {
                for (j, x) in servers.iter().enumerate() {
                    let toml::Value::Table(x) = x else { continue };
                    let path = format!("{path}.server[{j}]");
                    check_table(&path, "server", x, fields_of::<raw::Server>(), &mut out);
                    if let Some(toml::Value::Table(h)) = x.get("health") {
                        check_table(&format!("{path}.health"), "health", h, health, &mut out);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_come_from_the_structs() {
        assert!(fields_of::<raw::Director>().contains(&"conn_memory_limit"));
        assert!(fields_of::<raw::Director>().contains(&"plugin_dirs"));
        assert_eq!(fields_of::<raw::File>(), ["director", "plugins", "service"]);
        assert!(fields_of::<raw::Health>().contains(&"on_fail"));
        assert!(fields_of::<raw::Server>().contains(&"weight"));
    }

    #[test]
    fn every_unknown_key_is_listed_and_explained() {
        let doc: toml::Table = toml::from_str(
            r#"
            qeueus = 1
            [director]
            qeueus = 2
            admin_sockett = "/x"
            [plugins.x]
            pth = "a.wasm"
            [[service]]
            name = "web"
            vip = "10.77.100.100:80"
            lb_algo = "wrr"
            persistence_timeout = 300
            health = { check = "tcp", delay_loop = 2 }
            [[service.server]]
            addr = "10.77.1.1"
            wieght = 1
            frobnicate = true
            "#,
        )
        .unwrap();
        let u = unknown(&doc);
        let keys: Vec<&str> = u.iter().map(|x| x.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "qeueus",
                "director.admin_sockett",
                "director.qeueus",
                "plugins.x.pth",
                "service[0].lb_algo",
                "service[0].persistence_timeout",
                "service[0].health.delay_loop",
                "service[0].server[0].frobnicate",
                "service[0].server[0].wieght",
            ]
        );
        let why = |k: &str| u.iter().find(|x| x.key == k).unwrap().explanation.clone();
        assert_eq!(
            why("director.qeueus"),
            "unknown key `qeueus`; did you mean `queues`?"
        );
        assert_eq!(
            why("director.admin_sockett"),
            "unknown key `admin_sockett`; did you mean `admin_socket`?"
        );
        assert_eq!(
            why("plugins.x.pth"),
            "unknown key `pth`; did you mean `path`?"
        );
        assert!(why("service[0].lb_algo").contains("is `scheduler` here"));
        assert!(why("service[0].health.delay_loop").contains("`health.interval`"));
        assert!(why("service[0].server[0].wieght").contains("`weight`"));
        assert!(why("service[0].server[0].frobnicate").contains("known: addr, weight"));
        assert!(why("qeueus").contains("known: director, plugins, service"));
    }

    #[test]
    fn retired_keys_say_what_replaced_them() {
        let retired = [("director.workers", "renamed `queues` in 0.2")];
        let known = fields_of::<raw::Director>();
        assert_eq!(
            explain_with(&retired, "director", "workers", known),
            "`workers` is no longer a key of ringvs: renamed `queues` in 0.2"
        );
        // Scoped: the same name elsewhere is not that key.
        assert!(explain_with(&retired, "service", "workers", known).starts_with("unknown key"));
        for (k, why) in RETIRED.iter().chain(FOREIGN) {
            assert!(!why.is_empty() && !k.is_empty());
            assert!(
                !fields_of::<raw::Service>().contains(k)
                    && !fields_of::<raw::Director>().contains(k)
                    && !fields_of::<raw::Server>().contains(k)
                    && !fields_of::<raw::Health>().contains(k),
                "{k} is a key of this version"
            );
        }
    }
}
