#!/usr/bin/env bash
# Memory per idle connection in tether-gateway: RSS before and after N idle client
# connections (default 10,000), divided by N. Also prints the kernel's socket memory from
# /proc/net/sockstat, which RSS does not include.
#
#   bench/idle.sh [N]
#   bench/idle.sh --smoke     the CI check that the script still runs: 50 connections
#
# The connections come from tether-loadgen with a negligible open-loop rate (one frame per
# connection every 10,000 s, spread over that span, so all but a handful stay idle for the
# measurement). Ports: nodes 19930-19933, gateway 19940, admin 19941 on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

n="${1:-10000}"
hold=20
[[ $n == --smoke ]] && n=50 hold=5
command -v python3 >/dev/null || { apt-get update -q && apt-get install -y -q python3; }
cargo build --release --quiet -p tether-echo-node -p tether-gateway -p tether-loadgen
bin=${CARGO_TARGET_DIR:-target}/release
pids=()
# Newest first: the load and the gateway stop before the nodes they use.
cleanup() { for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
sock_pages() { awk '/^TCP:/ {for (i = 1; i <= NF; i++) if ($i == "mem") print $(i + 1)}' /proc/net/sockstat; }
stats() {
    { exec 3<>/dev/tcp/127.0.0.1/19941 && printf 'GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3 && cat <&3; } 2>/dev/null | sed '1,/^\r$/d'
}
open_conns() {
    { exec 3<>/dev/tcp/127.0.0.1/19941 && printf 'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3 && cat <&3; } 2>/dev/null \
        | awk '/^tether_gateway_connections_open / {print $2}'
}
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

nodes=""
for port in 19930 19931 19932 19933 19940 19941; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "port $port is in use: stop what listens there" >&2; exit 1; fi
done
for port in 19930 19931 19932 19933; do
    RUST_LOG=warn "$bin/tether-echo-node" --listen "127.0.0.1:$port" --reactors 1 & pids+=($!)
    nodes="${nodes:+$nodes,}127.0.0.1:$port"
    wait_port "$port"
done
RUST_LOG=warn "$bin/tether-gateway" --listen 127.0.0.1:19940 --admin 127.0.0.1:19941 \
    --node "$nodes" --reactors 2 & gw=$!; pids+=($gw)
wait_port 19940
sleep 1
rss0=$(rss_kib "$gw"); sock0=$(sock_pages)

"$bin/tether-loadgen" --target 127.0.0.1:19940 --conns "$n" --rate 0.0001 --duration "$hold" \
    --connect-rate 5000 --quiet >/dev/null & pids+=($!)
for _ in $(seq 600); do
    [ "$(open_conns)" = "$n" ] && break
    sleep 0.1
done
[ "$(open_conns)" = "$n" ] || { echo "only $(open_conns) of $n connections opened" >&2; exit 1; }
sleep 2
rss1=$(rss_kib "$gw"); sock1=$(sock_pages)
page=$(getconf PAGESIZE)
per_reactor=$(stats | python3 -c 'import json,sys; print(" ".join(str(r["open"]) for r in json.load(sys.stdin)["reactors"]))')

echo "tether-gateway, $n idle connections (2 reactors, 4 nodes):"
echo "  RSS before   ${rss0} KiB"
echo "  RSS after    ${rss1} KiB"
awk -v a="$rss0" -v b="$rss1" -v n="$n" 'BEGIN { printf "  user space   %.1f bytes per idle connection (RSS delta / %d)\n", (b - a) * 1024 / n, n }'
awk -v a="$sock0" -v b="$sock1" -v n="$n" -v p="$page" 'BEGIN { printf "  kernel TCP   %.1f bytes per connection, both ends on this host (sockstat mem delta / %d)\n", (b - a) * p / n, n }'
echo "  per reactor  $per_reactor open connections"
