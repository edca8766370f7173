#!/usr/bin/env bash
# Decode/encode throughput of tether-proto (single thread, no I/O) for 64- and 1024-byte
# DATA bodies. Usage: bench/decode.sh [SECONDS | --smoke]   (default 3 per measurement;
# --smoke: 0.2, the CI check that the script still runs)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-3}"
[[ $seconds == --smoke ]] && seconds=0.2
cargo build --release --quiet -p tether-proto --example decode_throughput
for body in 64 1024; do
    echo "== cargo run --release -p tether-proto --example decode_throughput -- --body $body --seconds $seconds"
    cargo run --release --quiet -p tether-proto --example decode_throughput -- --body "$body" --seconds "$seconds"
done
