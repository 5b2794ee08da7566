//! keepalived's features in ringvs, with a detached daemon and the `ringvs` binary:
//!
//! - a sorry server takes the new flows while no realserver can, and stands by again when
//!   one can (keepalived `sorry_server`).

mod common;

use common::director::Director;
use ringvs::dataplane::testkit::{tcp, TWO_SERVICES};
use ringvs::wire::tcp::flags::SYN;
use std::net::SocketAddrV4;

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
fn a_sorry_server_takes_new_flows_while_no_realserver_can() {
    let services = TWO_SERVICES.replace(
        "scheduler = \"wlc\"",
        "scheduler = \"wlc\"\nsorry_server = \"10.77.9.9:8080\"",
    );
    let mut d = Director::start(&services);
    let vip = a("10.77.100.100:80");
    let web = |d: &Director| {
        d.list()
            .services
            .into_iter()
            .find(|s| s.name == "web")
            .unwrap()
    };
    assert!(web(&d)
        .flags
        .contains(&"sorry 10.77.9.9:8080 standby".to_string()));
    let out = d.packets(&[tcp(a("10.77.0.2:40000"), vip, SYN, b"")]);
    assert_ne!(dest(&out[0]), a("10.77.9.9:8080"), "a realserver serves");

    d.ok(&["server", "weight", "web", "10.77.1.1:8080", "0"]);
    d.ok(&["server", "weight", "web", "10.77.1.2:8080", "0"]);
    assert!(
        web(&d)
            .flags
            .contains(&"sorry 10.77.9.9:8080 active".to_string()),
        "{:?}",
        web(&d).flags
    );
    for port in 40001..40005 {
        let out = d.packets(&[tcp(a(&format!("10.77.0.2:{port}")), vip, SYN, b"")]);
        assert_eq!(
            dest(&out[0]),
            a("10.77.9.9:8080"),
            "the sorry server serves"
        );
    }
    let table = d.ok(&["list"]);
    assert!(
        table.contains("TCP  10.77.100.100:80 wlc sorry 10.77.9.9:8080 active"),
        "{table}"
    );
    assert!(table.contains("  -> 10.77.9.9:8080"), "{table}");

    d.ok(&["server", "weight", "web", "10.77.1.2:8080", "1"]);
    assert!(web(&d)
        .flags
        .contains(&"sorry 10.77.9.9:8080 standby".to_string()));
    let out = d.packets(&[tcp(a("10.77.0.3:40000"), vip, SYN, b"")]);
    assert_eq!(dest(&out[0]), a("10.77.1.2:8080"), "back to the realserver");

    // At runtime, like the file.
    d.ok(&["service", "edit", "dns", "--sorry-server", "10.77.9.9:53"]);
    let dns = d
        .list()
        .services
        .into_iter()
        .find(|s| s.name == "dns")
        .unwrap();
    assert!(dns
        .flags
        .contains(&"sorry 10.77.9.9:53 standby".to_string()));
    d.ok(&["service", "edit", "dns", "--no-sorry-server"]);
    let dns = d
        .list()
        .services
        .into_iter()
        .find(|s| s.name == "dns")
        .unwrap();
    assert!(
        !dns.flags.iter().any(|f| f.starts_with("sorry")),
        "{:?}",
        dns.flags
    );
    // `save` writes it.
    let saved = d.ok(&["save"]);
    assert!(
        saved.contains("sorry_server = \"10.77.9.9:8080\""),
        "{saved}"
    );
}
