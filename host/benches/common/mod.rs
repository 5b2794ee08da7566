//! What the benches share: the service they forward to, shards built from config, clients,
//! the packet loop and the plugins' place.
#![allow(dead_code)] // each bench uses its own part

use ringvs::conn::HashKey;
use ringvs::control::registry::Registry;
use ringvs::dataplane::{Packet, Pipeline, Shard, ShardConfig, Verdict, HEADROOM};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

/// The plain NAT path: the SYN proxy off (its auto mode would take over once a thousand
/// SYNs are half-open, and these benchmarks open far more; `syn_cookies` measures it).
pub const CONFIG: &str = r#"
[[service]]
name = "web"
vip = "10.77.100.100:80"
scheduler = "wlc"
syn_proxy = "off"
[[service.server]]
addr = "10.77.1.1:8080"
[[service.server]]
addr = "10.77.1.2:8080"
[[service.server]]
addr = "10.77.1.3:8080"
"#;

/// A shard of `memory` bytes built from config `text`, its plugins loaded (the plugin
/// manager is leaked: its instances live as long as the bench).
pub fn shard_from(text: &str, memory: usize) -> (Shard, Registry) {
    shard_in(text, memory, false)
}

/// As [`shard_from`], the defenses' ticks on the queue's tick thread if `tick_thread`.
pub fn shard_in(text: &str, memory: usize, tick_thread: bool) -> (Shard, Registry) {
    let cfg = ringvs::config::from_str(text, "bench.toml").unwrap();
    let mut reg = Registry::new(&cfg.services).unwrap();
    let mut pm = ringvs::control::plugins::PluginManager::default();
    let loaded = pm.load_config(&cfg).unwrap();
    let prepared = pm.prepare(&reg, 1, &loaded).unwrap();
    pm.commit(loaded);
    let snap = Arc::new(pm.snapshot(&mut reg, prepared));
    let s = Shard::new(
        ShardConfig {
            hash_key: HashKey::random(),
            tick_thread,
            ..ShardConfig::test(memory)
        },
        snap,
        None,
    )
    .unwrap();
    std::mem::forget(pm);
    (s, reg)
}

pub fn client(i: u32) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(0x0a4d_0000 | (i >> 14)),
        1024 + (i & 0x3fff) as u16,
    )
}

pub const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 77, 100, 100), 80);

#[inline]
pub fn run_chunk(s: &mut Shard, batch: &[Vec<u8>], buf: &mut [u8]) -> usize {
    let mut fwd = 0;
    for p in batch {
        buf[HEADROOM..HEADROOM + p.len()].copy_from_slice(p);
        let mut pkt = Packet::new(buf, HEADROOM, p.len()).unwrap();
        if s.process(&mut pkt) == Verdict::Forward {
            fwd += 1;
        }
    }
    fwd
}

/// The plugin directory (built by `bash scripts/build-plugins.sh`).
pub fn plugin(name: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let p = target.join(format!("wasm32-wasip2/plugin/{name}.wasm"));
    assert!(
        p.exists(),
        "build the plugins first: bash scripts/build-plugins.sh"
    );
    p
}

/// Pins the bench's thread to CPU 0, as the daemon pins each of several queues (the queue's
/// tick thread then runs on the other CPUs).
pub fn pin_to_cpu0() {
    // Safety: `set` is a plain bitmask owned by this frame; sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// [`CONFIG`] with a hostile defense: `tc`, a test defense whose every tick asks for
/// 100 000 blocks (the host applies `MAX_TICK_ACTIONS` and refuses the rest) and the
/// actions of `tc_actions` (see the test defense), followed in the list by `extra` (more
/// defenses, `defense = [...]` items) declared in `plugins`.
pub fn hostile(tc_actions: &str, plugins: &str, extra: &str) -> String {
    format!(
        "[plugins.tc]\npath = \"{}\"\n\
         config = {{ flood = 100000, repeat = true, actions = \"{tc_actions}\" }}\n{plugins}\n{}",
        plugin("tc_defense").display(),
        CONFIG.replace(
            "scheduler = \"wlc\"",
            &format!("scheduler = \"wlc\"\ndefense = [\"tc\"{extra}]")
        )
    )
}
