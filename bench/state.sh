#!/usr/bin/env bash
# tether-state side by side with Redis over a Unix socket: the same session work, the same
# 50 connections pipelined 16 deep, the same cores, one run; then room churn; memory per session.
#
#   bench/state.sh [--quick | --smoke] [--out DIR]
#
#     --quick    short run: 1 round of 3 s (default: 3 rounds of 10 s, medians), 200,000
#                sessions in the memory part (default 1,000,000)
#     --smoke    the CI check that the script still runs: 1 round of 1 s, 2,000 sessions,
#                short sizing runs, no waiting for a quiet machine, no re-runs
#     --out DIR  where raw JSON, redis-benchmark CSV, /metrics dumps and logs go
#                (default: a new mktemp dir, printed at the end; kept)
#     --only churn  the room membership churn part alone (no Redis, no memory part)
#
# Throughput. tether-state (--journal-fsync everysec) against redis-server (appendonly yes,
# appendfsync everysec: both log every change and fsync once a second; that is the
# equivalent durability). Both on a Unix socket in a mktemp dir.
#   tether: state/examples/state_load mix: 50 links (each its own gateway id), batches of 16
#           commands written at once, the next batch when the last one is answered:
#           2 × CLOSED (oldest sessions) · 12 × HEARTBEAT (one route each) · 2 × STATE_LOGIN
#           (new sessions, tokens pre-signed; the daemon verifies each JWT). Per session:
#           1 LOGIN, 6 HEARTBEATs, 1 CLOSED. 64 live sessions per link, 4,096 devices per link
#           reused round robin (a device logs in again long after its CLOSED).
#   redis:  redis-benchmark -s SOCK -c 50 -P 16 -r 204800 (= 50 × 4,096 devices), one command
#           per run:
#             LOGIN     = HSET session:<id> with the session's fields (device, gateway, route,
#                         session id, resume token, state) + EXPIRE session:<id> 90
#             HEARTBEAT = EXPIRE session:<id> 90            (deadline = 3 × heartbeat_s 30)
#             CLOSED    = EXPIRE session:<id> 120           (resume window)
#           so one tether batch (16 commands) = 2 HSET + 16 EXPIRE (18 Redis commands). The
#           HSET run goes first (it fills the keyspace), then the EXPIRE run on those keys; the
#           mix's rate is their weighted harmonic mean: time per batch = 2/HSET/s + 16/EXPIRE/s.
#           Redis gets the cheap side of every approximation: no token to check, no device or
#           route index, CLOSED does not even mark the hash detached. In tether's favour: only
#           LOGIN is answered (2 replies per batch), where Redis answers all 18 commands.
#           Both compact their log past 64 MiB by default (journal snapshot / AOF rewrite).
#   The table gives tether commands/s against Redis's rate of the same work in tether commands
#   (16 per batch) and in Redis commands (18 per batch); the ratio is per unit of work.
#
# Churn. A fresh tether-state per round (--journal-fsync everysec, --heartbeat-s 3600) and
# state_load churn: 8 links (each its own gateway id) log in 20,000 sessions whose tokens'
# rooms claim is ["churn-*"]; each session joins its base room (one of 1,000 churn-<k>, so
# every room keeps 20 members all along) and one more. Then, timed, each link keeps 64
# commands outstanding: STATE_LEAVE of a session's extra room and STATE_JOIN of its next one,
# in turn (each a real change: journaled, answered STATE_ROOM_OK, followed by a MEMBERSHIP).
# Reported: joins+leaves answered per second, the daemon's CPU µs per join/leave and its share
# of core 0 (all its threads, the journal's included), ROOM_FAILs; the daemon's
# room_joins_total and room_leaves_total must match what was answered. Median of the rounds.
# (--smoke: 2,000 sessions, 100 rooms.)
#
# Memory. A fresh tether-state (--heartbeat-s 3600, its largest: no heartbeat is due for 3 h)
# and state_load fill logging in N sessions of distinct devices over 4 links, which stay
# open: (VmRSS after − VmRSS before) / N. For reference, a fresh redis-server (same config) gets
# the same N sessions as HSET + EXPIRE through redis-cli --pipe: used_memory (INFO) and VmRSS
# differences / N.
#
# Core layout (taskset): core 0 = the server under test alone (all its threads); core 1 =
# the client (state_load, redis-benchmark, redis-cli). Server CPU % comes from /proc.
#
# Noise: before each run the script waits (60 s at most in all) for the machine to be quiet;
# a run during which other processes took over 20% of core 0 is run once more (4 re-runs at
# most in all; --quick: 10 s, 1 re-run); the table shows that share for every round.
#
# Installs redis-server and redis-tools (and curl, python3, util-linux when missing) with
# apt-get, never starting the distribution's Redis service. Loopback and Unix sockets only;
# tether-state's push API listener is 127.0.0.1:19960 and its metrics listener 127.0.0.1:19961
# (both must be free). Everything started is
# stopped on exit.
#
# Output: the Markdown report on stdout (also OUT/report.md), progress on stderr; exit status
# 1 if a run failed (LOGIN_FAILs, a daemon that died, a client error).
#
# Time: about 2.5 minutes after the build (--quick: about 35 s); a busy machine adds up to about
# 2 minutes of waiting and re-runs (--quick: 20 s). --smoke: about 11 s (it never waits).
set -euo pipefail
cd "$(dirname "$0")/.."

# ---- parameters ------------------------------------------------------------------------
rounds=3 duration=10 warmup=2 sessions=1000000 out="" quick=0 smoke=0 only_churn=0
sizing=(200000 400000)   # requests of the first redis-benchmark runs (HSET, EXPIRE)
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --quick) rounds=1 duration=3 warmup=1 sessions=200000 quick=1 ;;
        --smoke) rounds=1 duration=1 warmup=0.2 sessions=2000 smoke=1 sizing=(20000 40000) ;;
        --out) out=$2; shift ;;
        --only) [[ ${2:-} == churn ]] || { echo "state.sh: --only takes 'churn'" >&2; exit 2; }
                only_churn=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "state.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

conns=50 depth=16 logins_per_batch=2 pool=64 devices=4096
keyspace=$((conns * devices))
heartbeat_s=30 resume_window_s=120
fill_conns=4
churn_conns=8 churn_depth=64 churn_sessions=20000 churn_rooms=1000
((smoke)) && churn_sessions=2000 churn_rooms=100
server_core=0 client_core=1
http_port=19960
metrics_port=19961
# The JWT secret reaches the daemon and the client through the environment (flags show in ps).
export TETHER_STATE_JWT_SECRET="bench-state-secret-$$-$RANDOM"
bin=${CARGO_TARGET_DIR:-target}/release
# The session's fields, as the daemon keeps them; values of typical length.
hset_fields=(device dev-__rand_int__ gateway gw-bench-01 route 4294967297
             session 00000000075bcd15 resume 00000000075bcd15.9f86d081884c7d659a2feaa0c55ad015
             state online)

# ---- cleanup ------------------------------------------------------------------------------
pids=() work="" made_policy_rc=0 sudo=()
(($(id -u) == 0)) || sudo=(sudo)
stop_pid() {   # stop_pid PID : TERM, up to 5 s, then KILL; reaps it
    local p=$1
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
forget_pid() {
    local keep=() q
    for q in "${pids[@]}"; do [[ $q == "$1" ]] || keep+=("$q"); done
    pids=("${keep[@]}")
}
cleanup() {
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[i]}"; done
    [[ -n $work ]] && rm -rf "$work"
    ((made_policy_rc)) && "${sudo[@]}" rm -f /usr/sbin/policy-rc.d
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() { echo "state.sh: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }

(($(nproc) >= 2)) || die "needs 2 cores (core $server_core for the server, core $client_core for the client)"

# ---- packages -----------------------------------------------------------------------------
export PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
{ command -v redis-benchmark >/dev/null && command -v redis-cli >/dev/null; } || missing+=(redis-tools)
command -v curl >/dev/null || missing+=(curl)
command -v taskset >/dev/null || missing+=(util-linux)
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then   # installing must not start the Redis service
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
        made_policy_rc=1
    fi
    say "apt-get update && apt-get install ${missing[*]}"
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    if ((made_policy_rc)); then "${sudo[@]}" rm -f /usr/sbin/policy-rc.d; made_policy_rc=0; fi
fi
py=$(python3 -c 'import sys; print(sys.executable)')   # the interpreter itself, not a shim

# ---- build --------------------------------------------------------------------------------
say "cargo build --release -p tether-state --bins --example state_load"
cargo build --release --quiet -p tether-state --bins --example state_load
[[ -x $bin/tether-state ]] || die "$bin/tether-state is missing after the build"
load=$bin/examples/state_load

# ---- dirs ---------------------------------------------------------------------------------
work=$(mktemp -d /tmp/tether-state-bench.XXXXXX)
[[ -n $out ]] || out=$(mktemp -d /tmp/tether-state-results.XXXXXX)
mkdir -p "$out/logs"
out=$(cd "$out" && pwd)
for port in "$http_port" "$metrics_port"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "port 127.0.0.1:$port is in use"; fi
done

# ---- servers ------------------------------------------------------------------------------
tether_pid="" redis_pid="" tether_cmd="" redis_cmd=""
start_tether() {   # start_tether NAME HEARTBEAT_S MAX_SESSIONS
    local name=$1 cmd
    mkdir -p "$work/$name"
    cmd=("$bin/tether-state" --socket "$work/$name/state.sock" --http "127.0.0.1:$http_port"
         --metrics "127.0.0.1:$metrics_port"
         --journal "$work/$name/journal" --journal-fsync everysec
         --heartbeat-s "$2" --resume-window-s "$resume_window_s" --max-sessions "$3")
    tether_cmd="RUST_LOG=warn TETHER_STATE_JWT_SECRET=… taskset -c $server_core ${cmd[*]}"
    RUST_LOG=warn taskset -c "$server_core" "${cmd[@]}" >>"$out/logs/$name.log" 2>&1 &
    tether_pid=$!
    pids+=("$tether_pid")
    tether_sock=$work/$name/state.sock
    for _ in $(seq 200); do
        kill -0 "$tether_pid" 2>/dev/null || { tail -n 20 "$out/logs/$name.log" >&2; die "tether-state exited while starting (log: $out/logs/$name.log)"; }
        [[ -S $tether_sock ]] && curl -sf "http://127.0.0.1:$metrics_port/metrics" >/dev/null && return 0
        sleep 0.05
    done
    die "tether-state did not listen within 10 s (log: $out/logs/$name.log)"
}
start_redis() {   # start_redis NAME
    local name=$1
    mkdir -p "$work/$name"
    cat >"$work/$name/redis.conf" <<EOF
# Written by bench/state.sh: Redis on a Unix socket only, logging every write like the journal.
port 0
unixsocket $work/$name/redis.sock
unixsocketperm 700
dir $work/$name
daemonize no
save ""
appendonly yes
appendfsync everysec
logfile ""
EOF
    cp "$work/$name/redis.conf" "$out/$name.redis.conf"
    redis_cmd="taskset -c $server_core redis-server redis.conf"
    taskset -c "$server_core" redis-server "$work/$name/redis.conf" >>"$out/logs/$name.log" 2>&1 &
    redis_pid=$!
    pids+=("$redis_pid")
    redis_sock=$work/$name/redis.sock
    for _ in $(seq 200); do
        kill -0 "$redis_pid" 2>/dev/null || { tail -n 20 "$out/logs/$name.log" >&2; die "redis-server exited while starting"; }
        [[ -S $redis_sock ]] && [[ $(redis-cli -s "$redis_sock" ping 2>/dev/null) == PONG ]] && return 0
        sleep 0.05
    done
    die "redis-server did not answer within 10 s (log: $out/logs/$name.log)"
}
stop_server() { stop_pid "$1"; forget_pid "$1"; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
source bench/lib/cpu.sh
busy_pct() {   # CPU the whole machine used over 0.5 s, in % of one core
    local a b
    a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    sleep 0.5
    b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN { split(a, x, " "); split(b, y, " ");
        d = y[2] - x[2]; printf "%d", (d > 0 ? 100 * n * (y[1] - x[1]) / d : 0) }'
}
quiet_checks=120   # wait_quiet's budget for the whole script, in 0.5 s checks (--quick: 20)
wait_quiet() {   # before a run: wait for the machine to idle (below 20% of a core), within budget
    local busy
    ((!smoke)) || return 0
    while ((quiet_checks > 0)); do
        busy=$(busy_pct)
        quiet_checks=$((quiet_checks - 1))
        ((busy < 20)) && return 0
    done
    say "machine busy (${busy:-?}% of a core) and the wait budget is spent — numbers may be noisy"
}
clk=$(getconf CLK_TCK)
# Noise: CPU on the server's core not used by the server (other processes: a 2-core machine
# shared with anything else). A run with more than noise_limit % of a core of it is run once
# more (retry_budget re-runs in all); the table shows it for every round.
noise_limit=20 retries_left=4
((quick)) && quiet_checks=20 retries_left=1
((smoke)) && quiet_checks=0 retries_left=0
core_jiffies() {   # busy and total jiffies of the server's core
    awk -v c="cpu$server_core" '$1 == c {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat
}
retry_noisy() {   # retry_noisy OTHER_PCT WHAT : true if the run should be repeated
    local other=${1%.*}
    ((other > noise_limit && retries_left > 0)) || return 1
    retries_left=$((retries_left - 1))
    say "   ${other}% of core $server_core went to other processes during the $2 run: running it again (re-runs left: $retries_left)"
    mkdir -p "$out/noisy"
    return 0
}

# ---- throughput ---------------------------------------------------------------------------
mix_cmd=("$load" mix --socket SOCK --conns "$conns" --depth "$depth"
         --logins-per-batch "$logins_per_batch" --pool "$pool" --devices "$devices"
         --duration "$duration" --warmup "$warmup")
bench_common=(-c "$conns" -P "$depth" -r "$keyspace" --csv)
hset_args=(HSET "session:__rand_int__" "${hset_fields[@]}")
expire_args=(EXPIRE "session:__rand_int__" 90)

run_tether() {   # run_tether ROUND
    local f=$out/mix-tether-$1.json args other
    args=("${mix_cmd[@]}")
    args[3]=$tether_sock
    wait_quiet
    say "round $1: tether-state mix (${warmup} s warm-up + ${duration} s)"
    taskset -c "$client_core" "${args[@]}" --server-pid "$tether_pid" >"$f" 2>"$out/logs/mix-tether-$1.err" ||
        { cat "$out/logs/mix-tether-$1.err" >&2; die "state_load mix failed (round $1)"; }
    kill -0 "$tether_pid" 2>/dev/null || die "tether-state died during round $1"
    say "   $("$py" -c 'import json,sys; r=json.load(open(sys.argv[1])); print("{:,.0f} commands/s, {:,.0f} logins/s, server CPU {:.0f}%, client CPU {:.0f}%, LOGIN_FAIL {}".format(r["commands_per_s"], r["logins_per_s"], r["server_cpu_pct"] or 0, r["client_cpu_pct"], r["login_fail"]))' "$f")"
    other=$("$py" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(max(0, r["cpu_busy_pct"][int(sys.argv[2])] - (r["server_cpu_pct"] or 0)))' "$f" "$server_core")
    if retry_noisy "$other" tether; then
        mv "$f" "$out/noisy/mix-tether-$1.$retries_left.json"
        run_tether "$1"
    fi
}
redis_n=()   # requests per redis-benchmark run (HSET, EXPIRE), sized so each takes ~duration/2
run_redis_one() {   # run_redis_one ROUND NAME N ARGS…
    local round=$1 name=$2 n=$3 f t0 t1 c0 c1 j0 j1; shift 3
    f=$out/mix-redis-$name-$round.csv
    j0=$(core_jiffies); c0=$(cpu_ticks "$redis_pid"); t0=$EPOCHREALTIME
    taskset -c "$client_core" redis-benchmark -s "$redis_sock" "${bench_common[@]}" -n "$n" "$@" >"$f" 2>"$out/logs/redis-benchmark.err" ||
        { cat "$out/logs/redis-benchmark.err" >&2; die "redis-benchmark failed"; }
    t1=$EPOCHREALTIME; c1=$(cpu_ticks "$redis_pid"); j1=$(core_jiffies)
    echo "server_cpu_pct,$("$py" -c "print(100 * ($c1 - $c0) / $clk / ($t1 - $t0))")" >>"$f"
    echo "core_busy_pct,$("$py" -c "a, b = '$j0'.split(), '$j1'.split(); print(100 * (int(b[0]) - int(a[0])) / max(1, int(b[1]) - int(a[1])))")" >>"$f"
}
rps_of() { "$py" -c 'import csv,sys; rows=list(csv.reader(open(sys.argv[1]))); print(float(rows[1][1]))' "$1"; }
run_redis() {   # run_redis ROUND
    local r=$1 other
    wait_quiet
    if ((${#redis_n[@]} == 0)); then   # size the runs from a short one of each
        run_redis_one 0 hset "${sizing[0]}" "${hset_args[@]}"
        run_redis_one 0 expire "${sizing[1]}" "${expire_args[@]}"
        redis_n=("$("$py" -c "print(int($(rps_of "$out/mix-redis-hset-0.csv") * $duration / 2))")"
                 "$("$py" -c "print(int($(rps_of "$out/mix-redis-expire-0.csv") * $duration / 2))")")
    fi
    say "round $r: redis-benchmark HSET -n ${redis_n[0]}, then EXPIRE -n ${redis_n[1]}"
    run_redis_one "$r" hset "${redis_n[0]}" "${hset_args[@]}"
    run_redis_one "$r" expire "${redis_n[1]}" "${expire_args[@]}"
    kill -0 "$redis_pid" 2>/dev/null || die "redis-server died during round $r"
    say "   HSET $(rps_of "$out/mix-redis-hset-$r.csv") /s, EXPIRE $(rps_of "$out/mix-redis-expire-$r.csv") /s"
    other=$("$py" -c 'import csv,sys
def other(p):
    x = dict(r for r in csv.reader(open(p)) if len(r) == 2)
    return max(0.0, float(x["core_busy_pct"]) - float(x["server_cpu_pct"]))
print(max(other(p) for p in sys.argv[1:]))' "$out/mix-redis-hset-$r.csv" "$out/mix-redis-expire-$r.csv")
    if retry_noisy "$other" Redis; then
        mv "$out/mix-redis-hset-$r.csv" "$out/noisy/mix-redis-hset-$r.$retries_left.csv"
        mv "$out/mix-redis-expire-$r.csv" "$out/noisy/mix-redis-expire-$r.$retries_left.csv"
        run_redis "$r"
    fi
}

started=$SECONDS
say "results: $out"
if ((!only_churn)); then
start_tether mix "$heartbeat_s" 1000000
start_redis redis-mix
for r in $(seq "$rounds"); do
    if ((r % 2)); then run_tether "$r"; run_redis "$r"; else run_redis "$r"; run_tether "$r"; fi
done
curl -s "http://127.0.0.1:$metrics_port/metrics" >"$out/mix-tether-metrics.txt" || true
redis-cli -s "$redis_sock" info >"$out/mix-redis-info.txt"
mix_tether_cmd=$tether_cmd mix_redis_cmd=$redis_cmd
stop_server "$tether_pid"
stop_server "$redis_pid"
say "throughput done in $((SECONDS - started)) s"
fi

# ---- room membership churn ----------------------------------------------------------------
churn_cmd=("$load" churn --socket SOCK --conns "$churn_conns" --sessions "$churn_sessions"
           --rooms "$churn_rooms" --depth "$churn_depth" --duration "$duration" --warmup "$warmup")
churn_metric() {   # churn_metric NAME : a sample of the churn daemon's /metrics
    curl -sf "http://127.0.0.1:$metrics_port/metrics" | awk -v m="$1" '$1 == m {print $2 + 0}'
}
run_churn() {   # run_churn ROUND : one churn run on the daemon started for it
    local f=$out/churn-$1.json args other j0 l0
    args=("${churn_cmd[@]}")
    args[3]=$tether_sock
    j0=$(churn_metric 'tether_state_room_joins_total{by="client"}')
    l0=$(churn_metric tether_state_room_leaves_total)
    wait_quiet
    say "round $1: tether-state churn (${warmup} s warm-up + ${duration} s)"
    taskset -c "$client_core" "${args[@]}" --server-pid "$tether_pid" >"$f" 2>"$out/logs/churn-$1.err" ||
        { cat "$out/logs/churn-$1.err" >&2; die "state_load churn failed (round $1)"; }
    kill -0 "$tether_pid" 2>/dev/null || die "tether-state died during churn round $1"
    # The daemon's own counters: every JOIN answered must have entered, every LEAVE left.
    echo "{\"daemon_joins\": $(($(churn_metric 'tether_state_room_joins_total{by="client"}') - j0)), \"daemon_leaves\": $(($(churn_metric tether_state_room_leaves_total) - l0))}" >"$out/churn-$1.daemon.json"
    say "   $("$py" -c 'import json,sys; r=json.load(open(sys.argv[1])); print("{:,.0f} joins+leaves/s, server CPU {:.2f} µs per join/leave ({:.0f}% of core 0), client CPU {:.0f}%, ROOM_FAIL {}".format(r["ops_per_s"], r["server_cpu_us_per_op"] or 0, r["server_cpu_pct"] or 0, r["client_cpu_pct"], r["room_fail"]))' "$f")"
    other=$("$py" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(max(0, r["cpu_busy_pct"][int(sys.argv[2])] - (r["server_cpu_pct"] or 0)))' "$f" "$server_core")
    if retry_noisy "$other" churn; then
        mv "$f" "$out/noisy/churn-$1.$retries_left.json"
        stop_server "$tether_pid"
        start_tether "churn-$1.$retries_left" 3600 1000000
        run_churn "$1"
    fi
}
for r in $(seq "$rounds"); do
    start_tether "churn-$r" 3600 1000000
    run_churn "$r"
    churn_tether_cmd=$tether_cmd
    stop_server "$tether_pid"
done
say "churn done; $((SECONDS - started)) s in all"

# ---- memory per session -------------------------------------------------------------------
if ((!only_churn)); then
say "memory: tether-state with $sessions sessions"
start_tether fill 3600 $((sessions + 1000))
sleep 1
t_rss0=$(rss_kib "$tether_pid")
fill_args=("$load" fill --socket "$tether_sock" --conns "$fill_conns" --sessions "$sessions")
taskset -c "$client_core" "${fill_args[@]}" >"$out/fill-tether.json" 2>"$out/logs/fill.err" &
fill_pid=$!
pids+=("$fill_pid")
for _ in $(seq 1200); do
    [[ -s $out/fill-tether.json ]] && break
    kill -0 "$fill_pid" 2>/dev/null || { cat "$out/logs/fill.err" >&2; die "state_load fill failed"; }
    sleep 0.1
done
[[ -s $out/fill-tether.json ]] || die "state_load fill did not finish within 120 s"
sleep 1   # let the daemon settle (journal buffers flushed)
t_rss1=$(rss_kib "$tether_pid")
curl -s "http://127.0.0.1:$metrics_port/metrics" >"$out/fill-tether-metrics.txt" || true
kill -0 "$tether_pid" 2>/dev/null || die "tether-state died during the fill"
fill_tether_cmd=$tether_cmd
stop_server "$fill_pid"
stop_server "$tether_pid"

say "memory: Redis with $sessions sessions (HSET + EXPIRE through redis-cli --pipe)"
start_redis redis-fill
sleep 1
r_rss0=$(rss_kib "$redis_pid")
r_used0=$(redis-cli -s "$redis_sock" info memory | awk -F: '/^used_memory:/ {print $2+0}')
# The same sessions as the fill: session id, device, gateway, route, resume token, state.
taskset -c "$client_core" "$py" - "$sessions" "$fill_conns" >"$work/fill.resp" <<'PY'
import sys
n, links = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout.buffer
def cmd(*args):
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)
for k in range(n):
    sid = "%016x" % (0x9E3779B97F4A7C15 * (k + 1) % (1 << 64))
    key = "session:" + sid
    out.write(cmd("HSET", key, "device", "fill-%d" % k, "gateway", "fill-gw-%d" % (k % links),
                  "route", str(k // links + 1), "session", sid,
                  "resume", sid + "." + "%032x" % ((k + 1) * 0x2545F4914F6CDD1D % (1 << 128)),
                  "state", "online"))
    out.write(cmd("EXPIRE", key, "10800"))   # = 3 × heartbeat_s 3600, as in the daemon
PY
taskset -c "$client_core" redis-cli -s "$redis_sock" --pipe <"$work/fill.resp" >"$out/fill-redis.txt" 2>&1 ||
    { cat "$out/fill-redis.txt" >&2; die "redis-cli --pipe failed"; }
sleep 1
r_rss1=$(rss_kib "$redis_pid")
redis-cli -s "$redis_sock" info >"$out/fill-redis-info.txt"
r_used1=$(awk -F: '/^used_memory:/ {print $2+0}' "$out/fill-redis-info.txt")
r_keys=$(redis-cli -s "$redis_sock" dbsize)
stop_server "$redis_pid"
say "memory done; $((SECONDS - started)) s in all"
fi

# ---- report -------------------------------------------------------------------------------
git_rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo +dirty)"
report_rc=0
: >"$out/report.md"
if ((!only_churn)); then
"$py" - "$out" "$rounds" "$depth" "$logins_per_batch" "$sessions" \
    "$t_rss0" "$t_rss1" "$r_rss0" "$r_rss1" "$r_used0" "$r_used1" "$r_keys" <<'PY' | tee -a "$out/report.md" || report_rc=1
import csv, json, re, statistics, sys
out, rounds, depth, l, sessions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
t_rss0, t_rss1, r_rss0, r_rss1, r_used0, r_used1, r_keys = map(int, sys.argv[6:13])
hb = depth - 2 * l
redis_per_batch = l * 2 + hb + l   # HSET + EXPIRE per LOGIN, EXPIRE per HEARTBEAT and CLOSED

def bench(path):
    rows = list(csv.reader(open(path)))
    extra = dict(r for r in rows[2:] if len(r) == 2)
    cpu = float(extra.get("server_cpu_pct", "nan"))
    return float(rows[1][1]), cpu, max(0.0, float(extra.get("core_busy_pct", "nan")) - cpu)

runs = []
for r in range(1, rounds + 1):
    t = json.load(open(f"{out}/mix-tether-{r}.json"))
    h, h_cpu, h_other = bench(f"{out}/mix-redis-hset-{r}.csv")
    e, e_cpu, e_other = bench(f"{out}/mix-redis-expire-{r}.csv")
    t_other = max(0.0, t["cpu_busy_pct"][0] - (t["server_cpu_pct"] or 0)) if t.get("cpu_busy_pct") else float("nan")
    batch_s = l / h + (l + hb + l) / e          # Redis seconds per tether batch of work
    runs.append({
        "t": t["commands_per_s"], "t_login": t["logins_per_s"], "t_cpu": t["server_cpu_pct"] or float("nan"),
        "t_client": t["client_cpu_pct"], "t_p99": t["batch_latency_us"]["p99"], "t_max": t["batch_latency_us"]["max"], "fail": t["login_fail"],
        "kicks": t["kicks"], "h": h, "e": e, "t_other": t_other, "r_other": max(h_other, e_other), "h_cpu": h_cpu, "e_cpu": e_cpu,
        "r_equiv": depth / batch_s, "r_cmds": redis_per_batch / batch_s, "r_login": l / batch_s,
    })
med = lambda k: statistics.median(x[k] for x in runs)
print(f"**Throughput** — 50 connections, pipeline {depth}, median of {rounds} round(s)\n")
print("| server (core 0) | work measured | commands/s | sessions (LOGINs)/s | server CPU | tether-equivalent commands/s |")
print("|---|---|---:|---:|---:|---:|")
print(f"| tether-state | {l} CLOSED + {hb} HEARTBEAT + {l} LOGIN per batch | {med('t'):,.0f} | {med('t_login'):,.0f} | {med('t_cpu'):.0f}% | {med('t'):,.0f} |")
print(f"| Redis `HSET session:<id>` (6 fields) | one command | {med('h'):,.0f} | | {med('h_cpu'):.0f}% | |")
print(f"| Redis `EXPIRE session:<id>` | one command | {med('e'):,.0f} | | {med('e_cpu'):.0f}% | |")
print(f"| Redis, the same work ({l} HSET + {redis_per_batch - l} EXPIRE per batch) | harmonic mean of the two | {med('r_cmds'):,.0f} | {med('r_login'):,.0f} | | {med('r_equiv'):,.0f} |")
print(f"| **tether / Redis** (same work) | | | | | **{med('t') / med('r_equiv'):.2f}×** |")
print()
print("| round | tether commands/s | tether server CPU | client CPU | batch p99 / max µs | LOGIN_FAIL | KICK | Redis HSET/s | Redis EXPIRE/s | Redis equivalent/s | ratio | other CPU on core 0: tether / Redis runs |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for i, x in enumerate(runs, 1):
    print(f"| {i} | {x['t']:,.0f} | {x['t_cpu']:.0f}% | {x['t_client']:.0f}% | {x['t_p99']:,} / {x['t_max']:,} | {x['fail']} | {x['kicks']} | {x['h']:,.0f} | {x['e']:,.0f} | {x['r_equiv']:,.0f} | {x['t'] / x['r_equiv']:.2f}× | {x['t_other']:.0f}% / {x['r_other']:.0f}% |")

def metric(path, pattern):
    try:
        m = re.search(pattern, open(path).read(), re.M)
        return m.group(1) if m else "?"
    except OSError:
        return "?"
compactions = metric(f"{out}/mix-tether-metrics.txt", r"^tether_state_journal_compactions_total\s+(\S+)")
rewrites = metric(f"{out}/mix-redis-info.txt", r"^aof_rewrites:(\d+)")
print(f"\nLog compactions during the throughput part (both servers compact past 64 MiB by default, "
      f"on core 0): tether-state journal {compactions}, Redis AOF rewrites {rewrites}.")

fill = json.load(open(f"{out}/fill-tether.json"))
online = ""
try:
    m = re.search(r'^tether_state_sessions\{state="online"\}\s+(\S+)', open(f"{out}/fill-tether-metrics.txt").read(), re.M)
    online = f"{float(m.group(1)):,.0f}" if m else "not in /metrics"
except OSError:
    online = "no /metrics"
per = (t_rss1 - t_rss0) * 1024 / sessions
r_per_rss = (r_rss1 - r_rss0) * 1024 / sessions
r_per_used = (r_used1 - r_used0) / sessions
print(f"\n**Memory per session** — {sessions:,} sessions\n")
print("| server | sessions | RSS before | RSS after | **bytes/session (RSS)** | bytes/session (allocator) | fill rate |")
print("|---|---:|---:|---:|---:|---:|---:|")
print(f"| tether-state | {fill['login_ok']:,} LOGIN_OK ({fill['login_fail']} failed); online per /metrics: {online} | {t_rss0 / 1024:,.1f} MiB | {t_rss1 / 1024:,.1f} MiB | **{per:,.0f}** | | {fill['logins_per_s']:,.0f} logins/s |")
print(f"| Redis (reference) | {r_keys:,} keys | {r_rss0 / 1024:,.1f} MiB | {r_rss1 / 1024:,.1f} MiB | {r_per_rss:,.0f} | {r_per_used:,.0f} (used_memory) | |")
noisy = [i for i, x in enumerate(runs, 1) if max(x["t_other"], x["r_other"]) > 20]
if noisy:
    print(f"\n**Round(s) {noisy} ran with over 20% of core 0 taken by other processes after every re-run: "
          "their numbers understate whichever server it hit.**")
bad = sum(x["fail"] for x in runs) + fill["login_fail"]
if fill["login_ok"] != sessions:
    bad += 1
if bad:
    print(f"\n**LOGIN_FAILs or missing sessions: the numbers above are not valid.**")
    sys.exit(1)
PY
fi
"$py" - "$out" "$rounds" <<'PY' | tee -a "$out/report.md" || report_rc=1
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
churns = []
for r in range(1, rounds + 1):
    c = json.load(open(f"{out}/churn-{r}.json"))
    d = json.load(open(f"{out}/churn-{r}.daemon.json"))
    # Setup: each session's base JOIN and its first extra one; then every JOIN/LEAVE answered.
    c["counted"] = (d["daemon_joins"] == 2 * c["sessions"] + c["joins_total"]
                    and d["daemon_leaves"] == c["leaves_total"])
    c["other"] = max(0.0, c["cpu_busy_pct"][0] - (c["server_cpu_pct"] or 0)) if c.get("cpu_busy_pct") else float("nan")
    churns.append(c)
cmed = lambda k: statistics.median(x[k] or float("nan") for x in churns)
c0 = churns[0]
print(f"\n**Room membership churn** — tether-state alone on core 0, {c0['conns']} links × {c0['depth']} outstanding, "
      f"{c0['sessions']:,} sessions, {c0['rooms']:,} rooms, median of {rounds} round(s)\n")
print("| joins+leaves/s | joins/s | leaves/s | server CPU µs per join/leave | server CPU (% of one core) | joins+leaves/s per core (1e6 / µs) |")
print("|---:|---:|---:|---:|---:|---:|")
print(f"| **{cmed('ops_per_s'):,.0f}** | {cmed('joins_per_s'):,.0f} | {cmed('leaves_per_s'):,.0f} | **{cmed('server_cpu_us_per_op'):.2f}** | "
      f"{cmed('server_cpu_pct'):.0f}% | {1e6 / cmed('server_cpu_us_per_op'):,.0f} |")
print()
print("| round | joins+leaves/s | µs per join/leave | server CPU | client CPU | ROOM_FAIL | MEMBERSHIP frames | daemon counters match | other CPU on core 0 |")
print("|---:|---:|---:|---:|---:|---:|---:|---|---:|")
for i, x in enumerate(churns, 1):
    print(f"| {i} | {x['ops_per_s']:,.0f} | {x['server_cpu_us_per_op'] or float('nan'):.2f} | {x['server_cpu_pct'] or float('nan'):.0f}% | "
          f"{x['client_cpu_pct']:.0f}% | {x['room_fail']} | {x['memberships']:,} | {'yes' if x['counted'] else '**no**'} | {x['other']:.0f}% |")

noisy_churn = [i for i, x in enumerate(churns, 1) if x["other"] > 20]
if noisy_churn:
    print(f"\n**Churn round(s) {noisy_churn} ran with over 20% of core 0 taken by other processes after every re-run: "
          "joins+leaves/s understates the daemon (µs per join/leave is CPU time, less affected).**")
churn_bad = any(x["room_fail"] or x["login_fail"] or not x["counted"] for x in churns)
if churn_bad:
    print(f"\n**Churn: ROOM_FAILs, LOGIN_FAILs or daemon counters that do not match: the churn numbers are not valid.**")
    sys.exit(1)
PY

commands="    $churn_tether_cmd
    taskset -c $client_core ${churn_cmd[*]} --server-pid PID"
if ((!only_churn)); then commands="    $mix_tether_cmd
    taskset -c $client_core ${mix_cmd[*]} --server-pid PID
$commands
    $mix_redis_cmd      # port 0, unixsocket, save \"\", appendonly yes, appendfsync everysec
    taskset -c $client_core redis-benchmark -s SOCK ${bench_common[*]} -n N ${hset_args[*]}
    taskset -c $client_core redis-benchmark -s SOCK ${bench_common[*]} -n N ${expire_args[*]}
    $fill_tether_cmd
    taskset -c $client_core ${fill_args[*]}"
fi
cat <<EOF | tee -a "$out/report.md"

Commands (core $server_core: the server; core $client_core: the client):

$commands

$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(uname -r); $(redis-server --version | awk '{print $1, $2, $3}'); git $git_rev; $(date -u '+%Y-%m-%d %H:%M UTC')
Raw results: $out
EOF
exit "$report_rc"
