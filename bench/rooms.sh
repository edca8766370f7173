#!/usr/bin/env bash
# Room fan-out side by side: one room with M members on ONE server process, P publishes/s of
# S bytes, through Tether (tether-state with room_merge_ms, one tether-gateway), NATS
# (nats-server: M subscribers of one subject) and nginx + nchan (M WebSocket subscribers of
# one channel), measured by the same tether-loadgen with the same stamped payloads.
#
#   bench/rooms.sh [--smoke] [--members M] [--rate P] [--size S] [--merge-ms MS]
#                  [--duration D] [--only tether|nats|nchan] [--gateway BIN] [--out DIR]
#
#     --members M    subscribers (default 19900: one gateway/nginx/nats process holds them all
#                    under the hard limit of 20,000 open files per process)
#     --rate P       publishes per second (default 100), --size S bytes each (default 32)
#     --merge-ms MS  Tether's room_merge_ms (default 100)
#     --duration D   seconds of publishing per system (default 20; the first 3 are warmup)
#     --gateway BIN  the tether-gateway binary to measure (default: this tree's), to set
#                    two builds side by side
#     --smoke        the CI check that the script still runs: 200 members, 4 s, all three
#
# Per system, in one run: deliveries/s (against M × P expected), CPU (user + sys from /proc)
# of the server processes per delivered message — Tether's gateway and state daemon apart,
# nats-server, the nginx worker — over a window in the steady part of the run, the
# publish → client latency (loadgen HdrHistogram: p50/p99/p99.9/max; one clock, one host),
# server RSS growth per subscriber (RSS during the load − RSS before the subscribers came),
# messages per frame (Tether merges a window into one ROOM frame; the peers send each message
# alone), gaps (sequence jumps, messages missing) and duplicates.
#
# Setup: the loadgen runs ceil(M / 9000) processes of one thread from 127.0.0.2-127.0.0.60
# (--connect-rate 5000); the publisher is loadgen process 0's thread (HTTP keep-alive POSTs
# to the state daemon / nchan, PUBs to NATS). Tether: tether-state (--heartbeat-s 60: no
# heartbeat inside a run), one echo node, one gateway (2 reactors, the default); logins are
# JWTs whose `rooms` claim lets each member JOIN the room itself. nginx: worker_processes 1,
# nchan pub/sub locations. nats-server: defaults. All on the same 2 cores, nothing pinned.
#
# Installs nats-server, nginx, libnginx-mod-nchan, iproute2, curl and python3 with apt-get
# when missing (never starts their services). Loopback only; ports 19850-19857 must be free.
# Output: the Markdown table on stdout (also OUT/report.md), raw JSON in OUT. Time: about
# 3 minutes after the build (--smoke: about 30 s).
set -euo pipefail
cd "$(dirname "$0")/.."
me=rooms.sh

gateway_bin="" members=19900 rate=100 size=32 merge_ms=100 duration=20 warmup=3 only="" out="" smoke=0
while (($#)); do
    case $1 in
        --smoke) members=200 duration=4 warmup=1 smoke=1 ;;
        --members) members=$2; shift ;;
        --rate) rate=$2; shift ;;
        --size) size=$2; shift ;;
        --merge-ms) merge_ms=$2; shift ;;
        --duration) duration=$2; shift ;;
        --only) only=$2; shift ;;
        --gateway) gateway_bin=$2; shift ;;
        --out) out=$2; shift ;;
        -h | --help) sed -n '2,39p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "$me: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done
[[ -n $out ]] || out=$(mktemp -d /tmp/tether-bench-rooms.XXXXXX)
mkdir -p "$out/logs"
source bench/lib/stack.sh
trap_cleanup

export PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v python3 >/dev/null || missing+=(python3)
command -v curl >/dev/null || missing+=(curl)
command -v ss >/dev/null || missing+=(iproute2)
command -v nats-server >/dev/null || missing+=(nats-server)
command -v nginx >/dev/null || missing+=(nginx)
nchan_so=/usr/lib/nginx/modules/ngx_nchan_module.so
[[ -f $nchan_so ]] || missing+=(libnginx-mod-nchan)
if ((${#missing[@]})); then
    made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then   # installing must not start the services
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
    fi
    say "apt-get install ${missing[*]}"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    ((made_policy)) && rm -f /usr/sbin/policy-rc.d
fi

say "cargo build --release -p tether-state -p tether-gateway -p tether-echo-node -p tether-loadgen"
cargo build --release --quiet -p tether-state -p tether-gateway -p tether-echo-node -p tether-loadgen
bin=${CARGO_TARGET_DIR:-target}/release
gateway_bin=${gateway_bin:-$bin/tether-gateway}
nats_port=19850 nchan_port=19851 http_port=19852 metrics_port=19853 gw_port=19854 admin_port=19855 node_port=19856 nats_mon=19857
require_free $nats_port $nchan_port $http_port $metrics_port $gw_port $admin_port $node_port $nats_mon

load0=$(cut -d' ' -f1-3 /proc/loadavg)
procs=$(((members + 8999) / 9000))
tck=$(getconf CLK_TCK)
common=(--conns "$members" --procs "$procs" --threads 1 --source-ips 127.0.0.2-127.0.0.60
    --connect-rate 5000 --connect-timeout 20 --warmup "$warmup" --publish-rate "$rate"
    --publish-size "$size" --rooms 1 --quiet)

# How many members each system holds, from what it reports (cheap to ask twice a second).
tether_members() { metric $metrics_port 'tether_state_sessions{state="online"}'; }
nats_members() { curl -sf --max-time 2 "http://127.0.0.1:$nats_mon/varz" | python3 -c 'import json, sys; print(json.load(sys.stdin)["connections"])' 2>/dev/null || echo 0; }
# (nginx's one worker is too busy to answer nchan_stub_status under this load: count sockets.)
nchan_members() { ss -Htn state established "( sport = :$nchan_port )" 2>/dev/null | wc -l || true; }
sum_rss() { local t=0 p; for p; do t=$((t + $(rss_kib "$p"))); done; echo "$t"; }

# measure NAME COUNT_CMD GROUP=PIDS… -- LOADGEN_ARGS… : runs the loadgen against one
# system; once COUNT_CMD says every member is in (or the count has stopped growing: some
# were refused), waits out the warmup and samples CPU and RSS of each group over the steady
# part; writes OUT/NAME.json and OUT/NAME.loadgen.json.
measure() {
    local name=$1 count_cmd=$2; shift 2
    local groups=() g
    while [[ $1 != -- ]]; do groups+=("$1"); shift; done
    shift
    local rss0=() rss1=() t0=() t1=()
    for g in "${groups[@]}"; do rss0+=("$(sum_rss ${g#*=})"); done
    say "$name: ${members} members, ${rate}/s × ${size} B for ${duration} s"
    echo "tether-loadgen $* ${common[*]}" >"$out/$name.command"
    "$bin/tether-loadgen" "$@" "${common[@]}" --json "$out/$name.loadgen.json" \
        >"$out/$name.loadgen.txt" 2>"$out/logs/$name.loadgen.log" &
    local lg=$!
    pids+=("$lg")
    local i in=0 last=-1 still=0
    for ((i = 0; i < 240; i++)); do
        in=$($count_cmd || true); in=${in:-0}
        ((in >= members)) && break
        if ((in > 0 && in == last)); then ((++still >= 3)) && break; else still=0; fi
        last=$in
        kill -0 "$lg" 2>/dev/null || die "$name: the loadgen ended before the members were in (see $out/$name.loadgen.txt)"
        sleep 0.5
    done
    ((in >= members)) || say "$name: $in of $members members in; measuring them"
    # The start line follows the last member by a little; then the warmup.
    sleep "$(awk -v w="$warmup" 'BEGIN {print w + 0.5}')"
    local w0 w1 span
    w0=$(date +%s.%N)
    for g in "${groups[@]}"; do t0+=("$(cpu_ticks ${g#*=})"); done
    span=$(awk -v d="$duration" -v w="$warmup" 'BEGIN {s = d - w - 2; print (s < 1 ? 1 : s)}')
    sleep "$span"
    for g in "${groups[@]}"; do t1+=("$(cpu_ticks ${g#*=})"); rss1+=("$(sum_rss ${g#*=})"); done
    w1=$(date +%s.%N)
    local status=0
    wait "$lg" || status=$?
    forget_pid "$lg"
    {
        printf '{"system": "%s", "members": %s, "rate": %s, "size": %s, "merge_ms": %s, "procs": %s,\n' \
            "$name" "$members" "$rate" "$size" "$merge_ms" "$procs"
        printf ' "loadgen_status": %s, "window_s": %s, "clk_tck": %s, "groups": {' \
            "$status" "$(awk -v a="$w0" -v b="$w1" 'BEGIN {print b - a}')" "$tck"
        for i in "${!groups[@]}"; do
            ((i)) && printf ', '
            printf '"%s": {"ticks": %s, "rss0_kib": %s, "rss1_kib": %s}' "${groups[i]%%=*}" \
                "$((t1[i] - t0[i]))" "${rss0[i]}" "${rss1[i]}"
        done
        printf '}}\n'
    } >"$out/$name.json"
}

want() { [[ -z $only || $only == "$1" ]]; }

# --- Tether ---------------------------------------------------------------------------------
if want tether; then
    dir=$(mktemp -d "$out/tether.XXXXXX")
    secret=rooms-bench-secret
    printf '%s' "$secret" >"$dir/secret"
    start state env RUST_LOG=warn "$bin/tether-state" --socket "$dir/state.sock" --journal "$dir/journal" \
        --http 127.0.0.1:$http_port --metrics 127.0.0.1:$metrics_port --jwt-secret-file "$dir/secret" \
        --heartbeat-s 60 --room-merge-ms "$merge_ms"
    st=$started_pid
    start node env RUST_LOG=warn "$bin/tether-echo-node" --listen 127.0.0.1:$node_port --reactors 1
    wait_port node "$started_pid" $node_port
    wait_port state "$st" $metrics_port
    start gateway env RUST_LOG=error "$gateway_bin" --listen 127.0.0.1:$gw_port \
        --admin 127.0.0.1:$admin_port --node 127.0.0.1:$node_port --state "$dir/state.sock" \
        --pin-cores false --max-connections 100000
    gw=$started_pid
    wait_port gateway "$gw" $gw_port
    wait_until 10 "the gateway's state links" bash -c "curl -sf http://127.0.0.1:$admin_port/metrics | grep -q '^tether_gateway_state_links_up [1-9]'"
    sleep 1
    measure tether tether_members "gateway=$gw" "state=$st" -- \
        --target 127.0.0.1:$gw_port --jwt-secret-file "$dir/secret" --push-url "http://127.0.0.1:$http_port" \
        --hold "$duration"
    curl -sf "http://127.0.0.1:$http_port/v1/rooms/room-0" >"$out/tether.room.json" 2>/dev/null || true
    stop "$gw"; stop "$st"; cleanup
fi

# --- NATS -----------------------------------------------------------------------------------
if want nats; then
    start nats nats-server -a 127.0.0.1 -p $nats_port -m $nats_mon
    ns=$started_pid
    wait_port nats "$ns" $nats_port
    wait_port nats-monitor "$ns" $nats_mon
    measure nats nats_members "nats-server=$ns" -- \
        --peer nats --peer-addr 127.0.0.1:$nats_port --duration "$duration"
    stop "$ns"
fi

# --- nginx + nchan --------------------------------------------------------------------------
if want nchan; then
    ndir=$(mktemp -d "$out/nchan.XXXXXX")
    cat >"$ndir/nginx.conf" <<CONF
load_module $nchan_so;
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $ndir/nginx.pid;
error_log $ndir/error.log warn;
events { worker_connections 20000; }
http {
    access_log off;
    client_body_temp_path $ndir/body;
    server {
        listen 127.0.0.1:$nchan_port backlog=4096;
        location = /sub { nchan_subscriber websocket; nchan_channel_id \$arg_id; }
        location = /pub { nchan_publisher; nchan_channel_id \$arg_id; }
    }
}
CONF
    start nginx nginx -c "$ndir/nginx.conf" -p "$ndir" -e "$ndir/error.log"
    nm=$started_pid
    wait_port nginx "$nm" $nchan_port
    workers=$(pgrep -P "$nm" | tr '\n' ' ')
    [[ -n $workers ]] || die "nginx started no worker"
    measure nchan nchan_members "nginx-worker=$workers" -- \
        --peer nchan --peer-addr 127.0.0.1:$nchan_port --duration "$duration"
    stop "$nm"
fi

{
    echo "date=$(date -u +%Y-%m-%dT%H:%MZ) git=$(git_rev) machine=$(nproc) cores, $(uname -r); load average before: $load0, after: $(cut -d' ' -f1-3 /proc/loadavg)"
    python3 bench/lib/rooms_report.py "$out"
} | tee "$out/report.md"
say "raw results in $out"
