#!/usr/bin/env bash
# Install what the ringvs netns lab needs (Debian/Ubuntu), and the wasm32-wasip2 Rust target.
# Idempotent; prints nothing when everything is already there. Must run as root (apt-get).
#
#   bash scripts/deps.sh
#
# Packages are installed without their recommendations and without starting their services:
# nginx, prometheus and friends must not run on the host (the lab starts its own, in namespaces).
set -euo pipefail

log() { printf '[deps] %s\n' "$*" >&2; }
die() {
    printf '[deps] ERROR: %s\n' "$*" >&2
    exit 1
}

# command or dpkg package to look for -> package to install
wanted=(
    "cmd:cc gcc" # a C compiler: ring (HTTPS checks) and wasmtime's build scripts
    "cmd:c++ g++" # libFuzzer, built by libfuzzer-sys for the fuzz targets (scripts/fuzz.sh)
    "cmd:nginx nginx-light"
    "cmd:wrk wrk"
    "cmd:hping3 hping3"
    "cmd:iperf3 iperf3"
    "cmd:nft nftables"
    "cmd:conntrack conntrack"
    "cmd:prometheus prometheus"
    "cmd:python3 python3"
    "pkg:python3-scapy python3-scapy"
    "cmd:ethtool ethtool"
    "cmd:ip iproute2"
    "cmd:ss iproute2"
    "cmd:sysctl procps"
    "cmd:curl curl"
    "cmd:tcpdump tcpdump" # the e2e lab captures traffic for `ringvs replay`
    "cmd:keepalived keepalived" # the HA lab's VRRP (examples/lab/test-ha.sh)
    "cmd:bird bird2" # the active-active lab's BGP speakers and ECMP router (examples/lab/test-ecmp.sh)
    "cmd:clang clang" # examples/lab/bench.sh builds the realservers' XDP tunnel decapsulator
    "pkg:libbpf-dev libbpf-dev" # (examples/lab/tun_decap.bpf.c: bpf_helpers.h)
)

missing=()
for w in "${wanted[@]}"; do
    probe=${w%% *} pkg=${w#* }
    case $probe in
        cmd:*) command -v "${probe#cmd:}" >/dev/null 2>&1 && continue ;;
        pkg:*) dpkg -s "${probe#pkg:}" 2>/dev/null | grep '^Status: install ok installed' >/dev/null && continue ;;
    esac
    [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
done

if ((${#missing[@]} > 0)); then
    [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}; run this script as root to install them"
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get here; install them by hand"
    aptlog=$(mktemp /tmp/rvs-deps.XXXXXX.log)
    export DEBIAN_FRONTEND=noninteractive

    # Keep package scripts from starting daemons (Debian starts nginx/prometheus on install).
    # /usr/sbin/policy-rc.d is the standard switch for that; only add one if none exists.
    policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# temporary, from ringvs scripts/deps.sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added_policy=1
    fi
    cleanup() { if ((added_policy)); then rm -f "$policy"; fi; }
    trap cleanup EXIT

    # Daemons that were already running before we installed anything are not ours to stop.
    before_names=$(pgrep -lx 'nginx|prometheus|iperf3|keepalived' 2>/dev/null | awk '{print $2}' | sort -u || true)

    log "installing: ${missing[*]} (log: $aptlog)"
    if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$aptlog" 2>&1; then
        # nginx-light is not in every release; fall back to nginx.
        if [[ " ${missing[*]} " == *" nginx-light "* ]] && grep -q 'nginx-light' "$aptlog"; then
            missing=("${missing[@]/nginx-light/nginx}")
            log "nginx-light unavailable, trying nginx"
            apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$aptlog" 2>&1 || {
                tail -n 20 "$aptlog" >&2
                die "apt-get install ${missing[*]} failed (full log: $aptlog)"
            }
        else
            tail -n 20 "$aptlog" >&2
            die "apt-get install ${missing[*]} failed (full log: $aptlog)"
        fi
    fi

    # Belt and braces: if a package we just installed started its daemon anyway (sysvinit; there
    # is no systemd here), stop it and keep it from starting at boot. Packages that were already
    # installed are left alone.
    for pkg in "${missing[@]}"; do
        case $pkg in
            nginx | nginx-light) svc=nginx ;;
            prometheus | iperf3 | keepalived) svc=$pkg ;;
            *) continue ;;
        esac
        if [[ -z $(grep -x "$svc" <<<"$before_names" || true) ]] && pgrep -x "$svc" >/dev/null 2>&1; then
            log "stopping $svc, started by its package"
            service "$svc" stop >>"$aptlog" 2>&1 || true
            pgrep -x "$svc" >/dev/null 2>&1 && log "WARNING: $svc still runs on the host; stop it by hand"
        fi
        if [[ -x /etc/init.d/$svc ]]; then update-rc.d "$svc" disable >>"$aptlog" 2>&1 || true; fi
    done
    rm -f "$aptlog"
    log "installed: ${missing[*]}"
fi

# Plugins (later) are WebAssembly components built for wasm32-wasip2.
if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed 2>/dev/null | grep -x wasm32-wasip2 >/dev/null; then
        log "adding Rust target wasm32-wasip2"
        rustup target add wasm32-wasip2 >/dev/null 2>&1 || die "rustup target add wasm32-wasip2 failed"
    fi
    for c in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
            log "adding Rust component $c"
            rustup component add "$c" >/dev/null 2>&1 || die "rustup component add $c failed"
        fi
    done
else
    log "rustup not found: install Rust (https://rustup.rs), then run: rustup target add wasm32-wasip2"
fi
