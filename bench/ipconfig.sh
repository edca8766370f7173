#!/usr/bin/env bash
# tether-ipconfig's GET /ip_list side by side with nginx serving the same bytes as a static file.
#
#   bench/ipconfig.sh [--smoke] [--duration S] [--conns N] [--threads T] [--rounds R]
#
#     --smoke        the CI check that the script still runs: 1 round of 1 s runs after a 1 s
#                    warm-up, 4 connections, no waiting for a quiet machine, no re-runs
#     --duration S   seconds per wrk run (default 10; each run follows a 2 s warm-up run)
#     --conns N      wrk connections (default 64)
#     --threads T    wrk threads (default 1: wrk has one core, see the core layout)
#     --rounds R     how many times each server is measured, alternating (default 3);
#                    the table reports the median of the rounds
#
# What it does:
#   1. installs wrk, nginx and curl with apt-get when missing (apt-get update first; a
#      temporary /usr/sbin/policy-rc.d keeps apt from starting the nginx service);
#   2. builds tether-ipconfig in release and starts it on 127.0.0.1:19960 with --workers 1;
#   3. registers 20 gateways (POST /v1/report) with varied scores — 5 bandwidth levels x 2
#      connection levels, so the top 5 span three tie groups of 2 and every answer shuffles —
#      and keeps reporting all 20 every second in the background (one Python process, one
#      keep-alive connection) so they stay live during the runs;
#   4. saves the exact bytes of one GET /ip_list answer to a file and starts nginx on
#      127.0.0.1:19961 (its own temp config, `daemon off`, `worker_processes 1` = tether's
#      worker threads, access_log off, sendfile, open_file_cache, unlimited keepalive_requests)
#      serving that file at the same path, /ip_list;
#   5. runs the same `wrk -tT -cN -dSs --latency` against each, alternating, R rounds, first
#      flat out, then paced (a wrk Lua `delay()` of 2 ms after each response on each
#      connection: a load both servers carry, so that p99 is the server's latency rather than
#      the queue of a saturated closed loop), and prints Markdown tables: req/s, p50, p99
#      (wrk's latency distribution), server CPU, and the ratio tether/nginx, plus the exact
#      commands. A flat-out run where the server did not saturate its core (another process
#      took a core) is measured again, twice at most.
#
# Core layout (2 cores, taskset): core 0 runs the server under test (tether-ipconfig with one
# worker thread, or nginx's master and single worker); core 1 runs wrk and the reporter loop.
# wrk gets one thread for its one core: with two threads on one core the kernel time-slices
# them, and the answers waiting for the descheduled thread show up as milliseconds of server
# "latency" at p99 (measured here: p99 2-4 ms with -t2 against under 1.1 ms with -t1, for
# both servers, at the same or higher req/s).
# Both servers stay up for the whole script but only the one under load does anything (the
# other's only work is tether's rebuild once a second after the reports).
#
# Everything it starts is stopped on exit (trap). Loopback only; ports 19960 and 19961.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10 conns=64 threads=1 rounds=3 warm=2 attempts=3 smoke=0
while (($#)); do
    case $1 in
        --smoke) duration=1 conns=4 rounds=1 warm=1 attempts=1 smoke=1; shift ;;
        --duration) duration=$2; shift 2 ;;
        --conns) conns=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "ipconfig.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

tether_port=19960 nginx_port=19961 server_core=0 client_core=1 workers=1
say() { echo "== $*" >&2; }
die() { echo "ipconfig.sh: $*" >&2; exit 1; }

# ---- cleanup ----------------------------------------------------------------------------
pids=() work="" made_policy_rc=0 sudo=()
(($(id -u) == 0)) || sudo=(sudo)
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    [[ -n $work ]] && rm -rf "$work"
    ((made_policy_rc)) && "${sudo[@]}" rm -f /usr/sbin/policy-rc.d
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

(($(nproc) >= 2)) || die "needs 2 cores (core $server_core for the server, core $client_core for wrk)"

# ---- packages ---------------------------------------------------------------------------
export PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx)
command -v curl >/dev/null || missing+=(curl)
command -v taskset >/dev/null || missing+=(util-linux)
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
        made_policy_rc=1
    fi
    say "apt-get update && apt-get install ${missing[*]}"
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    if ((made_policy_rc)); then "${sudo[@]}" rm -f /usr/sbin/policy-rc.d; made_policy_rc=0; fi
fi
for port in $tether_port $nginx_port; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "port $port is in use"; fi
done

# ---- build and start tether-ipconfig ----------------------------------------------------
say "cargo build --release -p tether-ipconfig"
cargo build --release --quiet -p tether-ipconfig
bin=$(realpath "${CARGO_TARGET_DIR:-target}")/release/tether-ipconfig
work=$(mktemp -d /tmp/tether-bench-ipconfig.XXXXXX)
chmod 755 "$work"

wait_port() {   # wait_port PORT PID
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || die "the server for port $1 exited; see $work"
        sleep 0.05
    done
    die "nothing listens on 127.0.0.1:$1"
}

tether_cmd=(taskset -c "$server_core" "$bin" --listen "127.0.0.1:$tether_port" --workers "$workers")
say "${tether_cmd[*]}"
RUST_LOG=warn "${tether_cmd[@]}" 2>"$work/tether.log" &
tether_pid=$!
pids+=("$tether_pid")
wait_port "$tether_port" "$tether_pid"

# ---- 20 gateways, reported every second --------------------------------------------------
# gw-i: spare bandwidth 1 + (i mod 5) x 0.25 GiB/s, spare connections 50,000 or 49,900 by i's
# parity: ranks come in tie groups of two.
for i in $(seq 0 19); do
    spare=$(( (1 << 30) + (i % 5) * (1 << 28) ))
    gw_conns=$(( 50000 + (i % 2) * 100 ))
    printf '{"id":"gw-%02d","addr":"10.0.%d.%d:8900","connections":%d,"max_connections":100000,"bytes_in_per_s":1000000,"bytes_out_per_s":2000000,"bandwidth_bytes_per_s":%d,"cpu":%d,"draining":false}' \
        "$i" $((i / 10)) $((i % 10 + 1)) "$gw_conns" $((spare + 3000000)) $((10 + i)) >"$work/report-$i.json"
done
# The reporter is one long-lived Python process with one keep-alive connection, not a curl per
# second: forking and exec'ing a client every second on wrk's core would stall wrk for a few
# milliseconds each time, which is about 1% of the requests — exactly what p99 measures.
py=$(python3 -c 'import sys; print(sys.executable)')   # the interpreter itself, not a shim
cat >"$work/reporter.py" <<'PY'
import http.client, sys, time
port, files = int(sys.argv[1]), sys.argv[2:]
bodies = [open(f, "rb").read() for f in files]
conn, next_at = None, time.monotonic()
while True:
    try:
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        for body in bodies:
            conn.request("POST", "/v1/report", body=body, headers={"Content-Type": "application/json"})
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                print(f"reporter: {answer.status}", file=sys.stderr)
    except (OSError, http.client.HTTPException) as e:
        print(f"reporter: {e}", file=sys.stderr)
        conn = None
    next_at += 1.0
    time.sleep(max(0.0, next_at - time.monotonic()))
PY
report_files=()
for i in $(seq 0 19); do report_files+=("$work/report-$i.json"); done
reporter_cmd=(taskset -c "$client_core" "$py" "$work/reporter.py" "$tether_port" "${report_files[@]}")
"${reporter_cmd[@]}" 2>"$work/reporter.log" &
reporter_pid=$!
pids+=("$reporter_pid")

mkdir -p "$work/www"
for _ in $(seq 100); do   # until the list holds all five places (it is rebuilt within 100 ms)
    code=$(curl -s -o "$work/www/ip_list" -w '%{http_code}' "http://127.0.0.1:$tether_port/ip_list" || true)
    [[ $code == 200 && $(grep -o '"id"' "$work/www/ip_list" | wc -l) == 5 ]] && break
    sleep 0.05
done
[[ $code == 200 && $(grep -o '"id"' "$work/www/ip_list" | wc -l) == 5 ]] ||
    die "GET /ip_list answered $code without 5 gateways after the reports"
chmod 644 "$work/www/ip_list"
body_bytes=$(wc -c <"$work/www/ip_list")
say "saved one /ip_list answer ($body_bytes bytes): $(head -c 160 "$work/www/ip_list")…"

# ---- nginx serving that answer as a static file ----------------------------------------------
mkdir -p "$work/nginx/logs" "$work/nginx/tmp"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/json;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    open_file_cache max=64 inactive=60s;
    open_file_cache_valid 60s;
    client_body_temp_path $work/nginx/tmp/body;
    proxy_temp_path $work/nginx/tmp/proxy;
    fastcgi_temp_path $work/nginx/tmp/fastcgi;
    uwsgi_temp_path $work/nginx/tmp/uwsgi;
    scgi_temp_path $work/nginx/tmp/scgi;
    server {
        listen 127.0.0.1:$nginx_port;
        root $work/www;
        location = /ip_list { }
    }
}
EOF
nginx_cmd=(taskset -c "$server_core" nginx -p "$work/nginx" -e "$work/nginx/logs/error.log" -c "$work/nginx/nginx.conf")
say "${nginx_cmd[*]}"
"${nginx_cmd[@]}" &
nginx_pid=$!
pids+=("$nginx_pid")
wait_port "$nginx_port" "$nginx_pid"
cmp -s <(curl -s "http://127.0.0.1:$nginx_port/ip_list") "$work/www/ip_list" ||
    die "nginx does not serve the saved answer"

head_bytes() { curl -s -D - -o /dev/null "$1" | wc -c; }
tether_head=$(head_bytes "http://127.0.0.1:$tether_port/ip_list")
nginx_head=$(head_bytes "http://127.0.0.1:$nginx_port/ip_list")

# ---- measurements ---------------------------------------------------------------------------
tree_pids() {   # the pid and its children
    echo "$1"
    ps -o pid= --ppid "$1" 2>/dev/null || true
}
source bench/lib/cpu.sh
# shellcheck disable=SC2046 # one pid per word
tree_cpu_ticks() { cpu_ticks $(tree_pids "$1"); }   # the process and its children
busy_pct() {   # CPU the whole machine used over 0.5 s, in % of one core
    local a b
    a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    sleep 0.5
    b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN { split(a, x, " "); split(b, y, " ");
        d = y[2] - x[2]; printf "%d", (d > 0 ? 100 * n * (y[1] - x[1]) / d : 0) }'
}
wait_quiet() {   # before a run: up to 30 s for the machine to idle (below 20% of a core)
    local busy
    ((!smoke)) || return 0
    for _ in $(seq 60); do
        busy=$(busy_pct)
        ((busy < 20)) && return 0
    done
    say "machine still busy (${busy}% of a core) — numbers may be noisy"
}

clk=$(getconf CLK_TCK)
url_tether="http://127.0.0.1:$tether_port/ip_list"
url_nginx="http://127.0.0.1:$nginx_port/ip_list"
wrk_flags=(-t"$threads" -c"$conns" -d"${duration}s" --latency)
# The paced runs: each connection waits pace_ms after a response before its next request.
pace_ms=2
printf 'function delay()\n    return %d\nend\n' "$pace_ms" >"$work/pace.lua"
paced_flags=("${wrk_flags[@]}" -s "$work/pace.lua")

run() {   # run MODE NAME URL PID ROUND   (MODE: max or paced)
    local mode=$1 name=$2 url=$3 pid=$4 round=$5 before after busy file cpu attempt flags
    file="$work/$mode-$name-$round.txt"
    if [[ $mode == max ]]; then flags=("${wrk_flags[@]}"); else flags=("${paced_flags[@]}"); fi
    for attempt in $(seq "$attempts"); do
        wait_quiet
        taskset -c "$client_core" wrk -t"$threads" -c"$conns" -d"${warm}s" "$url" >/dev/null
        busy=$(busy_pct)
        before=$(tree_cpu_ticks "$pid")
        taskset -c "$client_core" wrk "${flags[@]}" "$url" >"$file"
        after=$(tree_cpu_ticks "$pid")
        cpu=$((100 * (after - before) / clk / duration))
        echo "cpu_ticks $((after - before)) $clk $duration" >>"$file"
        echo "busy_before $busy" >>"$file"
        echo "attempts $attempt" >>"$file"
        say "$mode $name round $round: $(grep -E '^Requests/sec' "$file" | tr -s ' '), server CPU $cpu%"
        # Flat out, the server under test saturates its core; when it does not, something
        # else took a core during the run: measure again (twice at most).
        [[ $mode == max && $cpu -lt 90 && $attempt -lt $attempts ]] || break
        say "   server CPU below 90%: another process interfered, measuring again"
    done
}

for mode in max paced; do
    for round in $(seq "$rounds"); do
        if ((round % 2)); then
            run "$mode" nginx "$url_nginx" "$nginx_pid" "$round"
            run "$mode" tether "$url_tether" "$tether_pid" "$round"
        else
            run "$mode" tether "$url_tether" "$tether_pid" "$round"
            run "$mode" nginx "$url_nginx" "$nginx_pid" "$round"
        fi
    done
done
kill -0 "$tether_pid" 2>/dev/null || die "tether-ipconfig died during the runs"
kill -0 "$nginx_pid" 2>/dev/null || die "nginx died during the runs"
curl -s "http://127.0.0.1:$tether_port/metrics" >"$work/tether-metrics.txt"
reported=$(awk '/^tether_ipconfig_reports_accepted_total/ {print $2}' "$work/tether-metrics.txt")
live=$(awk '/^tether_ipconfig_gateways\{state="live"\}/ {print $2}' "$work/tether-metrics.txt")
((live == 20)) || die "only $live of the 20 gateways were live at the end (reporter: $(tail -3 "$work/reporter.log"))"

"$py" - "$work" "$rounds" "$body_bytes" "$tether_head" "$nginx_head" "$pace_ms" <<'PY'
import re, statistics, sys
work, rounds, body, tether_head, nginx_head, pace = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])

def us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]

def parse(path):
    out = {"errors": 0, "non2xx": 0}
    for line in open(path):
        f = line.split()
        if line.startswith("Requests/sec:"):
            out["rps"] = float(f[1])
        elif len(f) == 2 and f[0] in ("50%", "99%"):
            out[f[0]] = us(f[1])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            out["non2xx"] = int(f[-1])
        elif line.strip().startswith("Socket errors:"):
            out["errors"] = sum(int(x) for x in re.findall(r"\d+", line))
        elif f and f[0] == "cpu_ticks":
            ticks, clk, secs = int(f[1]), int(f[2]), float(f[3])
            out["cpu"] = 100.0 * ticks / clk / secs
        elif f and f[0] in ("busy_before", "attempts"):
            out[f[0]] = int(f[1])
    return out

fmt_lat = lambda v: f"{v:.0f} µs" if v < 1000 else f"{v / 1000:.2f} ms"
names = (("tether", "tether-ipconfig `GET /ip_list`", tether_head), ("nginx", "nginx, the same bytes as a static file", nginx_head))
bad = 0
for mode, title in (("max", "Flat out (closed loop, no think time)"),
                    ("paced", f"Paced: each connection waits {pace} ms after a response (wrk `delay()`), a load both carry; req/s here is what that pace generates, not capacity")):
    res = {n: [parse(f"{work}/{mode}-{n}-{r}.txt") for r in range(1, rounds + 1)] for n, _, _ in names}
    med = {n: {k: statistics.median(r[k] for r in rs) for k in ("rps", "50%", "99%", "cpu")} for n, rs in res.items()}
    for m in med.values():
        m["us_per_req"] = m["cpu"] / 100.0 * 1e6 / m["rps"]
    print(f"\n**{title}** — median of {rounds} rounds\n")
    print("| server (1 worker, core 0) | req/s | p50 | p99 | server CPU | CPU µs/req | response bytes (head + body) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n, label, head in names:
        m = med[n]
        print(f"| {label} | {m['rps']:,.0f} | {fmt_lat(m['50%'])} | {fmt_lat(m['99%'])} | {m['cpu']:.0f}% | {m['us_per_req']:.2f} | {head} + {body} |")
    t, g = med["tether"], med["nginx"]
    print(f"| **tether / nginx** | **{t['rps'] / g['rps']:.2f}×** | {t['50%'] / g['50%']:.2f}× | {t['99%'] / g['99%']:.2f}× | | {t['us_per_req'] / g['us_per_req']:.2f}× | |")
    print("\n| round | server | req/s | p50 | p99 | server CPU | non-2xx | socket errors | machine busy before (% of a core) | attempts |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in range(rounds):
        for n, _, _ in names:
            x = res[n][r]
            print(f"| {r + 1} | {n} | {x['rps']:,.0f} | {fmt_lat(x['50%'])} | {fmt_lat(x['99%'])} | {x['cpu']:.0f}% | {x['non2xx']} | {x['errors']} | {x.get('busy_before', '')} | {x.get('attempts', 1)} |")
    bad += sum(x["non2xx"] + x["errors"] for rs in res.values() for x in rs)
if bad:
    print(f"\n**{bad} non-2xx answers or socket errors: the numbers above are not valid.**")
    sys.exit(1)
PY

cat <<EOF

Commands (core $server_core: server under test; core $client_core: wrk and the reporter):

    ${tether_cmd[*]}
    ${nginx_cmd[*]}      # worker_processes $workers, access_log off, sendfile, open_file_cache
    taskset -c $client_core wrk ${wrk_flags[*]} $url_tether
    taskset -c $client_core wrk ${wrk_flags[*]} $url_nginx
    taskset -c $client_core wrk ${wrk_flags[*]} -s pace.lua URL    # paced; pace.lua: function delay() return $pace_ms end
    # every second, pinned to core $client_core: one Python process posts the 20 reports on one keep-alive connection

20 gateways reported every second (${reported} reports accepted in all), 20 live at the end.
$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(uname -r); wrk: $(wrk -v 2>&1 | awk 'NR==1 {print $1, $2}'); nginx: $(nginx -v 2>&1 | cut -d/ -f2)
EOF
