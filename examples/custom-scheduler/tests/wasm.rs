//! The built component, loaded in wasmtime with the director's checks, limits and self-test,
//! picks exactly as the native code does.

use custom_scheduler::SlowStart;
use ringvs::plugin::harness::{json, WasmScheduler};
use ringvs_sdk::testing::{flow, SchedulerHarness};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// `target/wasm32-wasip2/plugin/custom_scheduler.wasm`, brought up to date once per test
/// process with `scripts/build-plugins.sh` (cargo does nothing when it is), so that the tests
/// never run an old build.
fn component() -> PathBuf {
    static WASM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    WASM.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let out = Command::new("bash")
            .arg(root.join("scripts/build-plugins.sh"))
            .current_dir(&root)
            .output()
            .map_err(|e| format!("cannot run scripts/build-plugins.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/build-plugins.sh failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let wasm = target.join("wasm32-wasip2/plugin/custom_scheduler.wasm");
        match wasm.exists() {
            true => Ok(wasm),
            false => Err(format!("{} was not built", wasm.display())),
        }
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

const CLIENT: &str = "10.77.0.2:40000";
const VIP: &str = "10.77.100.100:80";
/// rs3 is quiesced ...
const BEFORE: &[(&str, u32)] = &[
    ("10.77.1.1:8080", 1),
    ("10.77.1.2:8080", 1),
    ("10.77.1.3:8080", 0),
];
/// ... and comes back.
const AFTER: &[(&str, u32)] = &[
    ("10.77.1.1:8080", 1),
    ("10.77.1.2:8080", 1),
    ("10.77.1.3:8080", 1),
];

#[test]
fn the_component_picks_as_the_native_code() {
    let cfg = json!({ "slow_start_picks": 20 });
    let mut wasm = WasmScheduler::load(&component(), cfg).unwrap();
    let native = SchedulerHarness::<SlowStart>::new(&[("slow_start_picks", "20")]).unwrap();
    let f = flow(CLIENT, VIP);

    wasm.servers(BEFORE).unwrap();
    let mut native = native.servers(BEFORE).servers(AFTER);
    wasm.servers(AFTER).unwrap();
    // rs1 and rs2 hold 10 connections each, rs3 none.
    let mut conns = [10, 10, 0];
    for (i, c) in conns.iter().enumerate() {
        native.set_conns(i, *c, 0);
        wasm.set_conns(i, *c, 0);
    }
    let mut picks = Vec::new();
    for n in 0..60 {
        let want = native.pick_and_count(&f, true);
        let got = wasm.pick(CLIENT, VIP).unwrap();
        assert_eq!(got, want, "pick {n}");
        let i = got.unwrap();
        conns[i] += 1;
        wasm.set_conns(i, conns[i], 0);
        picks.push(i);
    }
    // rs3 (index 2) wins its first pick, being idle: then 256/2 = 2560/20 is a tie, which
    // rs1 wins; then 256/3 < 2560/20 < 2816/20: rs3 again. Plain wlc would give rs3 the
    // first 10 picks in a row; slow start gives it 6.
    assert_eq!(picks[..10], [2, 0, 2, 1, 2, 2, 0, 2, 1, 2]);
}

#[test]
fn the_component_refuses_an_unknown_key() {
    let err = WasmScheduler::load(&component(), json!({ "slowstart": 50 }))
        .err()
        .unwrap();
    assert_eq!(
        err,
        "the plugin rejected its config: unknown config key `slowstart` (known: slow_start_picks)"
    );
}
