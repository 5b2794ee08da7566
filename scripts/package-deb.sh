#!/usr/bin/env bash
# Builds the Debian package of ringvs with dpkg-deb (nothing beyond what cargo already fetched):
# the release binary (profile-guided: scripts/build-pgo.sh), the plugin catalogue, the systemd
# unit, /etc/ringvs/ringvs.toml, /run/ringvs through tmpfiles.d, man pages and shell
# completions. Prints the .deb's path on its last line.
#
#   bash scripts/package-deb.sh            # builds ringvs (release, PGO) and the plugins first
#   NO_BUILD=1 bash scripts/package-deb.sh # packages what target/ already holds
#   PGO=0 bash scripts/package-deb.sh      # the plain release build (target/release/ringvs)
#   OUT_DIR=/tmp bash scripts/package-deb.sh
#
# Layout:
#   /usr/bin/ringvs
#   /usr/lib/ringvs/plugins/*.wasm          the catalogue (found next to the binary: BIN/../lib/ringvs/plugins)
#   /usr/lib/systemd/system/ringvs.service  examples/systemd/ringvs.service, ExecStart=/usr/bin/ringvs …
#   /usr/lib/tmpfiles.d/ringvs.conf         d /run/ringvs 0755 root root
#   /etc/ringvs/ringvs.toml                 examples/systemd/ringvs.toml (a conffile)
#   /usr/share/man/man1/ringvs*.1.gz        `ringvs generate man`
#   /usr/share/{bash-completion/completions,zsh/vendor-completions,fish/vendor_completions.d}
#   /usr/share/doc/ringvs/                  README.md, docs/*.md, copyright
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
out_dir=${OUT_DIR:-$target/debian}

die() {
    printf 'package-deb: %s\n' "$*" >&2
    exit 1
}
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (Debian's dpkg package)"

if [[ ${PGO:-1} == 0 ]]; then
    bin=$target/release/ringvs build=(cargo build --release -p ringvs)
else
    bin=$target/pgo/release/ringvs build=(bash scripts/build-pgo.sh)
fi
if [[ -z ${NO_BUILD:-} ]]; then
    bash scripts/build-plugins.sh >&2
    "${build[@]}" >&2
fi
plugins=$target/wasm32-wasip2/plugin
[[ -x $bin ]] || die "$bin is missing: ${build[*]}"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
[[ -n $version ]] || die "no workspace version in Cargo.toml"
arch=$(dpkg --print-architecture)
stage=$(mktemp -d "${TMPDIR:-/tmp}/ringvs-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
pkg=$stage/ringvs

install -d "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/usr/lib/ringvs/plugins" "$pkg/usr/lib/systemd/system" \
    "$pkg/usr/lib/tmpfiles.d" "$pkg/etc/ringvs" "$pkg/usr/share/man/man1" \
    "$pkg/usr/share/bash-completion/completions" "$pkg/usr/share/zsh/vendor-completions" \
    "$pkg/usr/share/fish/vendor_completions.d" "$pkg/usr/share/doc/ringvs"

# The binary, without its debug info (the release profile keeps line tables).
install -m 0755 "$bin" "$pkg/usr/bin/ringvs"
if command -v strip >/dev/null; then strip --strip-debug "$pkg/usr/bin/ringvs"; fi

# The catalogue: every crate under plugins/ (as ringvs lists it: ringvs plugin list --available).
n=0
for toml in plugins/*/Cargo.toml; do
    crate=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$toml" | head -1)
    f=$plugins/${crate//-/_}.wasm
    [[ -f $f ]] || die "$f is missing: bash scripts/build-plugins.sh"
    install -m 0644 "$f" "$pkg/usr/lib/ringvs/plugins/"
    n=$((n + 1))
done
((n > 0)) || die "no plugins under plugins/"

sed 's|^ExecStart=/usr/local/bin/ringvs |ExecStart=/usr/bin/ringvs |' examples/systemd/ringvs.service \
    >"$pkg/usr/lib/systemd/system/ringvs.service"
grep -q '^ExecStart=/usr/bin/ringvs run -c /etc/ringvs/ringvs.toml$' "$pkg/usr/lib/systemd/system/ringvs.service" ||
    die "examples/systemd/ringvs.service: ExecStart is not /usr/local/bin/ringvs run -c /etc/ringvs/ringvs.toml"
chmod 0644 "$pkg/usr/lib/systemd/system/ringvs.service"
install -m 0644 packaging/deb/ringvs.tmpfiles "$pkg/usr/lib/tmpfiles.d/ringvs.conf"
install -m 0644 examples/systemd/ringvs.toml "$pkg/etc/ringvs/ringvs.toml"

"$bin" generate man "$pkg/usr/share/man/man1"
gzip -9n "$pkg"/usr/share/man/man1/*.1
"$bin" generate completion bash >"$pkg/usr/share/bash-completion/completions/ringvs"
"$bin" generate completion zsh >"$pkg/usr/share/zsh/vendor-completions/_ringvs"
"$bin" generate completion fish >"$pkg/usr/share/fish/vendor_completions.d/ringvs.fish"
chmod 0644 "$pkg"/usr/share/*/completions/ringvs "$pkg"/usr/share/zsh/vendor-completions/_ringvs \
    "$pkg"/usr/share/fish/vendor_completions.d/ringvs.fish

install -m 0644 README.md docs/*.md "$pkg/usr/share/doc/ringvs/"
cat >"$pkg/usr/share/doc/ringvs/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ringvs

Files: *
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF

# The highest glibc symbol version the binary needs.
glibc=$(grep -aoE 'GLIBC_2\.[0-9]+' "$pkg/usr/bin/ringvs" | sort -uV | tail -1 | sed 's/GLIBC_//')
size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
cat >"$pkg/DEBIAN/control" <<EOF
Package: ringvs
Version: $version
Architecture: $arch
Maintainer: ringvs developers <ringvs@example.invalid>
Depends: libc6 (>= ${glibc:-2.31}), libgcc-s1, iproute2, passwd
Section: net
Priority: optional
Installed-Size: $size
Homepage: https://example.invalid/ringvs
Description: userspace Linux Virtual Server (L4 director) with WebAssembly policies
 ringvs is an L4 load balancer run like ipvsadm and keepalived: an io_uring data
 plane on a TUN device does LVS-NAT with the IPVS connection states; schedulers,
 persistence and DoS defenses are WebAssembly components (the IPVS catalogue:
 wrr, lc, sed, nq, sh, mh, twos, persist-netmask, secure-tcp, drop-entry,
 drop-packet, ratelimit, synauth), swapped at runtime without dropping a
 connection. Health checks, an admin socket and Prometheus metrics included.
EOF
echo /etc/ringvs/ringvs.toml >"$pkg/DEBIAN/conffiles"
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$pkg/DEBIAN/"
(cd "$pkg" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum >DEBIAN/md5sums)

mkdir -p "$out_dir"
deb=$out_dir/ringvs_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >&2
echo "$deb"
