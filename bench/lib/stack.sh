# Sourced by the fault benches (bench/blackhole.sh, bench/storm.sh, bench/soak.sh): starting,
# watching, killing and stopping the processes of a run, and reading what they expose.
#
# The sourcing script sets `me` (its name, for messages) and `out` (its results directory,
# with a logs/ subdirectory) before calling these, and `cd`s to the repository root first.
# Everything started with `start` is stopped on exit (TERM, then KILL after 5 s), newest
# first; `trap_cleanup` installs that. Loopback only.

source bench/lib/cpu.sh

pids=()   # every long-running process this run started (and has not reaped yet)
extra_cleanup=()   # commands the script adds, run after the processes are stopped

die() { echo "$me: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }

stop_pid() {   # stop_pid PID : TERM, up to 5 s to exit, then KILL; reaps it
    local p=$1 i
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
forget_pid() {   # forget_pid PID : drop it from $pids (it was stopped or reaped)
    local keep=() q
    for q in "${pids[@]}"; do [[ $q == "$1" ]] || keep+=("$q"); done
    pids=("${keep[@]}")
}
cleanup() {
    local i c
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[i]}"; done
    pids=()
    for c in "${extra_cleanup[@]}"; do eval "$c" || true; done
    return 0
}
trap_cleanup() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

started_pid=""
start() {   # start LOGNAME CMD… : runs CMD in the background, its output in logs/LOGNAME.log
    local log=$1; shift
    "$@" >>"$out/logs/$log.log" 2>&1 &
    started_pid=$!
    pids+=("$started_pid")
}
stop() {   # stop PID : stops one process started with `start` and forgets it
    stop_pid "$1"
    forget_pid "$1"
}
kill9() {   # kill9 PID : SIGKILL one process started with `start`, reap it, forget it
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget_pid "$1"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
require_free() {   # require_free PORT… : dies naming the first port something listens on
    local p
    for p; do
        port_open "$p" && die "port 127.0.0.1:$p is in use; stop whatever listens there and run again"
    done
    return 0
}
wait_port() {   # wait_port NAME PID PORT : until PORT accepts; dies if PID exits first (10 s)
    local name=$1 pid=$2 port=$3 i
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$out/logs/$name.log" >&2; die "$name exited while starting (log: $out/logs/$name.log)"; }
        port_open "$port" && return 0
        sleep 0.05
    done
    die "$name did not listen on 127.0.0.1:$port within 10 s (log: $out/logs/$name.log)"
}
wait_until() {   # wait_until SECONDS WHAT CMD… : until CMD succeeds, or dies after SECONDS
    local limit=$1 what=$2 i; shift 2
    for ((i = 0; i < limit * 10; i++)); do
        "$@" && return 0
        sleep 0.1
    done
    die "$what: not within $limit s"
}

http_get() {   # http_get PORT PATH : the body, or nothing
    curl -sf --max-time 5 "http://127.0.0.1:$1$2" 2>/dev/null || true
}
metric() {   # metric PORT NAME : the value of the sample named exactly NAME (labels included)
    http_get "$1" /metrics | awk -v k="$2" '$1 == k {print $2; exit}'
}
metric_sum() {   # metric_sum PORT NAME : the sum of every sample of family NAME
    http_get "$1" /metrics | awk -v k="$2" '{n = $1; sub(/\{.*/, "", n)} n == k {s += $2} END {printf "%d\n", s}'
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

json_kv() {   # json_kv FILE KEY VALUE… : writes a flat JSON object of strings
    python3 -c 'import json, sys; a = sys.argv[2:]; json.dump(dict(zip(a[::2], a[1::2])), open(sys.argv[1], "w"), indent=1)' "$@"
}

need_tools() {   # need_tools : python3 and curl; installs the missing ones with apt-get
    local missing=() sudo=()
    command -v python3 >/dev/null || missing+=(python3)
    command -v curl >/dev/null || missing+=(curl)
    ((${#missing[@]})) || return 0
    (($(id -u) == 0)) || sudo=(sudo)
    say "apt-get install ${missing[*]}"
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

git_rev() { echo "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo +dirty)"; }
