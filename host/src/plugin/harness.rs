//! Testing a plugin's *built component*: loaded in wasmtime with the director's own runtime,
//! limits, import checks and self-test, exactly as `ringvs run` loads it.
//!
//! For plugin crates' integration tests (a dev-dependency on `ringvs`); the SDK's
//! `ringvs_sdk::testing` runs the same logic natively. Configs are TOML tables as JSON
//! (`serde_json::json!({"netmask": "255.255.255.0"})`, re-exported as [`json`]).

use super::{flow_v4, Kind, Plugin, Runtime, RuntimeOptions, SchedulerInstance, ServerInfo};
use ringvs_abi::LOAD_STRIDE;
pub use serde_json::json;
use std::net::SocketAddrV4;
use std::path::Path;
use std::sync::Arc;

/// A scheduler component loaded in wasmtime, with the director's limits and checks.
pub struct WasmScheduler {
    /// The loaded plugin.
    pub plugin: Arc<Plugin>,
    inst: SchedulerInstance,
    load: Vec<u32>,
}

impl WasmScheduler {
    /// Loads `path` with `config` (a TOML table as JSON), runs the director's checks and
    /// self-test, and instantiates it.
    pub fn load(path: &Path, config: serde_json::Value) -> Result<WasmScheduler, String> {
        let rt = Runtime::new(RuntimeOptions::default()).map_err(|e| e.to_string())?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("plugin")
            .to_string();
        let plugin = rt
            .load(&name, path, None, &config, Some(Kind::Scheduler))
            .map_err(|e| e.to_string())?;
        let inst = SchedulerInstance::new(&plugin).map_err(|e| e.to_string())?;
        Ok(WasmScheduler {
            plugin,
            inst,
            load: Vec::new(),
        })
    }

    /// Sets the realservers (`("addr:port", weight)`), all idle.
    pub fn servers(&mut self, list: &[(&str, u32)]) -> Result<(), String> {
        let servers: Vec<ServerInfo> = list
            .iter()
            .map(|(a, w)| {
                let addr: SocketAddrV4 = a
                    .parse()
                    .map_err(|_| format!("not an IPv4 address:port: {a:?}"))?;
                Ok(ServerInfo {
                    addr: addr.into(),
                    weight: *w,
                })
            })
            .collect::<Result<_, String>>()?;
        self.load = list.iter().flat_map(|(_, w)| [*w, 0, 0]).collect();
        self.inst
            .servers_changed(&servers)
            .map_err(|f| f.to_string())
    }

    /// Sets server `i`'s counts.
    pub fn set_conns(&mut self, i: usize, active: u32, inactive: u32) {
        self.load[i * LOAD_STRIDE + 1] = active;
        self.load[i * LOAD_STRIDE + 2] = inactive;
    }

    /// Asks the component; `Err` is a fault (trap, deadline, memory, bad return).
    pub fn pick(&mut self, client: &str, vip: &str) -> Result<Option<usize>, String> {
        let c: SocketAddrV4 = client
            .parse()
            .map_err(|_| format!("bad client {client:?}"))?;
        let v: SocketAddrV4 = vip.parse().map_err(|_| format!("bad vip {vip:?}"))?;
        self.inst
            .pick(&flow_v4(6, c, v), &self.load)
            .map_err(|f| f.to_string())
    }
}
