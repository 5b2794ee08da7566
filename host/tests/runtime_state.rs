//! Runtime state against the config file, with a detached daemon and the `ringvs` binary:
//!
//! - `ringvs save` writes what runs, runtime edits and runtime-only plugins included, as a
//!   config `ringvs check` accepts and that a second daemon runs identically;
//! - `ringvs reload --dry-run` lists what a reload would change, the runtime edits it would
//!   revert included, and changes nothing; `--keep-runtime` keeps them; a plain reload
//!   reverts them and names each one;
//! - every `[director]` key is applied on reload or refused, naming it;
//! - `ringvs check` on a config with keys this version does not know lists and explains them.

mod common;

use common::director::{run, text, tmpdir, Director, BIN};
use common::plugins::plugin_dir;
use ringvs::dataplane::testkit::TWO_SERVICES;
use std::path::Path;

/// The `list` table: what `save` must reproduce.
fn table(d: &Director) -> String {
    d.ok(&["list"])
}

#[test]
fn save_reproduces_runtime_edits_and_names_runtime_only_plugins() {
    let built = plugin_dir();
    let d = Director::start(TWO_SERVICES);
    let file_state = table(&d);
    d.ok(&["server", "weight", "web", "10.77.1.1:8080", "0"]);
    d.ok(&[
        "server",
        "add",
        "web",
        "10.77.1.3:8080",
        "-w",
        "2",
        "-x",
        "100",
        "-y",
        "50",
    ]);
    d.ok(&[
        "service",
        "add",
        "api",
        "--vip",
        "10.77.100.101:80",
        "--scheduler",
        "sh",
        "-p",
        "120",
        "-M",
        "255.255.255.0",
        "--timeout",
        "established=600s",
    ]);
    d.ok(&["server", "add", "api", "10.77.1.1:8080"]);
    let rr = std::fs::canonicalize(built.join("sched_rr.wasm")).unwrap();
    d.ok(&["plugin", "swap", "dns", rr.to_str().unwrap()]);
    let running = table(&d);
    assert_ne!(running, file_state);

    let saved = d.ok(&["save"]);
    assert!(
        saved.starts_with("# ringvs save: the running state of ringvs "),
        "{saved}"
    );
    assert!(
        saved.contains(&format!(
            "#   sched_rr: scheduler plugin {}, swapped in by path at runtime",
            rr.display()
        )),
        "the runtime-only plugin is named:\n{saved}"
    );
    assert!(
        saved.contains("#   sh: catalogue scheduler plugin"),
        "the catalogue plugin named at runtime too:\n{saved}"
    );
    let dir = tmpdir("saved");
    let file = dir.join("saved.toml");
    // -o writes the same text.
    d.ok(&["save", "-o", file.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), saved);
    let o = run(Path::new(BIN), &["check", "-c", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(
        text(&o.stdout).contains("plugin sched_rr: scheduler"),
        "{}",
        text(&o.stdout)
    );
    // A daemon started from the saved file runs the same services.
    let saved_body: String = saved
        .lines()
        .skip_while(|l| !l.starts_with("[director]"))
        .skip(1)
        .filter(|l| {
            !l.starts_with("admin_socket")
                && !l.starts_with("metrics_listen")
                && !l.starts_with("conn_memory_limit")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let e = Director::start(&saved_body);
    assert_eq!(table(&e), running, "saved:\n{saved}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reload_dry_run_keep_runtime_and_reverted_edits() {
    plugin_dir();
    let d = Director::start(TWO_SERVICES);
    let file_state = table(&d);
    d.ok(&["server", "weight", "web", "10.77.1.1:8080", "0"]);
    d.ok(&["server", "add", "web", "10.77.1.3:8080"]);
    d.ok(&[
        "service",
        "add",
        "api",
        "--vip",
        "10.77.100.101:80",
        "--scheduler",
        "wrr",
    ]);
    d.ok(&["plugin", "swap", "dns", "wlc"]);
    let running = table(&d);

    // Unchanged file: the dry run lists every runtime edit as one the reload would revert.
    let dry = d.ok(&["reload", "--dry-run"]);
    for want in [
        "would make 4 change(s), 4 of them reverting runtime edits; nothing was applied",
        "~ service web: server 10.77.1.1:8080 weight 0 -> 1 (reverts a runtime edit)",
        "- service web: server 10.77.1.3:8080 (reverts a runtime edit)",
        "~ service dns: scheduler wlc -> rr (reverts a runtime edit)",
        "- service api (tcp 10.77.100.101:80) (reverts a runtime edit)",
    ] {
        assert!(dry.contains(want), "{want} not in:\n{dry}");
    }
    assert_eq!(table(&d), running, "a dry run changes nothing");
    let dry_keep = d.ok(&["reload", "--dry-run", "--keep-runtime"]);
    assert!(dry_keep.contains("would make 0 change(s)"), "{dry_keep}");
    assert!(
        dry_keep.contains("= service web: server 10.77.1.1:8080 weight 0 (runtime edit kept)"),
        "{dry_keep}"
    );

    // --keep-runtime: the edits stay, and the answer says so.
    let kept = d.ok(&["reload", "--keep-runtime"]);
    assert!(kept.contains("kept runtime edits: "), "{kept}");
    assert!(!kept.contains("reverted"), "{kept}");
    assert_eq!(table(&d), running);

    // The file changes one thing; a plain reload applies it and reverts the rest, by name.
    let conf = std::fs::read_to_string(&d.conf).unwrap();
    std::fs::write(
        &d.conf,
        conf.replace("scheduler = \"rr\"", "scheduler = \"sh\""),
    )
    .unwrap();
    let dry = d.ok(&["reload", "--dry-run"]);
    assert!(dry.contains("+ plugin sh: scheduler"), "{dry}");
    assert!(
        dry.contains("~ service dns: scheduler wlc -> sh (reverts a runtime edit)"),
        "{dry}"
    );
    let done = d.ok(&["reload"]);
    for want in [
        "reverted runtime edits: ",
        "service web: server 10.77.1.1:8080 weight 0 -> 1",
        "- service web: server 10.77.1.3:8080",
        "- service api (tcp 10.77.100.101:80)",
        "`ringvs reload --keep-runtime` keeps them",
    ] {
        assert!(done.contains(want), "{want} not in: {done}");
    }
    // The server added at runtime drains (no connections here; a detached daemon does not
    // collect it).
    let now: String = table(&d)
        .lines()
        .filter(|l| !(l.contains("10.77.1.3:8080") && l.ends_with("draining")))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        now,
        file_state.replace("UDP  10.77.100.100:53 rr", "UDP  10.77.100.100:53 sh")
    );
    // Nothing left to revert: a dry run says so.
    let dry = d.ok(&["reload", "--dry-run"]);
    assert!(dry.contains("a reload would change nothing"), "{dry}");
}

#[test]
fn director_keys_are_applied_or_refused_by_name() {
    let d = Director::start(TWO_SERVICES);
    let conf = std::fs::read_to_string(&d.conf).unwrap();
    for (key, value) in [
        ("mtu", "1400"),
        ("expire_nodest_conn", "true"),
        ("log_format", "\"json\""),
        ("queues", "2"),
        ("offload", "false"),
        ("user", "\"nobody\""),
    ] {
        std::fs::write(
            &d.conf,
            conf.replacen("[director]\n", &format!("[director]\n{key} = {value}\n"), 1),
        )
        .unwrap();
        let o = d.cli(&["reload"]);
        assert!(!o.status.success(), "{key}: {}", text(&o.stdout));
        let e = text(&o.stderr);
        assert!(
            e.contains(&format!(
                "director.{key} cannot change while running (restart ringvs); nothing was applied"
            )),
            "{key}: {e}"
        );
    }
    // Applied: expire_quiescent_template, plugin_dirs (admin_group: tests/admin.rs).
    let dirs = tmpdir("dirs");
    std::fs::write(
        &d.conf,
        conf.replacen(
            "[director]\n",
            &format!(
                "[director]\nexpire_quiescent_template = true\nplugin_dirs = [\"{}\"]\n",
                dirs.display()
            ),
            1,
        ),
    )
    .unwrap();
    let done = d.ok(&["reload"]);
    assert!(
        done.contains("director.expire_quiescent_template false -> true"),
        "{done}"
    );
    assert!(done.contains("director.plugin_dirs [] -> ["), "{done}");
    let status = d.ok(&["status", "--json"]);
    assert!(
        status.contains("\"expire_quiescent_template\": true"),
        "{status}"
    );
    std::fs::remove_dir_all(&dirs).unwrap();
}

#[test]
fn check_explains_every_key_it_does_not_know() {
    let dir = tmpdir("oldkeys");
    let conf = dir.join("ringvs.toml");
    std::fs::write(
        &conf,
        "[director]\nqueus = 2\n\n[[service]]\nname = \"web\"\nvip = \"10.77.100.100:80\"\nlb_algo = \"wrr\"\npersistence_timeout = 300\n\n[[service.server]]\naddr = \"10.77.1.1:8080\"\nwieght = 2\n",
    )
    .unwrap();
    let o = run(Path::new(BIN), &["check", "-c", conf.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = text(&o.stderr);
    for want in [
        "key `director.queus`: unknown key `queus`; did you mean `queues`?; and 3 more key(s) this version of ringvs does not know:",
        "key `service[0].lb_algo`: `lb_algo` is not a ringvs key: keepalived's lb_algo is `scheduler` here",
        "key `service[0].persistence_timeout`: `persistence_timeout` is not a ringvs key",
        "key `service[0].server[0].wieght`: unknown key `wieght`; did you mean `weight`?",
    ] {
        assert!(e.contains(want), "{want} not in:\n{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
