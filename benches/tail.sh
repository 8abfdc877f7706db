#!/usr/bin/env bash
# The acknowledgement tail under batches, with a big ledger and snapshots during the run:
# starts the server on a fresh data directory (on disk, `journal_sync = always`), preloads
# it with paid orders, then runs batches against it and prints the load generator's
# figures and how many snapshots were written.
#
# Usage: benches/tail.sh [BIN_DIR=target/release] [PRELOAD=2000000] [SECONDS=60] [BATCH=16]
# Environment: PORT (8096), DATA_ROOT (/tmp), and any STOCKPULSE_* setting for the server.
set -euo pipefail
bin=${1:-target/release}
preload=${2:-2000000}
seconds=${3:-60}
batch=${4:-16}
port=${PORT:-8096}
data=$(mktemp -d "${DATA_ROOT:-/tmp}/stockpulse-tail.XXXXXX")
"$bin/stockpulse" --listen "127.0.0.1:$port" --data-dir "$data" --journal-sync always \
  >"$data.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data" "$data.log"' EXIT
for _ in $(seq 100); do
  curl -s -o /dev/null "127.0.0.1:$port/healthz" && break
  sleep 0.1
done
"$bin/stockpulse-load" --target "127.0.0.1:$port" --pid "$pid" ingest --mode batch \
  --batch-size 250 --connections 8 --orders "$preload" >/dev/null
"$bin/stockpulse-load" --target "127.0.0.1:$port" --pid "$pid" ingest --mode batch \
  --batch-size "$batch" --connections 50 --seconds "$seconds" |
  grep -E "orders/s|ack latency|cpu per|memory"
echo "snapshots written: $(grep -c 'Snapshot written' "$data.log")"
