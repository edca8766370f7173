#!/usr/bin/env bash
# The gateway's transports side by side with plain TCP and with nginx terminating TLS: memory
# per idle connection, TLS handshakes per core-second, CPU per echoed message, and the p99 of
# established TLS clients during a handshake storm. One run, the same loadgen, the same echo
# node, the same cores.
#
#   bench/transports.sh [--smoke] [--conns N] [--duration S]
#
#     --conns N      idle connections per memory row (default 5000; the hard limit of 20,000
#                    open files per process bounds it: nginx holds 2 sockets per client)
#     --duration S   seconds of each echo / latency run (default 10)
#     --smoke        the CI check that the script still runs: 50 idle connections, 1 s runs
#
# Layout (2 cores, taskset): core 0 runs the process under test alone (tether-gateway
# --reactors 1, or nginx with worker_processes 1); core 1 runs the echo node, tether-loadgen
# and the handshake clients. Certificates: a test CA and an ECDSA P-256 server certificate
# made with the openssl CLI. nginx is the `stream` module terminating TLS (TLS 1.2 and 1.3,
# session cache and tickets) in front of the same echo node.
#
# Rows:
#   idle memory   RSS delta of the process under test / N, for N idle connections (TCP, TLS,
#                 WS, WSS on the gateway; TLS on nginx, whose worker also holds one upstream
#                 connection per client — that is how nginx proxies)
#   handshakes    `openssl s_time -new` (full TLS 1.3 handshakes, 4 clients) for a fixed time;
#                 handshakes per CPU-second of the server = handshakes a core can do
#   echo CPU      tether-loadgen, 100 connections, --pipeline 8, 64-byte payloads: CPU (user +
#                 sys from /proc) of the process under test per echoed message
#   storm         100 TLS clients at 50 msg/s each: p99 quiet, then p99 while 6 `openssl
#                 s_time -new` clients hammer the same listener
#
# Installs nginx, libnginx-mod-stream, openssl, python3, util-linux and iproute2 with apt-get
# when missing; never starts their services. Loopback only; ports 19780-19799 must be free.
# Output: Markdown on stdout, progress on stderr. Time: about 3 minutes after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

conns=5000 duration=10 smoke=0
while (($#)); do
    case $1 in
        --smoke) conns=50 duration=1 smoke=1 ;;
        --conns) conns=$2; shift ;;
        --duration) duration=$2; shift ;;
        -h | --help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "transports.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done
say() { echo "== $*" >&2; }
die() { echo "transports.sh: $*" >&2; exit 1; }

export PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v python3 >/dev/null || missing+=(python3)
command -v taskset >/dev/null || missing+=(util-linux)
command -v openssl >/dev/null || missing+=(openssl)
command -v ss >/dev/null || missing+=(iproute2)
command -v nginx >/dev/null || missing+=(nginx)
[[ -f /usr/lib/nginx/modules/ngx_stream_module.so ]] || nginx -V 2>&1 | grep -qE -- '--with-stream( |$)' ||
    missing+=(libnginx-mod-stream)
if ((${#missing[@]})); then
    made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then   # installing must not start the nginx service
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
    fi
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    ((made_policy)) && rm -f /usr/sbin/policy-rc.d
fi
stream_load=""
nginx -V 2>&1 | grep -qE -- '--with-stream( |$)' || stream_load="load_module /usr/lib/nginx/modules/ngx_stream_module.so;"

say "cargo build --release -p tether-echo-node -p tether-gateway -p tether-loadgen"
cargo build --release --quiet -p tether-echo-node -p tether-gateway -p tether-loadgen
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d /tmp/tether-transports-bench.XXXXXX)
node_port=19790 tcp_port=19780 tls_port=19781 ws_port=19782 wss_port=19783 admin_port=19784 nginx_port=19785
for port in $node_port $tcp_port $tls_port $ws_port $wss_port $admin_port $nginx_port; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "port $port is in use"; fi
done

pids=()
cleanup() {
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; die "port $1 never opened"; }
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
rss_kib() { local t=0 p; for p in "$@"; do t=$((t + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status"))); done; echo $t; }
source bench/lib/cpu.sh
hz=$(getconf CLK_TCK)
established() { ss -Htn state established "( sport = :$1 )" | wc -l; }
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {'d': d}))" "$@"; }

load0=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- certificates ------------------------------------------------------------------------
say "test CA and an ECDSA P-256 server certificate"
openssl req -x509 -nodes -days 2 -subj "/CN=Tether bench CA" -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
openssl req -nodes -subj /CN=localhost -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$work/gw.key" -out "$work/gw.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$work/ext"
openssl x509 -req -days 2 -in "$work/gw.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
    -extfile "$work/ext" -out "$work/gw.crt" 2>/dev/null
tls_flags=(--tls-ca "$work/ca.crt")

# ---- the processes -----------------------------------------------------------------------
RUST_LOG=warn taskset -c 1 "$bin/tether-echo-node" --listen "127.0.0.1:$node_port" --reactors 1 & pids+=($!)
wait_port $node_port

start_gateway() {
    RUST_LOG=warn taskset -c 0 "$bin/tether-gateway" --reactors 1 --acceptors 1 --pin-cores false \
        --listen "127.0.0.1:$tcp_port" --listen-tls "127.0.0.1:$tls_port" --listen-ws "127.0.0.1:$ws_port" \
        --listen-wss "127.0.0.1:$wss_port" --tls-cert "$work/gw.crt" --tls-key "$work/gw.key" \
        --admin "127.0.0.1:$admin_port" --node "127.0.0.1:$node_port" --idle-timeout-ms 0 \
        --max-connections 100000 & gw=$!; pids+=($gw)
    wait_port $tcp_port; wait_port $wss_port
    sleep 0.5
    server_pids=("$gw")
}
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
# Written by bench/transports.sh: nginx terminating TLS in front of the echo node.
$stream_load
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 19000; }
stream {
    server {
        listen 127.0.0.1:$nginx_port ssl backlog=4096;
        ssl_certificate $work/gw.crt;
        ssl_certificate_key $work/gw.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets on;
        proxy_pass 127.0.0.1:$node_port;
        proxy_timeout 1h;
    }
}
EOF
start_nginx() {
    taskset -c 0 nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" & gw=$!; pids+=($gw)
    wait_port $nginx_port
    sleep 0.5
    mapfile -t server_pids < <(pgrep -P "$gw")   # the worker
    ((${#server_pids[@]})) || die "no nginx worker"
}

# ---- idle memory -------------------------------------------------------------------------
idle_row() {   # name port loadgen-flags...
    local name=$1 port=$2; shift 2
    local before after n
    before=$(rss_kib "${server_pids[@]}")
    taskset -c 1 "$bin/tether-loadgen" --target "127.0.0.1:$port" "$@" --conns "$conns" --hold $((10 + conns / 1000 * 2)) \
        --connect-rate 2000 --connect-timeout 20 --threads 1 --quiet --json "$work/idle.json" >/dev/null & lg=$!
    for _ in $(seq 600); do
        n=$(established "$port")
        ((n >= conns)) && break
        sleep 0.1
    done
    ((n >= conns)) || die "$name: only $n of $conns connections"
    sleep 3   # the last handshakes and upgrades
    after=$(rss_kib "${server_pids[@]}")
    stop "$lg"
    awk -v a="$before" -v b="$after" -v n="$conns" -v name="$name" \
        'BEGIN { printf "| %s | %d | %d | %d | %.0f |\n", name, n, a, b, (b - a) * 1024 / n }'
}
say "idle memory, $conns connections per row"
{
    echo "### Idle memory per connection ($conns idle connections, RSS of the process under test)"
    echo
    echo "| transport | connections | RSS before KiB | RSS after KiB | bytes per connection |"
    echo "|---|---|---|---|---|"
    start_gateway
    idle_row "tether TCP" $tcp_port; stop "$gw"; start_gateway
    idle_row "tether TLS" $tls_port --tls "${tls_flags[@]}"; stop "$gw"; start_gateway
    idle_row "tether WS" $ws_port --ws; stop "$gw"; start_gateway
    idle_row "tether WSS" $wss_port --wss "${tls_flags[@]}"; stop "$gw"
    start_nginx
    idle_row "nginx TLS (stream, + its upstream connection)" $nginx_port --tls "${tls_flags[@]}"; stop "$gw"
    echo
} >"$work/report-idle.md"

# ---- handshakes per core-second ------------------------------------------------------------
hs_seconds=$((smoke ? 1 : duration))
handshakes() {   # name port
    local name=$1 port=$2 t0 t1 total=0 c
    local clients=()
    t0=$(cpu_ticks "${server_pids[@]}")
    for c in 1 2 3 4; do
        taskset -c 1 openssl s_time -connect "127.0.0.1:$port" -new -time "$hs_seconds" -tls1_3 \
            >"$work/s_time.$c" 2>&1 & clients+=($!)
    done
    wait "${clients[@]}" 2>/dev/null || true
    t1=$(cpu_ticks "${server_pids[@]}")
    for c in 1 2 3 4; do
        total=$((total + $(awk '/connections in [0-9.]+ real seconds/ {print $1; exit}' "$work/s_time.$c")))
    done
    ((total > 0)) || die "$name: no handshake completed ($(cat "$work/s_time.1"))"
    awk -v n="$total" -v s="$hs_seconds" -v t=$((t1 - t0)) -v hz="$hz" -v name="$name" \
        'BEGIN { cpu = t / hz; printf "| %s | %d | %.0f | %.2f | %.0f |\n", name, n, n / s, cpu, (cpu > 0 ? n / cpu : 0) }'
}
say "TLS handshakes"
{
    echo "### Full TLS 1.3 handshakes (ECDSA P-256), 4 × openssl s_time -new for ${hs_seconds} s"
    echo
    echo "| server | handshakes | per second | server CPU s | per CPU-second |"
    echo "|---|---|---|---|---|"
    start_gateway; handshakes "tether-gateway (1 reactor)" $tls_port; stop "$gw"
    start_nginx; handshakes "nginx (1 worker)" $nginx_port; stop "$gw"
    echo
} >"$work/report-hs.md"

# ---- echo CPU per message ------------------------------------------------------------------
echo_row() {   # name port loadgen-flags...
    local name=$1 port=$2; shift 2
    local t0 t1
    t0=$(cpu_ticks "${server_pids[@]}")
    taskset -c 1 "$bin/tether-loadgen" --target "127.0.0.1:$port" "$@" --conns 100 --pipeline 8 --payload 64 \
        --duration "$duration" --warmup 0 --threads 1 --quiet --json "$work/echo.json" >/dev/null ||
        die "$name: loadgen failed: $(cat "$work/echo.json" 2>/dev/null)"
    t1=$(cpu_ticks "${server_pids[@]}")
    local frames
    frames=$(json "$work/echo.json" "d['frames']['received']")
    awk -v n="$frames" -v s="$duration" -v t=$((t1 - t0)) -v hz="$hz" -v name="$name" \
        'BEGIN { printf "| %s | %.0f | %.2f | %.2f |\n", name, n / s, t / hz, t / hz * 1e6 / n }'
}
say "echo CPU per message"
{
    echo "### Echo, 100 connections, --pipeline 8, 64-byte payloads, ${duration} s"
    echo
    echo "| path | msgs/s | CPU s of the process under test | CPU µs per message |"
    echo "|---|---|---|---|"
    start_gateway
    echo_row "tether TCP" $tcp_port
    echo_row "tether TLS" $tls_port --tls "${tls_flags[@]}"
    echo_row "tether WS" $ws_port --ws
    echo_row "tether WSS" $wss_port --wss "${tls_flags[@]}"
    stop "$gw"
    start_nginx; echo_row "nginx terminating TLS" $nginx_port --tls "${tls_flags[@]}"; stop "$gw"
    echo
} >"$work/report-echo.md"

# ---- p99 during a handshake storm ----------------------------------------------------------
storm_run() {   # name storm-clients
    local name=$1 clients=$2 c storm=()
    for ((c = 0; c < clients; c++)); do
        taskset -c 1 openssl s_time -connect "127.0.0.1:$tls_port" -new -time $((duration + 2)) -tls1_3 \
            >"$work/storm.$c" 2>&1 & storm+=($!)
    done
    local d0 d1
    d0=$(metric tether_gateway_tls_handshakes_total'{result="full"}')
    taskset -c 1 "$bin/tether-loadgen" --target "127.0.0.1:$tls_port" --tls "${tls_flags[@]}" --conns 100 \
        --rate 50 --payload 64 --duration "$duration" --warmup "$(awk -v d="$duration" "BEGIN { print d / 5 }")" --threads 1 --quiet --json "$work/storm.json" >/dev/null ||
        die "storm $name: loadgen failed"
    d1=$(metric tether_gateway_tls_handshakes_total'{result="full"}')
    ((${#storm[@]} == 0)) || wait "${storm[@]}" 2>/dev/null || true
    local deferred
    deferred=$(metric tether_gateway_tls_handshakes_deferred_total)
    echo "| $name | $(json "$work/storm.json" "d['latency_us']['p50']") | $(json "$work/storm.json" "d['latency_us']['p99']") | $(awk -v a="$d0" -v b="$d1" -v s="$duration" 'BEGIN { printf "%.0f", (b - a) / s }') | $deferred |"
}
metric() {
    { exec 3<>"/dev/tcp/127.0.0.1/$admin_port" && printf 'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3 && cat <&3; } 2>/dev/null |
        awk -v s="$1" '$1 == s {print $2}'
}
say "handshake storm"
{
    echo "### Established TLS clients during a handshake storm (100 clients × 50 msg/s, ${duration} s)"
    echo
    echo "| run | p50 µs | p99 µs | full handshakes/s during the run | handshake reads deferred (total) |"
    echo "|---|---|---|---|---|"
    start_gateway
    storm_run "quiet" 0
    storm_run "storm: 6 × openssl s_time -new" 6
    stop "$gw"
    echo
} >"$work/report-storm.md"

{
    echo "## bench/transports.sh — $(date -u +%Y-%m-%d) ($(nproc) cores; $(openssl version | awk '{print $1, $2}'); $(nginx -v 2>&1 | sed 's/^nginx version: //'))"
    echo
    echo "Load average at the start and the end (anything else running skews the latency rows most): $load0 / $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    cat "$work/report-idle.md" "$work/report-hs.md" "$work/report-echo.md" "$work/report-storm.md"
}
