#!/bin/bash
# How long a node restarted with kill -9, having missed nothing, reports catching_up (issue 15).
#
#   cargo build --release -p chorus-agent
#   SECS=6 KEYS=3000 RUNS=6 tests/bench/restart-catch-up.sh            # about 96,000 keys
#   SECS=150 KEYS=31250 RUNS=1 tests/bench/restart-catch-up.sh         # up to 1,000,000 keys
#   BIN=/path/to/old/chorus ... tests/bench/restart-catch-up.sh        # another build
#
# Three agents on loopback (fsync always); `chorus bench` (its own process) writes with quorum,
# 32 clients, KEYS distinct keys each, for SECS seconds; then agent n1 is killed with SIGKILL and
# started again at once, and /v1/status is polled every 100 ms (at most 120 s) until
# catching_up is false. Everything it starts is killed at the end.
set -u
B=${BIN:-$(dirname "$0")/../../target/release/chorus}
D=$(mktemp -d /tmp/chorus-restart.XXXXXX)
trap 'for i in 0 1 2; do kill -9 $(cat $D/pid$i 2>/dev/null) 2>/dev/null; done; [ -n "${KEEP:-}" ] || rm -rf $D' EXIT
start() { i=$1; $B agent --name n$i --bind 127.0.0.1:1790$i --api 127.0.0.1:1791$i --seed 127.0.0.1:17900 --expected-nodes 3 --data-dir $D/d$i > $D/n$i.log 2>&1 & echo $! > $D/pid$i; }
for run in $(seq 1 ${RUNS:-1}); do
  rm -rf $D/d*; for i in 0 1 2; do start $i; done
  for k in $(seq 1 100); do curl -sf 127.0.0.1:17912/v1/status | grep -q '"has_quorum":true' && break; sleep 0.1; done
  $B bench --api 127.0.0.1:17910 --api 127.0.0.1:17911 --api 127.0.0.1:17912 --clients 32 --duration ${SECS:-6}s --keys ${KEYS:-3000} --op put 2>/dev/null
  old=$(cat $D/pid1); kill -9 $old; while kill -0 $old 2>/dev/null; do sleep 0.02; done; start 1
  t0=$(date +%s.%N); cleared="not within 120 s"
  for k in $(seq 1 1200); do
    if curl -s 127.0.0.1:17911/v1/status 2>/dev/null | grep -q '"catching_up":false'; then
      cleared="$(echo "$(date +%s.%N) - $t0" | bc) s"; break
    fi
    sleep 0.1
  done
  entries=$(curl -s 127.0.0.1:17910/v1/status | python3 -c 'import json,sys; print(json.load(sys.stdin)["stores"]["default"]["entries"])')
  echo "run $run: $entries keys; catching_up cleared after $cleared"
  for i in 0 1 2; do kill -9 $(cat $D/pid$i) 2>/dev/null; done; sleep 1
done
