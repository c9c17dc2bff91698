#!/usr/bin/env bash
# Reliable measurements of perf/reliable.md, three runs of each, JSON lines on stdout:
#  1. through intentra-proxy (1 ms delay each way, 1% loss each way), 1 peer, 128 B,
#     10k and 100k messages/s offered, raw UDP through the same proxy in the same run;
#  2. receiver CPU per message, Reliable against Realtime, on plain loopback.
# Loopback only; every run is bounded by the bench's own duration and deadlines.
# Usage: perf/reliable.sh > perf/reliable-DATE.jsonl  (after cargo build --release)
set -euo pipefail
BENCH=${BENCH:-target/release/intentra-bench}
RUNS=${RUNS:-3}
common=(--compare --json --size 128 --duration 5 --warmup 1 --io mmsg --gso on)
for rate in 10000 100000; do
  for run in $(seq "$RUNS"); do
    echo "# proxy rate=$rate run=$run $(date -u +%FT%TZ)" >&2
    "$BENCH" "${common[@]}" --peers 1 --rate "$rate" --mode reliable \
      --proxy "--delay 1 --loss 0.01 --seed $run"
  done
done
for shape in "100 1000" "10 10000"; do
  set -- $shape
  for mode in realtime reliable; do
    for run in $(seq "$RUNS"); do
      echo "# cpu peers=$1 rate=$2 mode=$mode run=$run $(date -u +%FT%TZ)" >&2
      "$BENCH" "${common[@]}" --peers "$1" --rate "$2" --mode "$mode"
    done
  done
done
