#!/usr/bin/env bash
# Back to back: runs the ingest workload against two builds of the server, alternating them
# for a number of rounds, and prints each run's orders/s, server CPU per order (µs) and p99,
# then each build's figures side by side. For changes on the request path, where this
# machine's disk latency would drown the difference, the data directory is on /dev/shm
# (a sync costs next to nothing there; check changes to the journal's writer on disk with
# DATA_ROOT=/tmp).
#
# Usage: benches/ab.sh ROUNDS DIR_A DIR_B [ingest arguments...]
#   DIR_A, DIR_B: directories holding a `stockpulse` and a `stockpulse-load` (for example
#   target/release of two checkouts); ingest arguments default to 50 connections, 6 s.
# Environment: PORT (8092), DATA_ROOT (/dev/shm), and STOCKPULSE_* settings for both servers.
set -euo pipefail
rounds=$1
dirs=("$2" "$3")
shift 3
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--connections 50 --seconds 6)
port=${PORT:-8092}
root=${DATA_ROOT:-/dev/shm}

run() { # dir
  local data pid out
  data=$(mktemp -d "$root/stockpulse-ab.XXXXXX")
  "$1/stockpulse" --listen "127.0.0.1:$port" --data-dir "$data" --journal-sync always \
    >"$data.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -s -o /dev/null "127.0.0.1:$port/healthz" && break
    sleep 0.1
  done
  out=$("$1/stockpulse-load" --target "127.0.0.1:$port" --pid "$pid" ingest "${args[@]}")
  # The server writes a snapshot as it stops: wait for it, so the next one can listen.
  kill "$pid"
  wait "$pid" || true
  rm -rf "$data" "$data.log"
  echo "$out" | awk '/orders\/s/ { rate = $2 } /server cpu per order/ { cpu = $5 }
    /ack latency/ { p99 = $6 }
    END { print rate, cpu, p99 }'
}

for round in $(seq "$rounds"); do
  for side in 0 1; do
    read -r rate cpu p99 <<<"$(run "${dirs[$side]}")"
    label=$([ $side = 0 ] && echo A || echo B)
    printf '%s round %d: %8s orders/s %8s µs/order  p99 %s µs\n' "$label" "$round" "$rate" "$cpu" "$p99"
  done
done | tee /dev/stderr | awk '{ rates[$1] = rates[$1] " " $4; cpus[$1] = cpus[$1] " " $6 }
  END { for (side in rates) printf "%s orders/s:%s\n%s µs/order:%s\n", side, rates[side], side, cpus[side] }'
