# shellcheck shell=bash
# ringvs netns lab: functions sourced by run.sh, test-e2e.sh and bench.sh.
#
#   rvs-cli  10.77.0.2 --cli0/dcli-- 10.77.0.1  rvs-dir  10.77.1.254 (br-rs) --vrsN/eth0-- rvs-rsN 10.77.1.N
#   VIP 10.77.100.100 (own prefix: the client reaches it through its default route)
#
# Everything lives in namespaces named "$RVS_LAB-*" and in $LAB_DIR; nothing touches the root
# namespace's networking. See README.md in this directory for the picture and the contracts.
#
# Conventions: functions that a caller may want to survive (fwd_up, wrk_run, iperf_run, …) handle
# their own errors and return non-zero with a message on stderr; `die` is for the scripts' top
# level. Long-running clients run in the background followed by `wait`, so that SIGINT/SIGTERM
# reach the scripts' traps at once instead of after the client finishes.

# Variables set here (HITS_*, WRK_*, IPERF_*, UDP_*, ONE_MIB_SHA, …) are read by the scripts.
# shellcheck disable=SC2034

LAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LAB_SRC=$LAB_ROOT/examples/lab
RVS_LAB=${RVS_LAB:-rvs}
LAB_DIR=${LAB_DIR:-/tmp/$RVS_LAB-lab}
RINGVS=${RINGVS:-${CARGO_TARGET_DIR:-$LAB_ROOT/target}/release/ringvs}
CONF=${CONF:-$LAB_SRC/lab.toml}
ROUTES=${ROUTES:-manual}
PYTHON=${PYTHON:-python3}

VIP=10.77.100.100
CLI_IP=10.77.0.2
DIR_CLI_IP=10.77.0.1
DIR_RS_IP=10.77.1.254
RS_IPS=(10.77.1.1 10.77.1.2 10.77.1.3)
RS_COUNT=${#RS_IPS[@]}
RVS_DEV=ringvs0         # director.device in lab.toml
RVS_TABLE=77            # routing table for realservers' replies (manual recipe)
RVS_RULE_PREF=1000
# Packet I/O of ringvs: tun (routes into ringvs0) or af_xdp (XDP + AF_XDP sockets on the
# director's two interfaces, dcli and drs; needs LAB_TOPO=switch, which it selects).
LAB_IO=${LAB_IO:-tun}
# Topology of the realserver side: "bridge" (br-rs in the director, the default) or "switch"
# (the director's own veth drs to a switch namespace "$RVS_LAB-sw" holding br-rs: one
# interface per side, each with LAB_MAXQ queues, as AF_XDP needs).
LAB_TOPO=${LAB_TOPO:-bridge}
if [[ $LAB_IO == af_xdp ]]; then LAB_TOPO=switch; fi
LAB_MAXQ=${LAB_MAXQ:-4}
RS_IF=br-rs # the director's realserver-facing interface
if [[ $LAB_TOPO == switch ]]; then RS_IF=drs; fi
NFT_TABLE=rvs_lab
TXQLEN=10000

LAB_FWD=""              # forwarder currently up: nft | ringvs | ""
RINGVS_PID=""
LAB_GRO=""

# ---------------------------------------------------------------------------------------------
# small helpers

log() { printf '[lab] %s\n' "$*" >&2; }
warn() { printf '[lab] WARNING: %s\n' "$*" >&2; }
err() { printf '[lab] ERROR: %s\n' "$*" >&2; }
die() {
    err "$*"
    exit 1
}

# log_tail FILE [LINES]: show the end of a log, indented, on stderr.
log_tail() {
    local f=$1 n=${2:-20}
    if [[ -s $f ]]; then
        printf '[lab] --- last %s lines of %s ---\n' "$n" "$f" >&2
        tail -n "$n" "$f" | sed 's/^/    | /' >&2
    else
        printf '[lab] (%s is empty or missing)\n' "$f" >&2
    fi
}

# verdict OK NAME FIGURES: a lab test's check, printed as PASS or FAIL (OK: 0 passes, anything
# else fails) with the name in a column of VERDICT_WIDTH, and counted in PASSES and FAILS.
PASSES=0 FAILS=0
VERDICT_WIDTH=40
verdict() {
    if [[ $1 == 0 ]]; then
        PASSES=$((PASSES + 1))
        printf "PASS  %-${VERDICT_WIDTH}s %s\n" "$2" "$3"
    else
        FAILS=$((FAILS + 1))
        printf "FAIL  %-${VERDICT_WIDTH}s %s\n" "$2" "$3"
    fi
}
# arith EXPR: 0 if the arithmetic EXPR holds, else 1 (the OK of verdict).
arith() { if (($1)); then echo 0; else echo 1; fi; }
# ok_if CMD...: 0 if CMD succeeds, else 1.
ok_if() { if "$@"; then echo 0; else echo 1; fi; }

# ok_when 'CONDITION': like ok_if for a compound condition (`&&`, `||`, `!`), given as one
# string and evaluated here: `"$(ok_if [ A ] && [ B ])"` would test only A and print B's
# output, if any. Variables in CONDITION are read when it runs (the caller's locals too).
ok_when() { if eval "$1"; then echo 0; else echo 1; fi; }

ns_name() { printf '%s-%s' "$RVS_LAB" "$1"; }

# in_ns NAME CMD...: run CMD inside namespace "$RVS_LAB-NAME" (NAME: cli, dir, rs1, rs2, rs3).
in_ns() {
    local ns
    ns=$(ns_name "$1")
    shift
    ip netns exec "$ns" "$@"
}

# wait_until SECONDS CMD...: poll CMD every 0.1 s until it succeeds; non-zero on timeout.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    while ! "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die "the lab needs root (network namespaces); run with sudo"
}

require_cmds() {
    local c missing=()
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    ((${#missing[@]} == 0)) || die "missing commands: ${missing[*]} (run scripts/deps.sh)"
}

# lab_trap: install the teardown that every script wants: on exit, success or failure, stop the
# forwarder and delete the lab. INT/TERM turn into an exit so that the EXIT trap runs.
# A command that fails under `set -e` is named (with its line and function) before the exit.
lab_trap() {
    set -o errtrace
    trap 'lab_on_err "$?" "$BASH_COMMAND" "$LINENO" "${FUNCNAME[*]:-}"' ERR
    trap lab_on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

lab_on_err() {
    err "failed (status $1): $2 [line $3${4:+, in ${4// / < }}]"
}

lab_on_exit() {
    local rc=$?
    set +e
    trap - INT TERM
    capture_stop >/dev/null 2>&1
    if [[ -n $LAB_FWD ]]; then fwd_down >/dev/null 2>&1; fi
    lab_down
    exit "$rc"
}

# ---------------------------------------------------------------------------------------------
# topology

lab_namespaces() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${RVS_LAB}-(cli|dir|sw|rs[0-9]+)\$" || true
}

# veth NS1 IF1 NS2 IF2: a veth pair between two of the lab's namespaces, both ends up.
veth() {
    in_ns "$1" ip link add "$2" type veth peer name "$4" netns "$(ns_name "$3")"
    in_ns "$1" ip link set "$2" up
    in_ns "$3" ip link set "$4" up
}

# kill_ns_procs NS: SIGTERM every process in network namespace NS, SIGKILL what is left after 3 s.
kill_ns_procs() {
    local ns=$1 pids
    pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
    [[ -n ${pids// /} ]] || return 0
    # shellcheck disable=SC2086 # word splitting of the pid list is intended
    kill -TERM $pids 2>/dev/null || true
    if ! wait_until 3 ns_is_empty "$ns"; then
        pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        wait_until 2 ns_is_empty "$ns" || warn "processes still in $ns after SIGKILL: $pids"
    fi
}

# pid_alive PID: the process exists and is not a zombie waiting to be reaped.
pid_alive() {
    kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}
pid_gone() { ! pid_alive "$1"; }

ns_is_empty() { [[ -z $(ip netns pids "$1" 2>/dev/null) ]]; }

# lab_down: kill every process in the lab's namespaces, delete them. Safe to call any time,
# also for the leftovers of an aborted run. Logs in $LAB_DIR are kept for inspection.
lab_down() {
    local ns found=""
    for ns in $(lab_namespaces); do
        found+=" $ns"
        kill_ns_procs "$ns"
        ip netns del "$ns" 2>/dev/null || warn "could not delete namespace $ns"
    done
    if [[ -n $found ]]; then log "removed namespaces:$found"; fi
    LAB_FWD=""
    RINGVS_PID=""
}

# lab_reset_dir: empty $LAB_DIR, refusing to delete a directory the lab did not create.
lab_reset_dir() {
    case $LAB_DIR in
        "" | / | /tmp | /tmp/) die "refusing to use LAB_DIR='$LAB_DIR'" ;;
    esac
    if [[ -e $LAB_DIR ]]; then
        [[ -f $LAB_DIR/.rvs-lab ]] || die "$LAB_DIR exists but was not made by the lab (no .rvs-lab marker); remove it or set LAB_DIR"
        rm -rf "$LAB_DIR"
    fi
    mkdir -p "$LAB_DIR"
    : >"$LAB_DIR/.rvs-lab"
}

ns_sysctl() {
    local ns=$1
    shift
    in_ns "$ns" sysctl -q -w "$@" >/dev/null || die "sysctl $* failed in $(ns_name "$ns")"
}

link_is_up() { in_ns "$1" ip -o link show dev "$2" 2>/dev/null | grep 'LOWER_UP' >/dev/null; }

# tune_veth NS DEV: long transmit queue, GRO on (when ethtool exists); records the result.
tune_veth() {
    local ns=$1 dev=$2
    in_ns "$ns" ip link set dev "$dev" txqueuelen "$TXQLEN"
    if command -v ethtool >/dev/null 2>&1; then
        if in_ns "$ns" ethtool -K "$dev" gro on >/dev/null 2>&1 &&
            in_ns "$ns" ethtool -k "$dev" 2>/dev/null | grep '^generic-receive-offload: on' >/dev/null; then
            LAB_GRO=${LAB_GRO:-on}
        else
            LAB_GRO="partly failed ($ns/$dev)"
        fi
    else
        LAB_GRO="left at default (ethtool not installed)"
    fi
}

# lab_up: clean any stale lab, then build the namespaces, links, addresses, routes, sysctls.
lab_up() {
    require_root
    require_cmds ip ss "$PYTHON" sha256sum timeout
    [[ $RVS_LAB =~ ^[a-z0-9]{1,8}$ ]] || die "RVS_LAB must be 1-8 lowercase letters/digits (got '$RVS_LAB')"
    lab_down
    lab_reset_dir
    log "bringing up lab '$RVS_LAB' (state in $LAB_DIR)"

    local n ns sw=""
    if [[ $LAB_TOPO == switch ]]; then sw=sw; fi
    for n in cli dir $sw $(seq -f 'rs%g' 1 "$RS_COUNT"); do
        ns=$(ns_name "$n")
        ip netns add "$ns" || die "ip netns add $ns failed"
        in_ns "$n" ip link set lo up
        # IPv4 only: no router solicitations / MLD noise on the veths or on ringvs0.
        ns_sysctl "$n" net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    done

    # director: forwarding, no reverse-path filter (replies re-enter through ringvs0)
    ns_sysctl dir net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0

    # client <-> director
    local mq=()
    if [[ $LAB_TOPO == switch ]]; then mq=(numtxqueues "$LAB_MAXQ" numrxqueues "$LAB_MAXQ"); fi
    in_ns cli ip link add cli0 "${mq[@]}" type veth peer name dcli "${mq[@]}" netns "$(ns_name dir)"
    in_ns cli ip addr add "$CLI_IP/24" dev cli0
    in_ns dir ip addr add "$DIR_CLI_IP/24" dev dcli
    tune_veth cli cli0
    tune_veth dir dcli
    in_ns cli ip link set cli0 up
    in_ns dir ip link set dcli up
    in_ns cli ip route add default via "$DIR_CLI_IP"
    ns_sysctl cli net.ipv4.tcp_tw_reuse=1 "net.ipv4.ip_local_port_range=1024 65535"

    if [[ $LAB_TOPO == switch ]]; then
        lab_up_switch
    else
        lab_up_bridge
    fi
    local dev
    local vrs=""
    if [[ $LAB_TOPO == bridge ]]; then vrs=$(seq -f 'vrs%g' 1 "$RS_COUNT"); fi
    for dev in lo dcli "$RS_IF" $vrs; do
        ns_sysctl dir "net.ipv4.conf.$dev.rp_filter=0"
    done

    wait_until 5 link_is_up cli cli0 || die "cli0 did not come up in $(ns_name cli)"
    wait_until 5 link_is_up dir dcli || die "dcli did not come up in $(ns_name dir)"
    wait_until 5 link_is_up dir "$RS_IF" || die "$RS_IF did not come up in $(ns_name dir)"
    for ((i = 1; i <= RS_COUNT; i++)); do
        wait_until 5 link_is_up "rs$i" eth0 || die "eth0 did not come up in $(ns_name "rs$i")"
    done
    log "lab up: client $CLI_IP, director $DIR_CLI_IP/$DIR_RS_IP, realservers ${RS_IPS[*]}, VIP $VIP; veth GRO: $LAB_GRO; topology $LAB_TOPO"
}

# lab_up_bridge: the realserver side as a bridge br-rs in the director, one veth per realserver.
lab_up_bridge() {
    in_ns dir ip link add br-rs type bridge
    in_ns dir ip addr add "$DIR_RS_IP/24" dev br-rs
    in_ns dir ip link set br-rs up
    local i
    for ((i = 1; i <= RS_COUNT; i++)); do
        in_ns dir ip link add "vrs$i" type veth peer name eth0 netns "$(ns_name "rs$i")"
        in_ns dir ip link set "vrs$i" master br-rs
        tune_veth dir "vrs$i"
        tune_veth "rs$i" eth0
        in_ns dir ip link set "vrs$i" up
        in_ns "rs$i" ip addr add "${RS_IPS[i - 1]}/24" dev eth0
        in_ns "rs$i" ip link set eth0 up
        in_ns "rs$i" ip route add default via "$DIR_RS_IP"
        ns_sysctl "rs$i" net.core.somaxconn=4096 net.ipv4.tcp_max_syn_backlog=4096
    done
}

# lab_up_ipv6: IPv6 over either topology (after lab_up, which turns IPv6 off): client
# fd77::2, director fd77::1 (dcli) and fd77:1::fe (br-rs, or drs facing the switch),
# realservers fd77:1::N, VIP6 fd77:100::100 (its own prefix, routed to the director like the
# IPv4 VIP). No DAD (nodad): the addresses are usable at once. The director forwards IPv6;
# ringvs turns IPv6 on on its own device. The switch itself stays without IPv6 (a bridge
# forwards frames of any kind).
VIP6=fd77:100::100
CLI_IP6=fd77::2
RS_IPS6=(fd77:1::1 fd77:1::2 fd77:1::3)
lab_up_ipv6() {
    local n i dev vrs=""
    if [[ $LAB_TOPO == bridge ]]; then vrs=$(seq -f 'vrs%g' 1 "$RS_COUNT"); fi
    for n in cli dir $(seq -f 'rs%g' 1 "$RS_COUNT"); do
        ns_sysctl "$n" net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 \
            net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
            net.ipv6.conf.lo.disable_ipv6=0
    done
    # shellcheck disable=SC2086 # $vrs is a list of interface names
    for dev in dcli "$RS_IF" $vrs; do
        ns_sysctl dir "net.ipv6.conf.$dev.disable_ipv6=0"
    done
    ns_sysctl cli net.ipv6.conf.cli0.disable_ipv6=0
    ns_sysctl dir net.ipv6.conf.all.forwarding=1
    in_ns cli ip -6 addr add "$CLI_IP6/64" dev cli0 nodad
    in_ns dir ip -6 addr add fd77::1/64 dev dcli nodad
    in_ns dir ip -6 addr add fd77:1::fe/64 dev "$RS_IF" nodad
    in_ns cli ip -6 route add default via fd77::1
    for ((i = 1; i <= RS_COUNT; i++)); do
        ns_sysctl "rs$i" net.ipv6.conf.eth0.disable_ipv6=0
        in_ns "rs$i" ip -6 addr add "${RS_IPS6[i - 1]}/64" dev eth0 nodad
        in_ns "rs$i" ip -6 route add default via fd77:1::fe
    done
    log "IPv6 up: client $CLI_IP6, director fd77::1/fd77:1::fe, realservers ${RS_IPS6[*]}, VIP6 $VIP6"
}

# manual_routes6_add / manual_routes6_del: the IPv6 routing contract (ip -6), as for IPv4.
manual_routes6_add() {
    in_ns dir ip -6 route replace "$VIP6/128" dev "$RVS_DEV" || return 1
    while in_ns dir ip -6 rule del iif "$RS_IF" lookup "$RVS_TABLE" pref "$RVS_RULE_PREF" 2>/dev/null; do :; done
    in_ns dir ip -6 rule add iif "$RS_IF" lookup "$RVS_TABLE" pref "$RVS_RULE_PREF" || return 1
    in_ns dir ip -6 route replace default dev "$RVS_DEV" table "$RVS_TABLE" || return 1
}

manual_routes6_del() {
    while in_ns dir ip -6 rule del iif "$RS_IF" lookup "$RVS_TABLE" pref "$RVS_RULE_PREF" 2>/dev/null; do :; done
    in_ns dir ip -6 route flush table "$RVS_TABLE" 2>/dev/null || true
    in_ns dir ip -6 route del "$VIP6/128" 2>/dev/null || true
}

# ringvs_routes6_ok: the kernel sends VIP6 into the device, and realservers' IPv6 replies too.
ringvs_routes6_ok() {
    in_ns dir ip -6 route get "$VIP6" 2>/dev/null | grep "dev $RVS_DEV" >/dev/null &&
        in_ns dir ip -6 route get "$CLI_IP6" from "${RS_IPS6[0]}" iif "$RS_IF" 2>/dev/null | grep "dev $RVS_DEV" >/dev/null
}

# lab_up_switch: the realserver side behind a switch: the director's veth drs (10.77.1.254)
# to sw0 in namespace "$RVS_LAB-sw", bridged there (br-rs) with one veth per realserver. drs
# and dcli have LAB_MAXQ queues (lab_queues changes how many are in use).
lab_up_switch() {
    local mq=(numtxqueues "$LAB_MAXQ" numrxqueues "$LAB_MAXQ") i
    in_ns dir ip link add drs "${mq[@]}" type veth peer name sw0 "${mq[@]}" netns "$(ns_name sw)"
    in_ns dir ip addr add "$DIR_RS_IP/24" dev drs
    tune_veth dir drs
    tune_veth sw sw0
    in_ns sw ip link add br-rs type bridge
    in_ns sw ip link set sw0 master br-rs
    in_ns sw ip link set br-rs up
    in_ns sw ip link set sw0 up
    in_ns dir ip link set drs up
    for ((i = 1; i <= RS_COUNT; i++)); do
        in_ns sw ip link add "vrs$i" type veth peer name eth0 netns "$(ns_name "rs$i")"
        in_ns sw ip link set "vrs$i" master br-rs
        tune_veth sw "vrs$i"
        tune_veth "rs$i" eth0
        in_ns sw ip link set "vrs$i" up
        in_ns "rs$i" ip addr add "${RS_IPS[i - 1]}/24" dev eth0
        in_ns "rs$i" ip link set eth0 up
        in_ns "rs$i" ip route add default via "$DIR_RS_IP"
        ns_sysctl "rs$i" net.core.somaxconn=4096 net.ipv4.tcp_max_syn_backlog=4096
    done
}

# lab_tx_csum on|off: (switch topology) checksum offload of the senders facing the director
# (the client's cli0, each realserver's eth0, the switch's sw0). A packet that never left the machine carries
# only a partial checksum (CHECKSUM_PARTIAL) over veth, and an XDP program cannot see that: a
# forwarder that takes frames with XDP (AF_XDP) would send them on with a wrong checksum. So
# ringvs's AF_XDP mode runs with it off (as on a real wire, every frame then carries its full
# checksum; turning it off also turns off TSO on those veths); nft and TUN keep it on.
lab_tx_csum() {
    local i
    [[ $LAB_TOPO == switch ]] || return 0
    require_cmds ethtool
    in_ns cli ethtool -K cli0 tx "$1" >/dev/null 2>&1 || return 1
    # The switch's port to the director too: it re-segments what GRO merged on the
    # realservers' ports, and with offload on the segments carry partial checksums.
    in_ns sw ethtool -K sw0 tx "$1" >/dev/null 2>&1 || return 1
    for ((i = 1; i <= RS_COUNT; i++)); do
        in_ns "rs$i" ethtool -K eth0 tx "$1" >/dev/null 2>&1 || return 1
    done
}

# lab_queues N: (switch topology) use N receive and transmit queues on both of the director's
# veth pairs (dcli/cli0, drs/sw0): AF_XDP needs one socket per receive queue of an interface.
lab_queues() {
    local n=$1
    [[ $LAB_TOPO == switch ]] || return 0
    require_cmds ethtool
    in_ns cli ethtool -L cli0 rx "$n" tx "$n" &&
        in_ns dir ethtool -L dcli rx "$n" tx "$n" &&
        in_ns dir ethtool -L drs rx "$n" tx "$n" &&
        in_ns sw ethtool -L sw0 rx "$n" tx "$n"
}

# ---------------------------------------------------------------------------------------------
# servers: nginx :8080, udp_echo.py :5353 on every realserver, iperf3 :5201 on rs1

listening() { # listening NS tcp|udp PORT
    local flag=-Htln
    [[ $2 == udp ]] && flag=-Huln
    [[ -n $(in_ns "$1" ss "$flag" "sport = :$3" 2>/dev/null) ]]
}

write_nginx_conf() {
    local i=$1 d=$LAB_DIR/rs$1
    mkdir -p "$d/html" "$d/tmp"
    printf '<html><body><h1>rs%s</h1><p>ringvs lab realserver rs%s (%s)</p></body></html>\n' \
        "$i" "$i" "${RS_IPS[i - 1]}" >"$d/html/index.html"
    cat >"$d/nginx.conf" <<EOF
# generated by examples/lab/lib.sh for realserver rs$i
user root;
worker_processes 1;
daemon on;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    types { text/html html; application/octet-stream bin; }
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    open_file_cache max=64;
    log_format lab '\$remote_addr \$status \$request_method \$uri \$body_bytes_sent \$connection';
    server {
        listen 8080 backlog=4096;
$(if [[ ${LAB_IPV6:-0} == 1 ]]; then echo "        listen [::]:8080 backlog=4096 ipv6only=on;"; fi)
        access_log $d/access.log lab;
        root $d/html;
        location = /1m.bin { root $LAB_DIR/www; }
        location = /big.bin { root $LAB_DIR/www; }
        # test-health.sh removes this page to fail a check: never serve it from the cache.
        location = /health.html { open_file_cache off; }
        # test-tun.sh uploads here: the body is read (and discarded), then 200.
        location = /upload { client_max_body_size 16m; return 200 "uploaded\n"; }
    }
}
EOF
}

# start_servers: generate the content (once per run) and start every server, waiting until each
# one listens.
start_servers() {
    require_cmds nginx iperf3
    mkdir -p "$LAB_DIR/www"
    head -c 1048576 /dev/urandom >"$LAB_DIR/www/1m.bin"
    truncate -s 512M "$LAB_DIR/www/big.bin"
    ONE_MIB_SHA=$(sha256sum "$LAB_DIR/www/1m.bin" | cut -d' ' -f1)

    local i d
    for ((i = 1; i <= RS_COUNT; i++)); do
        d=$LAB_DIR/rs$i
        write_nginx_conf "$i"
        if ! in_ns "rs$i" nginx -p "$d/" -c "$d/nginx.conf" -e "$d/error.log" >"$d/nginx.out" 2>&1; then
            log_tail "$d/nginx.out"
            log_tail "$d/error.log"
            die "nginx failed to start on rs$i"
        fi
        # stdin from /dev/null, own log: the echo server must not hold the caller's pipes open.
        ip netns exec "$(ns_name "rs$i")" "$PYTHON" "$LAB_SRC/udp_echo.py" --name "rs$i" --port 5353 \
            --pidfile "$d/udp_echo.pid" </dev/null >"$d/udp_echo.log" 2>&1 &
        if [[ ${LAB_IPV6:-0} == 1 ]]; then
            ip netns exec "$(ns_name "rs$i")" "$PYTHON" "$LAB_SRC/udp_echo.py" --name "rs$i" --port 5353 \
                --bind :: --pidfile "$d/udp_echo6.pid" </dev/null >"$d/udp_echo6.log" 2>&1 &
        fi
    done
    if ! in_ns rs1 iperf3 -s -p 5201 -D -I "$LAB_DIR/rs1/iperf3.pid" --idle-timeout 60 \
        --logfile "$LAB_DIR/rs1/iperf3.log" </dev/null; then
        log_tail "$LAB_DIR/rs1/iperf3.log"
        die "iperf3 server failed to start on rs1"
    fi

    for ((i = 1; i <= RS_COUNT; i++)); do
        d=$LAB_DIR/rs$i
        if ! wait_until 10 listening "rs$i" tcp 8080; then
            log_tail "$d/error.log"
            die "nginx on rs$i is not listening on :8080 after 10 s"
        fi
        if ! wait_until 10 listening "rs$i" udp 5353; then
            log_tail "$d/udp_echo.log"
            die "udp_echo.py on rs$i is not listening on :5353 after 10 s"
        fi
    done
    if ! wait_until 10 listening rs1 tcp 5201; then
        log_tail "$LAB_DIR/rs1/iperf3.log"
        die "iperf3 on rs1 is not listening on :5201 after 10 s"
    fi
    log "servers up: nginx :8080 and udp_echo :5353 on rs1..rs$RS_COUNT, iperf3 :5201 on rs1"
}

# stop_nginx N: stop one realserver's nginx (used by SELFTEST_BREAK to prove the test can fail).
stop_nginx() {
    local d=$LAB_DIR/rs$1 pid
    pid=$(cat "$d/nginx.pid" 2>/dev/null) || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait_until 5 pid_gone "$pid" || warn "nginx on rs$1 (pid $pid) did not stop"
}

stop_servers() {
    local i
    for ((i = 1; i <= RS_COUNT; i++)); do kill_ns_procs "$(ns_name "rs$i")"; done
}

# ---------------------------------------------------------------------------------------------
# forwarders

nft_ruleset() {
    local tcp_map="" udp_map="" i
    for ((i = 0; i < RS_COUNT; i++)); do
        tcp_map+="${tcp_map:+, }$i : ${RS_IPS[i]} . 8080"
        udp_map+="${udp_map:+, }$i : ${RS_IPS[i]} . 5353"
    done
    cat <<EOF
table ip $NFT_TABLE {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr $VIP tcp dport 80 dnat ip to numgen inc mod $RS_COUNT map { $tcp_map }
        ip daddr $VIP udp dport 53 dnat ip to numgen inc mod $RS_COUNT map { $udp_map }
        ip daddr $VIP tcp dport 5201 dnat ip to ${RS_IPS[0]}:5201
        ip daddr $VIP udp dport 5201 dnat ip to ${RS_IPS[0]}:5201
    }
}
EOF
    # With the IPv6 lab (LAB_IPV6=1): the same DNAT for VIP6, NAT66 in the kernel.
    if [[ ${LAB_IPV6:-0} == 1 ]]; then
        local tcp6_map=""
        for ((i = 0; i < RS_COUNT; i++)); do
            tcp6_map+="${tcp6_map:+, }$i : ${RS_IPS6[i]} . 8080"
        done
        cat <<EOF
table ip6 $NFT_TABLE {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        ip6 daddr $VIP6 tcp dport 80 dnat ip6 to numgen inc mod $RS_COUNT map { $tcp6_map }
        ip6 daddr $VIP6 tcp dport 5201 dnat ip6 to [${RS_IPS6[0]}]:5201
        ip6 daddr $VIP6 udp dport 5201 dnat ip6 to [${RS_IPS6[0]}]:5201
    }
}
EOF
    fi
}

# dir_ruleset_empty: true when the director's namespace has no nftables rules at all (so no
# NAT and no ct expression makes the kernel track connections there).
dir_ruleset_empty() { [[ -z $(in_ns dir nft list ruleset 2>/dev/null) ]]; }

# conntrack_count: connections the kernel tracks in the director's namespace.
conntrack_count() {
    in_ns dir cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo 0
}

# conntrack_flush: forget every tracked connection in the director; returns non-zero (with a
# warning) when conntrack(8) is missing.
conntrack_flush() {
    if command -v conntrack >/dev/null 2>&1; then
        in_ns dir conntrack -F >/dev/null 2>&1 || true
        in_ns dir conntrack -F -f ipv6 >/dev/null 2>&1 || true
    else
        warn "conntrack(8) not installed (scripts/deps.sh installs it): cannot flush the director's conntrack table"
        return 1
    fi
}

# fwd_up nft|ringvs: start a forwarder for VIP 10.77.100.100 in the director.
fwd_up() {
    case $1 in
        nft) fwd_up_nft ;;
        ringvs) fwd_up_ringvs ;;
        *)
            err "fwd_up: unknown forwarder '$1' (want nft or ringvs)"
            return 1
            ;;
    esac
}

fwd_up_nft() {
    require_cmds nft
    lab_tx_csum on || warn "could not turn checksum offload back on"
    if ! nft_ruleset | in_ns dir nft -f - 2>"$LAB_DIR/nft.err"; then
        log_tail "$LAB_DIR/nft.err"
        err "loading the nftables DNAT table into $(ns_name dir) failed"
        return 1
    fi
    LAB_FWD=nft
    log "forwarder nft: table ip $NFT_TABLE (DNAT, numgen round robin) loaded in $(ns_name dir)"
    if [[ ${NFT_SYNPROXY:-0} == 1 ]]; then
        # The kernel's SYN proxy in front of the DNAT: the VIP's SYNs are left untracked and
        # answered with cookies by the synproxy statement (VIP local, input hook); a valid ACK
        # makes the kernel send its own SYN, which the output chain DNATs to a realserver.
        in_ns dir ip addr add "$VIP/32" dev lo 2>/dev/null || true
        in_ns dir sysctl -q -w net.netfilter.nf_conntrack_tcp_loose=0 >/dev/null
        if ! nft_synproxy_ruleset | in_ns dir nft -f - 2>"$LAB_DIR/nft.err"; then
            log_tail "$LAB_DIR/nft.err"
            err "loading the nftables synproxy table into $(ns_name dir) failed"
            return 1
        fi
        log "forwarder nft: with synproxy (table ip ${NFT_TABLE}_sp)"
    fi
}

# nft_synproxy_ruleset: nftables' SYN proxy for the web service (see fwd_up_nft).
nft_synproxy_ruleset() {
    local tcp_map="" i
    for ((i = 0; i < RS_COUNT; i++)); do
        tcp_map+="${tcp_map:+, }$i : ${RS_IPS[i]} . 8080"
    done
    cat <<EOF
table ip ${NFT_TABLE}_sp {
    chain raw {
        type filter hook prerouting priority raw; policy accept;
        ip daddr $VIP tcp dport 80 tcp flags syn notrack
    }
    chain input {
        type filter hook input priority filter; policy accept;
        ip daddr $VIP tcp dport 80 ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
        ip daddr $VIP tcp dport 80 ct state invalid drop
    }
    chain output {
        type nat hook output priority -100; policy accept;
        ip daddr $VIP tcp dport 80 dnat ip to numgen inc mod $RS_COUNT map { $tcp_map }
    }
}
EOF
}

# ringvs_ready: the device exists, is administratively up and has carrier (a queue is attached).
ringvs_ready() {
    local flags up_re='[<,]UP[,>]'
    flags=$(in_ns dir ip -o link show dev "$RVS_DEV" 2>/dev/null) || return 1
    [[ $flags =~ $up_re && $flags == *LOWER_UP* ]]
}

# ringvs_routes_ok: the kernel sends the VIP into the device, and realservers' replies too.
ringvs_routes_ok() {
    in_ns dir ip route get "$VIP" 2>/dev/null | grep "dev $RVS_DEV" >/dev/null &&
        in_ns dir ip route get "$CLI_IP" from "${RS_IPS[0]}" iif "$RS_IF" 2>/dev/null | grep "dev $RVS_DEV" >/dev/null
}

# ringvs_env: the environment overrides ringvs runs with (the config file itself is used as
# it is, so its relative plugin paths keep working): the admin socket inside $LAB_DIR, and
# `director.routes` from $ROUTES. This also exercises the RINGVS_SECTION__KEY contract.
ringvs_env() {
    printf 'RINGVS_DIRECTOR__ADMIN_SOCKET=%s RINGVS_DIRECTOR__ROUTES=%s' "$LAB_DIR/admin.sock" "$ROUTES"
    if [[ -n ${RINGVS_QUEUES:-} ]]; then printf ' RINGVS_DIRECTOR__QUEUES=%s' "$RINGVS_QUEUES"; fi
    if [[ $LAB_IO == af_xdp ]]; then
        printf ' RINGVS_DIRECTOR__IO=af_xdp RINGVS_DIRECTOR__INTERFACES=[dcli,%s]' "$RS_IF"
    fi
    # More overrides for one run, e.g. RINGVS_EXTRA_ENV="RINGVS_DIRECTOR__QUEUES=1".
    if [[ -n ${RINGVS_EXTRA_ENV:-} ]]; then printf ' %s' "$RINGVS_EXTRA_ENV"; fi
}

# ringvs_queues: the queues ringvs will run with ($RINGVS_QUEUES, else the config's).
ringvs_queues() {
    if [[ -n ${RINGVS_QUEUES:-} ]]; then
        echo "$RINGVS_QUEUES"
    else
        sed -nE 's/^queues *= *([0-9]+).*/\1/p' "$CONF" | head -n 1 | grep . || echo 1
    fi
}

# xdp_attached DEV: an XDP program is attached to DEV in the director.
xdp_attached() { in_ns dir ip -o link show dev "$1" 2>/dev/null | grep -E ' xdp(generic|drv|offload)? ' >/dev/null; }

# ringvs_xdp_ready: (af_xdp) the program is on both interfaces and the daemon answers.
ringvs_xdp_ready() {
    xdp_attached dcli && xdp_attached "$RS_IF" && ringvs_cli status >/dev/null 2>&1
}

# xdp_detached: (af_xdp) no XDP program is left on the director's interfaces.
xdp_detached() { ! xdp_attached dcli && ! xdp_attached "$RS_IF"; }

# ringvs_cli ARGS…: the ringvs command-line client against the lab's daemon.
# http_close_check NAME LABEL PORT: wrk (Connection: close, 5 s, -t2 -c16) to VIP:PORT, then a
# verdict LABEL: over 100 requests, no errors, every realserver served, each saw only the
# client's own address. Sets WRK_* and HITS_* (test-tun.sh, test-dr.sh).
http_close_check() {
    local name=$1 label=$2 port=$3 ok=0 i
    hits_baseline
    wrk_start "$name" 5 ":$port/" -t2 -c16 --timeout 2s -H "Connection: close"
    wrk_wait "$name" "$WRK_PID" || true
    count_hits 'GET /index.html '
    ((${WRK_REQUESTS:-0} > 100 && ${WRK_SOCK_ERRORS:-1} == 0 && ${WRK_NON2XX:-1} == 0)) || ok=1
    for ((i = 1; i <= RS_COUNT; i++)); do ((HITS[i] > 0)) || ok=1; done
    [[ ${HITS_CLIENTS% } == "$CLI_IP" ]] || ok=1
    verdict "$ok" "$label" \
        "${WRK_REQUESTS:-0} requests, socket errors ${WRK_SOCK_ERRORS:-?}, non-2xx ${WRK_NON2XX:-?}; served $HITS_SPREAD; realservers saw ${HITS_CLIENTS:-nothing}"
}

# download_check LABEL PORT: a verdict LABEL on the 1 MiB file fetched from VIP:PORT (its
# sha256 against the one served).
download_check() {
    local out=$LAB_DIR/dl-check.bin got
    rm -f "$out"
    ip netns exec "$(ns_name cli)" curl -sS --connect-timeout 3 --max-time 30 \
        -o "$out" "http://$VIP:$2/1m.bin" 2>>"$LAB_DIR/curl.err" || true
    got=$(sha256sum "$out" 2>/dev/null | cut -d' ' -f1 || true)
    verdict "$([[ $got == "$ONE_MIB_SHA" ]] && echo 0 || echo 1)" "$1" \
        "sha256 ${got:0:12}… (want ${ONE_MIB_SHA:0:12}…)"
}

# web_json EXPR: evaluates a Python expression over `ringvs list --json` (s: the web service).
web_json() {
    ringvs_cli list --json | "$PYTHON" -c "
import json, sys
s = [x for x in json.load(sys.stdin)['services'] if x['name'] == 'web'][0]
print($1)"
}

ringvs_cli() {
    in_ns dir "$RINGVS" "$@" --socket "$LAB_DIR/admin.sock"
}

ringvs_check_binary() {
    if [[ ! -x $RINGVS ]]; then
        err "ringvs binary not found or not executable: $RINGVS"
        err "build it with 'cargo build --release -p ringvs' (run.sh does) or point RINGVS= at it"
        return 1
    fi
    [[ -r $CONF ]] || {
        err "ringvs config not readable: $CONF"
        return 1
    }
}

# manual_routes_add: the operator's recipe from DESIGN.md "Routing contract (NAT)".
manual_routes_add() {
    in_ns dir ip route replace "$VIP/32" dev "$RVS_DEV" || return 1
    # idempotent: drop an old copy of the rule before adding it
    while in_ns dir ip rule del iif "$RS_IF" lookup "$RVS_TABLE" pref "$RVS_RULE_PREF" 2>/dev/null; do :; done
    in_ns dir ip rule add iif "$RS_IF" lookup "$RVS_TABLE" pref "$RVS_RULE_PREF" || return 1
    in_ns dir ip route replace default dev "$RVS_DEV" table "$RVS_TABLE" || return 1
    in_ns dir sysctl -q -w "net.ipv4.conf.$RVS_DEV.rp_filter=0" >/dev/null
}

manual_routes_del() {
    while in_ns dir ip rule del iif "$RS_IF" lookup "$RVS_TABLE" pref "$RVS_RULE_PREF" 2>/dev/null; do :; done
    in_ns dir ip route flush table "$RVS_TABLE" 2>/dev/null || true
    in_ns dir ip route del "$VIP/32" 2>/dev/null || true
}

fwd_up_ringvs() {
    ringvs_check_binary || return 1
    if ! dir_ruleset_empty; then
        in_ns dir nft list ruleset >&2
        err "the director's namespace has nftables rules; ringvs mode needs none (NAT/ct rules make conntrack track every flow)"
        return 1
    fi
    conntrack_flush || true
    local conf
    if [[ $ROUTES != manual && $ROUTES != auto ]]; then
        err "ROUTES must be manual or auto (got '$ROUTES')"
        return 1
    fi
    conf=$CONF
    if [[ $LAB_IO == af_xdp ]]; then
        if ! lab_queues "$(ringvs_queues)"; then
            err "cannot set $(ringvs_queues) queues on the director's veths (ethtool -L)"
            return 1
        fi
        lab_tx_csum off || {
            err "cannot turn off checksum offload on cli0 and the realservers' eth0 (ethtool -K tx off)"
            return 1
        }
    else
        lab_tx_csum on || warn "could not turn checksum offload back on"
    fi
    local rlog=$LAB_DIR/ringvs.log envs
    envs=$(ringvs_env)
    log "forwarder ringvs: $envs $RINGVS run -c $conf (log: $rlog)"
    printf '=== %s: %s %s run -c %s\n' "$(date '+%F %T')" "$envs" "$RINGVS" "$conf" >>"$rlog"
    # `ip netns exec` and `env` exec the program, so $! is ringvs's own pid.
    # shellcheck disable=SC2086 # $envs is a list of NAME=value words
    ip netns exec "$(ns_name dir)" env $envs "$RINGVS" run -c "$conf" </dev/null >>"$rlog" 2>&1 &
    RINGVS_PID=$!
    echo "$RINGVS_PID" >"$LAB_DIR/ringvs.pid"
    LAB_FWD=ringvs

    local deadline=$((SECONDS + 15)) rc ready=ringvs_ready
    if [[ $LAB_IO == af_xdp ]]; then ready=ringvs_xdp_ready; fi
    until $ready; do
        if ! pid_alive "$RINGVS_PID"; then
            rc=0
            wait "$RINGVS_PID" 2>/dev/null || rc=$?
            RINGVS_PID=""
            log_tail "$rlog"
            err "ringvs exited (status $rc) before $RVS_DEV came up"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            log_tail "$rlog"
            err "ringvs (pid $RINGVS_PID) did not come up within 15 s (tun: $RVS_DEV UP and LOWER_UP; af_xdp: XDP on dcli and $RS_IF, admin socket answering; in $(ns_name dir))"
            return 1
        fi
        sleep 0.1
    done
    if [[ $LAB_IO == af_xdp ]]; then
        log "forwarder ringvs: pid $RINGVS_PID, AF_XDP on dcli and $RS_IF ($(ringvs_queues) queue(s)); no routes needed"
        return 0
    fi

    if [[ $ROUTES == manual ]]; then
        if ! manual_routes_add; then
            err "applying the manual routing recipe in $(ns_name dir) failed"
            return 1
        fi
    else
        # ringvs installs them itself; give it a moment after the device is up.
        if ! wait_until 5 ringvs_routes_ok; then
            in_ns dir ip route show >&2
            in_ns dir ip rule show >&2
            log_tail "$rlog"
            err "routes=auto: after 5 s the director does not route $VIP and realservers' replies (iif $RS_IF) into $RVS_DEV"
            return 1
        fi
    fi
    if ! ringvs_routes_ok; then
        err "routing check failed: 'ip route get $VIP' or 'ip route get $CLI_IP from ${RS_IPS[0]} iif $RS_IF' does not say dev $RVS_DEV"
        return 1
    fi
    log "forwarder ringvs: pid $RINGVS_PID, $RVS_DEV up, VIP and replies routed into it"
}

# fwd_down: stop the current forwarder. For ringvs: SIGTERM, up to 5 s, then SIGKILL; sets
# RINGVS_EXIT to "exit N", "signal N", "killed after 5 s" or "had already exited …". Manual
# routes are removed.
fwd_down() {
    case $LAB_FWD in
        nft)
            in_ns dir nft delete table ip "$NFT_TABLE" 2>/dev/null || true
            in_ns dir nft delete table ip "${NFT_TABLE}_sp" 2>/dev/null || true
            in_ns dir nft delete table ip6 "$NFT_TABLE" 2>/dev/null || true
            in_ns dir ip addr del "$VIP/32" dev lo 2>/dev/null || true
            in_ns dir sysctl -q -w net.netfilter.nf_conntrack_tcp_loose=1 >/dev/null 2>&1 || true
            dir_ruleset_empty || warn "the director's nftables ruleset is not empty after removing $NFT_TABLE"
            if conntrack_flush; then
                log "forwarder nft: table removed, conntrack flushed"
            else
                log "forwarder nft: table removed"
            fi
            ;;
        ringvs)
            RINGVS_EXIT=""
            if [[ -n $RINGVS_PID ]] && pid_alive "$RINGVS_PID"; then
                kill -TERM "$RINGVS_PID" 2>/dev/null || true
                if ! wait_until 5 pid_gone "$RINGVS_PID"; then
                    kill -KILL "$RINGVS_PID" 2>/dev/null || true
                    RINGVS_EXIT="killed after 5 s"
                fi
                local rc=0
                wait "$RINGVS_PID" 2>/dev/null || rc=$?
                if [[ -z $RINGVS_EXIT ]]; then
                    if ((rc > 128)); then RINGVS_EXIT="signal $((rc - 128))"; else RINGVS_EXIT="exit $rc"; fi
                fi
                log "forwarder ringvs: stopped (${RINGVS_EXIT})"
            elif [[ -n $RINGVS_PID ]]; then
                local rc=0
                wait "$RINGVS_PID" 2>/dev/null || rc=$?
                RINGVS_EXIT="had already exited (status $rc) before SIGTERM"
                warn "ringvs $RINGVS_EXIT; log: $LAB_DIR/ringvs.log"
            fi
            RINGVS_PID=""
            if [[ $ROUTES == manual && $LAB_IO != af_xdp ]]; then manual_routes_del; fi
            ;;
    esac
    LAB_FWD=""
}

# auto_routes_gone: after ringvs stopped, no policy rule for br-rs and no VIP route remain.
auto_routes_gone() {
    ! in_ns dir ip rule show | grep "iif $RS_IF" >/dev/null &&
        ! in_ns dir ip route show "$VIP/32" | grep . >/dev/null
}

# dev_packets: "RX TX" packet counters of ringvs0 (or "0 0" when it does not exist); with
# LAB_IO=af_xdp, ringvs's own counters: packets out to clients ("RX" of the device) and in
# from them ("TX").
dev_packets() {
    local rx tx
    if [[ $LAB_IO == af_xdp ]]; then
        rx=$(metric ringvs_outgoing_packets_total)
        tx=$(metric ringvs_incoming_packets_total)
        echo "${rx:-0} ${tx:-0}"
        return
    fi
    rx=$(in_ns dir cat "/sys/class/net/$RVS_DEV/statistics/rx_packets" 2>/dev/null) || rx=0
    tx=$(in_ns dir cat "/sys/class/net/$RVS_DEV/statistics/tx_packets" 2>/dev/null) || tx=0
    echo "$rx $tx"
}

# ---------------------------------------------------------------------------------------------
# measurements

# hits_baseline: remember how long each realserver's access log is.
hits_baseline() {
    local i
    HITS_BASE=()
    for ((i = 1; i <= RS_COUNT; i++)); do
        HITS_BASE[i]=$(wc -l <"$LAB_DIR/rs$i/access.log" 2>/dev/null || echo 0)
    done
}

access_lines() { # access_lines N: lines rsN logged since the baseline
    tail -n +"$((HITS_BASE[$1] + 1))" "$LAB_DIR/rs$1/access.log" 2>/dev/null
}

# shares ARRAY TOTAL: each server's share of TOTAL, as SHARES_PCT ("rs1 33.1% …") and
# SHARES_MIN (the smallest, integer percent).
shares() {
    local -n counts=$1
    local total=${!2} i pct
    SHARES_PCT="" SHARES_MIN=100
    for ((i = 1; i <= RS_COUNT; i++)); do
        if ((total > 0)); then pct=$((counts[i] * 1000 / total)); else pct=0; fi
        SHARES_PCT+="${SHARES_PCT:+ }rs$i $((pct / 10)).$((pct % 10))%"
        if ((pct / 10 < SHARES_MIN)); then SHARES_MIN=$((pct / 10)); fi
    done
}

# count_hits [REGEX]: per-server requests logged since hits_baseline (optionally only lines
# matching REGEX, e.g. 'GET /1m.bin'). Sets HITS[1..n], HITS_TOTAL, HITS_SPREAD ("rs1=… rs2=…"),
# HITS_PCT ("rs1 33.1% …"), HITS_MIN_PCT (smallest share, integer percent) and HITS_CLIENTS
# (distinct client addresses the realservers saw); the same for the connections those requests
# came on (nginx's $connection serial, the log's last field): HITS_CONNS[1..n], HITS_CONNS_TOTAL,
# HITS_CONNS_SPREAD, HITS_CONNS_PCT, HITS_CONNS_MIN_PCT. Waits (≤ 3 s) until the logs stop growing.
count_hits() {
    local re=${1:-.} i prev=-1 now
    for _ in $(seq 30); do
        now=0
        for ((i = 1; i <= RS_COUNT; i++)); do
            now=$((now + $(wc -l <"$LAB_DIR/rs$i/access.log" 2>/dev/null || echo 0)))
        done
        ((now == prev)) && break
        prev=$now
        sleep 0.1
    done
    HITS=() HITS_TOTAL=0 HITS_SPREAD="" HITS_CONNS=() HITS_CONNS_TOTAL=0 HITS_CONNS_SPREAD=""
    for ((i = 1; i <= RS_COUNT; i++)); do
        # One pass: matching requests, and the distinct connections they came on.
        read -r "HITS[i]" "HITS_CONNS[i]" < <(access_lines "$i" |
            awk -v re="$re" '$0 ~ re { n++; if (!seen[$NF]++) c++ } END { print n + 0, c + 0 }')
        HITS_TOTAL=$((HITS_TOTAL + HITS[i]))
        HITS_SPREAD+="${HITS_SPREAD:+ }rs$i=${HITS[i]}"
        HITS_CONNS_TOTAL=$((HITS_CONNS_TOTAL + HITS_CONNS[i]))
        HITS_CONNS_SPREAD+="${HITS_CONNS_SPREAD:+ }rs$i=${HITS_CONNS[i]}"
    done
    shares HITS HITS_TOTAL
    HITS_PCT=$SHARES_PCT HITS_MIN_PCT=$SHARES_MIN
    shares HITS_CONNS HITS_CONNS_TOTAL
    HITS_CONNS_PCT=$SHARES_PCT HITS_CONNS_MIN_PCT=$SHARES_MIN
    HITS_CLIENTS=$(for ((i = 1; i <= RS_COUNT; i++)); do access_lines "$i" | { grep -E -- "$re" || true; }; done |
        cut -d' ' -f1 | sort -u | tr '\n' ' ')
    HITS_CLIENTS=${HITS_CLIENTS% }
}

# wrk_run NAME SECONDS [WRK ARGS...]: wrk against http://VIP/ (http://VIP:$WRK_PORT/ when
# WRK_PORT is set; $WRK_HOST instead of VIP when set, an IPv6 address in brackets) from the
# client. Output kept in
# $LAB_DIR/wrk-NAME.txt. Sets WRK_REQUESTS, WRK_RPS, WRK_SOCK_ERRORS (sum), WRK_ERRORS_DETAIL,
# WRK_NON2XX. Returns non-zero (with the output tail) when wrk fails or prints no summary.
wrk_run() {
    local name=$1 secs=$2 out=$LAB_DIR/wrk-${1//\//-}.txt rc=0
    shift 2
    ip netns exec "$(ns_name cli)" timeout $((secs + 20)) \
        wrk --timeout 2s -d "${secs}s" "$@" "http://${WRK_HOST:-$VIP}${WRK_PORT:+:$WRK_PORT}/" </dev/null >"$out" 2>&1 &
    wait $! || rc=$?
    wrk_parse "$name" "$out" "$rc"
}

# wrk_start NAME SECONDS PATH ARGS…: wrk against http://$VIP$PATH in the background (its pid in
# WRK_PID, its output in $LAB_DIR/wrk-NAME.txt); finish with `wrk_wait NAME`.
wrk_start() {
    local name=$1 secs=$2 path=$3 out=$LAB_DIR/wrk-${1//\//-}.txt
    shift 3
    ip netns exec "$(ns_name cli)" timeout $((secs + 40)) \
        wrk -d "${secs}s" "$@" "http://$VIP$path" </dev/null >"$out" 2>&1 &
    WRK_PID=$!
}

# wrk_wait NAME PID: waits for a wrk_start run and parses it (see wrk_parse).
wrk_wait() {
    local rc=0
    wait "$2" || rc=$?
    wrk_parse "$1" "$LAB_DIR/wrk-${1//\//-}.txt" "$rc"
}

# wrk_parse NAME FILE STATUS: sets WRK_REQUESTS, WRK_RPS, WRK_SOCK_ERRORS (the sum of connect,
# read, write and timeout errors), WRK_ERRORS_DETAIL and WRK_NON2XX from wrk's summary.
wrk_parse() {
    local name=$1 out=$2 rc=$3
    WRK_REQUESTS="" WRK_RPS="" WRK_SOCK_ERRORS="" WRK_ERRORS_DETAIL="" WRK_NON2XX=""
    WRK_REQUESTS=$(sed -nE 's/^ *([0-9]+) requests in .*/\1/p' "$out")
    WRK_RPS=$(sed -nE 's/^Requests\/sec: *([0-9.]+).*/\1/p' "$out")
    WRK_RPS=${WRK_RPS%.*}
    WRK_ERRORS_DETAIL=$(sed -nE 's/^ *Socket errors: *(.*)/\1/p' "$out")
    WRK_SOCK_ERRORS=0
    if [[ -n $WRK_ERRORS_DETAIL ]]; then # "connect 0, read 0, write 0, timeout 0" -> sum
        WRK_SOCK_ERRORS=$(awk -F'[^0-9]+' '{ s = 0; for (i = 1; i <= NF; i++) s += $i; print s }' <<<"$WRK_ERRORS_DETAIL")
    fi
    WRK_NON2XX=$(sed -nE 's/^ *Non-2xx or 3xx responses: *([0-9]+).*/\1/p' "$out")
    WRK_NON2XX=${WRK_NON2XX:-0}
    if ((rc != 0)) || [[ -z $WRK_REQUESTS || -z $WRK_RPS ]]; then
        log_tail "$out"
        err "wrk ($name) failed (status $rc) or printed no summary"
        return 1
    fi
}

# metric NAME_WITH_LABELS: the value of one series from ringvs's Prometheus endpoint (empty if
# absent). Example: metric 'ringvs_plugin_swaps_total{service="web"}'.
metric() {
    in_ns dir curl -s --max-time 5 "http://127.0.0.1:9406/metrics" | awk -v k="$1" '$1 == k { print $2 }'
}

# iperf_run NAME SECONDS [IPERF3 ARGS...]: iperf3 client against VIP:5201 ($IPERF_HOST instead
# of VIP when set), JSON kept in
# $LAB_DIR/iperf-NAME.json. Sets IPERF_GBPS (receiver), IPERF_RX_PPS, IPERF_LOSS_PCT (UDP) and
# IPERF_RETRANS (TCP). Returns non-zero with the output tail on failure.
iperf_run() {
    local name=$1 secs=$2 out=$LAB_DIR/iperf-${1//\//-}.json rc=0 parsed
    shift 2
    IPERF_GBPS="" IPERF_RX_PPS="" IPERF_LOSS_PCT="" IPERF_RETRANS=""
    ip netns exec "$(ns_name cli)" timeout $((secs + 20)) \
        iperf3 -c "${IPERF_HOST:-$VIP}" -p 5201 -t "$secs" -J --connect-timeout 3000 "$@" </dev/null >"$out" 2>&1 &
    wait $! || rc=$?
    parsed=$("$PYTHON" - "$out" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:  # not JSON: iperf3 died early
    sys.exit(f"unreadable iperf3 output: {e}")
if "error" in d:
    sys.exit(f"iperf3: {d['error']}")
end = d.get("end", {})
if d["start"]["test_start"]["protocol"] == "UDP":
    # What the receiver (server) counted: sum_received exists since iperf3 3.11; older ones
    # report the server's view in "sum" (packets sent, lost_packets counted by the receiver).
    s = end.get("sum_received") or end["sum"]
    sent = end.get("sum_sent", end["sum"])
    packets = sent["packets"]
    lost = s["lost_packets"]
    secs = s["seconds"] or sent["seconds"]
    rx = max(packets - lost, 0)
    print(f'{s["bits_per_second"] / 1e9:.3f} {rx / secs:.0f} {100.0 * lost / max(packets, 1):.2f} -')
else:
    s = end["sum_received"]
    print(f'{s["bits_per_second"] / 1e9:.2f} - - {end["sum_sent"].get("retransmits", "-")}')
EOF
    ) || {
        log_tail "$out"
        err "iperf3 ($name) failed (status $rc): ${parsed:-see output above}"
        return 1
    }
    read -r IPERF_GBPS IPERF_RX_PPS IPERF_LOSS_PCT IPERF_RETRANS <<<"$parsed"
    if ((rc != 0)); then
        log_tail "$out"
        err "iperf3 ($name) exited with status $rc"
        return 1
    fi
}

# udp_probe COUNT [PORT [SIZE]]: COUNT datagrams to VIP:PORT (default 53; $UDP_HOST instead of
# VIP when set, an IPv6 address in brackets), each from a new socket, padded to SIZE bytes
# (default: a few dozen). Sets UDP_SENT, UDP_ANSWERED, UDP_BAD, UDP_SERVERS
# ("rs1=67,rs2=67,rs3=66"), UDP_NSERVERS.
udp_probe() {
    local out=$LAB_DIR/udp-probe.txt rc=0
    UDP_SENT=0 UDP_ANSWERED=0 UDP_BAD=0 UDP_SERVERS="-" UDP_NSERVERS=0
    ip netns exec "$(ns_name cli)" timeout 60 "$PYTHON" "$LAB_SRC/udp_probe.py" "${UDP_HOST:-$VIP}:${2:-53}" \
        --count "$1" --size "${3:-0}" </dev/null >"$out" 2>&1 &
    wait $! || rc=$?
    if ((rc != 0)); then
        log_tail "$out"
        err "udp_probe.py failed (status $rc)"
        return 1
    fi
    read -r UDP_SENT UDP_ANSWERED UDP_BAD UDP_SERVERS <"$out"
    if [[ $UDP_SERVERS != - ]]; then UDP_NSERVERS=$(tr ',' '\n' <<<"$UDP_SERVERS" | grep -c .); fi
}

# ---------------------------------------------------------------------------------------------
# HTTP through a virtual service from the client, by family (test-tun6.sh, test-dr6.sh):
# URL_HOST (default the IPv6 VIP in brackets), PORT (default 8080), CLIENT (the client's
# address the realservers must log; default its IPv6 one).

curl6() { # curl6 PATH ARGS...: curl from the client to http://URL_HOST:PORT/PATH
    local path=$1
    shift
    ip netns exec "$(ns_name cli)" curl -sS -g --connect-timeout 3 --max-time 20 "$@" \
        "http://${URL_HOST:-[$VIP6]}:${PORT:-8080}$path"
}

# http_spread LABEL: 30 requests (Connection: close), each answered, by every realserver,
# each of which saw only the client's own address.
http_spread() {
    local label=$1 answered=0 i body lines others client=${CLIENT:-$CLI_IP6}
    hits_baseline
    for ((i = 0; i < 30; i++)); do
        # Five failures in a row from the start: nothing answers (bounds the self-tests).
        ((i == 5 && answered == 0)) && break
        body=$(curl6 / -H 'Connection: close' 2>>"$LAB_DIR/curl.err") || continue
        [[ $body == *"<h1>rs"* ]] && answered=$((answered + 1))
    done
    count_hits 'GET /index.html '
    lines=0 others=0
    for ((i = 1; i <= RS_COUNT; i++)); do
        lines=$((lines + $(access_lines "$i" | grep -c "^$client " || true)))
        others=$((others + $(access_lines "$i" | grep -vc "^$client " || true)))
    done
    local ok=0
    ((answered == 30 && lines >= 30 && others == 0)) || ok=1
    for ((i = 1; i <= RS_COUNT; i++)); do ((HITS[i] > 0)) || ok=1; done
    verdict "$ok" "$label" "$answered/30 answered; served $HITS_SPREAD; $lines lines from $client, $others from elsewhere"
}

download6() { # download6 LABEL: a 1 MiB download through curl6, intact (sha256)
    local out=$LAB_DIR/dl6.bin got
    rm -f "$out"
    curl6 /1m.bin -o "$out" 2>>"$LAB_DIR/curl.err" || true
    got=$(sha256sum "$out" 2>/dev/null | cut -d' ' -f1 || true)
    verdict "$(ok_when '[[ $got == "$ONE_MIB_SHA" ]]')" "$1" "sha256 ${got:0:12}… (want ${ONE_MIB_SHA:0:12}…)"
}

# vip_echo_up N ADDR PORT: a UDP echo on realserver N bound to its virtual address ADDR, so
# that it answers from it (LVS-TUN and LVS-DR realservers answer the client directly).
# Returns non-zero if it does not listen within 5 s (ADDR not on the realserver). Stopped by
# vip_echo_down, or with the lab.
vip_echo_up() {
    local d=$LAB_DIR/rs$1
    ip netns exec "$(ns_name "rs$1")" "$PYTHON" "$LAB_SRC/udp_echo.py" --name "rs$1" --bind "$2" \
        --port "$3" --pidfile "$d/udp_echo_vip.pid" </dev/null >"$d/udp_echo_vip.log" 2>&1 &
    wait_until 5 listening "rs$1" udp "$3"
}

vip_echo_down() {
    local i pid
    for ((i = 1; i <= RS_COUNT; i++)); do
        pid=$(cat "$LAB_DIR/rs$i/udp_echo_vip.pid" 2>/dev/null || true)
        if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi
    done
}

# udp_roundtrip_check LABEL HOST PORT: 100 datagrams from the client to HOST:PORT (an IPv6
# address in brackets), each from its own socket; PASS if every one is answered, none wrongly,
# and every realserver answered some.
udp_roundtrip_check() {
    local ok=0
    UDP_HOST=$2 udp_probe 100 "$3" || ok=1
    ((UDP_SENT == 100 && UDP_ANSWERED == 100 && UDP_BAD == 0 && UDP_NSERVERS == RS_COUNT)) || ok=1
    verdict "$ok" "$1" "$UDP_ANSWERED/$UDP_SENT answered, $UDP_BAD bad, $UDP_SERVERS"
}

# capture_start NAME DEV FILE [FILTER...]: tcpdump in namespace NAME on DEV ("any": Linux
# cooked v2) into FILE (classic pcap: tcpdump 4.99 writes no pcapng), whole packets, a 32 MiB
# kernel buffer, each packet handed over and written as it comes (--immediate-mode -U: else
# what still sits in the kernel's buffer when capture_stop comes is lost); stopped by
# capture_stop, by the lab's exit trap, or after CAPTURE_MAX_SECONDS (default 120). Returns
# once tcpdump listens; non-zero (with its log, FILE.log) if it does not within 5 s. Sets
# CAPTURE_PID, CAPTURE_FILE.
CAPTURE_PID=""
capture_start() {
    local ns=$1 dev=$2 file=$3
    shift 3
    require_cmds tcpdump
    rm -f "$file" "$file.log"
    # `ip netns exec` execs timeout, which passes the SIGINT of capture_stop on to tcpdump.
    ip netns exec "$(ns_name "$ns")" timeout -s INT "${CAPTURE_MAX_SECONDS:-120}" \
        tcpdump -i "$dev" -n -s 0 -B 32768 -U --immediate-mode -w "$file" "$@" </dev/null >"$file.log" 2>&1 &
    CAPTURE_PID=$! CAPTURE_FILE=$file
    if ! wait_until 5 grep -q 'listening on' "$file.log"; then
        log_tail "$file.log"
        err "tcpdump on $dev in $(ns_name "$ns") did not start"
        capture_stop
        return 1
    fi
}

# capture_stop: stop the capture of capture_start (SIGINT: tcpdump flushes the file and prints
# its counts) and wait for it. Sets CAPTURE_PACKETS and CAPTURE_DROPPED (the kernel's drops;
# empty if tcpdump printed no counts).
capture_stop() {
    CAPTURE_PACKETS="" CAPTURE_DROPPED=""
    [[ -n $CAPTURE_PID ]] || return 0
    kill -INT "$CAPTURE_PID" 2>/dev/null || true
    wait "$CAPTURE_PID" 2>/dev/null || true
    CAPTURE_PID=""
    CAPTURE_PACKETS=$(sed -nE 's/^([0-9]+) packets? captured.*/\1/p' "$CAPTURE_FILE.log")
    CAPTURE_DROPPED=$(sed -nE 's/^([0-9]+) packets? dropped by kernel.*/\1/p' "$CAPTURE_FILE.log")
}

# curl_vip PATH [CURL ARGS...]: one bounded HTTP request to the VIP from the client.
curl_vip() {
    local path=$1
    shift
    ip netns exec "$(ns_name cli)" curl -sS --connect-timeout 3 --max-time 20 "$@" "http://$VIP$path"
}
