use super::*;

const GOOD: &str = r#"
[director]
device = "ringvs0"
queues = 2
conn_memory_limit = "256MiB"
admin_socket = "/run/ringvs/admin.sock"
metrics_listen = "127.0.0.1:9406"

[[service]]
name = "web"
vip = "10.77.100.100:80"
proto = "tcp"
forward = "nat"
scheduler = "wlc"
timeouts = { established = "900s", syn_recv = "60s", fin_wait = "120s", udp = "300s" }

[[service.server]]
addr = "10.77.1.1:8080"
weight = 1

[[service.server]]
addr = "10.77.1.2"
weight = 0

[[service]]
name = "dns"
vip = "10.77.100.100:53"
proto = "udp"
scheduler = "rr"
"#;

fn err(text: &str) -> ConfigError {
    from_str(text, "test.toml").unwrap_err()
}

#[test]
fn the_design_shape_parses() {
    let c = from_str(GOOD, "test.toml").unwrap();
    assert_eq!(c.director.device, "ringvs0");
    assert_eq!(c.director.queues, 2);
    assert_eq!(c.director.conn_memory_limit, 256 << 20);
    assert_eq!(
        c.director.metrics_listen,
        Some("127.0.0.1:9406".parse().unwrap())
    );
    assert_eq!(c.services.len(), 2);
    let web = &c.services[0];
    assert_eq!(
        (web.proto, web.vip.to_string().as_str()),
        (Proto::Tcp, "10.77.100.100:80")
    );
    assert_eq!(
        web.servers[1].addr.to_string(),
        "10.77.1.2:80",
        "a bare server address takes the VIP port"
    );
    assert_eq!(web.servers[1].weight, 0);
    assert_eq!(web.timeouts.get(State::SynRecv), 60);
    assert_eq!(c.services[1].proto, Proto::Udp);
    assert_eq!(c.services[1].timeouts, Timeouts::IPVS);
}

#[test]
fn errors_name_file_key_and_expectation() {
    let e = err(&GOOD.replace("vip = \"10.77.100.100:80\"", "vip = \"10.77.100.100\""));
    assert_eq!(e.origin, "test.toml");
    assert_eq!(e.key, "service[0].vip");
    assert!(e.message.contains("expected an address like"), "{e}");
    assert!(
        e.to_string()
            .starts_with("test.toml: key `service[0].vip`: expected"),
        "{e}"
    );

    let e = err(&GOOD.replace("queues = 2", "queues = \"two\""));
    assert_eq!(e.key, "director.queues");
    assert!(e.message.contains("expected"), "{e}");

    let e = err(&GOOD.replace("weight = 0", "weight = 70000"));
    assert_eq!(e.key, "service[0].server[1].weight");
    assert!(e.message.contains("0 to 65535"), "{e}");

    let e = err(&GOOD.replace("scheduler = \"rr\"", "scheduler = \"nope\""));
    assert_eq!(e.key, "service[1].scheduler");
    assert!(e.message.contains("neither a built-in"), "{e}");

    let e = err(&GOOD.replace("fin_wait", "fin_wiat"));
    assert_eq!(e.key, "service[0].timeouts.fin_wiat");
    assert!(e.message.contains("unknown state"), "{e}");

    let e = err(&GOOD.replace("\"256MiB\"", "\"256 parsecs\""));
    assert_eq!(e.key, "director.conn_memory_limit");

    let e = err(&GOOD.replace("device = \"ringvs0\"", "device = \"a/b\""));
    assert_eq!(e.key, "director.device");

    let e = err(&GOOD.replace("forward = \"nat\"", "forward = \"gre\""));
    assert_eq!(e.key, "service[0].forward");
    // A directly routed server keeps the VIP's port: named where it is wrong.
    let e = err(&GOOD.replace("forward = \"nat\"", "forward = \"dr\""));
    assert_eq!(e.key, "service[0].server[0].addr");
}

#[test]
fn unknown_keys_are_refused() {
    let e = err(&GOOD.replace("queues = 2", "queues = 2\nqeueus = 3"));
    assert!(e.message.contains("qeueus"), "{e}");
}

#[test]
fn duplicates_are_refused() {
    let e = err(&GOOD.replace("10.77.1.2\"", "10.77.1.1:8080\""));
    assert_eq!(e.key, "service[0].server[1].addr");
    assert!(e.message.contains("twice"), "{e}");
    let e = err(&GOOD.replace("name = \"dns\"", "name = \"web\""));
    assert!(e.message.contains("used twice"), "{e}");
    let e = err(&GOOD
        .replace("10.77.100.100:53", "10.77.100.100:80")
        .replace("\"udp\"", "\"tcp\""));
    assert!(e.message.contains("already the virtual address"), "{e}");
}

#[test]
fn a_vip_is_never_a_realserver_or_sorry_server() {
    // The web VIP's address as one of dns's realservers (another port, another protocol):
    // the routing contract sends it back into the director.
    let dns_server = "scheduler = \"rr\"\n[[service.server]]\naddr = \"10.77.100.100:8080\"\n";
    let e = err(&GOOD.replace("scheduler = \"rr\"\n", dns_server));
    assert_eq!(e.key, "service[1].server[0].addr");
    assert!(
        e.to_string().contains(
            "10.77.100.100 is the virtual address of service \"web\"; packets sent to it would \
             come back into the director"
        ),
        "{e}"
    );
    let e = err(&GOOD.replace(
        "scheduler = \"rr\"\n",
        "scheduler = \"rr\"\nsorry_server = \"10.77.100.100:81\"\n",
    ));
    assert_eq!(e.key, "service[1].sorry_server");
    assert!(e.message.contains("cannot be a sorry server"), "{e}");
    // Unspecified addresses and port 0 were refused already; runtime adds use the same rule.
    let e = server_endpoint("0.0.0.0:0").unwrap_err();
    assert_eq!((e.origin.as_str(), e.key.as_str()), ("server-add", "addr"));
    assert!(server_endpoint("10.77.1.1:0").is_err());
    assert_eq!(
        server_endpoint("10.77.1.1:80"),
        Ok("10.77.1.1:80".parse().unwrap())
    );
}

/// Issue 11: `mtu = 9000` with `offload = false` was accepted, then every packet over 1983
/// bytes was discarded; a `conn_memory_limit` over the machine's memory was accepted.
#[test]
fn mtu_and_memory_are_checked_against_the_machine() {
    let with = |keys: &str| GOOD.replace("queues = 2\n", &format!("queues = 2\n{keys}\n"));
    let e = err(&with("offload = false\nmtu = 9000"));
    assert_eq!(e.key, "director.mtu");
    assert!(
        e.message
            .starts_with("expected at most 1983 with offload = false (an I/O buffer of 2048 bytes"),
        "{e}"
    );
    assert!(
        e.message
            .ends_with("found 9000; lower mtu or set offload = true"),
        "{e}"
    );
    from_str(&with("offload = false\nmtu = 1983"), "t.toml").unwrap();
    from_str(&with("offload = true\nmtu = 9000"), "t.toml").unwrap();
    from_str(&with("mtu = 65535"), "t.toml").unwrap();

    let total = physical_memory().expect("/proc/meminfo");
    let e = err(&GOOD.replace("\"256MiB\"", "\"99999TiB\""));
    assert_eq!(e.key, "director.conn_memory_limit");
    assert!(
        e.message.contains("is more than this machine's memory"),
        "{e}"
    );
    let gib = format!("{:.1} GiB (MemTotal", total as f64 / f64::from(1u32 << 30));
    assert!(e.message.contains(&gib), "{e}");
    assert_eq!(
        mem_total("MemTotal:       16318508 kB\nMemFree: 1 kB\n"),
        Some(16_318_508 * 1024)
    );
    assert_eq!(mem_total("MemFree: 1 kB\n"), None);
}

#[test]
fn a_user_to_run_as_exists_and_needs_manual_routes() {
    let with = |keys: &str| GOOD.replace("queues = 2\n", &format!("queues = 2\n{keys}\n"));
    let c = from_str(&with("user = \"nobody\""), "t.toml").unwrap();
    assert_eq!(c.director.user.as_deref(), Some("nobody"));
    let e = err(&with("user = \"no-such-user-here\""));
    assert_eq!(e.key, "director.user");
    assert!(
        e.message.contains("no user named \"no-such-user-here\""),
        "{e}"
    );
    let e = err(&with("user = \"nobody\"\nroutes = \"auto\""));
    assert_eq!(e.key, "director.user");
    assert!(
        e.message
            .starts_with("routes = \"auto\" installs and removes routes"),
        "{e}"
    );
}

#[test]
fn ipv6_and_syntax_errors_are_explained() {
    // An IPv6 service with IPv6 realservers (a bare address takes the VIP's port).
    let six = GOOD
        .replace("10.77.100.100:80", "[fd77:100::100]:80")
        .replace("\"10.77.1.1:8080\"", "\"[fd77:1::1]:8080\"")
        .replace("\"10.77.1.2\"", "\"fd77:1::2\"");
    let c = from_str(&six, "test.toml").unwrap();
    assert_eq!(c.services[0].vip, "[fd77:100::100]:80".parse().unwrap());
    assert_eq!(
        c.services[0].servers[1].addr,
        "[fd77:1::2]:80".parse().unwrap()
    );
    // LVS-DR over IPv6 takes the AF_XDP backend (it writes frames), as over IPv4; the
    // realservers keep the service's port.
    let dr6 = six
        .replace("forward = \"nat\"", "forward = \"dr\"")
        .replace("[fd77:1::1]:8080", "fd77:1::1");
    let e = err(&dr6);
    assert_eq!(e.key, "service[0].server[0].forward", "{e}");
    assert_eq!(e.message, DR_NEEDS_L2, "{e}");
    let xdp = "[director]\nio = \"af_xdp\"\ninterfaces = [\"lo\"]";
    let c = from_str(&dr6.replace("[director]", xdp), "test.toml").unwrap();
    assert_eq!(c.services[0].forward, Forward::Dr);
    assert_eq!(c.services[0].vip, "[fd77:100::100]:80".parse().unwrap());
    // What IPv6 cannot do yet is refused by name.
    let e = err(&six.replace(
        "scheduler = \"wlc\"",
        "scheduler = \"wlc\"\nsyn_proxy = \"on\"",
    ));
    assert_eq!(
        (e.key.as_str(), e.message.as_str()),
        ("service[0].syn_proxy", IPV6_NO_PROXY)
    );
    // An IPv6 service on the AF_XDP backend (its program takes IPv6 too).
    let c = from_str(&six.replace("[director]", xdp), "test.toml").unwrap();
    assert_eq!(c.director.io, Io::AfXdp);
    // A realserver of the other family is refused, written any way IPv6 may be.
    for six in ["[fd77::1]:8080", "fd77::1", "[fd77::1]"] {
        let e = err(&GOOD.replace("\"10.77.1.1:8080\"", &format!("{six:?}")));
        assert_eq!(e.key, "service[0].server[0].addr", "{six}");
        assert!(
            e.message.contains("share one address family") && e.message.contains("[fd77::1]:"),
            "{six}: {e}"
        );
    }
    let e = err(&GOOD
        .replace("weight = 0", "weight = 0\n[service.sorry_server]")
        .replace("[service.sorry_server]", "")
        .replace(
            "scheduler = \"wlc\"",
            "scheduler = \"wlc\"\nsorry_server = \"[fd77::9]:80\"",
        ));
    assert_eq!(e.key, "service[0].sorry_server");
    assert!(e.message.contains("share one address family"), "{e}");
    // Zones, IPv4-mapped, multicast and unspecified addresses are never realservers.
    for bad in [
        "[fe80::1%2]:80",
        "[::ffff:10.77.1.1]:80",
        "[ff02::1]:80",
        "[::]:80",
        "224.0.0.1:80",
    ] {
        let e = err(&GOOD.replace("\"10.77.1.1:8080\"", &format!("{bad:?}")));
        assert_eq!(e.key, "service[0].server[0].addr", "{bad}");
        assert!(
            e.message.starts_with("expected an address like"),
            "{bad}: {e}"
        );
    }
    let e = err("[director\nqueues = 1");
    assert_eq!(e.origin, "test.toml");
    assert!(!e.message.is_empty());
}

#[test]
fn plugins_resolve_relative_to_the_file_and_pin_hashes() {
    let dir = std::env::temp_dir().join(format!("ringvs-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    let text = GOOD.replace("[director]", "[plugins.mine]\npath = \"p/x.wasm\"\nsha256 = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\nconfig = { a = 1 }\n\n[director]")
        .replace("scheduler = \"rr\"", "scheduler = \"mine\"");
    std::fs::write(&path, &text).unwrap();
    let c = load_with_env(&path, false).unwrap();
    let p = &c.plugins["mine"];
    assert!(
        p.path.ends_with("p/x.wasm") && p.path.is_absolute(),
        "{:?}",
        p.path
    );
    assert_eq!(p.sha256.unwrap()[1], 0x11);
    assert_eq!(p.config["a"], 1);
    std::fs::write(&path, text.replace("00112233", "0011")).unwrap();
    let e = load_with_env(&path, false).unwrap_err();
    assert_eq!(e.key, "plugins.mine.sha256");
    assert!(e.origin.ends_with("c.toml"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_file_is_a_clear_error() {
    let e = load(Path::new("/nonexistent/ringvs.toml")).unwrap_err();
    assert_eq!(e.origin, "/nonexistent/ringvs.toml");
    assert!(e.message.contains("cannot read"), "{e}");
}

#[test]
fn environment_overrides_and_is_named_in_errors() {
    let dir = std::env::temp_dir().join(format!("ringvs-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(&path, GOOD).unwrap();
    // Only this test sets RINGVS_ variables, and only it loads with the environment.
    std::env::set_var("RINGVS_DIRECTOR__QUEUES", "4");
    std::env::set_var("RINGVS_NOT_A_KEY", "1");
    let c = load(&path);
    std::env::remove_var("RINGVS_NOT_A_KEY");
    std::env::set_var("RINGVS_DIRECTOR__QUEUES", "400");
    let e = load(&path);
    std::env::remove_var("RINGVS_DIRECTOR__QUEUES");
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(c.unwrap().director.queues, 4);
    let e = e.unwrap_err();
    assert_eq!(e.origin, "environment variable RINGVS_DIRECTOR__QUEUES");
    assert_eq!(e.key, "director.queues");
}

#[test]
fn log_format_accepts_human_text_and_json() {
    let f = |v: &str| from_str(&format!("[director]\nlog_format = \"{v}\"\n"), "t.toml");
    assert_eq!(f("human").unwrap().director.log_format, LogFormat::Text);
    assert_eq!(f("text").unwrap().director.log_format, LogFormat::Text);
    assert_eq!(f("json").unwrap().director.log_format, LogFormat::Json);
    let e = f("xml").unwrap_err();
    assert_eq!(e.key, "director.log_format");
    assert!(e.message.contains("\"human\""), "{e}");
    assert_eq!(
        from_str("", "t.toml").unwrap().director.log_format,
        LogFormat::Text
    );
}

fn no_plugins(_: &str) -> bool {
    false
}

#[test]
fn runtime_services_are_validated_like_the_file() {
    let edit = |vip: &str| ServiceEdit {
        vip: Some(vip.into()),
        ..ServiceEdit::default()
    };
    let s = new_service("dns", edit("10.77.100.100:53"), &no_plugins).unwrap();
    // The file's defaults: tcp, nat, wlc, IPVS timeouts, no servers.
    let file = from_str(
        "[[service]]\nname = \"dns\"\nvip = \"10.77.100.100:53\"\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(s, file.services[0]);

    let e = new_service("bad name", edit("10.77.100.100:53"), &no_plugins).unwrap_err();
    assert_eq!(
        (e.origin.as_str(), e.key.as_str()),
        ("service \"bad name\"", "name")
    );
    let e = new_service("x", edit("10.77.100.100"), &no_plugins).unwrap_err();
    assert_eq!(e.key, "vip");
    assert!(e.message.contains("10.77.100.100:80"), "{e}");
    let e = new_service("x", ServiceEdit::default(), &no_plugins).unwrap_err();
    assert_eq!(e.key, "vip");
    let mut sched = edit("10.77.100.100:80");
    sched.scheduler = Some("lblc".into());
    let e = new_service("x", sched.clone(), &no_plugins).unwrap_err();
    assert_eq!(e.key, "scheduler");
    assert!(e.message.contains("built-in scheduler (rr, wlc)"), "{e}");
    assert_eq!(
        new_service("x", sched, &|n| n == "lblc").unwrap().scheduler,
        "lblc"
    );
    let mut t = edit("10.77.100.100:80");
    t.timeouts
        .push(("establised".into(), Quantity::Text("9s".into())));
    let e = new_service("x", t, &no_plugins).unwrap_err();
    assert_eq!(e.key, "timeouts.establised");
    assert!(e.message.contains("expected one of"), "{e}");
    let mut p = edit("10.77.100.100:80");
    p.proto = Some("sctp".into());
    assert_eq!(new_service("x", p, &no_plugins).unwrap_err().key, "proto");
    let mut h = edit("10.77.100.100:80");
    h.no_health = true;
    assert_eq!(
        new_service("x", h, &no_plugins).unwrap_err().key,
        "no_health",
        "a new service has no check to remove"
    );
    let mut d = edit("10.77.100.100:80");
    d.defense = Some(vec!["nope".into()]);
    assert_eq!(
        new_service("x", d, &no_plugins).unwrap_err().key,
        "defense[0]"
    );
}

#[test]
fn runtime_edits_change_only_what_is_given() {
    let c = from_str(GOOD, "test.toml").unwrap();
    let web = &c.services[0];
    let mut e = ServiceEdit {
        scheduler: Some("rr".into()),
        ..ServiceEdit::default()
    };
    e.timeouts.push(("fin_wait".into(), Quantity::Num(30)));
    let out = edit_service(web, e, &no_plugins).unwrap();
    assert_eq!(out.scheduler, "rr");
    assert_eq!(out.timeouts.get(State::FinWait), 30);
    assert_eq!(out.timeouts.get(State::Established), 900, "kept");
    assert_eq!(out.servers, web.servers, "servers are not touched");
    assert_eq!(
        (out.vip, out.proto, &out.name),
        (web.vip, web.proto, &web.name)
    );
    // The same address may be given; another may not.
    let same = ServiceEdit {
        vip: Some("10.77.100.100:80".into()),
        proto: Some("tcp".into()),
        ..ServiceEdit::default()
    };
    assert_eq!(&edit_service(web, same, &no_plugins).unwrap(), web);
    let moved = ServiceEdit {
        vip: Some("10.77.100.101:80".into()),
        ..ServiceEdit::default()
    };
    let e = edit_service(web, moved, &no_plugins).unwrap_err();
    assert_eq!(e.key, "vip");
    assert!(e.message.contains("add a new service"), "{e}");
    let proto = ServiceEdit {
        proto: Some("udp".into()),
        ..ServiceEdit::default()
    };
    assert_eq!(
        edit_service(web, proto, &no_plugins).unwrap_err().key,
        "proto"
    );
    let bad = ServiceEdit {
        forward: Some("gre".into()),
        ..ServiceEdit::default()
    };
    assert_eq!(
        edit_service(web, bad, &no_plugins).unwrap_err().key,
        "forward"
    );
}

#[test]
fn a_runtime_health_edit_replaces_the_check_of_servers_without_their_own() {
    let text = r#"
[[service]]
name = "web"
vip = "10.77.100.100:80"
health = { check = "tcp", interval = "2s" }
[[service.server]]
addr = "10.77.1.1:8080"
[[service.server]]
addr = "10.77.1.2:8080"
health = { port = 9000 }
"#;
    let c = from_str(text, "test.toml").unwrap();
    let web = &c.services[0];
    let h = |keys: &str| -> HealthTable { toml::from_str(keys).unwrap() };
    let e = ServiceEdit {
        health: Some(h("check = \"http\"\npath = \"/hc\"\ninterval = \"1s\"")),
        ..ServiceEdit::default()
    };
    let out = edit_service(web, e, &no_plugins).unwrap();
    let new = out.health.clone().unwrap();
    assert_eq!(new.kind.name(), "http");
    assert_eq!(new.interval, std::time::Duration::from_secs(1));
    assert_eq!(
        out.servers[0].health.as_ref(),
        Some(&new),
        "followed the service"
    );
    assert_eq!(
        out.servers[1].health, web.servers[1].health,
        "its own override kept"
    );
    // Validated as the config file's table is, the key named.
    let bad = ServiceEdit {
        health: Some(h("check = \"http\"\ninterval = \"1h1s\"")),
        ..ServiceEdit::default()
    };
    let err = edit_service(web, bad, &no_plugins).unwrap_err();
    assert_eq!(err.key, "health.interval", "{err}");
    // A new service gets it too.
    let added = new_service(
        "api",
        ServiceEdit {
            vip: Some("10.77.100.101:80".into()),
            health: Some(h("check = \"tcp\"")),
            ..ServiceEdit::default()
        },
        &no_plugins,
    )
    .unwrap();
    assert_eq!(added.health.unwrap().kind.name(), "tcp");
    // Removed: the servers' overrides go too (an override needs the service's check).
    let off = ServiceEdit {
        no_health: true,
        ..ServiceEdit::default()
    };
    let out = edit_service(web, off, &no_plugins).unwrap();
    assert!(out.health.is_none());
    assert!(out.servers.iter().all(|s| s.health.is_none()));
    let both = ServiceEdit {
        no_health: true,
        health: Some(h("check = \"tcp\"")),
        ..ServiceEdit::default()
    };
    assert_eq!(
        edit_service(web, both, &no_plugins).unwrap_err().key,
        "health"
    );
}

#[test]
fn server_thresholds() {
    let with = |extra: &str| {
        GOOD.replacen(
            "addr = \"10.77.1.1:8080\"\nweight = 1",
            &format!("addr = \"10.77.1.1:8080\"\nweight = 1\n{extra}"),
            1,
        )
    };
    let c = from_str(&with("upper = 1000\nlower = 800"), "test.toml").unwrap();
    assert_eq!(
        (
            c.services[0].servers[0].upper,
            c.services[0].servers[0].lower
        ),
        (1000, 800)
    );
    assert_eq!(
        (
            c.services[0].servers[1].upper,
            c.services[0].servers[1].lower
        ),
        (0, 0)
    );
    let e = err(&with("upper = 10\nlower = 20"));
    assert_eq!(e.key, "service[0].server[0].lower");
    assert!(e.message.contains("above the upper threshold 10"), "{e}");
    let e = err(&with("lower = 5"));
    assert!(e.message.contains("without an upper one"), "{e}");
    let e = err(&with("upper = -1"));
    assert_eq!(e.key, "service[0].server[0].upper");
    assert!(e.message.contains("expected a connection count"), "{e}");
    assert!(from_str(&with("upper = 10\nlower = 10"), "test.toml").is_ok());
}

#[test]
fn persistence_and_templates() {
    let text = GOOD.replace(
        "[director]",
        "[plugins.pn]\npath = \"pn.wasm\"\n\n[director]\nexpire_quiescent_template = true\ntemplate_memory_limit = \"1MiB\"",
    )
    .replace(
        "scheduler = \"wlc\"",
        "scheduler = \"wlc\"\npersistence = { plugin = \"pn\", timeout = \"120s\", config = { netmask = \"255.255.255.0\" } }",
    );
    let c = from_str(&text, "test.toml").unwrap();
    assert!(c.director.expire_quiescent_template);
    assert_eq!(c.director.template_memory_limit, 1 << 20);
    let p = c.services[0].persistence.as_ref().unwrap();
    assert_eq!(p.timeout_secs, 120);
    assert_eq!(p.display_mask(), Some("255.255.255.0".parse().unwrap()));
    let d = from_str(GOOD, "test.toml").unwrap();
    assert!(!d.director.expire_quiescent_template);
    assert_eq!(d.director.template_memory_limit, 16 << 20);
    let e = err(&text.replace("\"1MiB\"", "\"1KiB\""));
    assert_eq!(e.key, "director.template_memory_limit");
    assert!(e.message.contains("expected 64KiB"), "{e}");
    let e = err(&text.replace("timeout = \"120s\"", "timeout = \"0s\""));
    assert_eq!(e.key, "service[0].persistence.timeout");
    let e = err(&text.replace("plugin = \"pn\"", "plugin = \"nope\""));
    assert_eq!(e.key, "service[0].persistence.plugin");
    assert!(e.message.contains("not a [plugins.*] entry"), "{e}");
    // What `ringvs list` shows after `persistent N`.
    let mask = |v: serde_json::Value| {
        PersistenceConfig {
            plugin: "pn".into(),
            timeout_secs: 1,
            config: serde_json::json!({ "netmask": v }),
        }
        .display_mask()
    };
    assert_eq!(
        mask(serde_json::json!(24)),
        Some("255.255.255.0".parse().unwrap())
    );
    assert_eq!(
        mask(serde_json::json!("/16")),
        Some("255.255.0.0".parse().unwrap())
    );
    assert_eq!(
        mask(serde_json::json!("0")),
        Some("0.0.0.0".parse().unwrap())
    );
    assert_eq!(mask(serde_json::json!("255.255.255.255")), None);
    assert_eq!(mask(serde_json::json!("255.0.255.0")), None);
}

#[test]
fn io_backend_and_its_interfaces() {
    let c = from_str(GOOD, "test.toml").unwrap();
    assert_eq!(c.director.io, Io::Tun, "TUN is the default");
    assert!(c.director.interfaces.is_empty());
    let xdp = GOOD.replace(
        "queues = 2",
        "queues = 2\nio = \"af_xdp\"\ninterfaces = [\"dcli\", \"drs\"]\nxdp_mode = \"native\"",
    );
    let c = from_str(&xdp, "test.toml").unwrap();
    assert_eq!(c.director.io, Io::AfXdp);
    assert_eq!(c.director.interfaces, ["dcli", "drs"]);
    assert_eq!(c.director.xdp_mode, XdpMode::Native);
    // `ringvs save` writes them back.
    let saved = save::to_toml(&c.director, &c.plugins, &c.services).unwrap();
    assert_eq!(
        from_str(&saved, "s.toml").unwrap().director,
        c.director,
        "{saved}"
    );

    let e = err(&GOOD.replace("queues = 2", "queues = 2\nio = \"af_xdp\""));
    assert_eq!(e.key, "director.interfaces");
    assert!(e.message.contains("client- and realserver-facing"), "{e}");
    let e = err(&GOOD.replace("queues = 2", "queues = 2\nio = \"dpdk\""));
    assert_eq!(e.key, "director.io");
    assert!(e.message.contains("\"tun\" or \"af_xdp\""), "{e}");
    let e = err(&GOOD.replace("queues = 2", "queues = 2\ninterfaces = [\"eth0\"]"));
    assert_eq!(e.key, "director.interfaces");
    assert!(e.message.contains("only used with io = \"af_xdp\""), "{e}");
    let e = err(&xdp.replace("[\"dcli\", \"drs\"]", "[\"dcli\", \"dcli\"]"));
    assert_eq!(e.key, "director.interfaces[1]");
    let e = err(&xdp.replace("[\"dcli\", \"drs\"]", "[\"a/b\"]"));
    assert_eq!(e.key, "director.interfaces[0]");
    let e = err(&xdp.replace("native", "turbo"));
    assert_eq!(e.key, "director.xdp_mode");
    let e = err(&xdp.replace("queues = 2", "queues = 2\nroutes = \"auto\""));
    assert_eq!(e.key, "director.routes");
    assert!(e.message.contains("needs no routes"), "{e}");
}

/// A directory with empty files named like the catalogue's components (config validation
/// only locates them; loading is the plugin layer's).
fn fake_catalogue(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringvs-cat-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for e in catalogue::ENTRIES {
        std::fs::write(dir.join(e.file_name()), b"").unwrap();
    }
    dir
}

#[test]
fn catalogue_plugins_are_used_by_name_without_an_entry() {
    let dir = fake_catalogue("name");
    let text = GOOD
        .replace(
            "[director]",
            &format!("[director]\nplugin_dirs = [\"{}\"]", dir.display()),
        )
        .replace(
            "scheduler = \"wlc\"",
            "scheduler = \"wrr\"\ndefense = [\"secure-tcp\", \"synauth\"]\npersistence = { plugin = \"persist-netmask\", config = { netmask = \"255.255.255.0\" } }",
        )
        .replace("scheduler = \"rr\"", "scheduler = \"sh\"");
    let c = from_str(&text, "test.toml").unwrap();
    assert_eq!(c.director.plugin_dirs, vec![dir.clone()]);
    let names: Vec<&str> = c.plugins.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["persist-netmask", "secure-tcp", "sh", "synauth", "wrr"]
    );
    for (name, p) in &c.plugins {
        assert_eq!(p.source, PluginSource::Implicit, "{name}");
        assert!(p.path.starts_with(&dir), "{name}: {:?}", p.path);
        assert_eq!(p.sha256, None);
    }
    assert_eq!(c.plugins["wrr"].path, dir.join("sched_wrr.wasm"));
    assert_eq!(
        c.plugins["secure-tcp"].path,
        dir.join("defense_secure_tcp.wasm")
    );
    // The built-ins stay native: no plugin.
    let d = from_str(GOOD, "test.toml").unwrap();
    assert!(d.plugins.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn catalogue_names_are_checked_for_their_kind() {
    let e = err(&GOOD.replace("scheduler = \"rr\"", "scheduler = \"secure-tcp\""));
    assert_eq!(e.key, "service[1].scheduler");
    assert!(
        e.message
            .contains("\"secure-tcp\" is a catalogue defense plugin"),
        "{e}"
    );
    assert!(e.message.contains("not a scheduler plugin"), "{e}");
    let e = err(&GOOD.replace(
        "scheduler = \"rr\"",
        "scheduler = \"rr\"\ndefense = [\"wrr\"]",
    ));
    assert_eq!(e.key, "service[1].defense[0]");
    assert!(e.message.contains("catalogue scheduler plugin"), "{e}");
    let e = err(&GOOD.replace("scheduler = \"rr\"", "persistence = { plugin = \"sh\" }"));
    assert_eq!(e.key, "service[1].persistence.plugin");
    assert!(e.message.contains("not a persistence plugin"), "{e}");
    // Unknown names list the catalogue's of that kind.
    let e = err(&GOOD.replace("scheduler = \"rr\"", "scheduler = \"lblc\""));
    assert!(e.message.contains("neither a built-in scheduler"), "{e}");
    assert!(e.message.contains("wrr, lc, sed, nq, sh, mh, twos"), "{e}");
    let e = err(&GOOD.replace("scheduler = \"rr\"", "defense = [\"nope\"]"));
    assert!(e.message.contains("secure-tcp, drop-entry"), "{e}");
}

#[test]
fn a_catalogue_entry_configures_pins_or_overrides_the_catalogue_file() {
    let dir = fake_catalogue("entry");
    let pin = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let base = GOOD.replace(
        "[director]",
        &format!("[director]\nplugin_dirs = [\"{}\"]", dir.display()),
    );
    // No path: the catalogue's file, with this entry's config and pin.
    let text = base
        .replace(
            "[director]",
            &format!(
                "[plugins.ratelimit]\nsha256 = \"{pin}\"\nconfig = {{ rate = 5 }}\n\n[director]"
            ),
        )
        .replace("scheduler = \"rr\"", "defense = [\"ratelimit\"]");
    let c = from_str(&text, "test.toml").unwrap();
    let p = &c.plugins["ratelimit"];
    assert_eq!(p.source, PluginSource::Catalogue);
    assert_eq!(p.path, dir.join("defense_ratelimit.wasm"));
    assert_eq!(p.sha256.unwrap()[1], 0x11);
    assert_eq!(p.config["rate"], 5);
    // A path overrides the catalogue's file.
    let c = from_str(
        &text.replace(
            "[plugins.ratelimit]",
            "[plugins.ratelimit]\npath = \"/opt/rl.wasm\"",
        ),
        "test.toml",
    )
    .unwrap();
    assert_eq!(c.plugins["ratelimit"].source, PluginSource::Path);
    assert_eq!(c.plugins["ratelimit"].path, PathBuf::from("/opt/rl.wasm"));
    // Only catalogue plugins may leave the path out; built-in names stay reserved.
    let e = err(&GOOD.replace("[director]", "[plugins.mine]\nconfig = {}\n\n[director]"));
    assert_eq!(e.key, "plugins.mine.path");
    assert!(e.message.contains("not a catalogue plugin"), "{e}");
    let e = err(&GOOD.replace(
        "[director]",
        "[plugins.wlc]\npath = \"w.wasm\"\n\n[director]",
    ));
    assert_eq!(e.key, "plugins.wlc");
    let e = err(&GOOD.replace("[director]", "[director]\nplugin_dirs = [\"\"]"));
    assert_eq!(e.key, "director.plugin_dirs[0]");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plugin_dirs_are_relative_to_the_file() {
    let dir = std::env::temp_dir().join(format!("ringvs-cfg-dirs-{}", std::process::id()));
    let plugins = dir.join("lib/plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(plugins.join("sched_mh.wasm"), b"").unwrap();
    let path = dir.join("c.toml");
    let text = GOOD
        .replace("[director]", "[director]\nplugin_dirs = [\"lib/plugins\"]")
        .replace("scheduler = \"rr\"", "scheduler = \"mh\"");
    std::fs::write(&path, text).unwrap();
    let c = load_with_env(&path, false).unwrap();
    let want = std::fs::canonicalize(&plugins)
        .unwrap()
        .join("sched_mh.wasm");
    assert_eq!(c.plugins["mh"].path, want);
    assert_eq!(
        c.director.catalogue_dirs()[0],
        std::fs::canonicalize(&plugins).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_saved_config_reads_back_to_the_same_state() {
    let dir = fake_catalogue("save");
    let text = format!(
        r#"
[director]
device = "rvs9"
queues = 3
conn_memory_limit = "96MiB"
admin_socket = "/run/x/admin.sock"
admin_group = "lvsadmin"
metrics_listen = "off"
routes = "auto"
offload = false
mtu = 1400
expire_nodest_conn = true
expire_quiescent_template = true
template_memory_limit = "2MiB"
log_format = "json"
plugin_dirs = ["{dir}"]

[plugins.mine]
path = "/opt/mine.wasm"
sha256 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
config = {{ a = 1, b = {{ c = "x" }} }}

[plugins.ratelimit]
config = {{ new_flows_per_sec = 5 }}

[[service]]
name = "web"
vip = "10.77.100.100:80"
scheduler = "mine"
defense = ["ratelimit", "secure-tcp"]
persistence = {{ plugin = "persist-netmask", timeout = "120s", config = {{ netmask = "255.255.255.0" }} }}
timeouts = {{ established = "600s", udp = "30s" }}
health = {{ check = "http", path = "/h", expect = [200, 204], host = "example.org", interval = "1500ms", fall = 4, on_fail = "remove", port = 9000 }}

sorry_server = "10.77.9.9"
syn_proxy = "off"
max_conns = 5000

[[service.server]]
addr = "10.77.1.1:8080"
weight = 3
upper = 100
lower = 50

[[service.server]]
addr = "10.77.1.2:8080"
weight = 0
health = {{ addr = "10.77.2.2", path = "/other" }}

[[service]]
name = "dns"
vip = "10.77.100.100:53"
proto = "udp"
scheduler = "sh"
timeouts = {{ udp_unreplied = "10s" }}
health = {{ check = "tcp", port = 53 }}

[[service.server]]
addr = "10.77.1.1:5353"
"#,
        dir = dir.display()
    );
    let c = from_str(&text, "test.toml").unwrap();
    let saved = save::to_toml(&c.director, &c.plugins, &c.services).unwrap();
    let back = from_str(&saved, "saved.toml").unwrap_or_else(|e| panic!("{e}\n{saved}"));
    assert_eq!(back.director, c.director, "{saved}");
    assert_eq!(back.services, c.services, "{saved}");
    assert_eq!(back.plugins, c.plugins, "{saved}");
    // Catalogue plugins used by name need no entry; declared ones keep theirs.
    assert!(!saved.contains("[plugins.sh]"), "{saved}");
    assert!(!saved.contains("[plugins.secure-tcp]"), "{saved}");
    assert!(saved.contains("[plugins.ratelimit.config]"), "{saved}");
    assert!(saved.contains("path = \"/opt/mine.wasm\""), "{saved}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_reload_plan_names_changes_and_reverts_or_keeps_runtime_edits() {
    use diff::{plan, Runtime};
    let loaded = from_str(GOOD, "test.toml").unwrap().services;
    // Runtime: web's first server weight 1 -> 0, a server added to dns, a service added,
    // dns's scheduler swapped.
    let mut running = loaded.clone();
    running[0].servers[0].weight = 0;
    running[1].servers.push(ServerConfig::new(
        "10.77.1.9:53".parse::<std::net::SocketAddr>().unwrap(),
        2,
    ));
    running[1].scheduler = "wlc".into();
    let mut api = running[1].clone();
    api.name = "api".into();
    api.vip = "10.77.100.101:53".parse().unwrap();
    running.push(api);
    // The file now: web's second server weight 0 -> 5, and dns's scheduler rr -> wrr.
    let mut file = loaded.clone();
    file[0].servers[1].weight = 5;
    file[1].scheduler = "wrr".into();

    let p = plan(&running, &loaded, &file, false);
    assert_eq!(p.services, file, "a plain reload applies the file");
    let texts: Vec<String> = p.changes.iter().map(|c| c.to_string()).collect();
    for want in [
        "~ service web: server 10.77.1.1:8080 weight 0 -> 1 (reverts a runtime edit)",
        "~ service web: server 10.77.1.2:80 weight 0 -> 5",
        "~ service dns: scheduler wlc -> wrr (reverts a runtime edit)",
        "- service dns: server 10.77.1.9:53 (reverts a runtime edit)",
        "- service api (udp 10.77.100.101:53) (reverts a runtime edit)",
    ] {
        assert!(
            texts.contains(&want.to_string()),
            "{want} not in {texts:#?}"
        );
    }
    assert_eq!(texts.len(), 5, "{texts:#?}");
    assert_eq!(p.reverted().count(), 4);

    let k = plan(&running, &loaded, &file, true);
    let texts: Vec<String> = k.changes.iter().map(|c| c.to_string()).collect();
    for want in [
        "= service web: server 10.77.1.1:8080 weight 0 (runtime edit kept)",
        "~ service web: server 10.77.1.2:80 weight 0 -> 5",
        // The file changed the scheduler too: the file wins.
        "~ service dns: scheduler wlc -> wrr (reverts a runtime edit)",
        "= service dns: server 10.77.1.9:53 added at runtime (runtime edit kept)",
        "= service api (udp 10.77.100.101:53) added at runtime (runtime edit kept)",
    ] {
        assert!(
            texts.contains(&want.to_string()),
            "{want} not in {texts:#?}"
        );
    }
    assert_eq!(k.kept().count(), 3, "{texts:#?}");
    let names: Vec<&str> = k.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web", "dns", "api"]);
    assert_eq!(k.services[0].servers[0].weight, 0);
    assert_eq!(k.services[0].servers[1].weight, 5);
    assert_eq!(k.services[1].scheduler, "wrr");
    assert_eq!(
        k.services[1].servers.len(),
        1,
        "dns had none; the runtime one is kept"
    );

    // A service removed at runtime stays removed with --keep-runtime, comes back without.
    let running: Vec<_> = loaded.iter().filter(|s| s.name != "dns").cloned().collect();
    let p = plan(&running, &loaded, &loaded, false);
    assert_eq!(p.services, loaded);
    assert_eq!(p.changes[0].runtime, Runtime::Reverted);
    assert!(
        p.changes[0].text.starts_with("+ service dns"),
        "{:?}",
        p.changes
    );
    let k = plan(&running, &loaded, &loaded, true);
    assert_eq!(k.services, running);
    assert_eq!(
        k.changes[0].to_string(),
        "= service dns removed at runtime (runtime edit kept)"
    );
    // Nothing edited, nothing changed: no changes.
    assert!(plan(&loaded, &loaded, &loaded, false).changes.is_empty());
    assert!(plan(&loaded, &loaded, &loaded, true).changes.is_empty());
}

#[test]
fn a_sorry_server_is_another_address() {
    let c = from_str(
        &GOOD.replace(
            "scheduler = \"wlc\"",
            "scheduler = \"wlc\"\nsorry_server = \"10.77.9.9\"",
        ),
        "test.toml",
    )
    .unwrap();
    assert_eq!(
        c.services[0].sorry_server,
        Some("10.77.9.9:80".parse().unwrap())
    );
    assert_eq!(c.services[1].sorry_server, None);
    let e = err(&GOOD.replace(
        "scheduler = \"wlc\"",
        "scheduler = \"wlc\"\nsorry_server = \"10.77.1.1:8080\"",
    ));
    assert_eq!(e.key, "service[0].sorry_server");
    assert!(e.message.contains("is a realserver of this service"), "{e}");
    let e = err(&GOOD.replace(
        "scheduler = \"wlc\"",
        "scheduler = \"wlc\"\nsorry_server = \"nowhere\"",
    ));
    assert_eq!(e.key, "service[0].sorry_server");
    // At runtime too.
    let web = c.services[0].clone();
    let edit = ServiceEdit {
        sorry_server: Some("10.77.9.8:81".into()),
        ..Default::default()
    };
    let out = edit_service(&web, edit, &no_plugins).unwrap();
    assert_eq!(out.sorry_server, Some("10.77.9.8:81".parse().unwrap()));
    let edit = ServiceEdit {
        no_sorry_server: true,
        ..Default::default()
    };
    assert_eq!(
        edit_service(&web, edit, &no_plugins).unwrap().sorry_server,
        None
    );
    let edit = ServiceEdit {
        sorry_server: Some("10.77.1.2".into()),
        ..Default::default()
    };
    let e = edit_service(&web, edit, &no_plugins).unwrap_err();
    assert_eq!(e.key, "sorry_server");
}

#[test]
fn script_checks_and_notify_hooks() {
    let text = GOOD.replace(
        "scheduler = \"wlc\"",
        "scheduler = \"wlc\"\nhealth = { check = \"script\", command = [\"/usr/local/bin/check\", \"--fast\"], dynamic = true, timeout = \"2s\", interval = \"5s\" }\nnotify = { down = [\"/usr/local/bin/page\", \"ops\"], max_per_minute = 2 }",
    );
    let c = from_str(&text, "test.toml").unwrap();
    let h = c.services[0].health.as_ref().unwrap();
    assert_eq!(
        h.kind,
        CheckKind::Script(ScriptCheck {
            command: vec!["/usr/local/bin/check".into(), "--fast".into()],
            user: "nobody".into(),
            dynamic: true
        })
    );
    let n = c.services[0].notify.as_ref().unwrap();
    assert_eq!(n.up, None);
    assert_eq!(
        n.down.as_deref(),
        Some(&["/usr/local/bin/page".to_string(), "ops".into()][..])
    );
    assert_eq!(
        (n.max_per_minute, n.timeout),
        (2, std::time::Duration::from_secs(5))
    );
    assert_eq!(n.user, "nobody");
    // What `save` writes reads back the same.
    let saved = save::to_toml(&c.director, &c.plugins, &c.services).unwrap();
    assert_eq!(
        from_str(&saved, "s.toml").unwrap().services,
        c.services,
        "{saved}"
    );

    for (from, to, key, msg) in [
        (
            "command = [\"/usr/local/bin/check\", \"--fast\"], ",
            "",
            "service[0].health.command",
            "a script check needs command",
        ),
        (
            "[\"/usr/local/bin/check\", \"--fast\"]",
            "[\"check\"]",
            "service[0].health.command",
            "absolute path",
        ),
        (
            "[\"/usr/local/bin/check\", \"--fast\"]",
            "[]",
            "service[0].health.command",
            "empty list",
        ),
        (
            "dynamic = true",
            "path = \"/\"",
            "service[0].health.path",
            "only an HTTP check has this key",
        ),
        (
            "check = \"script\"",
            "check = \"tcp\"",
            "service[0].health.command",
            "only a script check has this key",
        ),
        (
            "dynamic = true",
            "user = \"no-such-user-rvs\"",
            "service[0].health.user",
            "no user named",
        ),
        (
            "max_per_minute = 2",
            "max_per_minute = 0",
            "service[0].notify.max_per_minute",
            "1 to 600",
        ),
        (
            "down = [\"/usr/local/bin/page\", \"ops\"], ",
            "",
            "service[0].notify",
            "up = ",
        ),
        (
            "[\"/usr/local/bin/page\", \"ops\"]",
            "[\"page\"]",
            "service[0].notify.down",
            "absolute path",
        ),
        (
            "max_per_minute = 2",
            "timeout = \"2m\"",
            "service[0].notify.timeout",
            "100ms to 60s",
        ),
    ] {
        let e = err(&text.replace(from, to));
        assert_eq!(e.key, key, "{to}: {e}");
        assert!(e.message.contains(msg), "{to}: {e}");
    }
}

#[test]
fn forwarding_methods_per_service_and_per_server() {
    let text = r#"
[director]
tunnel_source = "10.77.1.254"

[[service]]
name = "web"
vip = "10.77.100.100:80"
forward = "tun"
[[service.server]]
addr = "10.77.1.1"
[[service.server]]
addr = "10.77.1.2:8080"
forward = "nat"
"#;
    let c = from_str(text, "test.toml").unwrap();
    let s = &c.services[0];
    assert_eq!(s.forward, Forward::Tun);
    assert_eq!(
        s.servers[0].addr.port(),
        80,
        "a tunnelled server takes the VIP's port"
    );
    assert_eq!(
        (s.servers[0].forward, s.servers[1].forward),
        (None, Some(Forward::Nat))
    );
    assert_eq!(
        c.director.tunnel_source,
        Some("10.77.1.254".parse().unwrap())
    );
    // What `ringvs save` writes reads back the same.
    let saved = save::to_toml(&c.director, &c.plugins, &c.services).unwrap();
    let again = from_str(&saved, "saved.toml").unwrap();
    assert_eq!(again.services, c.services, "{saved}");
    assert_eq!(again.director.tunnel_source, c.director.tunnel_source);
    let gue = text.replace(
        "forward = \"tun\"",
        "forward = \"tun\"\ntunnel = \"gue\"\ntunnel_port = 6080",
    );
    // Direct routing with the AF_XDP backend.
    let dr = text
        .replace(
            "tunnel_source = \"10.77.1.254\"",
            "tunnel_source = \"10.77.1.254\"\nio = \"af_xdp\"\ninterfaces = [\"lo\"]",
        )
        .replace("forward = \"nat\"", "forward = \"dr\"")
        .replace("10.77.1.2:8080", "10.77.1.2");
    let c = from_str(&dr, "dr.toml").unwrap();
    assert_eq!(c.services[0].servers[1].forward, Some(Forward::Dr));
    assert_eq!(c.services[0].servers[1].addr.port(), 80);
    let c = from_str(&gue, "gue.toml").unwrap();
    assert_eq!(c.services[0].tunnel, Tunnel::Gue { port: 6080 });
    let saved = save::to_toml(&c.director, &c.plugins, &c.services).unwrap();
    assert_eq!(from_str(&saved, "saved.toml").unwrap().services, c.services);

    for (bad, want) in [
        (
            text.replace("addr = \"10.77.1.1\"", "addr = \"10.77.1.1:8080\""),
            "its port must be the virtual service's (80)",
        ),
        (
            text.replace("forward = \"tun\"", "forward = \"tun\"\nsyn_proxy = \"on\""),
            "syn_proxy = \"on\" needs both directions",
        ),
        (
            text.replace("forward = \"nat\"", "forward = \"dr\"")
                .replace("10.77.1.2:8080", "10.77.1.2"),
            "which needs director.io = \"af_xdp\"",
        ),
        (
            text.replace("forward = \"nat\"", "forward = \"gre\""),
            "expected \"nat\", \"tun\" or \"dr\", found \"gre\"",
        ),
        (
            text.replace("10.77.1.254", "224.0.0.1"),
            "director.tunnel_source",
        ),
        (
            text.replace("forward = \"tun\"", "forward = \"tun\"\ntunnel = \"gue\""),
            "needs the realservers' GUE port",
        ),
        (
            text.replace("forward = \"tun\"", "forward = \"tun\"\ntunnel_port = 6080"),
            "tunnel_port is for tunnel = \"gue\"",
        ),
        (
            text.replace("forward = \"tun\"", "forward = \"tun\"\ntunnel = \"gre\""),
            "tunnel = \"gre\" is not implemented yet",
        ),
    ] {
        let e = err(&bad);
        assert!(e.to_string().contains(want), "{e}");
    }
}

#[test]
fn stop_delay_and_queue_nice_are_checked_and_saved() {
    let svc = "[[service]]\nname = \"w\"\nvip = \"10.77.100.100:80\"\n[[service.server]]\naddr = \"10.77.1.1:80\"\n";
    let c = from_str(&format!("[director]\nstop_delay = \"3s\"\n{svc}"), "t.toml").unwrap();
    assert_eq!(c.director.stop_delay, 3);
    assert_eq!(c.director.queue_nice, DEFAULT_QUEUE_NICE);
    let c = from_str(&format!("[director]\nqueue_nice = 0\n{svc}"), "t.toml").unwrap();
    assert_eq!(c.director.queue_nice, 0);
    let saved = save::to_toml(&c.director, &c.plugins, &c.services).unwrap();
    assert_eq!(from_str(&saved, "s.toml").unwrap().director.queue_nice, 0);
    for n in [-21, 20] {
        let e = err(&format!("[director]\nqueue_nice = {n}\n{svc}")).to_string();
        assert!(
            e.contains("director.queue_nice") && e.contains("-20 to 19"),
            "{e}"
        );
    }
    let c = from_str(&format!("[director]\nstop_delay = \"3s\"\n{svc}"), "t.toml").unwrap();
    let saved = save::to_toml(&c.director, &c.plugins, &c.services).unwrap();
    assert_eq!(from_str(&saved, "s.toml").unwrap().director.stop_delay, 3);
    assert_eq!(from_str(svc, "t.toml").unwrap().director.stop_delay, 0);
    assert_eq!(
        from_str(&format!("[director]\nstop_delay = 0\n{svc}"), "t.toml")
            .unwrap()
            .director
            .stop_delay,
        0
    );
    for (v, want) in [
        ("\"500ms\"", "whole seconds"),
        ("\"301s\"", "at most 300s"),
        ("\"x\"", "director.stop_delay"),
    ] {
        let e = err(&format!("[director]\nstop_delay = {v}\n{svc}")).to_string();
        assert!(
            e.contains("director.stop_delay") && e.contains(want),
            "{v}: {e}"
        );
    }
}
