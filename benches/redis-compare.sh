#!/usr/bin/env bash
# Runs the ingest workload against Redis with the usual flash-sale Lua script (check the
# stock, decrement it) under `appendfsync always`, and against stockpulse, at the same
# connection count and pipelining depth, on this machine; prints both and their ratio.
#
# Usage: benches/redis-compare.sh [connections=50] [pipeline=16] [seconds=10]
# Redis is skipped when redis-server and redis-benchmark are not installed
# (Debian: apt-get install redis-server redis-tools).
set -euo pipefail
connections=${1:-50}
pipeline=${2:-16}
seconds=${3:-10}
cd "$(dirname "$0")/.."

cargo build --release --quiet --bins
load=target/release/stockpulse-load

# The flash-sale script: take one unit if there is one.
script='local stock = tonumber(redis.call("GET", KEYS[1]))
if stock and stock >= tonumber(ARGV[1]) then
  redis.call("DECRBY", KEYS[1], ARGV[1])
  return 1
end
return 0'

redis_rate() { # depth
  local requests=$((connections * 4000 * $1))
  redis-benchmark -p "$port" -c "$connections" -n "$requests" -P "$1" -q \
    evalsha "$sha" 1 stock 1 2>/dev/null | tr '\r' '\n' | grep 'requests per second' | tail -1 |
    sed -E 's/.*: ([0-9.]+) requests per second.*/\1/'
}

stockpulse_rate() { # mode arguments...
  "$load" --quiet --start-server ingest --connections "$connections" --seconds "$seconds" "$@" |
    grep 'orders/s' | awk '{print $2}'
}

redis_single=""
redis_pipelined=""
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
  dir=$(mktemp -d)
  port=6399
  redis-server --port "$port" --dir "$dir" --appendonly yes --appendfsync always --save '' \
    --daemonize yes --logfile "$dir/redis.log"
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -p "$port" set stock 1000000000000 >/dev/null
  sha=$(redis-cli -p "$port" script load "$script")
  redis_single=$(redis_rate 1)
  redis_pipelined=$(redis_rate "$pipeline")
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$dir"
else
  echo "redis-server or redis-benchmark not installed: Redis skipped" >&2
fi

stockpulse_single=$(stockpulse_rate --mode single)
stockpulse_batched=$(stockpulse_rate --mode batch --batch-size "$pipeline")

ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }' || echo "-"; }
printf '%-40s %14s %14s %8s\n' "workload ($connections connections)" "Redis" "stockpulse" "ratio"
printf '%-40s %14s %14s %8s\n' "one order per request" "${redis_single:--}" "$stockpulse_single" \
  "$(ratio "$stockpulse_single" "$redis_single")"
printf '%-40s %14s %14s %8s\n' "pipelined $pipeline deep / batches of $pipeline" "${redis_pipelined:--}" \
  "$stockpulse_batched" "$(ratio "$stockpulse_batched" "$redis_pipelined")"
