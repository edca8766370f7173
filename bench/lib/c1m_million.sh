#!/usr/bin/env bash
# `bench/c1m.sh --million`: a million logged-in connections held on this one host, both ends
# on it, measured. Run as root (it raises kernel settings and restores them at exit).
#
#   bench/c1m.sh --million [--conns N] [--hold S] [--heartbeat S] [--coalesce-ms MS]
#                          [--connect-rate R] [--kill-share PERCENT]
#
# Defaults: 1,000,000 connections, held 300 s, heartbeat_s 30, coalesce 10 ms, 2,500
# connections/s (5,000/s collapsed at ~920,000 here, 3,000/s lost 849 at the end of the
# ramp: doc/c1m.md), 10 % of the gateways killed. Starts one tether-state, one echo node,
# enough tether-gateway processes sharing one port with SO_REUSEPORT (1 reactor each,
# max_connections 19,900: the 20,000-file limit per process) that those left after the kill
# hold 18,500 each (61 for a million), and ceil(N / 18,000) tether-loadgen processes from
# 127.0.0.2-127.0.0.60. Once every one is logged in, the hold: memory sampled 20 s in, CPU
# over 30 s of heartbeats only, then SIGKILL of --kill-share of the gateways; their clients
# RESUME through the shared port to the others, each after a random 0-40 s
# (--reconnect-spread: a dead gateway's clients all at once were a storm that took the rest
# down here), and the time until the state daemon has as many sessions online as before is
# measured; at 80 % of the hold, one broadcast to everyone (the load generator's publisher,
# `POST /v1/broadcast`). Pushes flow throughout (20/s). At the end every connection answers a check
# PING, paced at 20,000/s. Writes target/c1m-million/ (timeline, samples, the load
# generator's summary), prints the Markdown for doc/c1m.md and draws doc/c1m-million.svg.
# Ports: gateways 30000 (admin 31000+i), node 31980, state push API 31990, metrics 31991.
set -euo pipefail
cd "$(dirname "$0")/../.."

conns=1000000 hold=300 heartbeat=30 coalesce=10 connect_rate=2500 kill_share=10
check_rate=20000 push_rate=20 per_gateway=18500 per_loadgen=18000 spread=40
while [ $# -gt 0 ]; do
    case $1 in
        --conns) conns=$2; shift 2 ;;
        --hold) hold=$2; shift 2 ;;
        --heartbeat) heartbeat=$2; shift 2 ;;
        --coalesce-ms) coalesce=$2; shift 2 ;;
        --connect-rate) connect_rate=$2; shift 2 ;;
        --kill-share) kill_share=$2; shift 2 ;;
        *) echo "unknown argument $1 (see the head of $0)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "run as root: the kernel settings below are needed" >&2; exit 1; }

target=${CARGO_TARGET_DIR:-target}
bin=$target/release
out=$target/c1m-million
chart=doc/c1m-million.svg
command -v python3 >/dev/null || { apt-get update -q && apt-get install -y -q python3; }
cargo build --release --quiet -p tether-echo-node -p tether-gateway -p tether-loadgen -p tether-state
rm -rf "$out" && mkdir -p "$out"
# Enough gateways that those left after the kill hold everyone (19,900 each at most).
gateways=$(( (conns * 100 / (100 - kill_share) + per_gateway - 1) / per_gateway ))
killed=$(( (gateways * kill_share + 50) / 100 ))
[ "$kill_share" = 0 ] || [ "$killed" -gt 0 ] || killed=1
need=$(( killed + (conns + per_gateway - 1) / per_gateway ))
[ "$gateways" -ge "$need" ] || gateways=$need
procs=$(( (conns + per_loadgen - 1) / per_loadgen ))

# Kernel settings: each printed with its old value, restored at exit.
declare -A old
set_sysctl() {
    old[$1]=$(sysctl -n "$1" | tr '\t' ' ')
    sysctl -q -w "$1=$2"
    echo "sysctl $1: ${old[$1]} -> $(sysctl -n "$1" | tr '\t' ' ')" >&2
}
pids=()
cleanup() {
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
    for key in "${!old[@]}"; do sysctl -q -w "$key=${old[$key]}" && echo "sysctl $key restored: ${old[$key]}" >&2; done
    old=()
    [ -n "${dir:-}" ] && rm -rf "$dir"
}
trap cleanup EXIT
trap "exit 130" INT TERM
set_sysctl net.ipv4.tcp_mem "3000000 4000000 6000000"
set_sysctl net.core.netdev_max_backlog 65536
set_sysctl net.core.somaxconn 65535
set_sysctl net.ipv4.tcp_max_syn_backlog 65536
set_sysctl net.ipv4.ip_local_port_range "1024 65000"
settings="tcp_mem 3000000 4000000 6000000 pages, netdev_max_backlog 65536, somaxconn 65535, tcp_max_syn_backlog 65536, ports 1024-65000"

wait_port() { for _ in $(seq 400); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v k="$2" '$1 == k {print $2}'; }
online() { metric 31991 'tether_state_sessions{state="online"}'; }
for port in 30000 31980 31990 31991 $(seq 31000 $((31000 + gateways - 1))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "port $port is in use" >&2; exit 1; fi
done

dir=$(mktemp -d)
secret=c1m-million-bench-secret
printf '%s' "$secret" >"$dir/secret"
RUST_LOG=warn "$bin/tether-state" --socket "$dir/state.sock" --journal "$dir/journal" \
    --http 127.0.0.1:31990 --metrics 127.0.0.1:31991 --jwt-secret-file "$dir/secret" \
    --heartbeat-s "$heartbeat" 2>"$out/state.log" & st=$!; pids+=($st)
RUST_LOG=warn "$bin/tether-echo-node" --listen 127.0.0.1:31980 --reactors 1 2>"$out/node.log" & pids+=($!)
wait_port 31991; wait_port 31980
gw=() gw_json=""
for i in $(seq 0 $((gateways - 1))); do
    RUST_LOG=error "$bin/tether-gateway" --listen 127.0.0.1:30000 --reuse-port true --id "gw-$i" \
        --admin "127.0.0.1:$((31000 + i))" --node 127.0.0.1:31980 --state "$dir/state.sock" \
        --reactors 1 --acceptors 1 --pin-cores false --max-connections 19900 --backlog 65535 \
        --coalesce-ms "$coalesce" 2>"$out/gw-$i.log" & gw+=($!); pids+=($!)
    gw_json+="${gw_json:+,}[$!, $((31000 + i))]"
done
for i in $(seq 0 $((gateways - 1))); do wait_port $((31000 + i)); done
sleep 2
echo "{\"gateways\": [$gw_json], \"state\": [$st, 31991], \"loadgen_pattern\": [\"tether-loadgen\", \"127.0.0.1:30000\"]}" >"$out/pids.json"
memory() { python3 bench/lib/c1m_million.py memory "$out"; }
before=$(memory)
t_start=$(date +%s.%N)
python3 bench/lib/c1m_million.py sample "$out" "$t_start" & sampler=$!; pids+=($sampler)
since() { awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'; }

# The hold, as the load generator counts it, starts once every connection is up; the ramp
# takes conns / connect_rate seconds and its stragglers a little more.
hold_total=$(( hold ))
# The broadcast: after the kill's storm, before the load generator's last 10 % (its settle).
broadcast_at=$(( hold * 8 / 10 ))
cmd="tether-loadgen --target 127.0.0.1:30000 --jwt-secret-file SECRET --conns $conns --procs $procs --threads 1 --source-ips 127.0.0.2-127.0.0.60 --connect-rate $connect_rate --connect-timeout 30 --hold $hold_total --check-rate $check_rate --coalesce-ms $coalesce --resume-on-loss --reconnect-timeout 60 --reconnect-spread $spread --push-rate $push_rate --push-url http://127.0.0.1:31990 --broadcast --rooms-per-conn 0 --publish-rate 0.001 --publish-after $broadcast_at"
echo "c1m --million: $conns connections, $gateways gateways, $procs load generator processes, hold $hold s" >&2
"$bin/tether-loadgen" --target 127.0.0.1:30000 --jwt-secret-file "$dir/secret" --conns "$conns" \
    --procs "$procs" --threads 1 --source-ips 127.0.0.2-127.0.0.60 --connect-rate "$connect_rate" \
    --connect-timeout 30 --hold "$hold_total" --check-rate "$check_rate" --coalesce-ms "$coalesce" \
    --resume-on-loss --reconnect-timeout 60 --reconnect-spread "$spread" --push-rate "$push_rate" \
    --push-url http://127.0.0.1:31990 --broadcast --rooms-per-conn 0 --publish-rate 0.001 \
    --publish-after "$broadcast_at" --quiet --json "$out/loadgen.json" \
    >"$out/loadgen.txt" 2>&1 & lg=$!; pids+=($lg)

# All up: every connection's session online, or no login for 10 s (the load generator has
# given up on the rest and starts its hold then too).
logins() { metric 31991 'tether_state_logins_total{result="ok"}'; }
last=-1 still=0
for _ in $(seq $(( conns / connect_rate * 4 + 120 ))); do
    [ "$(online)" = "$conns" ] && break
    kill -0 "$lg" 2>/dev/null || break
    now=$(logins)
    if [ "$now" = "$last" ]; then still=$((still + 1)); else still=0 last=$now; fi
    [ "$still" -ge 10 ] && break
    sleep 1
done
up=$(online)
t_up=$(since)
echo "all up at ${t_up} s: $up sessions online" >&2
sleep 20
held=$(memory)
t0=$(date +%s.%N)
g0=$(python3 -c "import sys; sys.path.insert(0, 'bench/lib'); import c1m_million as m, json; p = json.load(open('$out/pids.json')); print(sum(m.ticks(x) for x, _ in p['gateways']), m.ticks(p['state'][0]), sum(m.ticks(x) for x in m.loadgen_pids(p['loadgen_pattern'])))")
h0=$(metric 31991 tether_state_heartbeats_total)
f0=0; for i in $(seq 0 $((gateways - 1))); do f0=$((f0 + $(metric $((31000 + i)) tether_gateway_frames_received_total))); done
sleep 30
g1=$(python3 -c "import sys; sys.path.insert(0, 'bench/lib'); import c1m_million as m, json; p = json.load(open('$out/pids.json')); print(sum(m.ticks(x) for x, _ in p['gateways']), m.ticks(p['state'][0]), sum(m.ticks(x) for x in m.loadgen_pids(p['loadgen_pattern'])))")
f1=0; for i in $(seq 0 $((gateways - 1))); do f1=$((f1 + $(metric $((31000 + i)) tether_gateway_frames_received_total))); done
t1=$(date +%s.%N)
read -r gw0 st0 lg0 <<<"$g0"; read -r gw1 st1 lg1 <<<"$g1"
idle_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
idle="{\"seconds\": $idle_s, \"gw\": $((gw1 - gw0)), \"st\": $((st1 - st0)), \"lg\": $((lg1 - lg0)), \"heartbeats\": $(awk -v a="$f0" -v b="$f1" -v s="$idle_s" 'BEGIN {print (b - a) / s}')}"
echo "idle: $idle" >&2

# SIGKILL a share of the gateways; their clients RESUME through the shared port.
t_kill="" t_back="" kill_json=""
if [ "$killed" -gt 0 ]; then
    before_kill=$(online)
    victims=0
    for i in $(seq 0 $((killed - 1))); do
        victims=$((victims + $(metric $((31000 + i)) tether_gateway_connections_open)))
    done
    r0=$(metric 31991 'tether_state_resumes_total{result="ok"}')
    t_kill=$(since)
    for i in $(seq 0 $((killed - 1))); do kill -9 "${gw[i]}"; done
    echo "killed $killed gateways holding $victims clients at ${t_kill} s ($before_kill online)" >&2
    # The daemon keeps their sessions online while their gateway's link is away; what shows
    # them back is the RESUMEs it counts (the report reads the timeline for the times).
    for _ in $(seq 450); do
        [ "$(metric 31991 'tether_state_resumes_total{result="ok"}')" -ge $((r0 + victims)) ] && break
        sleep 0.2
    done
    t_back=$(since)
    echo "resumed: $(( $(metric 31991 'tether_state_resumes_total{result="ok"}') - r0 )) of $victims by ${t_back} s" >&2
    kill_json="\"kill\": {\"killed\": $killed, \"clients\": $victims},"
fi

lg_status=0; wait "$lg" || lg_status=$?
t_end=$(since)
kill "$sampler" 2>/dev/null || true
git_rev=$(git rev-parse --short HEAD 2>/dev/null || echo none)
login_rate=$(awk -v n="$conns" -v r="$t_up" 'BEGIN {print n / r}')
cat >"$out/run.json" <<JSON
{"conns": $conns, "gateways": $gateways, "loadgen_procs": $procs, "hold": $hold, "heartbeat_s": $heartbeat,
 "coalesce_ms": $coalesce, "spread": $spread, "broadcast_at": $broadcast_at, "connect_rate": $connect_rate, "check_rate": $check_rate, "push_rate": $push_rate,
 "loadgen_status": $lg_status, "date": "$(date -u +%Y-%m-%d)", "git": "$git_rev",
 "machine": "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r)",
 "sysctl": "$settings", "clk_tck": $(getconf CLK_TCK), "ramp_s": $t_up, "login_rate": $login_rate,
 "up": ${up:-0}, $kill_json
 "events": {"all_up": $t_up${t_kill:+, \"kill\": $t_kill}${t_back:+, \"back\": $t_back}, "end": $t_end},
 "idle_cpu": $idle, "memory_before": $before, "memory_held": $held, "command": "$cmd"}
JSON
cat "$out/loadgen.txt" >&2
python3 bench/lib/c1m_million.py report "$out" "$chart"
