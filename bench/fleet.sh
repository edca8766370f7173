#!/usr/bin/env bash
# A fleet of two hosts on one machine, over a six-node Redis 7 Cluster (3 primaries, 3
# replicas, AOF everysec, ACL user): what crossing hosts costs, and what losing a host loses.
#
#   bench/fleet.sh [--smoke | --demo] [--out DIR]
#
#     --smoke    the CI check that the script still runs: every part at the smallest sizes
#     --demo     start the fleet, push through host B to devices on host A for 20 s, print
#                the loadgen summary, stop (what `cargo xtask demo --hosts 2` runs)
#     --out DIR  where JSON, Redis and daemon logs go (default: a new mktemp dir, kept)
#
# Hosts a and b are each a tether-state (--fleet), an echo node and a gateway (1 reactor), on
# loopback ports; "another host" here is another state daemon with its own Redis connections
# and bus channel, not another machine: the figures are what the fleet's own path costs.
#
# 1. Cross-host push latency. One tether-loadgen with C devices logged in on host a's
#    gateway pushes R pushes/s to them (stamped payloads, ACKed) for D s, through host a's
#    push API (same host), then the same through host b's (cross-host: Redis function, bus
#    message to a, a's state daemon, a's gateway). Target: cross p99 <= same p99 + 2 ms.
# 2. Logins through one state daemon, fleet on against fleet off (with the CPU the daemon and
#    the Redis nodes spent per login, from /proc): state/examples/state_load
#    fill (4 links, N distinct devices) against host a's daemon (fleet on) and against a
#    fresh daemon without --fleet, one after the other. Target: fleet >= 50 % of local.
# 3. Host SIGKILL under load: K devices over hosts a and b (loadgen --target a,b deals the
#    connections over both; --resume-on-loss, --reconnect-timeout 10), P pushes/s through
#    host b's push API; after T s host a's state
#    daemon, gateway and node are SIGKILLed together. Every device of a must resume on b
#    within 10 s (reconnects failed = 0, none dropped, as many resumes as takeovers on b) and
#    every push answered delivered/queued must arrive (unique received >= accepted).
#
# Sizes (full / --smoke): C 1000 / 50, R 2000 / 200, D 10 / 2 s; N 200,000 / 2,000;
# K 1000 / 50, P 200 / 20, run 30 / 10 s, kill at 10 / 4 s.
#
# Loopback only; ports 17101-17106 (Redis, bus ports +10000) and 19970-19995 must be free.
# Installs redis-server, redis-tools, python3 and curl when missing (apt-get, the
# distribution's Redis service is not started). Everything started is stopped on exit.
# Output: the Markdown report on stdout (also OUT/report.md); exit 1 if a target is missed
# (not with --smoke) or anything failed. Time: about 2 minutes after the build (--smoke 40 s).
set -euo pipefail
cd "$(dirname "$0")/.."
me=fleet.sh

mode=full out=""
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --smoke) mode=smoke ;;
        --demo) mode=demo ;;
        --out) out=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "$me: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
case $mode in
    smoke) C=50 R=200 D=2 N=2000 K=50 P=20 RUN=10 KILL_AT=4 ;;
    *) C=1000 R=2000 D=10 N=200000 K=1000 P=200 RUN=30 KILL_AT=10 ;;
esac
[[ -n $out ]] || out=$(mktemp -d /tmp/tether-bench-fleet.XXXXXX)
mkdir -p "$out/logs"
source bench/lib/stack.sh
trap_cleanup
need_tools
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    sudo=(); (($(id -u) == 0)) || sudo=(sudo)
    say "apt-get install redis-server redis-tools"
    "${sudo[@]}" sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server redis-tools
    "${sudo[@]}" rm -f /usr/sbin/policy-rc.d
fi

target=${CARGO_TARGET_DIR:-target}
say "building (release)"
cargo build -q --release -p tether-state -p tether-gateway -p tether-echo-node -p tether-loadgen >&2
cargo build -q --release -p tether-state --example state_load >&2
bin=$target/release

REDIS_PORTS=(17101 17102 17103 17104 17105 17106)
redis_pids=()
require_free "${REDIS_PORTS[@]}" 19970 19971 19972 19974 19975 19980 19981 19982 19984 19985 19990 19991
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
echo "tether $password" > "$out/redis-credentials"
chmod 600 "$out/redis-credentials"
jwt_secret=$(head -c 24 /dev/urandom | base64 | tr -d '/+=\n')
printf %s "$jwt_secret" > "$out/jwt"
seeds=127.0.0.1:17101,127.0.0.1:17102,127.0.0.1:17103
rcli() { redis-cli --user tether --pass "$password" --no-auth-warning -h 127.0.0.1 "$@"; }

# ---- the Redis Cluster ----------------------------------------------------------------------
say "Redis Cluster: 3 primaries + 3 replicas on 127.0.0.1:17101-17106"
for port in "${REDIS_PORTS[@]}"; do
    dir=$out/redis/$port
    mkdir -p "$dir"
    cat > "$dir/redis.conf" <<CONF
port $port
bind 127.0.0.1
dir $dir
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout 2000
appendonly yes
appendfsync everysec
save ""
repl-diskless-sync-delay 0
logfile $dir/redis.log
user default off
user tether on >$password ~* &* +@all
masteruser tether
masterauth $password
CONF
    start "redis-$port" redis-server "$dir/redis.conf"
    redis_pids+=("$started_pid")
    wait_port "redis-$port" "$started_pid" "$port"
done
nodes=(); for port in "${REDIS_PORTS[@]}"; do nodes+=("127.0.0.1:$port"); done
rcli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$out/logs/cluster-create.log" 2>&1 \
    || die "redis-cli --cluster create failed (log: $out/logs/cluster-create.log)"
cluster_ok() {
    local port info
    for port in "${REDIS_PORTS[@]}"; do
        rcli -p "$port" cluster info | grep -q cluster_state:ok || return 1
        info=$(rcli -p "$port" info replication)
        [[ $info != *role:slave* || $info == *master_link_status:up* ]] || return 1
    done
}
wait_until 30 "the Redis Cluster ok with its replicas in sync" cluster_ok

# ---- hosts ----------------------------------------------------------------------------------
declare -A state_pid gw_pid node_pid
start_host() {   # start_host NAME BASE : state http BASE, metrics +1, node +2, gateway +4, admin +5
    local name=$1 base=$2
    mkdir -p "$out/$name"
    start "state-$name" env RUST_LOG=warn "$bin/tether-state" --socket "$out/$name/state.sock" \
        --http "127.0.0.1:$base" --metrics "127.0.0.1:$((base + 1))" --journal "$out/$name/journal" \
        --jwt-secret-file "$out/jwt" --max-pending 4096 \
        --fleet --fleet-redis "$seeds" --fleet-host "$name" --fleet-credentials-file "$out/redis-credentials"
    state_pid[$name]=$started_pid
    wait_port "state-$name" "$started_pid" "$base"
    start "node-$name" env RUST_LOG=warn "$bin/tether-echo-node" --listen "127.0.0.1:$((base + 2))"
    node_pid[$name]=$started_pid
    start "gw-$name" env RUST_LOG=warn "$bin/tether-gateway" --listen "127.0.0.1:$((base + 4))" \
        --admin "127.0.0.1:$((base + 5))" --node "127.0.0.1:$((base + 2))" --reactors 1 \
        --pin-cores false --state "$out/$name/state.sock" --id "gw-$name"
    gw_pid[$name]=$started_pid
    wait_port "gw-$name" "$started_pid" "$((base + 4))"
    wait_until 10 "gateway $name's state link up" \
        sh -c "curl -sf http://127.0.0.1:$((base + 5))/metrics | grep -q '^tether_gateway_state_links_up 1'"
}
say "hosts a (127.0.0.1:19974) and b (127.0.0.1:19984)"
start_host a 19970
start_host b 19980

loadgen() {   # loadgen NAME ARGS… : runs tether-loadgen, JSON summary in OUT/NAME.json
    local name=$1; shift
    "$bin/tether-loadgen" --jwt-secret-file "$out/jwt" --quiet --json "$out/$name.json" "$@" \
        >"$out/logs/$name.log" 2>&1 || { tail -n 20 "$out/logs/$name.log" >&2; die "loadgen $name failed"; }
}
field() { python3 -c 'import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): v = v.get(k) if isinstance(v, dict) else None
print(v if v is not None else 0)' "$@"; }

if [[ $mode == demo ]]; then
    say "demo: 1000 devices on host a, 200 pushes/s through host b's push API, 20 s"
    loadgen demo --target 127.0.0.1:19974 --device-prefix demo --conns 1000 --hold 20 \
        --push-rate 200 --push-url http://127.0.0.1:19980
    cat "$out/logs/demo.log"
    echo "fleet demo: pushes posted to host b $(field "$out/demo.json" push_api.posted), delivered $(field "$out/demo.json" push_api.delivered), received on host a $(field "$out/demo.json" push.unique); logs in $out"
    exit 0
fi

# ---- 1. cross-host push latency ---------------------------------------------------------------
say "1. push latency: $C devices on a, $R pushes/s for $D s, through a then through b"
loadgen same --target 127.0.0.1:19974 --device-prefix lat-same --conns "$C" --hold "$D" \
    --push-rate "$R" --push-url http://127.0.0.1:19970
loadgen cross --target 127.0.0.1:19974 --device-prefix lat-cross --conns "$C" --hold "$D" \
    --push-rate "$R" --push-url http://127.0.0.1:19980
same_p50=$(field "$out/same.json" push.latency_us.p50) same_p99=$(field "$out/same.json" push.latency_us.p99)
cross_p50=$(field "$out/cross.json" push.latency_us.p50) cross_p99=$(field "$out/cross.json" push.latency_us.p99)
same_n=$(field "$out/same.json" push.unique) cross_n=$(field "$out/cross.json" push.unique)

# ---- 2. logins through one daemon, fleet on and off -------------------------------------------
say "2. logins: state_load fill, $N devices over 4 links, fleet on (host a) then a daemon without --fleet"
redis_before=$(cpu_ticks "${redis_pids[@]}")
"$bin/examples/state_load" fill --socket "$out/a/state.sock" --conns 4 --sessions "$N" --server-pid "${state_pid[a]}" \
    --secret "$jwt_secret" --hold 0 >"$out/fill-fleet.json" 2>"$out/logs/fill-fleet.log" \
    || die "state_load fill (fleet) failed: $(tail -n 5 "$out/logs/fill-fleet.log")"
redis_ticks=$(($(cpu_ticks "${redis_pids[@]}") - redis_before))
mkdir -p "$out/local"
start state-local env RUST_LOG=warn "$bin/tether-state" --socket "$out/local/state.sock" \
    --http 127.0.0.1:19990 --metrics 127.0.0.1:19991 --journal "$out/local/journal" --jwt-secret-file "$out/jwt"
local_pid=$started_pid
wait_port state-local "$local_pid" 19990
"$bin/examples/state_load" fill --socket "$out/local/state.sock" --conns 4 --sessions "$N" --server-pid "$local_pid" \
    --secret "$jwt_secret" --hold 0 >"$out/fill-local.json" 2>"$out/logs/fill-local.log" \
    || die "state_load fill (local) failed: $(tail -n 5 "$out/logs/fill-local.log")"
stop "$local_pid"
fleet_lps=$(field "$out/fill-fleet.json" logins_per_s) local_lps=$(field "$out/fill-local.json" logins_per_s)
fleet_cpu=$(field "$out/fill-fleet.json" server_cpu_us_per_login) local_cpu=$(field "$out/fill-local.json" server_cpu_us_per_login)
redis_cpu=$(python3 -c "import sys; t, hz, n = map(float, sys.argv[1:]); print(t / hz * 1e6 / n)" "$redis_ticks" "$(getconf CLK_TCK)" "$N")

# ---- 3. host SIGKILL under load -----------------------------------------------------------------
say "3. host a SIGKILLed at ${KILL_AT} s: $K devices, $P pushes/s through b, ${RUN} s"
"$bin/tether-loadgen" --jwt-secret-file "$out/jwt" --quiet --json "$out/kill.json" \
    --target 127.0.0.1:19974,127.0.0.1:19984 --resume-on-loss --reconnect-timeout 10 \
    --device-prefix kill --conns "$K" --hold "$RUN" --push-rate "$P" --push-url http://127.0.0.1:19980 \
    >"$out/logs/kill.log" 2>&1 &
lg=$!
sleep "$KILL_AT"
killed_at=$(date +%s.%N)
kill -KILL "${state_pid[a]}" "${gw_pid[a]}" "${node_pid[a]}" 2>/dev/null || true
for p in "${state_pid[a]}" "${gw_pid[a]}" "${node_pid[a]}"; do wait "$p" 2>/dev/null || true; forget_pid "$p"; done
wait "$lg" || { tail -n 20 "$out/logs/kill.log" >&2; die "loadgen kill run failed"; }
accepted=$(python3 -c 'import json, sys; a = json.load(open(sys.argv[1]))["push_api"]; print(a["delivered"] + a["queued"])' "$out/kill.json")
received=$(field "$out/kill.json" push.unique)
resumed=$(field "$out/kill.json" reconnects.ok) failed=$(field "$out/kill.json" reconnects.failed)
dropped=$(field "$out/kill.json" conns.dropped)
takeovers=$(metric 19981 tether_state_fleet_takeovers_total)

# ---- report -----------------------------------------------------------------------------------
ok() { python3 -c "import sys; sys.exit(0 if ($1) else 1)" && echo yes || echo NO; }
t1=$(ok "$cross_p99 <= $same_p99 + 2000")
t2=$(ok "$fleet_lps >= 0.5 * $local_lps")
t3=$(ok "$received >= $accepted and $failed == 0 and $dropped == 0 and $resumed == $takeovers")
{
    echo "### bench/fleet.sh ($mode, $(git_rev), $(date -u +%Y-%m-%d))"
    echo
    echo "| part | measured | target | met |"
    echo "|---|---|---|---|"
    echo "| push latency, same host (through a) | p50 ${same_p50} µs, p99 ${same_p99} µs ($same_n pushes) | | |"
    echo "| push latency, cross-host (through b) | p50 ${cross_p50} µs, p99 ${cross_p99} µs ($cross_n pushes) | p99 ≤ same + 2,000 µs | $t1 |"
    echo "| logins/s, one daemon, fleet on (daemon CPU µs per login; the six Redis nodes' CPU µs per login) | $(printf %.0f "$fleet_lps") ($(printf %.1f "$fleet_cpu"); $(printf %.1f "$redis_cpu")) | ≥ 50 % of local | $t2 |"
    echo "| logins/s, one daemon, fleet off (daemon CPU µs per login) | $(printf %.0f "$local_lps") ($(printf %.1f "$local_cpu")) | | |"
    echo "| host SIGKILL: pushes accepted / received | $accepted / $received | none lost | $t3 |"
    echo "| host SIGKILL: devices of a resumed on b / failed / dropped (takeovers on b) | $resumed / $failed / $dropped ($takeovers) | all within 10 s | $t3 |"
    echo
    echo "C=$C R=$R D=$D N=$N K=$K P=$P run=$RUN kill_at=$KILL_AT; raw JSON and logs: $out"
} | tee "$out/report.md"
if [[ $mode != smoke && ( $t1 == NO || $t2 == NO || $t3 == NO ) ]]; then exit 1; fi
if [[ $t3 == NO && $mode == smoke ]]; then die "host SIGKILL part lost pushes or devices"; fi
exit 0
