#!/usr/bin/env bash
# CPU per heartbeat: one gateway (1 reactor, with tether-state and one echo node) holding N
# logged-in connections that only heartbeat, the PINGs spread evenly over the interval (the
# load generator connects at N / interval per second), and the CPU (user + sys, from /proc)
# the gateway and the load generator spend per PING over one window.
#
#   bench/heartbeat.sh [--conns N] [--heartbeat S] [--procs P] [--coalesce-ms MS]
#   bench/heartbeat.sh --smoke    the CI check that the script runs: 200 connections, 2 s,
#                                 2 processes, coalescing 5 ms, a 2 s window
#
# Defaults: 18,000 connections, heartbeat_s 30 (600 PINGs/s), 1 load generator process,
# coalescing off on both sides. --procs 20 spreads the connections over 20 load generator
# processes, so that PINGs reach the gateway one by one (as from independent clients), not
# in the bursts one process's 50 ms heartbeat grid makes. Ports 29950-29963.
set -euo pipefail
cd "$(dirname "$0")/.."

conns=18000 heartbeat=30 procs=1 coalesce=0 window=20
while [ $# -gt 0 ]; do
    case $1 in
        --conns) conns=$2; shift 2 ;;
        --heartbeat) heartbeat=$2; shift 2 ;;
        --procs) procs=$2; shift 2 ;;
        --coalesce-ms) coalesce=$2; shift 2 ;;
        --smoke) conns=200 heartbeat=2 procs=2 coalesce=5 window=2; shift ;;
        *) echo "unknown argument $1 (see the head of $0)" >&2; exit 2 ;;
    esac
done
target=${CARGO_TARGET_DIR:-target}
bin=$target/release
cargo build --release --quiet -p tether-echo-node -p tether-gateway -p tether-loadgen -p tether-state
source bench/lib/cpu.sh
for port in 29950 29960 29961 29962 29963; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "port $port is in use" >&2; exit 1; fi
done
pids=()
dir=$(mktemp -d)
cleanup() { for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
trap "exit 130" INT TERM
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
frames() { { exec 3<>/dev/tcp/127.0.0.1/29961 && printf 'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3 && cat <&3; } 2>/dev/null | awk '$1 == "tether_gateway_frames_received_total" {print $2}'; }

printf heartbeat-bench-secret >"$dir/secret"
RUST_LOG=warn "$bin/tether-state" --socket "$dir/state.sock" --journal "$dir/journal" \
    --http 127.0.0.1:29962 --metrics 127.0.0.1:29963 --jwt-secret-file "$dir/secret" \
    --heartbeat-s "$heartbeat" 2>/dev/null & pids+=($!)
RUST_LOG=warn "$bin/tether-echo-node" --listen 127.0.0.1:29950 --reactors 1 & pids+=($!)
wait_port 29950; wait_port 29963
RUST_LOG=error "$bin/tether-gateway" --listen 127.0.0.1:29960 --admin 127.0.0.1:29961 \
    --node 127.0.0.1:29950 --state "$dir/state.sock" --reactors 1 --pin-cores false \
    --coalesce-ms "$coalesce" & gw=$!; pids+=($gw)
wait_port 29960; wait_port 29961
sleep 1
# The ramp takes one interval, so the PINGs are spread evenly over it; the window starts
# once every connection has sent its first.
cp "$dir/secret" "$dir/loadgen-secret"
"$bin/tether-loadgen" --target 127.0.0.1:29960 --jwt-secret-file "$dir/loadgen-secret" --conns "$conns" \
    --procs "$procs" --threads 1 --source-ips 127.0.0.2-127.0.0.60 \
    --connect-rate $((conns / heartbeat)) --connect-timeout 10 --hold $((window + 2 * heartbeat + 10)) \
    --coalesce-ms "$coalesce" --quiet --json "$dir/loadgen.json" >"$dir/loadgen.txt" 2>&1 & lg=$!; pids+=($lg)
sleep $((2 * heartbeat + 2))
lgp=$(pgrep -f "$dir/loadgen-secret" | tr '\n' ' ')
g0=$(cpu_ticks "$gw"); l0=$(cpu_ticks $lgp); f0=$(frames)
sleep "$window"
g1=$(cpu_ticks "$gw"); l1=$(cpu_ticks $lgp); f1=$(frames)
wait "$lg" || { cat "$dir/loadgen.txt" >&2; exit 1; }
grep -E "heartbeats|hold " "$dir/loadgen.txt"
awk -v n="$conns" -v hb="$heartbeat" -v p="$procs" -v c="$coalesce" -v f=$((f1 - f0)) -v g=$((g1 - g0)) \
    -v l=$((l1 - l0)) -v w="$window" -v tck="$(getconf CLK_TCK)" 'BEGIN {
    printf "%d connections, heartbeat %d s, %d loadgen process(es), coalesce %d ms: %d PINGs in %d s;", n, hb, p, c, f, w
    printf " gateway %.1f us, load generator %.1f us per PING\n", g * 1e6 / tck / f, l * 1e6 / tck / f }'
