#!/usr/bin/env bash
# The gateway beside a black-hole node: one healthy echo node and one node that answers
# health pings (NODE_PING → NODE_PONG) but never a REQUEST, behind one tether-gateway.
# Clients send requests for a while, so about half go to the black hole and must come back
# as REQUEST_TIMEOUT; then the clients leave. Does the gateway give back what those
# requests held?
#
#   bench/blackhole.sh [--smoke] [--seconds S] [--out DIR]
#
#     --seconds S  how long the clients send (default 60)
#     --smoke      the CI check that the script still runs: 2 s of 10 clients at 20
#                  requests/s each, every part of the report (about 15 s)
#     --out DIR    where the loadgen JSON, RSS samples, /metrics dumps and logs go
#                  (default: a new mktemp dir, printed at the end; kept)
#
# The gateway: --reactors 2, --request-timeout-ms 2000, nodes 127.0.0.1:19970 (tether-echo-node)
# and 127.0.0.1:19971 (bench/lib/blackhole_node.py), round robin, clients on
# 127.0.0.1:19972, admin 127.0.0.1:19973 (all four ports must be free). The clients:
# tether-loadgen, 200 connections in an open loop of 50 requests/s each (10,000/s),
# 1,024-byte payloads flagged resend-safe (so the gateway keeps a copy of each), and a drain
# longer than the request timeout, so every request's fate is heard.
#
# Reported: the requests sent, answered and timed out (loadgen's JSON), what the black hole
# swallowed; the gateway's VmRSS (/proc/PID/status) at the start, its peak under load and
# 5 s after the clients left; the gateway's node_outstanding (/metrics) after they left.
# Exit status 1 when a request was never answered at all, or node_outstanding is not 0 after
# the clients left (the requests' deadlines must free every entry). The issue's memory
# target (RSS back within 1 MiB of the start) is reported as met or not met; it does not
# change the exit status. Output: Markdown on stdout (also OUT/report.md), progress on
# stderr. Everything started is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
me=blackhole.sh

seconds=60 conns=200 rate=50 payload=1024 smoke=0 out="" args="$*"
usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --smoke) smoke=1 seconds=2 conns=10 rate=20 ;;
        --seconds) seconds=$2; shift ;;
        --out) out=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "$me: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[[ $seconds =~ ^[0-9]+$ ]] && ((seconds > 0)) || { echo "$me: --seconds takes a whole number above 0" >&2; exit 2; }

request_timeout_ms=2000
settle=5   # seconds after the clients left before the last RSS and /metrics reading
node_port=19970 hole_port=19971 gw_port=19972 admin_port=19973
bin=${CARGO_TARGET_DIR:-target}/release
lib=bench/lib

source "$lib/stack.sh"
[[ -n $out ]] || out=$(mktemp -d /tmp/tether-blackhole.XXXXXX)
mkdir -p "$out/logs"
out=$(cd "$out" && pwd)
trap_cleanup
need_tools

say "cargo build --release -p tether-echo-node -p tether-gateway -p tether-loadgen"
cargo build --release --quiet -p tether-echo-node -p tether-gateway -p tether-loadgen
require_free "$node_port" "$hole_port" "$gw_port" "$admin_port"

# ---- the stack ----------------------------------------------------------------------------
start node env RUST_LOG=warn "$bin/tether-echo-node" --listen "127.0.0.1:$node_port" --reactors 1
wait_port node "$started_pid" "$node_port"
start blackhole python3 "$lib/blackhole_node.py" --listen "127.0.0.1:$hole_port" --stats "$out/blackhole.json"
hole=$started_pid
wait_port blackhole "$hole" "$hole_port"
gw_cmd=("$bin/tether-gateway" --listen "127.0.0.1:$gw_port" --admin "127.0.0.1:$admin_port"
        --node "127.0.0.1:$node_port,127.0.0.1:$hole_port" --reactors 2 --pin-cores false
        --request-timeout-ms "$request_timeout_ms")
start gateway env RUST_LOG=warn "${gw_cmd[@]}"
gw=$started_pid
wait_port gateway "$gw" "$gw_port"
both_up() { [[ $(metric_sum "$admin_port" tether_gateway_node_up) == 2 ]]; }
wait_until 10 "both nodes up at the gateway" both_up
((smoke)) || say "waiting for a quiet machine (60 s at most): $(python3 "$lib/machine.py" quiet 20 60)% of a core busy"

# ---- the load -----------------------------------------------------------------------------
sleep 1
rss_start=$(rss_kib "$gw")
start procmon python3 "$lib/procmon.py" "$out/rss.jsonl" --proxy "$gw" --interval 0.25
mon=$started_pid
drain_s=$((request_timeout_ms / 1000 + 2))
lg_cmd=("$bin/tether-loadgen" --target "127.0.0.1:$gw_port" --conns "$conns" --rate "$rate"
        --payload "$payload" --resend-safe true --duration "$seconds" --drain "$drain_s"
        --threads 1 --quiet --json "$out/loadgen.json")
say "$conns clients, $rate requests/s each, for $seconds s (+ $drain_s s drain)"
lg_status=0
"${lg_cmd[@]}" >"$out/logs/loadgen.txt" 2>&1 || lg_status=$?
[[ -s $out/loadgen.json ]] || { cat "$out/logs/loadgen.txt" >&2; die "tether-loadgen wrote no summary (exit $lg_status)"; }
say "clients gone; $settle s to settle"
sleep "$settle"
rss_after=$(rss_kib "$gw")
http_get "$admin_port" /metrics >"$out/metrics-after.txt"
kill -0 "$gw" 2>/dev/null || die "the gateway died (log: $out/logs/gateway.log)"
stop "$mon"
stop "$hole"   # writes blackhole.json

json_kv "$out/setup.json" date "$(date -u '+%Y-%m-%d %H:%M UTC')" git "$(git_rev)" \
    machine "$(python3 "$lib/machine.py" describe)" \
    versions "$("$bin/tether-gateway" --version), $("$bin/tether-loadgen" --version), $(python3 --version)" \
    gateway_cmd "${gw_cmd[*]}" loadgen_cmd "${lg_cmd[*]}" seconds "$seconds" settle "$settle" \
    request_timeout_ms "$request_timeout_ms" rss_start "$rss_start" rss_after "$rss_after" \
    loadgen_status "$lg_status" command "bench/blackhole.sh $args"
python3 "$lib/faults_report.py" blackhole "$out" | tee "$out/report.md"
