#!/usr/bin/env bash
# Decode/encode throughput of tether-proto (single thread, no I/O) for 64- and 1024-byte
# DATA bodies. Usage: bench/decode.sh [SECONDS]   (default 3 per measurement)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-3}"
cargo build --release --quiet -p tether-proto --example decode_throughput
for body in 64 1024; do
    echo "== cargo run --release -p tether-proto --example decode_throughput -- --body $body --seconds $seconds"
    cargo run --release --quiet -p tether-proto --example decode_throughput -- --body "$body" --seconds "$seconds"
done
