#!/usr/bin/env bash
# Presence detection of a killed member: TRIALS times, a `subscribe` process joins a hub's
# topic, is seen `up` by a `presence` process, is killed with SIGKILL (no close is sent),
# and the time until `presence` prints its `down ... reason=silent` line is recorded (ms).
# Loopback only; every wait is bounded. Usage: perf/pubsub-presence.sh [TRIALS] [DETECTION_MS]
set -euo pipefail
BIN=${BIN:-target/debug/intentra}
TRIALS=${1:-20}
DET=${2:-3000}
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
wait_for() { # file pattern limit_ms
  local end=$(( $(now_ms) + $3 ))
  until grep -q -- "$2" "$1" 2>/dev/null; do
    (( $(now_ms) < end )) || { echo "timeout waiting for $2" >&2; for f in "$1" "$dir/presence.err" "$dir/hub.log"; do tail -n 5 "$f" >&2; done; return 1; }
    sleep 0.005
  done
}
hub_key=$("$BIN" keygen --out "$dir/hub.key")
port=$(python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
cat > "$dir/hub.toml" <<TOML
[node]
bind = ["127.0.0.1:$port"]
key_file = "$dir/hub.key"
[metrics]
listen = "off"
[limits]
reliable_queue_bytes = 65536
[hub]
enabled = true
detection_time_ms = $DET
[[hub.rules]]
key = "*"
topic = "*"
allow = ["publish", "subscribe"]
TOML
"$BIN" serve --config "$dir/hub.toml" 2>"$dir/hub.log" & pids+=($!)
wait_for "$dir/hub.log" listening 10000
"$BIN" keygen --out "$dir/w.key" >/dev/null
"$BIN" presence --peer "127.0.0.1:$port" --peer-key "$hub_key" --topic room --key "$dir/w.key" \
  >"$dir/presence.out" 2>"$dir/presence.err" & pids+=($!)
wait_for "$dir/presence.err" "changes follow" 10000
for i in $(seq 1 "$TRIALS"); do
  key=$("$BIN" keygen --out "$dir/s$i.key")
  "$BIN" subscribe --peer "127.0.0.1:$port" --peer-key "$hub_key" --topic room --key "$dir/s$i.key" \
    >/dev/null 2>&1 & sub=$!
  wait_for "$dir/presence.out" "up $key" 10000
  # A random phase against the member's 1 s heartbeat.
  sleep "0.$(( RANDOM % 1000 ))"
  t0=$(now_ms)
  kill -9 "$sub"; wait "$sub" 2>/dev/null || true
  wait_for "$dir/presence.out" "down $key subscriber .*reason=silent" $(( DET * 3 ))
  echo $(( $(now_ms) - t0 ))
done
