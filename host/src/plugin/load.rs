//! Loading a plugin: read and pin the file, compile and check it ([`super::runtime`]), then
//! put one instance of it through its interface ([`super::instance`]) before anyone may use
//! it. The top of the plugin layers: engine, store and instances know nothing of it.

use super::instance::{
    defense_types, flow_v4, DefenseInstance, Fault, PersistenceInstance, SchedulerInstance,
    ServerInfo,
};
use super::runtime::{hex, Kind, Plugin, PluginError, Runtime};
use sha2::{Digest, Sha256};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;

impl Runtime {
    /// Reads, pins, compiles and checks a plugin file, then runs its self-test with
    /// `config`. `want` restricts the kind. Nothing is changed on failure.
    pub fn load(
        self: &Arc<Self>,
        name: &str,
        path: &Path,
        sha256: Option<[u8; 32]>,
        config: &serde_json::Value,
        want: Option<Kind>,
    ) -> Result<Arc<Plugin>, PluginError> {
        let bytes = std::fs::read(path)
            .map_err(|e| PluginError::Read(path.to_path_buf(), e.to_string()))?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if let Some(pin) = sha256 {
            if pin != digest {
                return Err(PluginError::Sha256 {
                    path: path.to_path_buf(),
                    expected: hex(&pin),
                    actual: hex(&digest),
                });
            }
        }
        let plugin = self.compile(name, path, &bytes, digest, config, want)?;
        self_test(&plugin)?;
        Ok(plugin)
    }
}

/// Runs a freshly loaded plugin through one round of its interface with made-up input.
fn self_test(plugin: &Arc<Plugin>) -> Result<(), PluginError> {
    let flow = flow_v4(
        6,
        SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 40000),
        SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 100), 80),
    );
    let bad = |what: &str, f: Fault| PluginError::SelfTest(format!("{what}: {f}"));
    match plugin.kind {
        Kind::Scheduler => {
            let mut s = SchedulerInstance::new(plugin)?;
            let servers: Vec<ServerInfo> = (1..=3)
                .map(|i| ServerInfo {
                    addr: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10 + i), 8080),
                    weight: 1,
                })
                .collect();
            s.servers_changed(&servers)
                .map_err(|f| bad("servers-changed", f))?;
            s.pick(&flow, &[1, 0, 0, 1, 2, 0, 1, 0, 5])
                .map_err(|f| bad("pick", f))?;
            s.export_state().map_err(|f| bad("export-state", f))?;
        }
        Kind::Persistence => {
            let mut p = PersistenceInstance::new(plugin, &plugin.config)?;
            p.affinity(&flow).map_err(|f| bad("affinity", f))?;
        }
        Kind::Defense => {
            let mut d = DefenseInstance::new(plugin)?;
            d.levels().map_err(|f| bad("levels", f))?;
            d.admit(
                &flow,
                defense_types::SourceStats {
                    new_flows: 1,
                    concurrent: 1,
                },
            )
            .map_err(|f| bad("admit", f))?;
        }
    }
    Ok(())
}
