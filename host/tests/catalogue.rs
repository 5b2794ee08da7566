//! The catalogue out of the box, with the built components (`scripts/build-plugins.sh`) and
//! the real `ringvs` binary:
//!
//! - every plugin of `plugins/` is used by name with no `[plugins.*]` entry and passes
//!   `ringvs check`; a `[plugins.NAME]` without a path pins the catalogue's file;
//! - `ringvs plugin list --available` shows each with its version and hash;
//! - a binary installed as a package installs it (`BIN/../lib/ringvs/plugins`) finds the
//!   catalogue there, and one with no catalogue names the key and where it looked;
//! - at runtime, like ipvsadm: `service add … --scheduler sh -p 300 -M 255.255.255.0`,
//!   `plugin swap web wrr`, `service edit web --defense secure-tcp` load what they name.

mod common;

use common::director::{run, text, tmpdir, Director, BIN};
use common::plugins::plugin_dir;
use ringvs::dataplane::testkit::{tcp, TWO_SERVICES};
use ringvs::plugin::catalogue::{self, ENTRIES};
use ringvs::wire::tcp::flags::SYN;
use sha2::{Digest, Sha256};
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

fn sha256_hex(path: &Path) -> String {
    let d = Sha256::digest(std::fs::read(path).unwrap());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A config with one service per catalogue scheduler, and one with the persistence plugin
/// and every defense, all by name.
fn every_plugin_by_name(director: &str) -> String {
    // ratelimit refuses to run without a limit: its entry has a config and no path.
    let mut t = format!("[plugins.ratelimit]\nconfig = {{ new_flows_per_sec = 100 }}\n\n[director]\nmetrics_listen = \"off\"\n{director}\n");
    let defenses: Vec<String> = ENTRIES
        .iter()
        .filter(|e| e.kind == ringvs::plugin::Kind::Defense)
        .map(|e| format!("{:?}", e.name))
        .collect();
    for (i, e) in ENTRIES
        .iter()
        .filter(|e| e.kind == ringvs::plugin::Kind::Scheduler)
        .enumerate()
    {
        t += &format!(
            "[[service]]\nname = \"s{i}\"\nvip = \"10.77.100.100:{}\"\nscheduler = \"{}\"\n[[service.server]]\naddr = \"10.77.1.1:8080\"\n\n",
            8000 + i,
            e.name
        );
    }
    t += &format!(
        "[[service]]\nname = \"web\"\nvip = \"10.77.100.100:80\"\nscheduler = \"wlc\"\npersistence = {{ plugin = \"persist-netmask\", timeout = \"300s\", config = {{ netmask = \"255.255.255.0\" }} }}\ndefense = [{}]\n[[service.server]]\naddr = \"10.77.1.1:8080\"\n",
        defenses.join(", ")
    );
    t
}

#[test]
fn every_catalogue_plugin_passes_check_by_name() {
    plugin_dir();
    let dir = tmpdir("check");
    let conf = dir.join("ringvs.toml");
    std::fs::write(&conf, every_plugin_by_name("")).unwrap();
    let o = run(Path::new(BIN), &["check", "-c", conf.to_str().unwrap()]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}{}", out, text(&o.stderr));
    for e in ENTRIES {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("plugin {}: ", e.name)))
            .unwrap_or_else(|| panic!("no line for {}:\n{out}", e.name));
        assert!(line.contains(e.kind.name()), "{line}");
        assert!(line.contains(&e.file_name()), "{line}");
        assert!(line.ends_with("OK (catalogue)"), "{line}");
    }
    assert!(
        out.contains(&format!("OK: {} service(s)", 10)),
        "ten services: {out}"
    );
    // Without its entry, ratelimit's refusal says how to configure it.
    let no_entry = every_plugin_by_name("").replace(
        "[plugins.ratelimit]\nconfig = { new_flows_per_sec = 100 }\n",
        "",
    );
    std::fs::write(&conf, no_entry).unwrap();
    let o = run(Path::new(BIN), &["check", "-c", conf.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = text(&o.stderr);
    assert!(
        e.contains("plugins.ratelimit: the plugin rejected its config"),
        "{e}"
    );
    assert!(
        e.contains("give it one in a [plugins.ratelimit] entry"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_pin_on_a_catalogue_plugin_is_enforced() {
    let file = plugin_dir().join("sched_wrr.wasm");
    let dir = tmpdir("pin");
    let conf = dir.join("ringvs.toml");
    let write = |sha: &str| {
        std::fs::write(
            &conf,
            format!(
                "[plugins.wrr]\nsha256 = \"{sha}\"\n\n[director]\nmetrics_listen = \"off\"\n\n[[service]]\nname = \"web\"\nvip = \"10.77.100.100:80\"\nscheduler = \"wrr\"\n"
            ),
        )
        .unwrap()
    };
    write(&sha256_hex(&file));
    let o = run(Path::new(BIN), &["check", "-c", conf.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    write(&"0".repeat(64));
    let o = run(Path::new(BIN), &["check", "-c", conf.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = text(&o.stderr);
    assert!(
        e.contains("plugins.wrr") && e.contains("sha256 mismatch"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plugin_list_available_shows_versions_and_hashes() {
    let built = plugin_dir();
    let o = run(Path::new(BIN), &["plugin", "list", "--available"]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for name in ["rr", "wlc"] {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{out}"));
        assert!(line.contains("built-in (native)"), "{line}");
    }
    for e in ENTRIES {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(e.name))
            .unwrap_or_else(|| panic!("{} not listed:\n{out}", e.name));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1], e.kind.name(), "{line}");
        assert_eq!(
            (cols[2], cols[3]),
            (e.crate_name, env!("CARGO_PKG_VERSION")),
            "the component's own name and version: {line}"
        );
        let file = PathBuf::from(cols[5]);
        assert_eq!(cols[4], sha256_hex(&file), "{line}");
        assert_eq!(
            std::fs::canonicalize(&file).unwrap(),
            std::fs::canonicalize(built.join(e.file_name())).unwrap()
        );
    }
    assert!(out.contains("catalogue searched in: "), "{out}");
    assert!(!out.contains("not found"), "{out}");
}

#[test]
fn an_installed_binary_finds_its_catalogue_and_one_without_names_the_key() {
    let built = plugin_dir();
    let root = tmpdir("install");
    let conf = root.join("ringvs.toml");
    std::fs::write(
        &conf,
        "[director]\nmetrics_listen = \"off\"\n\n[[service]]\nname = \"web\"\nvip = \"10.77.100.100:80\"\nscheduler = \"wrr\"\ndefense = [\"secure-tcp\"]\n",
    )
    .unwrap();
    // The package's layout: /usr/bin/ringvs and /usr/lib/ringvs/plugins.
    let bin = root.join("usr/bin/ringvs");
    let lib = root.join("usr/lib/ringvs/plugins");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::copy(BIN, &bin).unwrap();
    let system = Path::new(catalogue::SYSTEM_DIR).join("sched_wrr.wasm");
    if system.exists() {
        eprintln!(
            "notice: {} exists (a package is installed): not checking a binary without a catalogue",
            system.display()
        );
    } else {
        let o = run(&bin, &["check", "-c", conf.to_str().unwrap()]);
        assert!(
            !o.status.success(),
            "no catalogue anywhere, yet: {}",
            text(&o.stdout)
        );
        let e = text(&o.stderr);
        assert!(e.contains("key `service[0].scheduler`"), "{e}");
        assert!(
            e.contains(
                "\"wrr\" is a catalogue scheduler plugin, but sched_wrr.wasm is in none of:"
            ),
            "{e}"
        );
        assert!(
            e.contains(&lib.display().to_string()),
            "the search path: {e}"
        );
    }
    for f in ["sched_wrr.wasm", "defense_secure_tcp.wasm"] {
        std::fs::copy(built.join(f), lib.join(f)).unwrap();
    }
    let o = run(&bin, &["check", "-c", conf.to_str().unwrap()]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(
        out.contains(&format!("{}/sched_wrr.wasm", lib.display())),
        "found next to the binary: {out}"
    );
    // director.plugin_dirs comes first.
    let mine = root.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::copy(built.join("sched_wrr.wasm"), mine.join("sched_wrr.wasm")).unwrap();
    std::fs::write(
        &conf,
        std::fs::read_to_string(&conf)
            .unwrap()
            .replace("[director]", "[director]\nplugin_dirs = [\"mine\"]"),
    )
    .unwrap();
    let o = run(&bin, &["check", "-c", conf.to_str().unwrap()]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(
        out.contains(&format!("{}/sched_wrr.wasm", mine.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}/defense_secure_tcp.wasm", lib.display())),
        "{out}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

fn a(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

/// The realserver a forwarded packet went to.
fn dest(pkt: &Option<Vec<u8>>) -> SocketAddrV4 {
    let p = pkt.as_ref().expect("forwarded");
    let ip = std::net::Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    SocketAddrV4::new(ip, u16::from_be_bytes([p[22], p[23]]))
}

#[test]
fn runtime_edits_load_catalogue_plugins_like_ipvsadm() {
    plugin_dir();
    let mut d = Director::start(TWO_SERVICES);
    // ipvsadm -A -t 10.77.100.101:80 -s sh -p 300 -M 255.255.255.0
    let out = d.ok(&[
        "service",
        "add",
        "api",
        "--vip",
        "10.77.100.101:80",
        "--scheduler",
        "sh",
        "-p",
        "300",
        "-M",
        "255.255.255.0",
    ]);
    assert_eq!(out.trim(), "ok");
    for rs in ["10.77.1.1:8080", "10.77.1.2:8080", "10.77.1.3:8080"] {
        d.ok(&["server", "add", "api", rs]);
    }
    let l = d.list();
    let api = l.services.iter().find(|s| s.name == "api").unwrap();
    assert_eq!(api.scheduler, "sh");
    assert_eq!(api.flags, ["persistent 300", "mask 255.255.255.0"]);
    let table = d.ok(&["list"]);
    assert!(
        table.contains("TCP  10.77.100.101:80 sh persistent 300 mask 255.255.255.0"),
        "{table}"
    );
    // Persistence per /24: clients of one network share a realserver.
    let vip = a("10.77.100.101:80");
    let first = d.packets(&[tcp(a("10.77.9.1:40000"), vip, SYN, b"")]);
    let rs = dest(&first[0]);
    for i in 2..8u8 {
        let c = SocketAddrV4::new(std::net::Ipv4Addr::new(10, 77, 9, i), 41000 + u16::from(i));
        let out = d.packets(&[tcp(c, vip, SYN, b"")]);
        assert_eq!(dest(&out[0]), rs, "client {c} of the same /24");
    }

    // -p without a value is ipvsadm's default, 300 s; edits keep what they do not name.
    d.ok(&["service", "edit", "api", "-p", "60"]);
    let l = d.list();
    let api = l.services.iter().find(|s| s.name == "api").unwrap();
    assert_eq!(api.flags, ["persistent 60", "mask 255.255.255.0"]);
    d.ok(&["service", "edit", "api", "--no-persistent"]);
    let l = d.list();
    assert!(l
        .services
        .iter()
        .find(|s| s.name == "api")
        .unwrap()
        .flags
        .is_empty());
    d.ok(&["service", "add", "p2", "--vip", "10.77.100.102:80", "-p"]);
    let l = d.list();
    assert_eq!(
        l.services.iter().find(|s| s.name == "p2").unwrap().flags,
        ["persistent 300"]
    );

    // A swap and a defense by catalogue name.
    let out = d.ok(&["plugin", "swap", "web", "wrr"]);
    assert!(out.contains("web: scheduler wlc -> wrr"), "{out}");
    assert_eq!(
        d.ok(&["service", "edit", "web", "--defense", "secure-tcp"])
            .trim(),
        "ok"
    );
    let plugins = d.ok(&["plugin", "list"]);
    for name in ["sh", "persist-netmask", "wrr", "secure-tcp"] {
        assert!(
            plugins.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} not loaded:\n{plugins}"
        );
    }
    // Catalogue names are checked for their kind, and nothing changes on a refusal.
    let before = serde_json::to_string(&d.list()).unwrap();
    for (args, want) in [
        (
            vec!["plugin", "swap", "web", "secure-tcp"],
            "not a scheduler",
        ),
        (
            vec!["service", "edit", "web", "--scheduler", "synauth"],
            "\"synauth\" is a catalogue defense plugin",
        ),
        (
            vec!["service", "edit", "web", "--defense", "mh"],
            "is a catalogue scheduler plugin",
        ),
        (
            vec!["service", "edit", "web", "-M", "255.0.255.0"],
            "netmask",
        ),
        (
            vec!["service", "edit", "web", "--defense", "ratelimit"],
            "[plugins.ratelimit] config = { … }",
        ),
    ] {
        let o = d.cli(&args);
        assert!(!o.status.success(), "{args:?} must fail");
        let e = text(&o.stderr);
        assert!(e.contains(want), "{args:?}: want {want:?}, got {e}");
        assert_eq!(
            serde_json::to_string(&d.list()).unwrap(),
            before,
            "{args:?}"
        );
    }
}
