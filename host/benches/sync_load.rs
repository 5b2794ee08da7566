//! Connection sync under load, between two real daemons (detached: their queues driven here)
//! over UDP on loopback, with the defaults (`threshold` 3, `max_rate` 10,000 messages a
//! second): `ringvs::control::syncload`, which `ringvs ha bench` runs too (the test command
//! does, with its checks).
//!
//! `cargo bench -p ringvs --bench sync_load` (`RINGVS_SYNC_RATE` new connections a second,
//! default 100,000; `RINGVS_SYNC_SECS`, default 5; `RINGVS_SYNC_BULK` entries, default
//! 1,000,000; a row's name as an argument runs that row alone)

use ringvs::control::syncload;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let want = |row: &str| filter.as_deref().is_none_or(|f| row.contains(f));
    if want("steady") {
        match syncload::steady(env("RINGVS_SYNC_RATE", 100_000), env("RINGVS_SYNC_SECS", 5)) {
            Ok(r) => println!("{r}"),
            Err(e) => println!("steady: {e}"),
        }
    }
    if want("bulk") {
        match syncload::bulk(env("RINGVS_SYNC_BULK", 1_000_000) as u32) {
            Ok(r) => println!("{r}"),
            Err(e) => println!("bulk: {e}"),
        }
    }
}
