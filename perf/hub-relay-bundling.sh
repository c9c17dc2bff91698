#!/usr/bin/env bash
# hub-relay-bundling.sh: the hub's cost of relaying, with the node's bundling on and off.
#
# One `intentra serve` hub, SUBS `intentra subscribe` processes on one topic, one
# `intentra publish` fed MESSAGES stdin lines as fast as it takes them (Realtime). Per run it
# prints: the hub's setting, the lines every subscriber printed (sum), the hub's datagrams
# sent (metrics), and the hub process's CPU time (utime+stime from /proc) per relayed
# message. The hub bundles the Realtime relays of one receive batch per subscriber when
# bundling is on (README "Smart batching"). Loopback only; every wait is bounded.
#
# usage: perf/hub-relay-bundling.sh [RUNS] [SUBS] [MESSAGES]   (BIN=target/release/intentra)
# RATE=HZ publishes generated messages at that rate (`--rate --count`) instead of stdin lines
# as fast as they go (which the peers' token buckets then cut down).
set -euo pipefail
BIN=${BIN:-target/release/intentra}
RATE=${RATE:-}
RUNS=${1:-3}
SUBS=${2:-10}
MESSAGES=${3:-100000}
tick=$(getconf CLK_TCK)
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
wait_for() { # file pattern limit_ms
  local end=$(( $(now_ms) + $3 ))
  until grep -q -- "$2" "$1" 2>/dev/null; do
    (( $(now_ms) < end )) || { echo "timeout waiting for $2 in $1" >&2; return 1; }
    sleep 0.01
  done
}
free_port() { python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
free_tcp() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" 'index($1, n) == 1 && $1 !~ /^#/ {s += $2} END {print s + 0}'; }

hub_key=$("$BIN" keygen --out "$dir/hub.key")
"$BIN" keygen --out "$dir/pub.key" >/dev/null
for i in $(seq 1 "$SUBS"); do "$BIN" keygen --out "$dir/s$i.key" >/dev/null; done
echo "bundling run subscribers messages delivered_lines hub_datagrams_sent hub_cpu_ns_per_relayed_message"
for run in $(seq 1 "$RUNS"); do
  for bundling in true false; do
    port=$(free_port)
    mport=$(free_tcp)
    cat > "$dir/hub.toml" <<TOML
[node]
bind = ["127.0.0.1:$port"]
key_file = "$dir/hub.key"
bundling = $bundling
[metrics]
listen = "127.0.0.1:$mport"
[hub]
enabled = true
detection_time_ms = 60000
[[hub.rules]]
key = "*"
topic = "*"
allow = ["publish", "subscribe"]
TOML
    : > "$dir/hub.log"
    "$BIN" serve --config "$dir/hub.toml" 2>"$dir/hub.log" & hub=$!; pids+=("$hub")
    wait_for "$dir/hub.log" listening 10000
    subs=()
    for i in $(seq 1 "$SUBS"); do
      "$BIN" subscribe --peer "127.0.0.1:$port" --peer-key "$hub_key" --topic t --key "$dir/s$i.key" \
        > "$dir/s$i.out" 2> "$dir/s$i.err" & subs+=($!); pids+=($!)
    done
    for i in $(seq 1 "$SUBS"); do wait_for "$dir/s$i.err" "connected to hub" 20000; done
    sleep 1
    sent0=$(metric "$mport" intentra_packets_sent)
    cpu0=$(cpu_ticks "$hub")
    if [ -n "$RATE" ]; then
      timeout 300 "$BIN" publish --peer "127.0.0.1:$port" --peer-key "$hub_key" --topic t \
        --key "$dir/pub.key" --mode realtime --rate "$RATE" --count "$MESSAGES" \
        > /dev/null 2> "$dir/pub.err" || true
    else
      seq 1 "$MESSAGES" | timeout 120 "$BIN" publish --peer "127.0.0.1:$port" --peer-key "$hub_key" \
        --topic t --key "$dir/pub.key" --mode realtime > /dev/null 2> "$dir/pub.err" || true
    fi
    # Drain: until the subscribers' output stops growing (at most 10 s).
    last=-1
    for _ in $(seq 1 100); do
      total=$(cat "$dir"/s*.out | wc -l)
      [ "$total" -eq "$last" ] && break
      last=$total
      sleep 0.1
    done
    cpu1=$(cpu_ticks "$hub")
    sent1=$(metric "$mport" intentra_packets_sent)
    delivered=$(cat "$dir"/s*.out | wc -l)
    relayed=$(( delivered > 0 ? delivered : 1 ))
    echo "$bundling $run $SUBS $MESSAGES $delivered $(( sent1 - sent0 )) $(( (cpu1 - cpu0) * 1000000000 / tick / relayed ))"
    for s in "${subs[@]}"; do kill "$s" 2>/dev/null || true; done
    kill "$hub" 2>/dev/null || true
    wait 2>/dev/null || true
    pids=()
  done
done
