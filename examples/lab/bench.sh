#!/usr/bin/env bash
# Benchmark the kernel's nftables DNAT and ringvs (TUN and AF_XDP, at 1, 2 and 4 queues) on
# the same lab, in one run, and print a table of figures with each one's ratio to nft's
# (also written as markdown to $BENCH_OUT).
#
#   sudo bash examples/lab/bench.sh
#   sudo BENCH_SECONDS=5 BENCH_PHASES="nft xdp-q1" bash examples/lab/bench.sh
#
# The lab runs in the switch topology (LAB_TOPO=switch: the director has one interface per
# side, dcli and drs, each with 4 queues), which AF_XDP needs, for every phase alike. Each
# phase gets a fresh forwarder (conntrack flushed in between) and measures, through VIP
# 10.77.100.100:
#
#   ka      wrk keep-alive req/s (-t2 -c64)
#   close   wrk Connection: close req/s, i.e. new connections/s (the client namespace has
#           tcp_tw_reuse=1 and ip_local_port_range 1024-65535, so its ports never cap it)
#   tcp     iperf3 TCP Gbit/s (one stream, receiver's rate), client to realserver: the
#           direction every forwarder carries
#   tcpdown iperf3 -R TCP Gbit/s, realserver to client: the direction LVS-DR and LVS-TUN
#           leave to the realservers' own route (the director carries only the ACKs)
#   udp     iperf3 UDP with 64-byte payloads at full speed: packets/s the receiver got
#   cpu     CPU cost at a fixed offered load: iperf3 UDP 64 B at BENCH_CPU_PPS packets/s; the
#           lab's CPU-seconds (every process of the lab, kernel work done on their behalf
#           included: a cpuacct/cgroup of its own) per million packets received, and ringvs's
#           own CPU-seconds per million packets (its process). Lower is better; the ratio is
#           cost / nft's cost.
#
# Phases: nft; tun-qN (director.io = "tun", N queues); xdp-qN (director.io = "af_xdp", N
# queues); ringvs (TUN with the config's queues, as before this table existed); and the
# forwarding methods whose replies bypass the director, on a config of their own (web on
# VIP:8080, iperf on VIP:5201, rr; written to $LAB_DIR/bench-PHASE.toml):
#
#   dr-qN     LVS-DR (forward = "dr", director.io = "af_xdp")
#   ipip-qN   LVS-TUN with IPIP (forward = "tun", director.io = "tun")
#   gue-qN    LVS-TUN with GUE to port 6080
#
# IPv6 (the lab gets IPv6 as well when one of these is asked for; the same measurements
# through VIP6 [fd77:100::100], each ratio against nft6's):
#
#   nft6      the kernel's NAT66 (nftables DNAT in an ip6 table)
#   tun6-qN   NAT66 by ringvs, director.io = "tun"
#   xdp6-qN   NAT66 by ringvs, director.io = "af_xdp"
#   dr6-qN    LVS-DR over IPv6, director.io = "af_xdp" (VIP6 on the realservers' lo)
#
# There the realservers hold the virtual address on lo (arp_ignore = 1, arp_announce = 2);
# for the tunnels each decapsulates in XDP (examples/lab/tun_decap.bpf.c, built with clang:
# the lab kernel has no ipip or fou, and the userspace decapsulator of test-tun.sh would
# measure Python), and the director routes replies from the virtual address past ringvs.
# These phases measure ka, close, tcp and tcpdown (their rows' "UDP" and "CPU" are n/a:
# iperf3's UDP server answers from the realserver's own address, which the client does not
# take), and note ringvs's incoming and outgoing packets (outgoing stays 0: the replies
# bypass it).
#
# Environment: BENCH_SECONDS (per measurement, default 10), BENCH_OUT (default
# $LAB_DIR/bench.md), BENCH_PHASES (default "nft tun-q1 tun-q2 tun-q4 xdp-q1 xdp-q2 xdp-q4
# dr-q1 ipip-q1"),
# BENCH_CPU_PPS (default 20000), RINGVS, CONF, RVS_LAB, LAB_DIR.
# Exit status: non-zero when a phase or a measurement failed (the table then says n/a).
set -euo pipefail
LAB_TOPO=switch
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_OUT=${BENCH_OUT:-$LAB_DIR/bench.md}
BENCH_PHASES=${BENCH_PHASES:-nft tun-q1 tun-q2 tun-q4 xdp-q1 xdp-q2 xdp-q4 dr-q1 ipip-q1}
# An IPv6 phase brings the IPv6 lab up (nginx on [::]:8080 too).
if [[ " $BENCH_PHASES " =~ \ (nft6|tun6-q|xdp6-q|dr6-q) ]]; then LAB_IPV6=1; fi
BENCH_CPU_PPS=${BENCH_CPU_PPS:-20000}
[[ $BENCH_SECONDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive integer (got '$BENCH_SECONDS')"
[[ $BENCH_CPU_PPS =~ ^[1-9][0-9]*$ ]] || die "BENCH_CPU_PPS must be a positive integer (got '$BENCH_CPU_PPS')"
for p in $BENCH_PHASES; do
    case $p in
        nft | ringvs | tun-q[1-9] | xdp-q[1-9] | dr-q[1-9] | ipip-q[1-9] | gue-q[1-9]) ;;
        nft6 | tun6-q[1-9] | xdp6-q[1-9] | dr6-q[1-9]) ;;
        *) die "BENCH_PHASES: unknown phase '$p' (nft, ringvs, tun-qN, xdp-qN, dr-qN, ipip-qN, gue-qN; IPv6: nft6, tun6-qN, xdp6-qN, dr6-qN)" ;;
    esac
    n=${p#*-q}
    if [[ $p == *-q* ]] && ((n > LAB_MAXQ)); then die "phase $p: at most LAB_MAXQ=$LAB_MAXQ queues"; fi
done
require_root
require_cmds wrk iperf3 nft curl nginx ethtool
DECAP_OBJ=""
if [[ " $BENCH_PHASES " =~ \ (ipip|gue)-q ]]; then require_cmds clang; fi

S=$BENCH_SECONDS
METRICS=(ka close tcp tcpdown udp cpu rcpu)
declare -A LABEL=(
    [ka]="keep-alive req/s"
    [close]="new conn/s"
    [tcp]="TCP Gbit/s"
    [tcpdown]="TCP down Gbit/s"
    [udp]="UDP 64 B pps"
    [cpu]="lab CPU-s/Mpkt"
    [rcpu]="ringvs CPU-s/Mpkt"
)

# --- CPU accounting: a cgroup of the lab's own --------------------------------------------
# Tick-based accounting charges softirq work to the task it interrupts, so the lab's cgroup
# also pays for the forwarding the kernel does on its behalf (what ksoftirqd does is not in
# it: the figure is a lower bound under overload, which the fixed load avoids).
CG=""
CG_KIND=""
cg_init() {
    local name=rvs-bench-$RVS_LAB
    if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
        CG=/sys/fs/cgroup/$name CG_KIND=v2
    elif [[ -d /sys/fs/cgroup/cpuacct ]]; then
        CG=/sys/fs/cgroup/cpuacct/$name CG_KIND=v1
    else
        warn "no cgroup for CPU accounting: the CPU rows use /proc/stat (the whole machine)"
        return 0
    fi
    mkdir -p "$CG" 2>/dev/null && echo $$ >"$CG/cgroup.procs" 2>/dev/null || {
        warn "cannot use cgroup $CG: the CPU rows use /proc/stat (the whole machine)"
        CG="" CG_KIND=""
    }
}
cg_done() {
    [[ -n $CG ]] || return 0
    # Move ourselves back to the root group, then remove ours (it must be empty).
    local root=${CG%/*}
    echo $$ >"$root/cgroup.procs" 2>/dev/null || true
    rmdir "$CG" 2>/dev/null || true
}
# cpu_ns: CPU time used so far (ns): the lab's cgroup, else the machine's busy time.
cpu_ns() {
    case $CG_KIND in
        v2) awk '$1 == "usage_usec" { printf "%.0f\n", $2 * 1000 }' "$CG/cpu.stat" ;;
        v1) cat "$CG/cpuacct.usage" ;;
        *) awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu" { printf "%.0f\n", ($2 + $3 + $4 + $7 + $8 + $9) * 1e9 / hz }' /proc/stat ;;
    esac
}
# proc_cpu_ns PID: user + system time of a process and its threads (ns).
proc_cpu_ns() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.0f\n", ($12 + $13) * 1e9 / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# --- forwarding methods whose replies bypass the director --------------------------------
GUE_PORT=6080

# director_conf: the [director] table of a phase's own config (one queue; the lab's admin
# socket and metrics address).
director_conf() {
    echo "[director]"
    echo 'device = "ringvs0"'
    echo "queues = 1"
    echo 'conn_memory_limit = "64MiB"'
    echo "admin_socket = \"$LAB_DIR/admin.sock\""
    echo 'metrics_listen = "127.0.0.1:9406"'
}

# method_conf METHOD FILE: the config of a dr/ipip/gue phase.
method_conf() {
    local m=$1 fwd=tun svc port i
    if [[ $m == dr ]]; then fwd=dr; fi
    {
        echo "# bench.sh phase $m: written by examples/lab/bench.sh"
        director_conf
        # The tunnels' packets must reach the realservers whole (no segmentation offload).
        if [[ $fwd == tun ]]; then echo "offload = false"; fi
        for svc in web:8080 iperf:5201; do
            port=${svc#*:}
            printf '\n[[service]]\nname = "%s"\nvip = "%s:%s"\nproto = "tcp"\nforward = "%s"\nscheduler = "rr"\n' \
                "${svc%:*}" "$VIP" "$port" "$fwd"
            if [[ $m == gue ]]; then printf 'tunnel = "gue"\ntunnel_port = %s\n' "$GUE_PORT"; fi
            for ((i = 1; i <= RS_COUNT; i++)); do
                # iperf3 listens on rs1 only.
                if [[ $port == 5201 ]] && ((i > 1)); then break; fi
                printf '\n[[service.server]]\naddr = "%s"\n' "${RS_IPS[i - 1]}"
            done
        done
    } >"$2"
}

# method_conf6 METHOD FILE: the config of an IPv6 phase: NAT66 ("nat": web on [VIP6]:80 to the
# realservers' :8080, iperf on [VIP6]:5201 TCP and UDP) or LVS-DR ("dr": web on [VIP6]:8080,
# iperf on [VIP6]:5201 TCP).
method_conf6() {
    local m=$1 svc port proto i
    {
        echo "# bench.sh IPv6 phase ($m): written by examples/lab/bench.sh"
        director_conf
        for svc in web:tcp iperf:tcp iperfu:udp; do
            proto=${svc#*:}
            port=5201
            if [[ ${svc%:*} == web ]]; then port=80; fi
            if [[ $m == dr && $port == 80 ]]; then port=8080; fi
            if [[ $m == dr && $proto == udp ]]; then continue; fi
            printf '\n[[service]]\nname = "%s"\nvip = "[%s]:%s"\nproto = "%s"\nforward = "%s"\nscheduler = "rr"\n' \
                "${svc%:*}" "$VIP6" "$port" "$proto" "$m"
            for ((i = 1; i <= RS_COUNT; i++)); do
                if [[ $port == 5201 ]] && ((i > 1)); then break; fi
                if [[ $m == dr ]]; then
                    printf '\n[[service.server]]\naddr = "%s"\n' "${RS_IPS6[i - 1]}"
                else
                    printf '\n[[service.server]]\naddr = "[%s]:%s"\n' "${RS_IPS6[i - 1]}" "$([[ $port == 80 ]] && echo 8080 || echo 5201)"
                fi
            done
        done
    } >"$2"
}

# method_up METHOD: the realservers take the client's packets for the virtual address (on lo,
# answering no ARP for it); for a tunnel each decapsulates in XDP, and the director routes
# replies from the virtual address past ringvs (as the realservers' own gateway would).
method_up() {
    local m=$1 i ns
    for ((i = 1; i <= RS_COUNT; i++)); do
        ns=rs$i
        if [[ $m == dr6 ]]; then
            in_ns "$ns" ip -6 addr add "$VIP6/128" dev lo nodad
            continue
        fi
        ns_sysctl "$ns" net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
        in_ns "$ns" ip addr add "$VIP/32" dev lo
        if [[ $m != dr ]]; then
            in_ns "$ns" ip link set dev eth0 xdpdrv obj "$DECAP_OBJ" sec xdp 2>/dev/null ||
                in_ns "$ns" ip link set dev eth0 xdpgeneric obj "$DECAP_OBJ" sec xdp || {
                err "cannot attach $DECAP_OBJ to eth0 in $(ns_name "$ns")"
                return 1
            }
        fi
    done
    if [[ $m != dr && $m != dr6 ]]; then in_ns dir ip rule add iif "$RS_IF" from "$VIP" lookup main pref 999; fi
}

# method_down: undo method_up (whatever of it was done), and forget the client's path MTU to
# the virtual address (a tunnel lowers it) so that later phases start alike.
method_down() {
    local i ns
    for ((i = 1; i <= RS_COUNT; i++)); do
        ns=rs$i
        in_ns "$ns" ip link set dev eth0 xdpdrv off 2>/dev/null || true
        in_ns "$ns" ip link set dev eth0 xdpgeneric off 2>/dev/null || true
        in_ns "$ns" ip addr del "$VIP/32" dev lo 2>/dev/null || true
        in_ns "$ns" ip -6 addr del "$VIP6/128" dev lo 2>/dev/null || true
        in_ns "$ns" sysctl -q -w net.ipv4.conf.all.arp_ignore=0 net.ipv4.conf.all.arp_announce=0 >/dev/null 2>&1 || true
    done
    while in_ns dir ip rule del iif "$RS_IF" from "$VIP" lookup main pref 999 2>/dev/null; do :; done
    in_ns cli ip route flush cache 2>/dev/null || true
    in_ns cli ip -6 route flush cache 2>/dev/null || true
}

# phase NAME: bring the forwarder up, measure, bring it down. Runs in a subshell (own EXIT
# trap stops the forwarder); results go to $LAB_DIR/bench-NAME.txt as "metric value" lines,
# notes to $LAB_DIR/bench-NAME.notes. Exit status non-zero if anything failed.
phase() {
    local name=$1 res=$LAB_DIR/bench-$1.txt notes=$LAB_DIR/bench-$1.notes failed=0 fwd=ringvs
    local method="" v6=0
    : >"$res"
    : >"$notes"
    trap 'fwd_down' EXIT
    case $name in
        nft) fwd=nft LAB_IO=tun ;;
        ringvs) LAB_IO=tun RINGVS_QUEUES="" ;;
        tun-q*) LAB_IO=tun RINGVS_QUEUES=${name#tun-q} ;;
        xdp-q*) LAB_IO=af_xdp RINGVS_QUEUES=${name#xdp-q} ;;
        dr-q*) LAB_IO=af_xdp RINGVS_QUEUES=${name#dr-q} method=dr ;;
        ipip-q* | gue-q*) LAB_IO=tun RINGVS_QUEUES=${name#*-q} method=${name%-q*} ;;
        nft6) fwd=nft LAB_IO=tun v6=1 ;;
        tun6-q*) LAB_IO=tun RINGVS_QUEUES=${name#tun6-q} v6=1 ;;
        xdp6-q*) LAB_IO=af_xdp RINGVS_QUEUES=${name#xdp6-q} v6=1 ;;
        dr6-q*) LAB_IO=af_xdp RINGVS_QUEUES=${name#dr6-q} method=dr6 v6=1 ;;
    esac
    if ((v6)); then
        WRK_HOST="[$VIP6]" IPERF_HOST=$VIP6
        if [[ $fwd == ringvs ]]; then
            CONF=$LAB_DIR/bench-$name.toml
            if [[ $method == dr6 ]]; then method_conf6 dr "$CONF"; else method_conf6 nat "$CONF"; fi
        fi
    fi
    if [[ $method == dr6 ]]; then
        trap 'fwd_down; method_down' EXIT
        WRK_PORT=8080
        if ! method_up dr6; then
            echo "$name: the realservers could not be set up for LVS-DR over IPv6" >>"$notes"
            return 1
        fi
    elif [[ -n $method ]]; then
        trap 'fwd_down; method_down' EXIT
        CONF=$LAB_DIR/bench-$name.toml
        method_conf "$method" "$CONF"
        WRK_PORT=8080
        if ! method_up "$method"; then
            echo "$name: the realservers could not be set up for $method" >>"$notes"
            return 1
        fi
    fi
    # nft and TUN: the veths keep all their queues (the kernel spreads flows over them);
    # AF_XDP: fwd_up sets them to ringvs's queue count.
    if [[ $LAB_IO == tun ]]; then lab_queues "$LAB_MAXQ"; fi
    if ! fwd_up "$fwd"; then
        echo "$name did not come up (see the error above; log: $LAB_DIR/ringvs.log)" >>"$notes"
        return 1
    fi
    # NAT66 through the TUN device: the IPv6 routes of the routing contract.
    if ((v6)) && [[ $fwd == ringvs && $LAB_IO == tun ]]; then trap 'fwd_down; manual_routes6_del' EXIT; fi
    if ((v6)) && [[ $fwd == ringvs && $LAB_IO == tun ]] && ! manual_routes6_add; then
        echo "$name: the manual IPv6 routes could not be added" >>"$notes"
        return 1
    fi
    local rx0 tx0 rx1 tx1 in0="" out0=""
    read -r rx0 tx0 < <(dev_packets)
    if [[ -n $method ]]; then
        in0=$(metric ringvs_incoming_packets_total) out0=$(metric ringvs_outgoing_packets_total)
    fi

    log "$name: wrk keep-alive, $S s"
    if wrk_run "bench-$name-ka" "$S" -t2 -c64; then
        echo "ka $WRK_RPS" >>"$res"
        echo "$name keep-alive: $WRK_REQUESTS requests, $WRK_SOCK_ERRORS socket errors, $WRK_NON2XX non-2xx" >>"$notes"
        if ((WRK_SOCK_ERRORS + WRK_NON2XX > 0)); then failed=1; fi
    else failed=1; fi

    log "$name: wrk Connection: close, $S s"
    if wrk_run "bench-$name-close" "$S" -t2 -c64 -H 'Connection: close'; then
        echo "close $WRK_RPS" >>"$res"
        echo "$name close: $WRK_REQUESTS requests, $WRK_SOCK_ERRORS socket errors, $WRK_NON2XX non-2xx" >>"$notes"
        if ((WRK_SOCK_ERRORS + WRK_NON2XX > 0)); then failed=1; fi
    else failed=1; fi

    log "$name: iperf3 TCP, $S s"
    if iperf_run "bench-$name-tcp" "$S"; then
        echo "tcp $IPERF_GBPS" >>"$res"
        echo "$name iperf3 TCP: $IPERF_RETRANS retransmits" >>"$notes"
    else failed=1; fi

    log "$name: iperf3 TCP realserver to client (-R), $S s"
    if iperf_run "bench-$name-tcpdown" "$S" -R; then
        echo "tcpdown $IPERF_GBPS" >>"$res"
        echo "$name iperf3 TCP -R: $IPERF_RETRANS retransmits" >>"$notes"
    else failed=1; fi

    if [[ -n $method ]]; then
        local in1 out1
        in1=$(metric ringvs_incoming_packets_total) out1=$(metric ringvs_outgoing_packets_total)
        echo "$name: ringvs forwarded $((${in1:-0} - ${in0:-0})) packets in and $((${out1:-0} - ${out0:-0})) out (the replies bypass it); UDP and CPU rows n/a (iperf3's UDP server answers from the realserver's own address)" >>"$notes"
        if ((${out1:-0} - ${out0:-0} != 0)); then failed=1; fi
        return "$failed"
    fi

    log "$name: iperf3 UDP 64 B, $S s"
    if iperf_run "bench-$name-udp" "$S" -u -l 64 -b 0; then
        echo "udp $IPERF_RX_PPS" >>"$res"
        echo "$name iperf3 UDP 64 B: $IPERF_RX_PPS packets/s received, loss $IPERF_LOSS_PCT %" >>"$notes"
    else failed=1; fi

    log "$name: CPU at $BENCH_CPU_PPS packets/s (iperf3 UDP 64 B), $S s"
    sleep 3 # let what the full-speed run left in queues and rings drain first
    local c0 c1 r0="" r1="" pkts
    c0=$(cpu_ns)
    if [[ $fwd == ringvs ]]; then r0=$(proc_cpu_ns "$RINGVS_PID"); fi
    if iperf_run "bench-$name-cpu" "$S" -u -l 64 -b "$((BENCH_CPU_PPS * 64 * 8))"; then
        c1=$(cpu_ns)
        if [[ $fwd == ringvs ]]; then r1=$(proc_cpu_ns "$RINGVS_PID"); fi
        pkts=$(awk -v p="$IPERF_RX_PPS" -v s="$S" 'BEGIN { printf "%.0f", p * s }')
        # A cost per packet means something only at the offered load: below 90 % of it
        # (the sender starved, or the forwarder dropped) the row says n/a.
        if ((pkts * 10 < BENCH_CPU_PPS * S * 9)); then
            echo "$name CPU run: the offered load was not met (see below): no CPU figure" >>"$notes"
        elif ((pkts > 0)); then
            echo "cpu $(awk -v c=$((c1 - c0)) -v p="$pkts" 'BEGIN { printf "%.2f", c / 1e9 / (p / 1e6) }')" >>"$res"
            if [[ $fwd == ringvs ]]; then
                echo "rcpu $(awk -v c=$((r1 - r0)) -v p="$pkts" 'BEGIN { printf "%.2f", c / 1e9 / (p / 1e6) }')" >>"$res"
            fi
        fi
        echo "$name CPU run: $IPERF_RX_PPS packets/s received (offered $BENCH_CPU_PPS), loss $IPERF_LOSS_PCT %, lab CPU $(((c1 - c0) / 1000000)) ms${r1:+, ringvs $(((r1 - r0) / 1000000)) ms}" >>"$notes"
    else failed=1; fi

    if [[ $fwd == ringvs ]]; then
        read -r rx1 tx1 < <(dev_packets)
        echo "$name: ringvs carried $((tx1 - tx0)) packets in and $((rx1 - rx0)) out; director conntrack entries: $(conntrack_count)" >>"$notes"
    else
        echo "nft: director conntrack entries at the end: $(conntrack_count)" >>"$notes"
    fi
    return "$failed"
}

# base PHASE: the phase its ratios are taken against (nft, or nft6 for an IPv6 phase).
base() {
    case $1 in
        nft6 | *6-q*) echo nft6 ;;
        *) echo nft ;;
    esac
}

# cell PHASE METRIC: the figure, with its ratio to nft's (nft6's) in parentheses.
cell() {
    local b
    b=$(base "$1")
    local v=${R[$1,$2]:-n/a} n=${R[$b,$2]:-}
    if [[ $v == n/a || $1 == "$b" || -z $n || $2 == rcpu ]]; then
        echo "$v"
    else
        awk -v a="$n" -v b="$v" 'BEGIN { if (a > 0) printf "%s (%.2f)", b, b / a; else print b }'
    fi
}

# ratio PHASE METRIC: the figure's ratio to nft's (nft6's), or n/a.
ratio() {
    local b
    b=$(base "$1")
    local v=${R[$1,$2]:-} n=${R[$b,$2]:-}
    if [[ -z $v || -z $n ]]; then
        echo "n/a"
    else
        awk -v a="$n" -v b="$v" 'BEGIN { if (a > 0) printf "%.2f", b / a; else print "n/a" }'
    fi
}

# table: the markdown result table.
table() {
    local p m row
    echo "## ringvs lab benchmark"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); kernel: $(uname -r); CPU: $CPU ($(nproc) CPUs)"
    echo "- $S s per measurement, all in one run on one lab (client, director, 3 realservers share the CPUs); topology: $LAB_TOPO (dcli, drs: $LAB_MAXQ queues)"
    echo "- load average before the run: $LOAD_BEFORE; veth GRO: ${LAB_GRO:-unknown}; CPU accounting: ${CG_KIND:-/proc/stat (whole machine)}"
    echo "- command: \`BENCH_SECONDS=$S BENCH_PHASES=\"$BENCH_PHASES\" bash examples/lab/bench.sh\`; ringvs: $RINGVS -c $CONF"
    echo "- figures with their ratio to nft in parentheses (nft6 for the IPv6 phases; for CPU, cost / nft's cost: lower is better); CPU at a fixed $BENCH_CPU_PPS packets/s"
    echo
    row="| director "
    for m in "${METRICS[@]}"; do row+="| ${LABEL[$m]} "; done
    echo "$row|"
    row="|---"
    for m in "${METRICS[@]}"; do row+="|---:"; done
    echo "$row|"
    for p in $BENCH_PHASES; do
        row="| $p "
        for m in "${METRICS[@]}"; do row+="| $(cell "$p" "$m") "; done
        echo "$row|"
    done
    echo
    local kind a b
    for p in $BENCH_PHASES; do
        case $p in
            dr-q* | ipip-q* | gue-q*)
                echo "- ringvs-${p%-q*} (${p#*-q} queue(s)) / nft DNAT: keep-alive $(ratio "$p" ka), new conn/s $(ratio "$p" close), TCP $(ratio "$p" tcp), TCP down $(ratio "$p" tcpdown)"
                ;;
            tun6-q* | xdp6-q* | dr6-q*)
                echo "- ringvs-${p%-q*} (${p#*-q} queue(s)) / nft NAT66: keep-alive $(ratio "$p" ka), new conn/s $(ratio "$p" close), TCP $(ratio "$p" tcp), TCP down $(ratio "$p" tcpdown)"
                ;;
        esac
    done
    for kind in tun xdp; do
        for m in ka close udp; do
            a=${R[$kind-q1,$m]:-} b=${R[$kind-q4,$m]:-}
            if [[ -n $a && -n $b ]]; then
                echo "- scaling $kind ${LABEL[$m]}, 1 → 4 queues: $(awk -v a="$a" -v b="$b" 'BEGIN { if (a > 0) printf "%.2fx", b / a; else print "n/a" }')"
            fi
        done
    done
    echo
    for p in $BENCH_PHASES; do
        while IFS= read -r line; do echo "- $line"; done <"$LAB_DIR/bench-$p.notes"
    done
}

CPU=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

lab_trap
cg_init
# lab_on_exit, then the cgroup (empty once the lab's processes are gone).
bench_on_exit() {
    local rc=$?
    set +e
    trap - INT TERM
    if [[ -n $LAB_FWD ]]; then fwd_down >/dev/null 2>&1; fi
    lab_down
    cg_done
    exit "$rc"
}
trap bench_on_exit EXIT
lab_up
if [[ ${LAB_IPV6:-0} == 1 ]]; then lab_up_ipv6; fi
start_servers
# After lab_up (which empties $LAB_DIR): the realservers' XDP decapsulator for the tunnels.
if [[ " $BENCH_PHASES " =~ \ (ipip|gue)-q ]]; then
    DECAP_OBJ=$LAB_DIR/tun_decap.o
    clang -O2 -g -target bpf -I"/usr/include/$(uname -m)-linux-gnu" \
        -c "$LAB_SRC/tun_decap.bpf.c" -o "$DECAP_OBJ" ||
        die "cannot build $LAB_SRC/tun_decap.bpf.c (clang and libbpf-dev: bash scripts/deps.sh installs them)"
fi

declare -A R=()
failed_phases=()
for f in $BENCH_PHASES; do
    log "=== phase $f ==="
    # Not `(phase) || rc=$?`: errexit must stay on inside the phase, so that an unexpected
    # failure ends it (its EXIT trap stops the forwarder) instead of being ignored.
    set +e
    (phase "$f")
    rc=$?
    set -e
    conntrack_flush || true
    while read -r k v; do R[$f,$k]=$v; done <"$LAB_DIR/bench-$f.txt"
    if ((rc != 0)); then
        failed_phases+=("$f")
        echo "$f phase FAILED: missing figures are n/a" >>"$LAB_DIR/bench-$f.notes"
    fi
done

mkdir -p "$(dirname "$BENCH_OUT")"
table >"$BENCH_OUT"
echo
cat "$BENCH_OUT"
echo
echo "written to $BENCH_OUT"
if ((${#failed_phases[@]} > 0)); then
    echo "bench.sh: phase(s) failed: ${failed_phases[*]}"
    exit 1
fi
