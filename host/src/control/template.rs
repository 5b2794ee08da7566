//! `ringvs plugin new`: a plugin crate from a template, ready to test, build and load.
//!
//! The crate has a `Cargo.toml` (the SDK by path or version, a workspace and a `plugin`
//! profile of its own, so it builds anywhere), `src/lib.rs` (the kind's trait implemented,
//! with tests on the SDK's native harness), `ringvs.toml` (a director config using the
//! plugin, for `ringvs check`) and a `.gitignore`. The templates are the files of
//! `template/`, with `{{name}}` (the crate), `{{Type}}` (its type), `{{file}}` (the
//! component's file stem), `{{sdk}}` (the dependency line) and `{{uses}}` (the service's line
//! that uses the plugin) filled in.

use crate::plugin::Kind;
use std::path::{Path, PathBuf};

/// Where the generated crate takes `ringvs-sdk` from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sdk {
    /// A directory holding the SDK crate (its `Cargo.toml`).
    Path(PathBuf),
    /// A version on crates.io.
    Version(String),
}

impl Sdk {
    /// The SDK of the source tree this binary was built from, if it is still there; else
    /// this version on crates.io.
    pub fn default_for_this_build() -> Sdk {
        let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
        match std::fs::canonicalize(&tree) {
            Ok(p) if p.join("Cargo.toml").is_file() => Sdk::Path(p),
            _ => Sdk::Version(env!("CARGO_PKG_VERSION").to_string()),
        }
    }

    /// `--sdk ARG`: a directory with a `Cargo.toml` is a path, anything else a version.
    pub fn parse(arg: &str) -> Sdk {
        let p = Path::new(arg);
        match std::fs::canonicalize(p) {
            Ok(p) if p.join("Cargo.toml").is_file() => Sdk::Path(p),
            _ => Sdk::Version(arg.to_string()),
        }
    }

    fn dependency(&self) -> String {
        match self {
            Sdk::Path(p) => format!("ringvs-sdk = {{ path = {:?} }}", p.display().to_string()),
            Sdk::Version(v) => format!("ringvs-sdk = {v:?}"),
        }
    }
}

/// A plugin crate to write: relative paths and their contents.
#[derive(Debug)]
pub struct Crate {
    /// Its files.
    pub files: Vec<(&'static str, String)>,
}

/// Why a crate cannot be generated.
#[derive(Debug, PartialEq, Eq)]
pub enum TemplateError {
    /// Not a usable crate name.
    BadName(String),
    /// The directory exists and is not empty.
    NotEmpty(PathBuf),
    /// Writing failed.
    Io(PathBuf, String),
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateError::BadName(n) => write!(
                f,
                "{n:?} is not a plugin name: a lowercase ASCII letter, then lowercase letters, \
                 digits, `-` or `_`, at most 64 characters"
            ),
            TemplateError::NotEmpty(d) => {
                write!(
                    f,
                    "{} exists and is not empty: nothing written",
                    d.display()
                )
            }
            TemplateError::Io(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

/// A name cargo takes as a package and the director as `[plugins.NAME]`.
fn check_name(name: &str) -> Result<(), TemplateError> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !name.ends_with(['-', '_']);
    match ok {
        true => Ok(()),
        false => Err(TemplateError::BadName(name.to_string())),
    }
}

/// `my-sched` → `MySched`.
fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            let first = c.next().map(|f| f.to_ascii_uppercase());
            first.into_iter().chain(c).collect::<String>()
        })
        .collect()
}

/// The crate of a plugin `name` of `kind`.
pub fn render(name: &str, kind: Kind, sdk: &Sdk) -> Result<Crate, TemplateError> {
    check_name(name)?;
    let lib = match kind {
        Kind::Scheduler => include_str!("template/scheduler.rs.txt"),
        Kind::Persistence => include_str!("template/persistence.rs.txt"),
        Kind::Defense => include_str!("template/defense.rs.txt"),
    };
    let uses = match kind {
        Kind::Scheduler => format!("scheduler = {name:?}"),
        Kind::Persistence => format!("persistence = {{ plugin = {name:?}, timeout = \"300s\" }}"),
        Kind::Defense => format!("defense = [{name:?}]"),
    };
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{Type}}", &type_name(name))
            .replace("{{file}}", &name.replace('-', "_"))
            .replace("{{sdk}}", &sdk.dependency())
            .replace("{{uses}}", &uses)
    };
    Ok(Crate {
        files: vec![
            ("Cargo.toml", fill(include_str!("template/Cargo.toml.txt"))),
            ("src/lib.rs", fill(lib)),
            (
                "ringvs.toml",
                fill(include_str!("template/ringvs.toml.txt")),
            ),
            (".gitignore", "/target\n".to_string()),
        ],
    })
}

impl Crate {
    /// Writes the files under `dir` (created if missing; refused if it holds anything). If
    /// the SDK is a path inside a workspace with a `Cargo.lock`, that lock file seeds the
    /// crate's, so that it builds with the versions the SDK was tested with.
    pub fn write(&self, dir: &Path, sdk: &Sdk) -> Result<(), TemplateError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e: std::io::Error| TemplateError::Io(p, e.to_string())
        };
        if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(TemplateError::NotEmpty(dir.to_path_buf()));
        }
        for (rel, text) in &self.files {
            let p = dir.join(rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            std::fs::write(&p, text).map_err(io(&p))?;
        }
        if let Sdk::Path(sdk) = sdk {
            let lock = sdk.join("../Cargo.lock");
            if lock.is_file() {
                let to = dir.join("Cargo.lock");
                std::fs::copy(&lock, &to).map_err(io(&to))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text<'a>(c: &'a Crate, rel: &str) -> &'a str {
        &c.files.iter().find(|(r, _)| *r == rel).unwrap().1
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "1x", "My", "a b", "a/b", "x-", "é", &"a".repeat(65)] {
            assert!(matches!(
                render(bad, Kind::Scheduler, &Sdk::Version("0.1.0".into())),
                Err(TemplateError::BadName(_))
            ));
        }
        assert_eq!(type_name("my-least_conn2"), "MyLeastConn2");
    }

    #[test]
    fn every_kind_implements_its_trait_and_is_used_by_the_config() {
        let sdk = Sdk::Path(PathBuf::from("/src/ringvs/sdk"));
        for (kind, export, uses) in [
            (
                Kind::Scheduler,
                "export_scheduler!(MySched);",
                "scheduler = \"my-sched\"",
            ),
            (
                Kind::Persistence,
                "export_persistence!(MySched);",
                "persistence = { plugin = \"my-sched\", timeout = \"300s\" }",
            ),
            (
                Kind::Defense,
                "export_defense!(MySched);",
                "defense = [\"my-sched\"]",
            ),
        ] {
            let c = render("my-sched", kind, &sdk).unwrap();
            let lib = text(&c, "src/lib.rs");
            assert!(lib.contains(export), "{kind:?}");
            assert!(lib.contains("#[cfg(test)]"), "{kind:?}: the harness tests");
            assert!(!lib.contains("{{") && !text(&c, "Cargo.toml").contains("{{"));
            let cfg = text(&c, "ringvs.toml");
            assert!(cfg.contains(uses), "{kind:?}");
            assert!(cfg.contains("path = \"target/wasm32-wasip2/plugin/my_sched.wasm\""));
            // Both files parse as TOML.
            cfg.parse::<toml::Table>().unwrap();
            let manifest: toml::Table = text(&c, "Cargo.toml").parse().unwrap();
            assert_eq!(
                manifest["dependencies"]["ringvs-sdk"]["path"].as_str(),
                Some("/src/ringvs/sdk")
            );
            assert!(manifest.contains_key("workspace"));
            assert_eq!(
                manifest["profile"]["plugin"]["panic"].as_str(),
                Some("abort")
            );
        }
        let c = render("x", Kind::Defense, &Sdk::Version("0.1.0".into())).unwrap();
        assert!(text(&c, "Cargo.toml").contains("ringvs-sdk = \"0.1.0\""));
    }

    #[test]
    fn the_config_it_writes_loads() {
        for kind in [Kind::Scheduler, Kind::Persistence, Kind::Defense] {
            let c = render("my-plugin", kind, &Sdk::Version("0.1.0".into())).unwrap();
            let dir = std::env::temp_dir().join(format!(
                "ringvs-template-{}-{:?}",
                std::process::id(),
                kind
            ));
            let _ = std::fs::remove_dir_all(&dir);
            c.write(&dir, &Sdk::Version("0.1.0".into())).unwrap();
            let loaded = crate::config::load(&dir.join("ringvs.toml"));
            std::fs::remove_dir_all(&dir).unwrap();
            let cfg = loaded.unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            assert!(cfg.plugins.contains_key("my-plugin"));
        }
    }

    #[test]
    fn a_directory_with_files_is_left_alone() {
        let dir = std::env::temp_dir().join(format!("ringvs-template-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("keep"), "").unwrap();
        let c = render("x", Kind::Scheduler, &Sdk::Version("0.1.0".into())).unwrap();
        let err = c.write(&dir, &Sdk::Version("0.1.0".into())).unwrap_err();
        assert_eq!(err, TemplateError::NotEmpty(dir.clone()));
        assert!(!dir.join("Cargo.toml").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
