#!/usr/bin/env bash
# Runs the ingest workload against Redis with the usual flash-sale Lua script (check the
# stock, decrement it) under `appendfsync always`, and against stockpulse, at the same
# connection count and pipelining depth, on this machine; prints both servers' throughput
# and CPU per operation (user + system time of the server process over the run, in µs),
# and the ratios.
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

cpu_ticks() { # pid: user + system clock ticks (1/100 s)
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

redis_run() { # depth: prints "requests/s µs-of-cpu-per-request"
  local requests=$((connections * 4000 * $1)) before after rate
  before=$(cpu_ticks "$redis_pid")
  rate=$(redis-benchmark -p "$port" -c "$connections" -n "$requests" -P "$1" -q \
    evalsha "$sha" 1 stock 1 2>/dev/null | tr '\r' '\n' | grep 'requests per second' | tail -1 |
    sed -E 's/.*: ([0-9.]+) requests per second.*/\1/')
  after=$(cpu_ticks "$redis_pid")
  awk -v rate="$rate" -v ticks=$((after - before)) -v n="$requests" \
    'BEGIN { printf "%s %.2f\n", rate, ticks * 10000 / n }'
}

stockpulse_run() { # mode arguments...: prints "orders/s µs-of-cpu-per-order"
  "$load" --quiet --start-server ingest --connections "$connections" --seconds "$seconds" "$@" |
    awk '/orders\/s/ { rate = $2 } /server cpu per order/ { cpu = $5 } END { print rate, cpu }'
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
  redis_pid=$(redis-cli -p "$port" info server | tr -d '\r' | awk -F: '/^process_id:/ { print $2 }')
  redis_single=$(redis_run 1)
  redis_pipelined=$(redis_run "$pipeline")
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$dir"
else
  echo "redis-server or redis-benchmark not installed: Redis skipped" >&2
fi

stockpulse_single=$(stockpulse_run --mode single)
stockpulse_batched=$(stockpulse_run --mode batch --batch-size "$pipeline")

field() { echo "$1" | awk -v n="$2" '{ print $n }'; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }' || echo "-"; }
row() { # label redis stockpulse
  local r_rate r_cpu s_rate s_cpu
  r_rate=$(field "$2" 1) r_cpu=$(field "$2" 2) s_rate=$(field "$3" 1) s_cpu=$(field "$3" 2)
  printf '%-34s %12s %12s %7s %10s %10s %7s\n' "$1" "${r_rate:--}" "${s_rate:--}" \
    "$(ratio "$s_rate" "$r_rate")" "${r_cpu:--}" "${s_cpu:--}" "$(ratio "$r_cpu" "$s_cpu")"
}
printf '%-34s %12s %12s %7s %10s %10s %7s\n' "workload ($connections connections)" \
  "Redis/s" "stockpulse/s" "ratio" "Redis µs" "sp µs" "ratio"
row "one order per request" "$redis_single" "$stockpulse_single"
row "pipelined $pipeline deep / batches of $pipeline" "$redis_pipelined" "$stockpulse_batched"
echo "(µs: server CPU, user + system, per order; the ratios are stockpulse's advantage)"
