#!/usr/bin/env bash
# How long a journal compaction holds tether-state's event loop: this tree against another
# commit, side by side in one run, builds alternating.
#
#   bench/compaction.sh [--smoke] [--against REV]... [--runs N] [--sessions N] [--out DIR]
#
#     --smoke        the CI check that the script still runs: 1 run, 2,000 sessions, a mix of
#                    0.5 + 2 s, the daemon compacting past 1 MiB (--compact-bytes, its
#                    smallest) so that compactions still happen; give it before the other
#                    flags to override them. Builds another commit only with --against.
#     --against REV  also measure the tether-state of commit REV (built in a git worktree
#                    under OUT, with its own target dir); repeatable
#     --runs N       runs per build (default 3)
#     --sessions N   sessions held while the load runs (default 400000)
#     --out DIR      logs and JSON (default: a new mktemp dir, printed at the end; kept)
#
# Each run: a fresh daemon on core 0 (--journal-fsync everysec --heartbeat-s 3600
# --resume-window-s 120, the default compact_bytes of 64 MiB), state_load fill logging in
# --sessions sessions over 4 links that stay open, then state_load mix on core 1 (50 links,
# batches of 16: logins, heartbeats, CLOSED) for 2 + 20 s, during which the journal passes
# compact_bytes a few times. Reported per run: the loop's time in each compaction (the
# daemon's log: `loop_ms` of "journal compaction started", or `ms` of "journal compacted"
# for a build that compacts inline), the worst and p99 batch latency and commands/s of the
# mix. The same state_load (this tree's) drives every build.
#
# Loopback Unix sockets only; the daemon's push API listener is 127.0.0.1:19963 and its
# metrics listener 127.0.0.1:19964 (given as TETHER_STATE_METRICS, which a build from before
# that listener existed ignores; both must be free). Everything started is stopped on exit. About 1 minute per run after the builds.
set -euo pipefail
cd "$(dirname "$0")/.."

against=() runs=3 sessions=400000 out="" warmup=2 duration=20 compact=() smoke=0 max_sessions=""
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --smoke) runs=1 sessions=2000 warmup=0.5 duration=2 compact=(--compact-bytes 1048576) smoke=1
                 max_sessions=250000 ;;   # the mix's sessions stay for the resume window: on a
                                          # fast machine all of its 50 × 4,096 devices + 2,000
        --against) against+=("$2"); shift ;;
        --runs) runs=$2; shift ;;
        --sessions) sessions=$2; shift ;;
        --out) out=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "compaction.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
out=${out:-$(mktemp -d /tmp/tether-compaction.XXXXXX)}
max_sessions=${max_sessions:-$((sessions * 3))}
mkdir -p "$out/logs"
say() { echo "compaction.sh: $*" >&2; }
die() { say "$*"; exit 1; }

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

say "building this tree (tether-state, state_load)"
cargo build --release --quiet -p tether-state --bin tether-state --example state_load
target=$(realpath "${CARGO_TARGET_DIR:-target}")
load=$target/release/examples/state_load
builds=("tree=$target/release/tether-state")
for rev in "${against[@]}"; do
    sha=$(git rev-parse --short "$rev^{commit}") || die "no commit '$rev'"
    tree=$out/worktree-$sha
    [[ -d $tree ]] || git worktree add --quiet --detach "$tree" "$sha"
    say "building tether-state of $sha in $tree"
    (cd "$tree" && CARGO_TARGET_DIR=$out/target-$sha cargo build --release --quiet -p tether-state --bin tether-state)
    git worktree remove --force "$tree"
    builds+=("$sha=$out/target-$sha/release/tether-state")
done

# The JWT secret reaches the daemon and the client through the environment (flags show in ps).
export TETHER_STATE_JWT_SECRET="bench-compaction-$$-$RANDOM"
run() {   # run NAME BINARY N
    local name=$1 bin=$2 n=$3 dir=$out/$1-$3 daemon fill
    mkdir -p "$dir/journal"
    RUST_LOG=tether_state=info TETHER_STATE_METRICS=127.0.0.1:19964 taskset -c 0 "$bin" --socket "$dir/state.sock" \
        --http 127.0.0.1:19963 --journal "$dir/journal" --journal-fsync everysec \
        --heartbeat-s 3600 --resume-window-s 120 --max-sessions "$max_sessions" "${compact[@]}" \
        >"$out/logs/$name-$n.log" 2>&1 &
    daemon=$!; pids+=("$daemon")
    for _ in $(seq 200); do [[ -S $dir/state.sock ]] && break; sleep 0.05; done
    [[ -S $dir/state.sock ]] || die "tether-state ($name) did not start: $out/logs/$name-$n.log"
    taskset -c 1 "$load" fill --socket "$dir/state.sock" \
        --conns 4 --sessions "$sessions" --hold 300 >"$dir/fill.json" 2>"$out/logs/$name-$n.fill.err" &
    fill=$!; pids+=("$fill")
    until [[ -s $dir/fill.json ]]; do
        kill -0 "$fill" 2>/dev/null || die "state_load fill failed: $out/logs/$name-$n.fill.err"
        sleep 0.2
    done
    taskset -c 1 "$load" mix --socket "$dir/state.sock" \
        --conns 50 --depth 16 --logins-per-batch 2 --pool 64 --devices 4096 \
        --duration "$duration" --warmup "$warmup" --server-pid "$daemon" >"$dir/mix.json" 2>"$out/logs/$name-$n.mix.err" ||
        die "state_load mix failed: $out/logs/$name-$n.mix.err"
    kill "$fill" "$daemon" 2>/dev/null || true
    wait "$fill" "$daemon" 2>/dev/null || true
    python3 - "$name" "$n" "$dir/mix.json" "$out/logs/$name-$n.log" "$smoke" <<'EOF'
import json, re, sys
name, n, mix, log, smoke = sys.argv[1:]
text = open(log).read()
loop = re.findall(r"journal compaction started.*?loop_ms=(\d+)", text)
if not loop:   # a build that compacts inline: the whole compaction is the loop's
    loop = re.findall(r"journal compacted.*?\bms=(\d+)", text)
m = json.load(open(mix))
lat = m["batch_latency_us"]
print(f"| {name} | {n} | {', '.join(loop) or 'none'} | {lat['max'] / 1000:.0f} | "
      f"{lat['p99'] / 1000:.1f} | {m['commands_per_s'] / 1000:.0f}k |")
if smoke == "1" and not loop:
    sys.exit(f"compaction.sh --smoke: no compaction found in {log}")
if smoke == "1" and m["login_fail"]:
    sys.exit(f"compaction.sh --smoke: {m['login_fail']} LOGIN_FAILs in the mix ({m['login_fail_codes']})")
EOF
}

{
    echo "| build | run | loop ms per compaction | worst batch ms | p99 batch ms | commands/s |"
    echo "|---|---:|---|---:|---:|---:|"
    for n in $(seq "$runs"); do
        for b in "${builds[@]}"; do
            say "run $n: ${b%%=*}"
            run "${b%%=*}" "${b#*=}" "$n"
        done
    done
} | tee "$out/report.md"
say "logs and JSON in $out"
