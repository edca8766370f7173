#!/usr/bin/env bash
# tether-state's login rate per token algorithm: HS256, ES256 and RS256 side by side, one
# daemon, one run.
#
#   bench/tokens.sh [--quick | --smoke] [--out DIR]
#
#     --quick    fewer sessions (HS256 50,000, ES256 20,000, RS256 2,000; default 400,000,
#                100,000 and 10,000)
#     --smoke    the CI check that the script still runs: 2,000, 500 and 100
#     --out DIR  where the JSON lines and the daemon's log go (default: a new mktemp dir)
#
# One tether-state (--journal-fsync everysec, --heartbeat-s 3600 so no heartbeat is due)
# alone on core 0, with the legacy --jwt-secret (HS256, no kid) and a --jwt-keys-file holding
# an ES256 (P-256) and an RS256 (2048-bit) public key made with openssl and
# deploy/jwks-from-pem.sh. state/examples/state_load fill on core 1 logs in N distinct
# devices per algorithm over 4 links, 256 LOGINs outstanding per link, every token signed
# before the timed part (the client's signing is not counted; the daemon verifies each).
# Per algorithm: logins/s (wall clock), the daemon's CPU µs per login (/proc, user + system),
# and the CPU µs one `Verifier::verify` of those tokens costs, measured in state_load on
# core 1 over 20,000 of them. "one core" = 10^6 / the daemon's µs per login: the rate a core
# of its own would sustain, whatever else the machine was doing. ES256 and RS256 then log
# every device in again with the same token (--relogin: a reconnect storm after the resume
# window; each login also KICKs the device's previous session; HS256 shows that work without a
# cache, HS256 tokens are never cached), which the daemon's
# verified-token cache answers without a signature check for as many tokens as it holds
# (--jwt-cache-entries 262144 here, so that the 100,000 ES256 tokens fit; the default is 65,536).
#
# Loopback and a Unix socket only; the daemon's HTTP listener is 127.0.0.1:19962 (must be
# free). Everything started is stopped on exit. Output: a Markdown table on stdout (also
# OUT/report.md), progress on stderr. Time: about a minute after the build (--quick: 25 s,
# --smoke: 3 s).
set -euo pipefail
cd "$(dirname "$0")/.."

hs=400000 es=100000 rs=10000 out=""
while (($#)); do
    case $1 in
        --quick) hs=50000 es=20000 rs=2000 ;;
        --smoke) hs=2000 es=500 rs=100 ;;
        --out) out=$2; shift ;;
        -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "tokens.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done
die() { echo "tokens.sh: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }
(($(nproc) >= 2)) || die "needs 2 cores (core 0 for the daemon, core 1 for the client)"
for tool in openssl taskset python3; do command -v $tool >/dev/null || die "needs $tool"; done

bin=${CARGO_TARGET_DIR:-target}/release
say "cargo build --release -p tether-state --bins --example state_load"
cargo build --release --quiet -p tether-state --bins --example state_load
[[ -n $out ]] || out=$(mktemp -d /tmp/tether-tokens.XXXXXX)
mkdir -p "$out"
work=$(mktemp -d)
pid=""
cleanup() {
    [[ -n $pid ]] && { kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }
    rm -rf "$work"
}
trap cleanup EXIT

# Keys: the issuer's private keys stay here; the daemon gets public keys only.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/es256.pem" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/rs256.pem" 2>/dev/null
openssl pkey -in "$work/es256.pem" -pubout -out "$work/es256.pub.pem"
openssl pkey -in "$work/rs256.pem" -pubout -out "$work/rs256.pub.pem"
deploy/jwks-from-pem.sh es-1="$work/es256.pub.pem" rs-1="$work/rs256.pub.pem" >"$work/keys.json"
export TETHER_STATE_JWT_SECRET="bench-tokens-secret-$$-$RANDOM"

taskset -c 0 "$bin/tether-state" --socket "$work/state.sock" --journal "$work/journal" \
    --http 127.0.0.1:19962 --heartbeat-s 3600 --journal-fsync everysec \
    --max-sessions 2000000 --jwt-keys-file "$work/keys.json" --jwt-cache-entries 262144 \
    >"$out/state.log" 2>&1 &
pid=$!
for _ in $(seq 200); do [[ -S $work/state.sock ]] && break; sleep 0.05; done
[[ -S $work/state.sock ]] || die "tether-state did not start: $(cat "$out/state.log")"

fill() {   # fill ALG SESSIONS [state_load flags…]
    local alg=$1 n=$2
    shift 2
    say "state_load fill: $n logins with $alg tokens"
    taskset -c 1 "$bin/examples/state_load" fill --socket "$work/state.sock" --conns 4 \
        --sessions "$n" --hold 0 --server-pid "$pid" --alg "$alg" "$@" | tee -a "$out/fill.jsonl" >&2
}
: >"$out/fill.jsonl"
fill HS256 "$hs" --relogin
fill ES256 "$es" --key-file "$work/es256.pem" --kid es-1 --relogin
fill RS256 "$rs" --key-file "$work/rs256.pem" --kid rs-1 --relogin

load=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$out/fill.jsonl" "$load" <<'EOF' | tee "$out/report.md"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print("| token | logins | LOGIN_FAIL | logins/s | daemon CPU µs per login | one `verify` µs | one core, logins/s |")
print("|---|---:|---:|---:|---:|---:|---:|")
def per_core(us):   # /proc counts 10 ms ticks: a short pass may show none
    return f"{1e6 / us:,.0f}" if us else "(under a tick)"
for r in rows:
    us = r["server_cpu_us_per_login"]
    print(f"| {r['alg']} | {r['login_ok']:,} | {r['login_fail']} | {r['logins_per_s']:,.0f} | "
          f"{us:.1f} | {r['verify_us']:.1f} | {per_core(us)} |")
    again = r.get("relogin")
    if again:
        us = again["server_cpu_us_per_login"]
        cached = "" if r["alg"] == "HS256" else " (cache)"
        print(f"| {r['alg']}, the same tokens again{cached} | {again['login_ok']:,} | | "
              f"{again['logins_per_s']:,.0f} | {us:.1f} | | {per_core(us)} |")
print(f"\nload average during the run (1, 5, 15 min): {sys.argv[2]}")
EOF
fails=$(python3 -c 'import json,sys; print(sum(json.loads(l)["login_fail"] for l in open(sys.argv[1])))' "$out/fill.jsonl")
say "raw results and the daemon's log: $out"
((fails == 0)) || die "$fails LOGINs failed"
