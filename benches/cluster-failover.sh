#!/usr/bin/env bash
# Failover and standby lag of a three-node cluster on a three-server NATS cluster, all on
# this machine:
#   - KILLS times, kill -9 the leader and time from the kill to the first order acknowledged
#     by another node (orders sent one after another to a surviving node, each retried until
#     acknowledged; the failed attempts are counted), then start the killed node again;
#   - under `stockpulse-load ingest` against the leader, the standbys' lag behind the log
#     (messages not yet applied), sampled every 100 ms.
#   - with MODE=nats, KILLS times, kill -9 the NATS server that leads the log stream instead,
#     and time from the kill to the first order acknowledged by the leader (JetStream elects a
#     new stream leader meanwhile), then start that server again.
# Usage: [MODE=nats] benches/cluster-failover.sh [KILLS] [LOAD_SECONDS]
#        (after cargo build --release; NATS without credentials on loopback, so --insecure)
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS=${1:-10}
LOAD_SECONDS=${2:-10}
MODE=${MODE:-leader}
BIN=target/release/stockpulse
LOAD=target/release/stockpulse-load
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; pkill -f "$WORK" 2>/dev/null; sleep 0.5; rm -rf "$WORK"' EXIT

ROUTES=nats://127.0.0.1:26321,nats://127.0.0.1:26322,nats://127.0.0.1:26323
start_nats() {
  nats-server -n n$1 -a 127.0.0.1 -p 2432$1 -m 2832$1 -js -sd "$WORK/n$1" \
    --cluster_name bench --cluster nats://127.0.0.1:2632$1 --routes $ROUTES >>"$WORK/n$1.log" 2>&1 &
}
for i in 1 2 3; do start_nats $i; done
for i in 1 2 3; do
  until curl -sf "127.0.0.1:2832$i/healthz" >/dev/null; do sleep 0.1; done
done
NATS=nats://127.0.0.1:24321,nats://127.0.0.1:24322,nats://127.0.0.1:24323

declare -A PORT=([a]=19101 [b]=19102 [c]=19103)
start_node() {
  "$BIN" --listen "127.0.0.1:${PORT[$1]}" --data-dir "$WORK/$1" --cluster "$NATS" --node-id "$1" \
    --insecure >>"$WORK/$1.log" 2>&1 &
  until curl -sf "127.0.0.1:${PORT[$1]}/healthz" >/dev/null; do sleep 0.05; done
}
for node in a b c; do start_node "$node"; done

leader() {
  for node in a b c; do
    if curl -sf "127.0.0.1:${PORT[$node]}/api/v1/cluster" 2>/dev/null | grep -q '^{"node":"[^"]*","role":"leader"'; then
      echo "$node"; return
    fi
  done
}
until [ -n "$(leader)" ]; do sleep 0.1; done
curl -sf -XPUT "127.0.0.1:${PORT[$(leader)]}/api/v1/skus/BENCH" -H 'content-type: application/json' \
  -d '{"total": 100000000}' >/dev/null

now_ms() { date +%s%3N; }
TIMES=()
FAILED=0

# The NATS server that leads the log stream, by its number.
stream_leader() {
  for i in 1 2 3; do
    curl -sf "127.0.0.1:2832$i/jsz?streams=true" 2>/dev/null | python3 -c '
import json, sys
for account in json.load(sys.stdin).get("account_details", []):
    for stream in account.get("stream_detail", []):
        if stream["name"] == "stockpulse":
            print(stream.get("cluster", {}).get("leader", "")[1:])
            sys.exit()' && return
  done
}

if [ "$MODE" = nats ]; then
  for kill in $(seq 1 "$KILLS"); do
    server=$(stream_leader)
    until [ -n "$server" ]; do sleep 0.1; server=$(stream_leader); done
    target=$(leader)
    until [ -n "$target" ]; do sleep 0.1; target=$(leader); done
    pid=$(pgrep -f -- "-n n$server " | head -1)
    started=$(now_ms)
    kill -9 "$pid"
    attempt=0
    until curl -sf -m 1 -XPOST "127.0.0.1:${PORT[$target]}/api/v1/orders" -H 'content-type: application/json' \
        -d "{\"order_id\":\"n$kill\",\"sku\":\"BENCH\",\"qty\":1,\"platform\":\"douyin\",\"paid\":true}" >/dev/null; do
      attempt=$((attempt + 1))
      sleep 0.02
      # Another node, if one leads now; the same one, still taking writes, otherwise.
      next=$(leader); [ -n "$next" ] && target=$next
    done
    TIMES+=($(( $(now_ms) - started )))
    FAILED=$((FAILED + attempt))
    echo "kill $kill: NATS server n$server (stream leader), first acknowledgement on $target after ${TIMES[-1]} ms, $attempt attempts refused" >&2
    start_nats "$server"
    until curl -sf "127.0.0.1:2832$server/healthz" >/dev/null; do sleep 0.1; done
    sleep 5
  done
  printf '%s\n' "${TIMES[@]}" | sort -n | awk -v failed="$FAILED" -v kills="$KILLS" '
    { t[NR] = $1 }
    END { printf "kill -9 of the NATS server leading the log stream to the first acknowledged order (%d kills): p50 %d ms, max %d ms; %d attempts refused or unanswered meanwhile, all acknowledged on retry\n", kills, t[int((NR + 1) / 2)], t[NR], failed }'
  exit 0
fi

for kill in $(seq 1 "$KILLS"); do
  old=$(leader)
  until [ -n "$old" ]; do sleep 0.1; old=$(leader); done
  survivor=a; [ "$old" = a ] && survivor=b
  pid=$(pgrep -f -- "$WORK/$old " | head -1)
  started=$(now_ms)
  kill -9 "$pid"
  attempt=0
  until curl -sf -m 2 -XPOST "127.0.0.1:${PORT[$survivor]}/api/v1/orders" -H 'content-type: application/json' \
      -d "{\"order_id\":\"f$kill\",\"sku\":\"BENCH\",\"qty\":1,\"platform\":\"douyin\",\"paid\":true}" >/dev/null; do
    attempt=$((attempt + 1))
    sleep 0.02
  done
  TIMES+=($(( $(now_ms) - started )))
  FAILED=$((FAILED + attempt))
  echo "kill $kill: leader $old (pid $pid), first acknowledgement on $survivor after ${TIMES[-1]} ms, $attempt attempts refused" >&2
  start_node "$old"
  sleep 1
done
printf '%s\n' "${TIMES[@]}" | sort -n | awk -v failed="$FAILED" -v kills="$KILLS" '
  { t[NR] = $1 }
  END { printf "failover, kill -9 of the leader to the first acknowledged order (%d kills): p50 %d ms, max %d ms; %d attempts refused or unanswered meanwhile, all acknowledged on retry\n", kills, t[int((NR + 1) / 2)], t[NR], failed }'

# Standby lag under load.
target=$(leader)
"$LOAD" --target "127.0.0.1:${PORT[$target]}" --quiet ingest --connections 50 --seconds "$LOAD_SECONDS" \
  >"$WORK/load.txt" 2>&1 &
load=$!
: >"$WORK/lag.txt"
while kill -0 "$load" 2>/dev/null; do
  curl -sf "127.0.0.1:${PORT[$target]}/api/v1/cluster" | python3 -c '
import json, sys
view = json.load(sys.stdin)
for node in view.get("nodes", []):
    if node["role"] == "standby":
        print(node["lag"])' >>"$WORK/lag.txt" || true
  sleep 0.1
done
grep -E "orders/s|ack latency" "$WORK/load.txt" || true
sort -n "$WORK/lag.txt" | awk '
  { l[NR] = $1 }
  END {
    if (NR == 0) exit
    p99 = int(NR * 0.99) + 1
    if (p99 > NR) p99 = NR
    printf "standby lag under that load (%d samples): p50 %d, p99 %d, max %d messages\n", NR, l[int(NR / 2) + 1], l[p99], l[NR]
  }'
