#!/usr/bin/env bash
# Login storms: the whole login path (tether-state with a JWT key, gateways with --state,
# tether-loadgen logging in with JWTs) offered more logins a second than it can complete.
# First the capacity C: logins/s completed when offered just enough. Then storms offering
# 1×, 2× and 4× C: does goodput hold (the gateways' login gate answers BUSY with a retry
# hint) or collapse?
#
#   bench/storm.sh [--smoke] [--conns N] [--capacity C] [--loadgen PATH] [--out DIR]
#
#     --conns N       logins per storm (default 120,000; the gateways and loadgen processes
#                     are sized from it: at most 15,000 sockets per process)
#     --capacity C    skip measuring the capacity and take C logins/s as 1×
#     --loadgen PATH  another tether-loadgen build to drive the storms (one that reports
#                     conns.setup_s, logins.busy), e.g. to compare loadgen versions
#     --smoke         the CI check that the script still runs: storms of at most 300
#                     logins, every step at that size, no waiting for a quiet machine
#     --out DIR       where the loadgen JSON, /metrics dumps and logs go (default: a new
#                     mktemp dir, printed at the end; kept)
#
# Each storm starts a fresh tether-state (journal in a temp dir) and G gateways (G =
# N / 15,000 rounded up, --reactors 1 each, default max_logins_inflight 512), then one
# tether-loadgen with --procs K (12,000 connections each, --threads 1, source addresses
# 127.0.0.2-127.0.0.61) dials N connections at the offered rate (--connect-rate) over all
# gateways, logs each in (its own device, HS256 token), holds them 1 s and leaves.
# Goodput = logins completed / the time from the first dial until the last connection was
# logged in or given up (loadgen's conns.logged_in / conns.setup_s); BUSY answers are
# retried after the gateway's hint and counted (logins.busy), never failures.
#
# A storm keeps up when it completes at least 90 % of its offer and no login fails.
# Capacity: offered 2,000, 4,000, 8,000 … logins/s (6 s worth each, up to N) until a storm
# does not keep up, then two halvings of the gap between the last offer that kept up and the
# first that did not. The best goodput that kept up is offered again with all N logins
# ("just enough"; 80 % of it, up to three times, until that keeps up too), and what that
# storm completes is C. Then 1×, 2× and 4× C with N logins each. The issue's target:
# goodput at 4× ≥ 90 % of goodput at 1×, reported as met or not met. Exit status 1 when a
# login failed or a connection was dropped in the 1×, 2× or 4× storm (with BUSY and
# retries no login should fail), 0 otherwise.
#
# Ports: node 19980, state HTTP 19981, gateways 19982, 19984, … (admin one above each), all
# on 127.0.0.1 and free. Before each storm the script waits (2 minutes at most in all) for
# the machine to be quiet, and reports how much CPU went to other processes during each.
# Output: Markdown on stdout (also OUT/report.md), progress on stderr. Everything started
# is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
me=storm.sh

conns=120000 capacity="" loadgen="" smoke=0 out="" args="$*"
usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --smoke) smoke=1 conns=300 ;;
        --conns) conns=$2; shift ;;
        --capacity) capacity=$2; shift ;;
        --loadgen) loadgen=$2; shift ;;
        --out) out=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "$me: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[[ $conns =~ ^[0-9]+$ ]] && ((conns >= 100)) || { echo "$me: --conns takes a whole number of at least 100" >&2; exit 2; }
[[ -z $capacity || $capacity =~ ^[0-9]+$ ]] || { echo "$me: --capacity takes a whole number of logins/s" >&2; exit 2; }

per_gateway=15000 per_loadgen=12000
ramp_start=2000 ramp_seconds=6 ramp_max=64000
sources=127.0.0.2-127.0.0.61
quiet_budget=120   # seconds of waiting for a quiet machine, over the whole run
if ((smoke)); then
    ramp_start=50 ramp_max=100 ramp_seconds=3 quiet_budget=0
fi
gateways=$(((conns + per_gateway - 1) / per_gateway))
procs=$(((conns + per_loadgen - 1) / per_loadgen))
node_port=19980 state_port=19981 gw_base=19982
bin=${CARGO_TARGET_DIR:-target}/release
lib=bench/lib

source "$lib/stack.sh"
[[ -n $out ]] || out=$(mktemp -d /tmp/tether-storm.XXXXXX)
compgen -G "$out/storm-*.json" >/dev/null && die "$out already holds results of another run; give --out an empty or new directory"
mkdir -p "$out/logs"
out=$(cd "$out" && pwd)
work=$(mktemp -d /tmp/tether-storm-work.XXXXXX)
extra_cleanup+=("rm -rf '$work'")
trap_cleanup
need_tools

say "cargo build --release -p tether-echo-node -p tether-gateway -p tether-loadgen -p tether-state"
cargo build --release --quiet -p tether-echo-node -p tether-gateway -p tether-loadgen -p tether-state
loadgen=${loadgen:-$bin/tether-loadgen}
[[ -x $loadgen ]] || die "--loadgen $loadgen is not an executable"
hard=$(ulimit -Hn)
[[ $hard == unlimited ]] || ((hard >= per_gateway + 1000)) || die "open-files hard limit $hard is below $((per_gateway + 1000))"
ulimit -n "$hard" 2>/dev/null || true
ports=("$node_port" "$state_port")
for ((g = 0; g < gateways; g++)); do ports+=($((gw_base + 2 * g)) $((gw_base + 2 * g + 1))); done
require_free "${ports[@]}"

secret=$work/jwt.key
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret"
chmod 600 "$secret"

start node env RUST_LOG=warn "$bin/tether-echo-node" --listen "127.0.0.1:$node_port" --reactors 1
wait_port node "$started_pid" "$node_port"

# ---- one storm ----------------------------------------------------------------------------
targets=""
for ((g = 0; g < gateways; g++)); do targets+="${targets:+,}127.0.0.1:$((gw_base + 2 * g))"; done
state_cmd=() gw_cmd=() lg_cmd=()
storm_n=0
links_up() {
    local g
    for ((g = 0; g < gateways; g++)); do
        [[ $(metric $((gw_base + 2 * g + 1)) tether_gateway_state_links_up) == 1 ]] || return 1
    done
}
storm() {   # storm NAME RATE CONNS : one storm on a fresh state daemon and gateways; sets goodput
    local name=$1 rate=$2 n=$3 dir st gws=() g status before after others
    storm_n=$((storm_n + 1))
    dir=$work/storm-$storm_n
    mkdir -p "$dir"
    state_cmd=("$bin/tether-state" --socket "$dir/state.sock" --journal "$dir/journal"
               --http "127.0.0.1:$state_port" --jwt-secret-file "$secret")
    start "state-$storm_n" env RUST_LOG=warn "${state_cmd[@]}"
    st=$started_pid
    wait_port "state-$storm_n" "$st" "$state_port"
    for ((g = 0; g < gateways; g++)); do
        gw_cmd=("$bin/tether-gateway" --id "storm-gw-$g" --listen "127.0.0.1:$((gw_base + 2 * g))"
                --admin "127.0.0.1:$((gw_base + 2 * g + 1))" --node "127.0.0.1:$node_port"
                --state "$dir/state.sock" --reactors 1 --pin-cores false)
        start "gateway-$storm_n-$g" env RUST_LOG=error "${gw_cmd[@]}"
        gws+=("$started_pid")
        wait_port "gateway-$storm_n-$g" "$started_pid" $((gw_base + 2 * g))
    done
    wait_until 10 "every gateway linked to the state daemon" links_up
    if ((quiet_budget > 0)); then
        local t0=$SECONDS
        say "   machine: $(python3 "$lib/machine.py" quiet 20 "$quiet_budget")% of a core busy before the storm"
        quiet_budget=$((quiet_budget - (SECONDS - t0)))
    fi
    lg_cmd=("$loadgen" --target "$targets" --jwt-secret-file "$secret" --device-prefix "storm$storm_n"
            --conns "$n" --connect-rate "$rate" --procs $(((n + per_loadgen - 1) / per_loadgen))
            --threads 1 --source-ips "$sources" --hold 1 --quiet --json "$out/storm-$storm_n.json")
    say "[$name] $n logins offered at $rate/s"
    before=$(python3 "$lib/machine.py" cpu $$)
    status=0
    "${lg_cmd[@]}" >"$out/logs/loadgen-$storm_n.txt" 2>&1 || status=$?
    after=$(python3 "$lib/machine.py" cpu $$)
    others=$(python3 "$lib/machine.py" others "$before" "$after")
    [[ -s $out/storm-$storm_n.json ]] || { cat "$out/logs/loadgen-$storm_n.txt" >&2; die "tether-loadgen wrote no summary (exit $status)"; }
    : >"$out/storm-$storm_n.gateways.txt"
    for ((g = 0; g < gateways; g++)); do http_get $((gw_base + 2 * g + 1)) /metrics >>"$out/storm-$storm_n.gateways.txt"; done
    http_get "$state_port" /metrics >"$out/storm-$storm_n.state.txt"
    for ((g = ${#gws[@]} - 1; g >= 0; g--)); do stop "${gws[g]}"; done
    stop "$st"
    json_kv "$out/storm-$storm_n.meta.json" name "$name" rate "$rate" conns "$n" status "$status" others "$others"
    read -r goodput lost < <(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); c = r["conns"]
print(round(c["logged_in"] / c["setup_s"]) if c["setup_s"] else 0, c["failed"] + c["dropped"])' "$out/storm-$storm_n.json")
    # Kept up: at least 90 % of the offer completed, and nobody failed.
    storm_ok=0
    ((10 * goodput >= 9 * rate && lost == 0)) && storm_ok=1
    say "   goodput $goodput logins/s ($((100 * goodput / rate))% of the offer), $lost failed or dropped; other processes used ${others}% of a core"
}

# ---- capacity, then the storms --------------------------------------------------------------
if [[ -z $capacity ]]; then
    # Double the offer (ramp_seconds' worth of logins, up to N) until a storm does not keep
    # up, then halve the gap between the last that kept up and the first that did not.
    good=0 good_rate=0 bad_rate=0 rate=$ramp_start
    while :; do
        n=$((rate * ramp_seconds))
        ((n <= conns)) || n=$conns
        storm ramp "$rate" "$n"
        if ((storm_ok)); then
            good=$goodput good_rate=$rate
            ((2 * rate <= ramp_max)) || break
            rate=$((2 * rate))
        else
            bad_rate=$rate
            break
        fi
    done
    for _ in 1 2; do
        ((bad_rate > 0 && good_rate > 0)) || break
        rate=$(((good_rate + bad_rate) / 2))
        n=$((rate * ramp_seconds))
        ((n <= conns)) || n=$conns
        storm bisect "$rate" "$n"
        if ((storm_ok)); then good=$goodput good_rate=$rate; else bad_rate=$rate; fi
    done
    ((good > 0)) || die "not even $ramp_start logins/s kept up"
    # Just enough: that rate offered with all N logins must keep up too; else 80 % of it.
    for _ in 1 2 3; do
        storm capacity "$good" "$conns"
        ((storm_ok)) && break
        good=$((good * 8 / 10))
    done
    ((storm_ok)) || die "no offer kept up with $conns logins"
    capacity=$goodput
fi
((capacity > 0)) || die "capacity 0: nothing logged in"
say "capacity C = $capacity logins/s"
for k in 1 2 4; do
    storm "${k}x" $((k * capacity)) "$conns"
done

json_kv "$out/setup.json" date "$(date -u '+%Y-%m-%d %H:%M UTC')" git "$(git_rev)" \
    machine "$(python3 "$lib/machine.py" describe)" \
    versions "$("$bin/tether-gateway" --version), $("$bin/tether-state" --version), $("$loadgen" --version)" \
    capacity "$capacity" gateways "$gateways" procs "$procs" conns "$conns" \
    state_cmd "${state_cmd[*]}" gateway_cmd "${gw_cmd[*]}" loadgen_cmd "${lg_cmd[*]}" \
    command "bench/storm.sh $args"
python3 "$lib/faults_report.py" storm "$out" | tee "$out/report.md"
