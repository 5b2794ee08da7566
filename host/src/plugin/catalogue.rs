//! The catalogue: the plugins of the workspace's `plugins/` directory, which every ringvs
//! ships and which a config uses by name with no `[plugins.*]` entry (`scheduler = "wrr"`,
//! `defense = ["secure-tcp"]`, `persistence = { plugin = "persist-netmask", … }`).
//!
//! The components are files, not part of the binary: `cargo build` stays a plain build of
//! the host, and the operator can see, hash and pin what runs. They are looked for, in
//! order, in the directories of `director.plugin_dirs`, then [`default_dirs`]: next to the
//! binary as installed (`BIN/../lib/ringvs/plugins`, so `/usr/bin/ringvs` finds
//! `/usr/lib/ringvs/plugins`), the workspace's build directory when the binary is a build
//! (`target/wasm32-wasip2/plugin`, written by `scripts/build-plugins.sh`), and
//! [`SYSTEM_DIR`]. A `[plugins.NAME] path = …` overrides a catalogue name; a
//! `[plugins.NAME]` of a catalogue name without `path` configures or pins the catalogue's file.
//!
//! `rr` and `wlc` are native built-ins ([`super::builtin`]) and stay so; their WebAssembly
//! builds are in the catalogue under their crate names, `sched-rr` and `sched-wlc`.
//!
//! Every plugin built with the SDK carries its crate name and version in the custom section
//! [`ringvs_abi::IDENT_SECTION`]; [`ident`] reads it.

use super::runtime::Kind;
use std::path::{Path, PathBuf};

/// Where a package installs the catalogue.
pub const SYSTEM_DIR: &str = "/usr/lib/ringvs/plugins";

/// A plugin of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The name a config uses.
    pub name: &'static str,
    /// The crate under `plugins/` it is built from.
    pub crate_name: &'static str,
    /// What it exports.
    pub kind: Kind,
    /// One line about it.
    pub about: &'static str,
}

impl Entry {
    /// The component's file name: the crate's name with `_` for `-`, `.wasm`.
    pub fn file_name(&self) -> String {
        format!("{}.wasm", self.crate_name.replace('-', "_"))
    }
}

const fn e(name: &'static str, crate_name: &'static str, kind: Kind, about: &'static str) -> Entry {
    Entry {
        name,
        crate_name,
        kind,
        about,
    }
}

/// Every plugin of the catalogue (a test checks it against `plugins/`).
pub const ENTRIES: &[Entry] = &[
    e(
        "wrr",
        "sched-wrr",
        Kind::Scheduler,
        "weighted round robin (IPVS wrr)",
    ),
    e(
        "lc",
        "sched-lc",
        Kind::Scheduler,
        "least connection (IPVS lc)",
    ),
    e(
        "sed",
        "sched-sed",
        Kind::Scheduler,
        "shortest expected delay (IPVS sed)",
    ),
    e("nq", "sched-nq", Kind::Scheduler, "never queue (IPVS nq)"),
    e(
        "sh",
        "sched-sh",
        Kind::Scheduler,
        "source hashing (IPVS sh)",
    ),
    e(
        "mh",
        "sched-mh",
        Kind::Scheduler,
        "Maglev hashing (IPVS mh)",
    ),
    e(
        "twos",
        "sched-twos",
        Kind::Scheduler,
        "power of two choices (IPVS twos)",
    ),
    e(
        "sched-rr",
        "sched-rr",
        Kind::Scheduler,
        "round robin, the WebAssembly build of the built-in rr",
    ),
    e(
        "sched-wlc",
        "sched-wlc",
        Kind::Scheduler,
        "weighted least connection, the WebAssembly build of the built-in wlc",
    ),
    e(
        "persist-netmask",
        "persist-netmask",
        Kind::Persistence,
        "persistence by client network (ipvsadm -p -M)",
    ),
    e(
        "secure-tcp",
        "defense-secure-tcp",
        Kind::Defense,
        "IPVS secure_tcp: server-driven TCP states under memory pressure",
    ),
    e(
        "drop-entry",
        "defense-drop-entry",
        Kind::Defense,
        "IPVS drop_entry: reap half-open entries under memory pressure",
    ),
    e(
        "drop-packet",
        "defense-drop-packet",
        Kind::Defense,
        "IPVS drop_packet: refuse 1 in rate new flows under memory pressure",
    ),
    e(
        "ratelimit",
        "defense-ratelimit",
        Kind::Defense,
        "per-source and per-prefix new-flow and concurrency limits",
    ),
    e(
        "synauth",
        "defense-synauth",
        Kind::Defense,
        "SYN authentication by retransmission under a SYN flood",
    ),
];

/// The catalogue plugin called `name`.
pub fn get(name: &str) -> Option<&'static Entry> {
    ENTRIES.iter().find(|e| e.name == name)
}

/// The directories searched after `director.plugin_dirs`, in order: the installed layout
/// next to the binary, the workspace's build directory if the binary is a build (or a test
/// of one), and [`SYSTEM_DIR`].
pub fn default_dirs() -> Vec<PathBuf> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let mut dirs = Vec::new();
    if let Some(bin) = exe_dir {
        dirs.push(bin.join("../lib/ringvs/plugins"));
        // target/{debug,release}/ringvs, and target/debug/deps/TEST for tests.
        for up in ["..", "../.."] {
            let d = bin.join(up).join("wasm32-wasip2/plugin");
            if d.is_dir() {
                dirs.push(d);
            }
        }
    }
    dirs.push(PathBuf::from(SYSTEM_DIR));
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        let d = std::fs::canonicalize(&d).unwrap_or_else(|_| lexical(&d));
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// `p` with `.` and `..` resolved without the file system (for a directory that does not
/// exist, so cannot be canonicalized).
fn lexical(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// `first` (a config's `director.plugin_dirs`), then [`default_dirs`].
pub fn search_path(first: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = first.to_vec();
    for d in default_dirs() {
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// The first file of `entry` in `dirs`.
pub fn locate(entry: &Entry, dirs: &[PathBuf]) -> Option<PathBuf> {
    let file = entry.file_name();
    dirs.iter().map(|d| d.join(&file)).find(|p| p.is_file())
}

/// Why a catalogue plugin cannot be used here: its file is in none of `dirs`.
pub fn not_found(entry: &Entry, dirs: &[PathBuf]) -> String {
    let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    format!(
        "{:?} is a catalogue {} plugin, but {} is in none of: {} (install the ringvs package, build the catalogue with `bash scripts/build-plugins.sh`, or set director.plugin_dirs)",
        entry.name,
        entry.kind.name(),
        entry.file_name(),
        list.join(", ")
    )
}

/// A plugin available by name, as `ringvs plugin list --available` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Available {
    /// The name a config uses.
    pub name: String,
    /// `scheduler`, `persistence` or `defense`.
    pub kind: &'static str,
    /// One line about it.
    pub about: &'static str,
    /// A native built-in (no file).
    pub builtin: bool,
    /// The file found, if any.
    pub file: Option<PathBuf>,
    /// Its SHA-256 (what `sha256 = …` pins), if found.
    pub sha256: Option<String>,
    /// The `"CRATE VERSION"` it carries, if found and built with the SDK.
    pub version: Option<String>,
}

/// The built-ins, then every catalogue plugin with the file `dirs` give it.
pub fn available(dirs: &[PathBuf]) -> Vec<Available> {
    use sha2::{Digest, Sha256};
    let mut out: Vec<Available> = super::builtin::NAMES
        .iter()
        .map(|n| Available {
            name: n.to_string(),
            kind: Kind::Scheduler.name(),
            about: match *n {
                "rr" => "round robin (IPVS rr), native",
                _ => "weighted least connection (IPVS wlc, the default), native",
            },
            builtin: true,
            file: None,
            sha256: None,
            version: Some(format!("ringvs {}", env!("CARGO_PKG_VERSION"))),
        })
        .collect();
    for e in ENTRIES {
        let file = locate(e, dirs);
        let bytes = file
            .as_ref()
            .and_then(|f| crate::plugin::read_plugin_file(f).ok());
        out.push(Available {
            name: e.name.to_string(),
            kind: e.kind.name(),
            about: e.about,
            builtin: false,
            sha256: bytes
                .as_ref()
                .map(|b| super::hex(Sha256::digest(b).as_slice())),
            version: bytes.as_deref().and_then(ident),
            file,
        });
    }
    out
}

/// The `"NAME VERSION"` a component built with the SDK carries in its custom section
/// [`ringvs_abi::IDENT_SECTION`], looked for in the component and the core modules it
/// embeds. `None` for anything else (never panics on bad input).
pub fn ident(wasm: &[u8]) -> Option<String> {
    find_section(wasm, 0).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

/// A LEB128 u32 at `*at`, moving past it.
fn leb_u32(b: &[u8], at: &mut usize) -> Option<u32> {
    let mut v: u64 = 0;
    for shift in (0..35).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return u32::try_from(v).ok();
        }
    }
    None
}

/// The ident section's payload in the module or component `b` (nested `depth` deep).
fn find_section(b: &[u8], depth: u32) -> Option<&[u8]> {
    if depth > 4 || b.get(..4)? != b"\0asm" || b.len() < 8 {
        return None;
    }
    let component = b[6..8] == [1, 0];
    let mut at = 8;
    while at < b.len() {
        let id = b[at];
        at += 1;
        let size = leb_u32(b, &mut at)? as usize;
        let body = b.get(at..at.checked_add(size)?)?;
        at += size;
        match id {
            0 => {
                let mut p = 0;
                let n = leb_u32(body, &mut p)? as usize;
                let name = body.get(p..p.checked_add(n)?)?;
                if name == ringvs_abi::IDENT_SECTION.as_bytes() {
                    return body.get(p + n..);
                }
            }
            // A component's core module (1) or nested component (4).
            1 | 4 if component => {
                if let Some(found) = find_section(body, depth + 1) {
                    return Some(found);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(id: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![id];
        let mut n = body.len();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                v.push(byte);
                break;
            }
            v.push(byte | 0x80);
        }
        v.extend_from_slice(body);
        v
    }

    fn custom(name: &str, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![name.len() as u8];
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(payload);
        section(0, &body)
    }

    #[test]
    fn ident_is_found_in_a_module_nested_in_a_component() {
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        module.extend(section(1, &[0]));
        module.extend(custom("other", b"x"));
        module.extend(custom(ringvs_abi::IDENT_SECTION, b"sched-wrr 0.1.0"));
        let mut comp = b"\0asm\x0d\0\x01\0".to_vec();
        comp.extend(custom("producers", &[0; 200]));
        comp.extend(section(1, &module));
        assert_eq!(ident(&comp).as_deref(), Some("sched-wrr 0.1.0"));
        assert_eq!(ident(&module).as_deref(), Some("sched-wrr 0.1.0"));
    }

    #[test]
    fn ident_never_panics_on_bad_input() {
        let mut comp = b"\0asm\x0d\0\x01\0".to_vec();
        comp.extend(custom(ringvs_abi::IDENT_SECTION, b"x 1"));
        assert_eq!(ident(&comp).as_deref(), Some("x 1"));
        for cut in 0..comp.len() {
            let _ = ident(&comp[..cut]);
        }
        for i in 8..comp.len() {
            let mut bad = comp.clone();
            bad[i] = 0xff;
            let _ = ident(&bad);
        }
        assert_eq!(ident(b""), None);
        assert_eq!(ident(b"\0asm\x0d\0\x01\0\x00\xff\xff\xff\xff\xff"), None);
    }

    #[test]
    fn the_catalogue_is_the_plugins_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
        let mut crates: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|d| d.ok())
            .filter(|d| d.path().join("Cargo.toml").is_file())
            .map(|d| d.file_name().to_string_lossy().into_owned())
            .collect();
        crates.sort();
        let mut listed: Vec<String> = ENTRIES.iter().map(|e| e.crate_name.to_string()).collect();
        listed.sort();
        assert_eq!(crates, listed, "plugins/ and the catalogue differ");
        for e in ENTRIES {
            let toml = std::fs::read_to_string(dir.join(e.crate_name).join("Cargo.toml")).unwrap();
            assert!(
                toml.contains(&format!("name = \"{}\"", e.crate_name)),
                "{}",
                e.crate_name
            );
            let prefix = match e.kind {
                Kind::Scheduler => "sched-",
                Kind::Persistence => "persist-",
                Kind::Defense => "defense-",
            };
            assert!(e.crate_name.starts_with(prefix), "{}", e.crate_name);
            assert!(
                !super::super::builtin::NAMES.contains(&e.name),
                "{}",
                e.name
            );
            assert_eq!(get(e.name), Some(e));
        }
        let names: std::collections::HashSet<_> = ENTRIES.iter().map(|e| e.name).collect();
        assert_eq!(names.len(), ENTRIES.len(), "a name is used twice");
    }

    #[test]
    fn search_path_puts_the_configured_dirs_first_and_ends_with_the_system_dir() {
        let p = search_path(&[PathBuf::from("/opt/mine")]);
        assert_eq!(p[0], PathBuf::from("/opt/mine"));
        assert_eq!(p.last().unwrap(), &PathBuf::from(SYSTEM_DIR));
        let entry = get("wrr").unwrap();
        assert_eq!(entry.file_name(), "sched_wrr.wasm");
        assert_eq!(
            lexical(Path::new("/usr/bin/../lib/./ringvs/plugins")),
            PathBuf::from("/usr/lib/ringvs/plugins")
        );
        let msg = not_found(entry, &[PathBuf::from("/nowhere")]);
        assert!(
            msg.contains("sched_wrr.wasm is in none of: /nowhere"),
            "{msg}"
        );
    }
}
