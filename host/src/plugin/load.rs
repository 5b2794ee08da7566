//! Loading a plugin: read and pin the file, compile and check it ([`super::runtime`]), then
//! put one instance of it through its interface ([`super::instance`]) before anyone may use
//! it. The top of the plugin layers: engine, store and instances know nothing of it.

use super::instance::{
    defense_types, flow_v4, DefenseInstance, Fault, PersistenceInstance, SchedulerInstance,
    ServerInfo,
};
use super::runtime::{hex, Kind, Plugin, PluginError, Runtime};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

/// The largest plugin file ringvs reads (16 MiB; the plugins of this repository are under
/// 100 KiB). A larger one is refused before it is read.
pub const MAX_PLUGIN_BYTES: u64 = 16 << 20;

/// Reads a plugin file, safely whoever named it: a regular file only (a symlink is followed,
/// to a regular file only), at most [`MAX_PLUGIN_BYTES`]. The path is checked with `stat`
/// before it is opened, so a device is never opened; it is opened non-blocking, so a FIFO
/// cannot hang the caller; and `fstat` of what was opened must be that same regular file, so
/// a path swapped in between is refused too.
pub fn read_plugin_file(path: &Path) -> Result<Vec<u8>, PluginError> {
    let err = |e: String| PluginError::Read(path.to_path_buf(), e);
    let not_regular = |t: std::fs::FileType| {
        let what = if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        err(format!("{what}; a plugin must be a regular file"))
    };
    let before = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if !before.file_type().is_file() {
        return Err(not_regular(before.file_type()));
    }
    let too_large = |n: u64| {
        err(format!(
            "{n} bytes or more, over the limit of {MAX_PLUGIN_BYTES} bytes for a plugin"
        ))
    };
    if before.len() > MAX_PLUGIN_BYTES {
        return Err(too_large(before.len()));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| err(e.to_string()))?;
    let md = file.metadata().map_err(|e| err(e.to_string()))?;
    if !md.file_type().is_file() {
        return Err(not_regular(md.file_type()));
    }
    if (md.dev(), md.ino()) != (before.dev(), before.ino()) {
        return Err(err("the file changed while it was opened".into()));
    }
    let mut bytes = Vec::with_capacity(md.len().min(MAX_PLUGIN_BYTES) as usize);
    // Bounded even if the file grows while it is read.
    file.take(MAX_PLUGIN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(e.to_string()))?;
    if bytes.len() as u64 > MAX_PLUGIN_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

impl Runtime {
    /// Reads ([`read_plugin_file`]), pins, compiles and checks a plugin file, then runs its
    /// self-test with `config`. `want` restricts the kind. Nothing is changed on failure.
    pub fn load(
        self: &Arc<Self>,
        name: &str,
        path: &Path,
        sha256: Option<[u8; 32]>,
        config: &serde_json::Value,
        want: Option<Kind>,
    ) -> Result<Arc<Plugin>, PluginError> {
        let bytes = read_plugin_file(path)?;
        self.load_bytes(name, path, bytes, sha256, config, want)
    }

    /// [`Runtime::load`] of a file already read (`bytes`, from `path`): for a caller that
    /// reads it before taking a lock.
    pub fn load_bytes(
        self: &Arc<Self>,
        name: &str,
        path: &Path,
        bytes: Vec<u8>,
        sha256: Option<[u8; 32]>,
        config: &serde_json::Value,
        want: Option<Kind>,
    ) -> Result<Arc<Plugin>, PluginError> {
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
                    addr: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10 + i), 8080).into(),
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
