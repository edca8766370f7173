#!/usr/bin/env bash
# C1M readiness: idle logged-in connections held through one tether-gateway (with
# tether-state), at several sizes, and what each one costs: gateway RSS, state RSS, kernel
# socket memory (/proc/net/sockstat, /proc/slabinfo, /proc/meminfo Slab) and idle CPU; the
# per-connection slopes fitted over the steps and projected to 1,000,000 connections.
#
#   bench/c1m.sh [STEP…]        default: 1000 5000 10000 max
#   bench/c1m.sh --smoke        the CI check that the script still runs: steps 20 and 40,
#                               1 s settle and window; writes target/c1m-smoke/ only (the
#                               chart too: doc/ is left alone)
#   bench/c1m.sh --million …    a million held on this host, many gateway and load generator
#                               processes, as root: see bench/lib/c1m_million.sh
#
# `max` is the most one gateway process can hold here: its hard RLIMIT_NOFILE minus the
# descriptors it holds with no client, minus 16 kept free for the admin scrapes. Each step
# starts a fresh tether-state (--heartbeat-s 10, so heartbeats really flow), one echo node
# and a gateway (2 reactors, --state), then tether-loadgen logs N connections in with JWTs
# from 127.0.0.2-127.0.0.60 (--procs so that no process passes ~9,000 sockets), holds them
# (--hold) with heartbeats only, and checks at the end that every one still answers. While
# they are held: RSS and kernel counters after a settle, then CPU over a 10 s window.
# Writes target/c1m/ (raw samples, loadgen summaries), prints the Markdown for doc/c1m.md
# and draws doc/c1m.svg. Ports: node 19950, gateway 19960, admin 19961, state push API 19962
# and metrics 19963.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --million ]; then shift; exec bench/lib/c1m_million.sh "$@"; fi

target=${CARGO_TARGET_DIR:-target}
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(1000 5000 10000 max)
settle=5
window=10
margin=15   # seconds the loadgen holds beyond the settle and the window
out=$target/c1m
chart=doc/c1m.svg
if [ "${steps[0]}" = --smoke ]; then
    steps=(20 40) settle=1 window=1 margin=3 out=$target/c1m-smoke chart=$target/c1m-smoke/c1m.svg
fi
command -v python3 >/dev/null || { apt-get update -q && apt-get install -y -q python3; }
cargo build --release --quiet -p tether-echo-node -p tether-gateway -p tether-loadgen -p tether-state
bin=$target/release
rm -rf "$out" && mkdir -p "$out"
for port in 19950 19960 19961 19962 19963; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "port $port is in use: stop what listens there" >&2; exit 1; fi
done

pids=()
cleanup() { for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap cleanup EXIT

wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
http() { { exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' "$2" >&3 && cat <&3; } 2>/dev/null | sed '1,/^\r$/d'; }
metric() { http "$1" /metrics | awk -v k="$2" '$1 == k {print $2}'; }
# Everything /proc says about one moment, as one JSON object (see bench/lib/c1m_report.py).
sample() { python3 bench/lib/c1m_report.py --sample "$gw" "$st"; }
source bench/lib/cpu.sh

secret=c1m-bench-secret
hard=$(ulimit -Hn)
for step in "${steps[@]}"; do
    dir=$(mktemp -d)
    RUST_LOG=warn "$bin/tether-state" --socket "$dir/state.sock" --journal "$dir/journal" \
        --http 127.0.0.1:19962 --metrics 127.0.0.1:19963 --jwt-secret "$secret" --heartbeat-s 10 & st=$!; pids+=($st)
    RUST_LOG=warn "$bin/tether-echo-node" --listen 127.0.0.1:19950 --reactors 1 & pids+=($!)
    wait_port 19950; wait_port 19963
    # error: the node and state links going away at the end of a step are expected.
    RUST_LOG=error "$bin/tether-gateway" --listen 127.0.0.1:19960 --admin 127.0.0.1:19961 \
        --node 127.0.0.1:19950 --state "$dir/state.sock" --reactors 2 --pin-cores false \
        --max-connections 100000 & gw=$!; pids+=($gw)
    wait_port 19960; wait_port 19961
    for _ in $(seq 100); do [ "$(metric 19961 tether_gateway_state_links_up)" = 2 ] && break; sleep 0.1; done
    sleep 1
    base_fds=$(ls "/proc/$gw/fd" | wc -l)
    n=$step
    [ "$step" = max ] && n=$((hard - base_fds - 16))
    procs=$(( (n + 8999) / 9000 ))
    before=$(sample)
    hold=$(( n / 5000 + settle + window + margin ))
    cmd="tether-loadgen --target 127.0.0.1:19960 --jwt-secret-file SECRET --conns $n --procs $procs --threads 1 --source-ips 127.0.0.2-127.0.0.60 --connect-rate 5000 --connect-timeout 10 --hold $hold"
    echo "step $step: $n connections ($procs loadgen processes, gateway holds $base_fds descriptors with no client)" >&2
    printf '%s' "$secret" >"$dir/secret"
    "$bin/tether-loadgen" --target 127.0.0.1:19960 --jwt-secret-file "$dir/secret" --conns "$n" \
        --procs "$procs" --threads 1 --source-ips 127.0.0.2-127.0.0.60 --connect-rate 5000 \
        --connect-timeout 10 --hold "$hold" --quiet --json "$out/$n.loadgen.json" \
        >"$out/$n.loadgen.txt" 2>&1 & lg=$!; pids+=($lg)
    for _ in $(seq 1200); do
        [ "$(metric 19961 tether_gateway_connections_open)" = "$n" ] \
            && [ "$(metric 19963 'tether_state_sessions{state="online"}')" = "$n" ] && break
        sleep 0.1
    done
    open=$(metric 19961 tether_gateway_connections_open)
    [ "$open" = "$n" ] || { echo "only $open of $n connections open" >&2; cat "$out/$n.loadgen.txt" >&2; exit 1; }
    sleep "$settle"
    after=$(sample)
    g0=$(cpu_ticks "$gw"); s0=$(cpu_ticks "$st"); t0=$(date +%s.%N)
    sleep "$window"
    g1=$(cpu_ticks "$gw"); s1=$(cpu_ticks "$st"); t1=$(date +%s.%N)
    online=$(metric 19963 'tether_state_sessions{state="online"}')
    open=$(metric 19961 tether_gateway_connections_open)
    lg_status=0; wait "$lg" || lg_status=$?
    cat >"$out/$n.json" <<JSON
{"n": $n, "step": "$step", "procs": $procs, "hold_s": $hold, "gateway_base_fds": $base_fds, "hard_nofile": $hard,
 "open_end": ${open:-0}, "online_end": ${online:-0}, "loadgen_status": $lg_status,
 "cpu": {"gateway_ticks": $((g1 - g0)), "state_ticks": $((s1 - s0)), "seconds": $(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}'), "clk_tck": $(getconf CLK_TCK)},
 "before": $before, "after": $after, "command": "$cmd"}
JSON
    cleanup
    rm -rf "$dir"
done

{
    echo "date=$(date -u +%Y-%m-%d) git=$(git rev-parse --short HEAD 2>/dev/null || echo none)"
    echo "machine=$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -r)"
} >"$out/setup.txt"
python3 bench/lib/c1m_report.py "$out" "$chart"
