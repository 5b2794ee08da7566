//! The git revision the binary is built from, for `ringvs --version` and
//! `ringvs_build_info{revision}`: `RINGVS_REVISION` if set (a package build from a source
//! tarball), else `git rev-parse --short=12 HEAD`, else "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=RINGVS_REVISION");
    let revision = std::env::var("RINGVS_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            // Rebuild when HEAD moves: HEAD itself, the branch it names, packed refs. Only
            // files that exist: cargo takes a missing one as changed, and would rebuild the
            // crate on every command (a fresh clone has no packed-refs).
            let watch = |p: String| {
                if std::path::Path::new(&p).exists() {
                    println!("cargo:rerun-if-changed={p}");
                }
            };
            for path in ["HEAD", "packed-refs"] {
                if let Some(p) = git(&["rev-parse", "--git-path", path]) {
                    watch(p);
                }
            }
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                if let Some(p) = git(&["rev-parse", "--git-path", &branch]) {
                    watch(p);
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=RINGVS_REVISION={revision}");
}
