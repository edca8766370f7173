#!/usr/bin/env bash
# Tether's gateway side by side with nginx `stream` and HAProxy `mode tcp`: the same loadgen,
# the same four echo nodes, the same cores, one run; plus the loadgen straight at one node.
#
#   bench/proxy.sh [--quick | --smoke] [--duration S] [--warmup S] [--out DIR] [--targets LIST]
#                  [--against BIN]
#
#     --quick          short run: --duration 3 --warmup 1 (default 10 and 2)
#     --smoke          the CI check that the script still runs: tiers of 20 and 40
#                      connections, 64-byte payloads only, --duration 1 --warmup 0.2, idle
#                      rows of 2 s, no waiting for a quiet machine, no re-runs
#     --out DIR        where raw loadgen JSON, /proc samples, configs and logs go
#                      (default: a new mktemp dir, printed at the end; kept)
#     --targets LIST   subset of node,tether,nginx,haproxy (default: all four)
#     --against BIN    also run another tether-gateway binary (an older build, say) as the
#                      target `baseline`, right after `tether` in every cell, with the same
#                      flags; the ratios then include tether/baseline
#
# Targets, each in front of the same four echo nodes (127.0.0.1:19890-19893, --reactors 1):
#   node     the loadgen straight at one echo node: what the rig does with no proxy at all
#   tether   target/release/tether-gateway on :19900 (admin :19901), --reactors 1 --acceptors 1
#   nginx    nginx `stream` on :19910, worker_processes 1, default round robin
#   haproxy  HAProxy `mode tcp` on :19920, nbthread 1, balance roundrobin
# Matrix: connections {1,000, big tier} x payload {64, 1024 B} x mode {closed loop --pipeline 8,
# open loop at 20,000 msgs/s in total (--rate = 20000/conns per connection)} x target; then,
# for the big tier, each target with its connections nearly idle (memory per connection).
# Every proxy and node is started fresh for each run; the targets of one cell run back to back.
# Requests go unflagged (loadgen --resend-safe false): nginx and HAProxy never send a request
# twice, and the gateway keeps no payload copy of a request not flagged safe to re-send.
#
# Core layout (2 cores, taskset) — the same for every target:
#   core 0: the proxy under test, alone (all its threads / processes);
#   core 1: tether-loadgen (--threads 1) and the echo nodes.
# The proxy gets a core to itself so that, where anything is, it is the bottleneck; the table
# shows its core use (about 100% = saturated) and its CPU per message, which compares proxies
# even when they all saturate. Core 1 does about the same work per message in every row
# (loadgen + node; on loopback a send's receive processing runs on the sender's core, so each
# side pays for its own sends), so the direct row — node and loadgen on core 1, core 0 idle —
# is what the rig can do with no proxy at all. (Not exactly equal: behind nginx/HAProxy the
# nodes see one backend connection per client; behind the gateway, one per reactor.)
# Putting the nodes on the proxy's core instead would make every proxy share its core with
# four busy processes: the numbers would mostly measure the scheduler.
#
# File descriptors: this machine's hard limit is 20,000 per process and cannot be raised. A
# TCP proxy holds two sockets per client, all in one process here (HAProxy is one process;
# nginx has one worker), so 10,000 clients cannot fit. The big tier is therefore sized from
# `ulimit -Hn`: min(10,000, (hard limit - 2,000) / 2, rounded down to 500) = 9,000 here,
# for every target alike; the output says so.
#
# Installs nginx (+ libnginx-mod-stream), haproxy, python3 and util-linux with apt-get when
# missing, but never starts their services: the binaries run in the foreground with configs
# written to a temp dir. Everything it starts is stopped on exit. Loopback only. Ports
# 19890-19893, 19900, 19901, 19910, 19920 must be free.
#
# Noise: on a 2-core machine anything else running skews the numbers. Before each run the
# script waits (2 minutes at most in all) for the machine to be quiet; during each run it
# measures how much CPU went to processes outside the run, re-runs a run once if that was over
# 25% of a core (8 re-runs at most), and flags what is left in the table.
#
# Output: the Markdown report on stdout (also OUT/report.md), progress on stderr; exit status
# 1 if any run failed (loadgen exit status, verify failures, a proxy or node that died).
#
# Time: a default run takes about 8 minutes after the build (--quick: about 4); with a busy
# machine, up to ~4 minutes more of waiting and re-runs. --smoke: 48-61 s (it never waits).
set -euo pipefail
cd "$(dirname "$0")/.."

# ---- parameters ------------------------------------------------------------------------
duration=10 warmup=2 out="" targets_wanted="node tether nginx haproxy" smoke=0 baseline_bin=""
usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --quick) duration=3 warmup=1 ;;
        --smoke) duration=1 warmup=0.2 smoke=1 ;;
        --duration) duration=$2; shift ;;
        --warmup) warmup=$2; shift ;;
        --out) out=$2; shift ;;
        --targets) targets_wanted=${2//,/ }; shift ;;
        --against) baseline_bin=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "proxy.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
for t in $targets_wanted; do
    [[ $t =~ ^(node|tether|nginx|haproxy)$ ]] || { echo "proxy.sh: unknown target '$t'" >&2; exit 2; }
done
if [[ -n $baseline_bin ]]; then
    [[ -x $baseline_bin ]] || { echo "proxy.sh: --against $baseline_bin is not an executable" >&2; exit 2; }
    baseline_bin=$(realpath "$baseline_bin")
    targets_wanted=$(echo "$targets_wanted" | sed 's/\btether\b/tether baseline/')
    [[ $targets_wanted == *baseline* ]] || targets_wanted+=" baseline"
fi

small=1000          # connections, first tier
payloads=(64 1024)  # DATA payload bytes
pipeline=8          # closed loop: frames outstanding per connection
open_total=20000    # open loop: msgs/s offered in total (<5% of the direct node's capacity, ~half a proxy core)
connect_rate=4000   # big tier: new connections per second (keeps SYN backlogs from overflowing)
idle_rate=0.01      # idle rows: frames/s per connection (keeps the connection verified, ~idle)
idle_seconds=5
quiet_limit=15      # % of one core: before a run, wait until the machine is this quiet…
quiet_wait_budget=120  # …for at most this many ~1 s checks over the whole script
noise_limit=25      # % of one core used outside a run: run it once more (up to retry_budget re-runs in all)
retry_budget=8
proxy_core=0
rig_core=1
node_ports=(19890 19891 19892 19893)
gw_port=19900 gw_admin=19901 nginx_port=19910 haproxy_port=19920
bin=${CARGO_TARGET_DIR:-target}/release
lib=bench/lib
if ((smoke)); then
    small=20 payloads=(64) idle_seconds=2 quiet_wait_budget=0 retry_budget=0
fi

# ---- cleanup: stop everything we started ------------------------------------------------
pids=()            # every long-running process this script started
work=""            # temp dir for configs, removed on exit
made_policy_rc=0   # did we create /usr/sbin/policy-rc.d (to keep apt from starting services)?
sudo=()            # for apt-get when not root
(($(id -u) == 0)) || sudo=(sudo)

stop_pids() {   # stop_pids PID… : TERM, up to 5 s to exit, then KILL; reaps them
    local p deadline=$((SECONDS + 5))
    (($#)) || return 0
    for p; do kill -TERM "$p" 2>/dev/null || true; done
    for p; do
        while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}
forget_pids() {   # forget_pids PID… : drop them from $pids once stopped
    local p q keep=()
    for q in "${pids[@]}"; do
        for p; do [[ $q == "$p" ]] && continue 2; done
        keep+=("$q")
    done
    pids=("${keep[@]}")
}
cleanup() {
    stop_pids "${pids[@]}"
    [[ -n $work ]] && rm -rf "$work"
    ((made_policy_rc)) && "${sudo[@]}" rm -f /usr/sbin/policy-rc.d
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() { echo "proxy.sh: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }

# ---- machine checks ---------------------------------------------------------------------
(($(nproc) >= 2)) || die "needs at least 2 cores (core $proxy_core for the proxy, core $rig_core for the loadgen and nodes)"

hard=$(ulimit -Hn)
if [[ $hard == unlimited ]]; then ulimit -n 1048576 2>/dev/null || true; hard=$(ulimit -Sn); fi
ulimit -n "$hard"
big=$(((hard - 2000) / 2 / 500 * 500))
((big > 10000)) && big=10000
((!smoke)) || big=40
((big > small)) || die "open-file hard limit $hard is too low for a big tier above $small connections"
if ((big < 10000)); then
    tier_note="$small and $big. Hard open-file limit $hard per process (ulimit -Hn, cannot be raised): a TCP proxy holds 2 sockets per client in one process (HAProxy; nginx's single worker), so 10,000 clients would need over 20,000 fds; the big tier is $big for every target."
else
    tier_note="$small and $big (hard open-file limit $hard per process)."
fi
((!smoke)) || tier_note="$small and $big (--smoke: the smallest sizes that still run every code path)."

# ---- packages ---------------------------------------------------------------------------
apt_updated=0
apt_install() {
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then   # installing must not start nginx/haproxy services
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
        made_policy_rc=1
    fi
    if ((!apt_updated)); then "${sudo[@]}" apt-get update -q >&2; apt_updated=1; fi
    say "apt-get install $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
    if ((made_policy_rc)); then "${sudo[@]}" rm -f /usr/sbin/policy-rc.d; made_policy_rc=0; fi
}
export PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v python3 >/dev/null || missing+=(python3)
command -v taskset >/dev/null || missing+=(util-linux)
command -v nginx >/dev/null || missing+=(nginx)
command -v haproxy >/dev/null || missing+=(haproxy)
((${#missing[@]} == 0)) || apt_install "${missing[@]}"
# The interpreter itself, not a wrapper such as a pyenv shim (which may fork): the sampler
# must be the very process we stop.
py=$(python3 -c 'import sys; print(sys.executable)')

# nginx's stream module: built in, or Debian's dynamic libnginx-mod-stream plus load_module.
find_stream_module() {
    local d
    for d in /usr/lib/nginx/modules /usr/share/nginx/modules /usr/lib64/nginx/modules; do
        [[ -f $d/ngx_stream_module.so ]] && { echo "$d/ngx_stream_module.so"; return 0; }
    done
    return 1
}
nginx_v=$(nginx -V 2>&1)
stream_load=""
if grep -qE -- '--with-stream( |$)' <<<"$nginx_v"; then
    :   # compiled in
else
    module=$(find_stream_module) || { apt_install libnginx-mod-stream; module=$(find_stream_module); } ||
        die "nginx has no stream module and libnginx-mod-stream did not provide one"
    stream_load="load_module $module;"
fi

# ---- build ------------------------------------------------------------------------------
skipped=""
say "cargo build --release -p tether-echo-node -p tether-loadgen -p tether-gateway"
if ! cargo build --release --quiet -p tether-echo-node -p tether-loadgen -p tether-gateway; then
    skipped="tether-gateway rows: the gateway did not build (cargo build --release -p tether-gateway failed; see above)"
    cargo build --release --quiet -p tether-echo-node -p tether-loadgen
elif [[ ! -x $bin/tether-gateway ]]; then
    skipped="tether-gateway rows: $bin/tether-gateway is missing after the build"
fi
targets=()
for t in $targets_wanted; do
    if [[ $t == tether && -n $skipped ]]; then
        echo "!! SKIPPING the $skipped" >&2
        continue
    fi
    targets+=("$t")
done
((${#targets[@]})) || die "no targets left to run"

# ---- dirs and configs -------------------------------------------------------------------
work=$(mktemp -d /tmp/tether-proxy-bench.XXXXXX)
[[ -n $out ]] || out=$(mktemp -d /tmp/tether-proxy-results.XXXXXX)
compgen -G "$out/*.meta.json" >/dev/null && die "$out already holds results of another run; give --out an empty or new directory"
mkdir -p "$out/logs" "$out/configs"
out=$(cd "$out" && pwd)
node_list=""
for p in "${node_ports[@]}"; do node_list+="${node_list:+,}127.0.0.1:$p"; done
proxy_maxconn=$(((hard - 1000) / 2))   # sockets = 2 x clients + a few listeners/logs
((proxy_maxconn > big + 1000)) && proxy_maxconn=$((big + 1000))

mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
# Written by bench/proxy.sh: nginx as a plain TCP proxy in front of the four echo nodes.
$stream_load
daemon off;
master_process on;
worker_processes 1;                 # one core for the proxy, like the gateway's one reactor
worker_rlimit_nofile $hard;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events {
    worker_connections $((2 * proxy_maxconn));   # counts client and upstream sockets
}
stream {
    upstream echo_nodes {               # default: weighted round robin
$(for p in "${node_ports[@]}"; do echo "        server 127.0.0.1:$p;"; done)
    }
    server {
        listen 127.0.0.1:$nginx_port backlog=4096;
        proxy_pass echo_nodes;
        proxy_connect_timeout 5s;
        proxy_timeout 1h;               # long-lived connections must not be cut
    }
}
EOF

cat >"$work/haproxy.cfg" <<EOF
# Written by bench/proxy.sh: HAProxy as a plain TCP proxy in front of the four echo nodes.
global
    nbthread 1                          # one core for the proxy, like the gateway's one reactor
    maxconn $proxy_maxconn
defaults
    mode tcp
    maxconn $proxy_maxconn
    timeout connect 5s
    timeout client 1h                   # long-lived connections must not be cut
    timeout server 1h
frontend clients
    bind 127.0.0.1:$haproxy_port
    default_backend echo_nodes
backend echo_nodes
    balance roundrobin
$(for i in "${!node_ports[@]}"; do echo "    server node$i 127.0.0.1:${node_ports[$i]}"; done)
EOF
cp "$work/nginx/nginx.conf" "$work/haproxy.cfg" "$out/configs/"
nginx -t -q -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" ||
    die "nginx rejected its config (above)"
haproxy -c -q -f "$work/haproxy.cfg" || die "haproxy rejected its config (above)"

# ---- ports and processes ----------------------------------------------------------------
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    command -v ss >/dev/null && [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]] && return 0
    return 1
}
require_free() {
    local p
    for p; do
        port_in_use "$p" && die "port 127.0.0.1:$p is already in use ($(ss -Hltnp "sport = :$p" 2>/dev/null | awk '{print $NF}')); stop whatever holds it and run again"
    done
    return 0
}
require_free "${node_ports[@]}" "$gw_port" "$gw_admin" "$nginx_port" "$haproxy_port"

started_pid=""
start_bg() {   # start_bg LOGNAME CORE CMD… : runs CMD pinned to CORE; sets started_pid
    local log=$1 core=$2; shift 2
    env RUST_LOG=warn taskset -c "$core" "$@" >>"$out/logs/$log.log" 2>&1 &
    started_pid=$!
    pids+=("$started_pid")
}
wait_listen() {   # wait_listen NAME PID PORT : until PORT accepts; fails if PID exits first
    local name=$1 pid=$2 port=$3 i
    for i in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$out/logs/$name.log" >&2; die "$name exited while starting (log: $out/logs/$name.log)"; }
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    die "$name did not accept on 127.0.0.1:$port within 10 s (log: $out/logs/$name.log)"
}
probe() {   # probe ADDR : one verified round trip end to end (backends connected) before measuring
    local i
    for i in $(seq 40); do
        taskset -c "$rig_core" "$bin/tether-loadgen" --target "$1" --conns 1 --payload 64 --pipeline 1 \
            --duration 0.2 --threads 1 --quiet >/dev/null 2>&1 && return 0
        sleep 0.25
    done
    die "no verified echo through $1 within 10 s"
}
affinity_of() {   # affinity_of PID : distinct Cpus_allowed_list of every thread of PID and descendants
    local p
    for p in $("$py" "$lib/procmon.py" --tree "$1"); do
        cat /proc/"$p"/task/*/status 2>/dev/null | awk '/^Cpus_allowed_list/ {print $2}'
    done | sort -u | paste -sd' '
}
json_kv() {   # json_kv FILE KEY VALUE… : writes a flat JSON object of strings
    "$py" -c 'import json, sys; a = sys.argv[2:]; json.dump(dict(zip(a[::2], a[1::2])), open(sys.argv[1], "w"), indent=1)' "$@"
}

# ---- one run ----------------------------------------------------------------------------
# run_one TARGET CONNS PAYLOAD MODE(closed|open|idle)
run_one() {
    local target=$1 conns=$2 payload=$3 mode=$4
    local name="c$conns-p$payload-$mode-$target"
    local n_nodes=4 addr proxy_pid="" proxy_cmd="" node_pids=() node_cmds=() i cmd
    [[ $target == node ]] && n_nodes=1
    local ports=("${node_ports[@]:0:n_nodes}")
    case $target in
        tether | baseline) ports+=("$gw_port" "$gw_admin") ;;
        nginx) ports+=("$nginx_port") ;;
        haproxy) ports+=("$haproxy_port") ;;
    esac
    require_free "${ports[@]}"

    for ((i = 0; i < n_nodes; i++)); do
        cmd=("$bin/tether-echo-node" --listen "127.0.0.1:${node_ports[$i]}" --reactors 1)
        start_bg "$name.node$i" "$rig_core" "${cmd[@]}"
        node_pids+=("$started_pid")
        node_cmds+=("RUST_LOG=warn taskset -c $rig_core ${cmd[*]}")
    done
    for ((i = 0; i < n_nodes; i++)); do wait_listen "$name.node$i" "${node_pids[$i]}" "${node_ports[$i]}"; done

    case $target in
        node)
            addr="127.0.0.1:${node_ports[0]}" ;;
        tether | baseline)
            addr="127.0.0.1:$gw_port"
            local gateway=$bin/tether-gateway
            [[ $target == baseline ]] && gateway=$baseline_bin
            cmd=("$gateway" --listen "$addr" --node "$node_list" --admin "127.0.0.1:$gw_admin"
                 --reactors 1 --acceptors 1) ;;
        nginx)
            addr="127.0.0.1:$nginx_port"
            cmd=(nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log") ;;
        haproxy)
            addr="127.0.0.1:$haproxy_port"
            cmd=(haproxy -f "$work/haproxy.cfg" -db) ;;
    esac
    if [[ $target != node ]]; then
        start_bg "$name.$target" "$proxy_core" "${cmd[@]}"
        proxy_pid=$started_pid
        proxy_cmd="taskset -c $proxy_core ${cmd[*]}"
        [[ $target == tether || $target == baseline ]] && proxy_cmd="RUST_LOG=warn $proxy_cmd"
        wait_listen "$name.$target" "$proxy_pid" "${addr##*:}"
    fi
    probe "$addr"

    # Every thread where it belongs?
    local affinity="ok" seen
    if [[ -n $proxy_pid ]]; then
        seen=$(affinity_of "$proxy_pid")
        [[ $seen == "$proxy_core" ]] || affinity="proxy threads allowed on CPUs '$seen', not $proxy_core"
    fi
    for i in "${node_pids[@]}"; do
        seen=$(affinity_of "$i")
        [[ $seen == "$rig_core" ]] || affinity="node threads allowed on CPUs '$seen', not $rig_core"
    done

    local d=$duration w=$warmup shape=() rate=""
    case $mode in
        closed) shape=(--pipeline "$pipeline") ;;
        open) rate=$("$py" -c "print(f'{$open_total / $conns:.6g}')"); shape=(--rate "$rate") ;;
        idle) rate=$idle_rate; shape=(--rate "$rate"); d=$idle_seconds; w=1 ;;
    esac
    ((conns > small)) && shape+=(--connect-rate "$connect_rate")
    local lg=("$bin/tether-loadgen" --target "$addr" --conns "$conns" --payload "$payload"
              --duration "$d" --warmup "$w" --threads 1 --quiet --resend-safe false "${shape[@]}"
              --json "$out/$name.json")

    local node_csv
    node_csv=$(IFS=,; echo "${node_pids[*]}")
    taskset -c "$rig_core" "$py" "$lib/procmon.py" "$out/$name.procmon.jsonl" \
        --proxy "$proxy_pid" --rig "$node_csv" --ours $$ &
    local mon=$!
    pids+=("$mon")
    sleep 0.3   # first sample = the proxy before the load

    say "taskset -c $rig_core ${lg[*]}"
    local t_start=$EPOCHREALTIME status=0 lg_pid
    # In the background so that a signal reaches the trap at once (wait is interruptible).
    taskset -c "$rig_core" "${lg[@]}" >"$out/logs/$name.loadgen.txt" 2>&1 &
    lg_pid=$!
    pids+=("$lg_pid")
    wait "$lg_pid" || status=$?
    local t_end=$EPOCHREALTIME
    forget_pids "$lg_pid"

    stop_pids "$mon"
    local proxy_alive=yes nodes_alive=yes
    [[ -z $proxy_pid ]] || kill -0 "$proxy_pid" 2>/dev/null || proxy_alive=no
    for i in "${node_pids[@]}"; do kill -0 "$i" 2>/dev/null || nodes_alive=no; done
    stop_pids $proxy_pid   # the proxy first, so that it never sees its nodes go away
    stop_pids "${node_pids[@]}"
    forget_pids "$mon" $proxy_pid "${node_pids[@]}"
    if [[ $target == nginx && -s $work/nginx/error.log ]]; then
        mv "$work/nginx/error.log" "$out/logs/$name.nginx-error.log"
    fi

    json_kv "$out/$name.meta.json" target "$target" conns "$conns" payload "$payload" mode "$mode" \
        pipeline "$pipeline" rate "$rate" duration "$d" warmup "$w" t_start "$t_start" t_end "$t_end" \
        lg_status "$status" proxy_alive "$proxy_alive" nodes_alive "$nodes_alive" affinity "$affinity" \
        loadgen_cmd "taskset -c $rig_core ${lg[*]}" proxy_cmd "$proxy_cmd" \
        node_cmd "$(printf '%s\n' "${node_cmds[@]}")"
    if [[ -f $out/$name.json ]]; then
        echo "   $("$py" "$lib/proxy_report.py" --line "$out/$name.json") (loadgen exit $status)" >&2
    else
        echo "   no summary (loadgen exit $status): $out/logs/$name.loadgen.txt" >&2
    fi
}

# ---- noise: other work on this machine skews a 2-core benchmark ---------------------------
wait_quiet() {   # before a run: wait until the machine is quiet, within the overall budget
    local busy waited=0
    while ((quiet_wait_budget > 0)); do
        busy=$("$py" "$lib/procmon.py" --busy 0.5)
        ((busy <= quiet_limit)) && break
        ((waited)) || say "   machine busy (${busy}% of a core, not this script): waiting for it to quiet down"
        sleep 0.5
        waited=1
        quiet_wait_budget=$((quiet_wait_budget - 1))
    done
    return 0
}
retries_left=$retry_budget
measure() {   # measure TARGET CONNS PAYLOAD MODE : one run, once more if the machine was busy
    local name="c$2-p$3-$4-$1" other
    wait_quiet
    run_one "$@"
    other=$("$py" "$lib/proxy_report.py" --other "$out" "$name" 2>/dev/null || echo 0)
    if ((other > noise_limit && retries_left > 0)); then
        retries_left=$((retries_left - 1))
        say "   ${other}% of a core was used outside the run: running it again (re-runs left: $retries_left)"
        mkdir -p "$out/noisy"
        mv "$out/$name".* "$out/noisy/"
        wait_quiet
        run_one "$@"
    fi
}

# ---- the matrix -------------------------------------------------------------------------
setup_json() {
    local versions layout git_rev
    versions="tether-loadgen $($bin/tether-loadgen --version | awk '{print $2}'); $(nginx -v 2>&1 | sed 's/^nginx version: //'); $(haproxy -v | awk 'NR==1 {print "HAProxy", $3}')"
    [[ -n $baseline_bin ]] && versions+="; baseline (--against): $baseline_bin"
    layout="core $proxy_core: the proxy under test alone (tether-gateway --reactors 1 --acceptors 1; nginx worker_processes 1 + idle master; HAProxy nbthread 1). core $rig_core: tether-loadgen --threads 1 and the echo nodes (--reactors 1 each; 4 behind a proxy, 1 in the direct row, core $proxy_core then idle). A proxy core % near 100 means the proxy is the bottleneck; the direct row shows what core $rig_core does with no proxy at all (behind the gateway the nodes see 4 multiplexed connections instead of one per client, so less work, and the gateway can exceed it)."
    git_rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo +dirty)"
    json_kv "$out/setup.json" date "$(date -u '+%Y-%m-%d %H:%M UTC')" git "$git_rev" \
        machine "$(nproc) cores, $(uname -sr), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), open files hard limit $hard" \
        versions "$versions" layout "$layout" tier_note "$tier_note" duration "$duration" warmup "$warmup" \
        pipeline "$pipeline" open_total "$open_total" connect_rate "$connect_rate" skipped "$skipped" \
        clk_tck "$(getconf CLK_TCK)" \
        preamble "cd $(pwd)
ulimit -n $hard
cargo build --release -p tether-echo-node -p tether-loadgen -p tether-gateway"
}
setup_json

started=$SECONDS
say "results: $out"
say "targets: ${targets[*]}; tiers: $small and $big connections; $duration s runs ($warmup s warm-up)"
for conns in "$small" "$big"; do
    for payload in "${payloads[@]}"; do
        for mode in closed open; do
            for target in "${targets[@]}"; do
                say "[$((SECONDS - started)) s] $target, $conns conns, $payload B, $mode loop"
                measure "$target" "$conns" "$payload" "$mode"
            done
        done
    done
done
for target in "${targets[@]}"; do
    [[ $target == node ]] && continue   # memory per connection is a proxy question
    say "[$((SECONDS - started)) s] $target, $big nearly idle connections"
    measure "$target" "$big" 64 idle
done
say "matrix done in $((SECONDS - started)) s"

"$py" "$lib/proxy_report.py" "$out" | tee "$out/report.md"   # exit status 1 if any run failed
