#!/usr/bin/env bash
# Soak under faults: the whole stack for a set time under mixed load while its daemons are
# SIGKILLed and restarted at random; then every request and every push must be accounted
# for, and no daemon may have grown.
#
#   bench/soak.sh [--smoke] [--minutes M] [--rss-bound PCT] [--slow-readers N] [--etcd]
#                 [--seed N] [--out DIR]
#
#     --minutes M      how long the load runs (default 10; fractions allowed)
#     --slow-readers N how many slow readers (default 4; 0: none, to see what they cost)
#     --rss-bound PCT  the most a daemon's RSS may grow from the end of the warm-up to the
#                      end of the load (default 5)
#     --etcd           membership through etcd (nodes register, gateways and ipconfig
#                      watch) instead of static lists; etcd is then killed too
#     --seed N         the faults' random sequence (default: from the clock; printed)
#     --smoke          the CI check that the script still runs: 20 s of everything at the
#                      smallest sizes, a fault every 3 to 5 s (about 45 s in all)
#     --out DIR        where the JSON of every loadgen round, the ledger, the faults,
#                      the RSS samples, /metrics dumps and logs go (default: a new mktemp
#                      dir, printed at the end; kept)
#
# The stack (127.0.0.1 only): tether-ipconfig :20010; tether-state (socket and journal in a
# temp dir, HTTP :20011, heartbeat_s 10, resume_window_s 30); echo nodes :20012-20014; a
# black-hole node :20015 (bench/lib/blackhole_node.py: answers health pings, never a
# request); gateways gw-a :20016 (admin :20017) and gw-b :20018 (admin :20019), 2
# reactors each, --state, reporting to ipconfig, request_timeout_ms 2000, all four nodes
# (round robin: a quarter of the requests go to the black hole and come back
# REQUEST_TIMEOUT); with --etcd, etcd on :20020 (peer :20021). All these ports must be free.
#
# The load, all of it at once for the whole time:
#   echo       tether-loadgen rounds of 30 s (100 connections found through ipconfig's
#              /ip_list, JWT logins, 8 requests/s each flagged resend-safe, heartbeats),
#              one after the other: each round logs the same devices in again;
#   churn      tether-loadgen rounds of 50 connections that log in, hold 2 s and leave:
#              logins and relogins, again and again;
#   ledger     bench/lib/ledger.py: 20 devices sending 4 requests/s each and taking 50
#              pushes/s POSTed through the push API (ACKed), reconnecting and RESUMEing
#              after every fault; 4 slow readers asking for 16 KiB replies 15 times a
#              second and reading 128 KiB/s through a 4 KiB receive buffer, so the gateway
#              queues for them (up to max_queued_bytes, then SLOW_CONSUMER and close).
# The faults: after the warm-up (1 minute; smoke: 5 s), every 20 to 40 s (smoke: 3 to 5 s)
# one of node-1, node-2, the state daemon, gw-a (and etcd with --etcd) is SIGKILLed and
# started again 1 to 4 s later with the same command (and journal); node-0, gw-b,
# ipconfig and the black hole are never killed. No fault in the last 15 s (smoke: 5 s).
#
# Accounted for: loadgen's requests{sent,answered,errored,lost,unanswered} of every round
# (a drain longer than the request timeout, so every fate is heard), the ledger's requests,
# slow readers' requests and pushes. Silent = a request never answered on a connection that
# stayed up, counts that do not add up, or a push the API accepted (delivered/queued) that
# neither reached its device nor is still pending for it. RSS (VmRSS) of every daemon at
# the end of the warm-up and at the end of the load; a daemon that ran the whole time (never
# restarted) may grow at most --rss-bound % (the black hole, the bench's own Python
# node, is shown but not judged). Exit status 1 on any silent loss, wrong reply
# or RSS growth past the bound (--smoke judges no RSS: seconds of load say nothing about
# growth). Output: Markdown on stdout (also OUT/report.md), progress on stderr. Everything
# started is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
me=soak.sh

minutes=10 rss_bound=5 use_etcd=0 seed="" smoke=0 out="" args="$*" slow=""
usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
        --smoke) smoke=1 ;;
        --minutes) minutes=$2; shift ;;
        --rss-bound) rss_bound=$2; shift ;;
        --etcd) use_etcd=1 ;;
        --slow-readers) slow=$2; shift ;;
        --seed) seed=$2; shift ;;
        --out) out=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "$me: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
[[ $minutes =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "$me: --minutes takes a number" >&2; exit 2; }
[[ $rss_bound =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "$me: --rss-bound takes a number" >&2; exit 2; }
[[ -z $slow || $slow =~ ^[0-9]+$ ]] || { echo "$me: --slow-readers takes a whole number" >&2; exit 2; }
slow_readers=$slow
seed=${seed:-$(date +%s)}
[[ $seed =~ ^[0-9]+$ ]] || { echo "$me: --seed takes a whole number" >&2; exit 2; }
RANDOM=$((seed % 32768))

# ---- sizes --------------------------------------------------------------------------------
seconds=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 }')
warmup=60 fault_min=20 fault_max=40 down_min=1 down_max=4 quiet_end=15
echo_round=30 echo_conns=100 echo_rate=8
churn_conns=50 churn_hold=2
ledger_devices=20 ledger_rate=4 push_rate=50 slow=${slow_readers:-4} slow_rate=15
if ((smoke)); then
    seconds=20 warmup=5 fault_min=3 fault_max=5 down_min=1 down_max=1 quiet_end=5
    echo_round=9 echo_conns=10 echo_rate=5
    churn_conns=5 churn_hold=1
    ledger_devices=3 ledger_rate=4 push_rate=10 slow=${slow_readers:-1} slow_rate=15
fi
((seconds > warmup + quiet_end)) || { echo "$me: --minutes leaves no time after the warm-up" >&2; exit 2; }
request_timeout_ms=2000
drain=$((request_timeout_ms / 1000 + 2))

ipconfig_port=20010 state_port=20011 node_ports=(20012 20013 20014) hole_port=20015
gwa_port=20016 gwa_admin=20017 gwb_port=20018 gwb_admin=20019 etcd_port=20020 etcd_peer=20021
bin=${CARGO_TARGET_DIR:-target}/release
lib=bench/lib

source "$lib/stack.sh"
[[ -n $out ]] || out=$(mktemp -d /tmp/tether-soak.XXXXXX)
compgen -G "$out/ledger.json" >/dev/null && die "$out already holds results of another run; give --out an empty or new directory"
mkdir -p "$out/logs" "$out/rounds"
out=$(cd "$out" && pwd)
work=$(mktemp -d /tmp/tether-soak-work.XXXXXX)
extra_cleanup+=("rm -rf '$work'")
trap_cleanup
need_tools
((use_etcd == 0)) || command -v etcd >/dev/null || die "--etcd needs etcd on the PATH (Debian: etcd-server)"
((use_etcd == 0)) || command -v etcdctl >/dev/null || die "--etcd needs etcdctl on the PATH (Debian: etcd-client)"

say "cargo build --release --bins (ipconfig, state, gateway, echo node, loadgen)"
cargo build --release --quiet -p tether-ipconfig -p tether-state -p tether-gateway -p tether-echo-node -p tether-loadgen
ports=("$ipconfig_port" "$state_port" "${node_ports[@]}" "$hole_port" "$gwa_port" "$gwa_admin" "$gwb_port" "$gwb_admin")
((use_etcd == 0)) || ports+=("$etcd_port" "$etcd_peer")
require_free "${ports[@]}"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

secret=$work/jwt.key
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret"
chmod 600 "$secret"
etcd_url=http://127.0.0.1:$etcd_port
node_list=""
for p in "${node_ports[@]}" "$hole_port"; do node_list+="${node_list:+,}127.0.0.1:$p"; done

# ---- the daemons: one way to start each, used again after every kill ----------------------
declare -A pid=() restarts=() port_of=() cmd_of=()
daemons=(ipconfig state node-0 node-1 node-2 hole gw-a gw-b)
((use_etcd == 0)) || daemons=(etcd "${daemons[@]}")
launch() {   # launch NAME : starts daemon NAME (again) and waits until it listens
    local name=$1 cmd=() port membership=()
    ((use_etcd == 0)) || membership=(--etcd "$etcd_url")
    case $name in
        etcd)
            port=$etcd_port
            cmd=(etcd --name soak --data-dir "$work/etcd" --listen-client-urls "$etcd_url"
                 --advertise-client-urls "$etcd_url" --listen-peer-urls "http://127.0.0.1:$etcd_peer"
                 --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer"
                 --initial-cluster "soak=http://127.0.0.1:$etcd_peer") ;;
        ipconfig)
            port=$ipconfig_port
            cmd=("$bin/tether-ipconfig" --listen "127.0.0.1:$port" --stale-after-ms 2000 "${membership[@]}") ;;
        state)
            port=$state_port
            cmd=("$bin/tether-state" --socket "$work/state.sock" --journal "$work/journal"
                 --http "127.0.0.1:$port" --jwt-secret-file "$secret" --heartbeat-s 10
                 --resume-window-s 30) ;;
        node-*)
            port=${node_ports[${name#node-}]}
            cmd=("$bin/tether-echo-node" --listen "127.0.0.1:$port" --reactors 1)
            ((use_etcd == 0)) || cmd+=(--etcd "$etcd_url" --id "soak-$name") ;;
        hole)
            port=$hole_port
            cmd=(python3 "$lib/blackhole_node.py" --listen "127.0.0.1:$port" --stats "$out/blackhole.json") ;;
        gw-a | gw-b)
            if [[ $name == gw-a ]]; then port=$gwa_port; else port=$gwb_port; fi
            cmd=("$bin/tether-gateway" --id "soak-$name" --listen "127.0.0.1:$port"
                 --admin "127.0.0.1:$((port + 1))" --reactors 2 --pin-cores false
                 --state "$work/state.sock" --ipconfig "http://127.0.0.1:$ipconfig_port"
                 --report-interval-ms 500 --request-timeout-ms "$request_timeout_ms")
            if ((use_etcd)); then cmd+=(--etcd "$etcd_url"); else cmd+=(--node "$node_list"); fi ;;
        *) die "no daemon named $name" ;;
    esac
    port_of[$name]=$port
    cmd_of[$name]="${cmd[*]}"
    start "$name" env RUST_LOG=warn "${cmd[@]}"
    pid[$name]=$started_pid
    echo "$started_pid" >"$work/$name.pid"
    wait_port "$name" "$started_pid" "$port"
}
register_hole() {   # with etcd: the black hole's membership record, under a lease of its own
    local lease
    lease=$(etcdctl --endpoints "$etcd_url" lease grant 86400 | awk '{print $2}')
    etcdctl --endpoints "$etcd_url" put /tether/nodes/soak-hole \
        "{\"id\":\"soak-hole\",\"addr\":\"127.0.0.1:$hole_port\"}" --lease="$lease" >/dev/null
}
for d in "${daemons[@]}"; do
    restarts[$d]=0
    launch "$d"
done
((use_etcd == 0)) || register_hole
all_nodes_up() {
    local a
    for a in "$gwa_admin" "$gwb_admin"; do
        [[ $(metric_sum "$a" tether_gateway_node_up) == 4 ]] || return 1
        [[ $(metric "$a" tether_gateway_state_links_up) == 2 ]] || return 1
    done
    [[ $(http_get "$ipconfig_port" /ip_list | grep -o '"addr"' | wc -l) -ge 2 ]]
}
wait_until 20 "both gateways with four nodes up, linked to state, listed by ipconfig" all_nodes_up
((smoke)) || say "waiting for a quiet machine (60 s at most): $(python3 "$lib/machine.py" quiet 20 60)% of a core busy"

# ---- the load -----------------------------------------------------------------------------
t0=$SECONDS
end=$((t0 + seconds))
rounds() {   # rounds NAME LENGTH CMD… : loadgen rounds of LENGTH s, one after the other, until $end
    local name=$1 length=$2 i=0 child=""; shift 2
    # A subshell: not the script's cleanup (that would stop the stack), only its own round.
    trap - EXIT
    trap '[[ -n $child ]] && kill $child 2>/dev/null; exit 0' TERM INT
    while ((SECONDS + length <= end)); do
        i=$((i + 1))
        "$@" --json "$out/rounds/$name-$i.json" >>"$out/logs/$name.log" 2>&1 &
        child=$!
        wait "$child" || true
        child=""
    done
}
lg_common=(--ipconfig "http://127.0.0.1:$ipconfig_port" --jwt-secret-file "$secret" --threads 1 --quiet)
echo_cmd=("$bin/tether-loadgen" "${lg_common[@]}" --device-prefix soak-echo --conns "$echo_conns"
          --rate "$echo_rate" --payload 128 --resend-safe true --duration $((echo_round - drain - 2))
          --drain "$drain" --connect-timeout 5)
churn_cmd=("$bin/tether-loadgen" "${lg_common[@]}" --device-prefix soak-churn --conns "$churn_conns"
           --hold "$churn_hold" --heartbeat 1 --connect-timeout 5)
ledger_cmd=(python3 "$lib/ledger.py" --gateways "127.0.0.1:$gwa_port,127.0.0.1:$gwb_port"
            --push-url "http://127.0.0.1:$state_port" --secret-file "$secret" --seconds "$seconds"
            --devices "$ledger_devices" --rate "$ledger_rate" --push-rate "$push_rate" --slow "$slow"
            --slow-rate "$slow_rate" --drain "$drain" --prefix soak --out "$out/ledger.json")
say "load for $seconds s (warm-up $warmup s): echo rounds, login churn, ledger devices and slow readers; seed $seed"
rounds echo "$echo_round" "${echo_cmd[@]}" &
echo_loop=$!
pids+=("$echo_loop")
rounds churn $((churn_hold + 3)) "${churn_cmd[@]}" &
churn_loop=$!
pids+=("$churn_loop")
start ledger "${ledger_cmd[@]}"
ledger=$started_pid

# ---- RSS samples and faults ---------------------------------------------------------------
: >"$out/rss.tsv"
sample_rss() {   # sample_rss PHASE : one line per daemon: phase, name, pid, restarts, VmRSS KiB
    local d
    for d in "${daemons[@]}"; do
        printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$d" "${pid[$d]}" "${restarts[$d]}" "$(rss_kib "${pid[$d]}")" >>"$out/rss.tsv"
    done
}
: >"$out/faults.tsv"
victims=(node-1 node-2 state gw-a)
((use_etcd == 0)) || victims+=(etcd)
next_fault=$((t0 + warmup + fault_min + RANDOM % (fault_max - fault_min + 1)))
sampled_start=0 next_sample=$((t0 + warmup))
while ((SECONDS < end - 2)); do
    now=$SECONDS
    if ((!sampled_start && now >= t0 + warmup)); then
        sample_rss start
        sampled_start=1
    fi
    if ((now >= next_sample)); then
        sample_rss "t$((now - t0))"
        next_sample=$((now + 10))
    fi
    if ((now >= next_fault && now < end - quiet_end)); then
        victim=${victims[RANDOM % ${#victims[@]}]}
        down=$((down_min + RANDOM % (down_max - down_min + 1)))
        say "[$((now - t0)) s] SIGKILL $victim (pid ${pid[$victim]}), back in $down s"
        printf '%s\t%s\t%s\t%s\n' "$((now - t0))" "$victim" "${pid[$victim]}" "$down" >>"$out/faults.tsv"
        kill9 "${pid[$victim]}"
        sleep "$down"
        restarts[$victim]=$((restarts[$victim] + 1))
        launch "$victim"
        next_fault=$((SECONDS + fault_min + RANDOM % (fault_max - fault_min + 1)))
    fi
    for d in "${daemons[@]}"; do
        kill -0 "${pid[$d]}" 2>/dev/null || die "$d (pid ${pid[$d]}) died by itself (log: $out/logs/$d.log)"
    done
    sleep 1
done
sample_rss end
say "load over; waiting for the last rounds and the ledger (drain ${drain} s, pushes settle)"
wait "$echo_loop" || true
forget_pid "$echo_loop"
wait "$churn_loop" || true
forget_pid "$churn_loop"
wait "$ledger" || true
forget_pid "$ledger"
sleep 5
sample_rss after
for d in state gw-a gw-b ipconfig; do
    case $d in
        state) p=$state_port ;; gw-a) p=$gwa_admin ;; gw-b) p=$gwb_admin ;; ipconfig) p=$ipconfig_port ;;
    esac
    http_get "$p" /metrics >"$out/metrics-$d.txt"
done
stop "${pid[hole]}"   # writes blackhole.json

{
    for d in "${daemons[@]}"; do printf '%s\t%s\n' "$d" "${cmd_of[$d]}"; done
} >"$out/commands.tsv"
json_kv "$out/setup.json" date "$(date -u '+%Y-%m-%d %H:%M UTC')" git "$(git_rev)" \
    machine "$(python3 "$lib/machine.py" describe)" \
    versions "$("$bin/tether-gateway" --version), $("$bin/tether-state" --version), $("$bin/tether-loadgen" --version), $(python3 --version)$( ((use_etcd == 0)) || echo ", etcd $(etcd --version | awk 'NR == 1 {print $3}')")" \
    seconds "$seconds" warmup "$warmup" rss_bound "$rss_bound" seed "$seed" etcd "$use_etcd" smoke "$smoke" \
    echo_cmd "${echo_cmd[*]}" churn_cmd "${churn_cmd[*]}" ledger_cmd "${ledger_cmd[*]}" \
    command "bench/soak.sh $args"
python3 "$lib/faults_report.py" soak "$out" | tee "$out/report.md"
