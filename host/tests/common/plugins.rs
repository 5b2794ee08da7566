//! Built WebAssembly plugins for tests: built once per test process with
//! `scripts/build-plugins.sh` (so a fresh checkout needs no manual step).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The directory holding the built plugins.
pub fn plugin_dir() -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
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
        Ok(target.join("wasm32-wasip2/plugin"))
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The built component of crate `name` (e.g. `sched-wlc`).
pub fn plugin(name: &str) -> PathBuf {
    let p = plugin_dir().join(format!("{}.wasm", name.replace('-', "_")));
    assert!(p.exists(), "{} was not built", p.display());
    p
}
