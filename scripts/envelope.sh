#!/usr/bin/env bash
# envelope.sh: sweep offered load (peers x rate) for intentra and raw UDP with intentra-bench,
# measured in the same process per point (--compare), from 100k pps up to past the point where
# intentra's delivery falls, plus the capacity points 2000 peers x 500 Hz and 1500 x 800 Hz.
# Writes perf/envelope-<date>.jsonl (one --json object per point), perf/envelope-<date>.csv and
# perf/envelope-<date>.svg (drawn by `intentra-bench plot`, no external plotting program).
#
# Traffic goes to 127.0.0.0/8 only. Every run is bounded (intentra-bench bounds itself, and
# `timeout` bounds each point), so the whole sweep is bounded by points x per-point limit.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/envelope.sh [--quick] [--duration SECS] [--warmup SECS] [--points LIST]
                           [--bin PATH] [--out-dir DIR] [--date YYYY-MM-DD] [--gso on|off]
                           [--io basic|mmsg|uring]
  --quick        a handful of points, 1.5 s each (about a minute and a half)
  --duration     measured seconds per point and mode (default 3; 1.5 with --quick)
  --warmup       warm-up seconds per point and mode (default 0.5)
  --points       comma-separated PEERSxRATE list replacing the default sweep, e.g. 100x1000,500x1000
  --bin          the intentra-bench binary (default target/release/intentra-bench, built if missing)
  --out-dir      where the results go (default perf)
  --date         the date in the file names (default today)
EOF
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
quick=0
duration=""
warmup=0.5
points=""
bin=""
out_dir="$here/perf"
date_tag="$(date +%F)"
gso=on
io=mmsg
size=128

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --duration) duration="$2"; shift ;;
        --warmup) warmup="$2"; shift ;;
        --points) points="$2"; shift ;;
        --bin) bin="$2"; shift ;;
        --out-dir) out_dir="$2"; shift ;;
        --date) date_tag="$2"; shift ;;
        --gso) gso="$2"; shift ;;
        --io) io="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "envelope.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if [ -z "$duration" ]; then
    if [ "$quick" = 1 ]; then duration=1.5; else duration=3; fi
fi
if [ -z "$points" ]; then
    if [ "$quick" = 1 ]; then
        # 100k, 300k, 1M offered, then the two capacity points.
        points="100x1000,300x1000,1000x1000,2000x500,1500x800"
    else
        # 100k pps upward; the sweep stops one point after intentra's delivery falls below 0.8.
        points="100x1000,200x1000,300x1000,500x1000,750x1000,1000x1000,1500x1000,2000x1000,3000x1000,4000x1000"
    fi
    capacity="2000x500,1500x800"
else
    capacity=""
fi

if [ -z "$bin" ]; then
    bin="$here/target/release/intentra-bench"
    if [ ! -x "$bin" ]; then
        (cd "$here" && cargo build --release --bin intentra-bench)
    fi
fi
[ -x "$bin" ] || { echo "envelope.sh: no executable at $bin" >&2; exit 1; }

mkdir -p "$out_dir"
jsonl="$out_dir/envelope-$date_tag.jsonl"
csv="$out_dir/envelope-$date_tag.csv"
svg="$out_dir/envelope-$date_tag.svg"
: > "$jsonl"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# The per-point limit: two runs of handshakes (10 s + peers/200 at most), warm-up and duration,
# plus slack. intentra-bench stops by itself well before; this only guards against a hang.
point_limit() {
    local peers="$1"
    awk -v p="$peers" -v d="$duration" -v w="$warmup" 'BEGIN { printf "%d", 2 * (10 + p / 200 + d + w + 2) + 30 }'
}

# Runs one point (raw then intentra, same process) and prints intentra's delivery ratio.
run_point() {
    local peers="$1" rate="$2" line
    line="$(timeout "$(point_limit "$peers")" "$bin" --compare --json --peers "$peers" --rate "$rate" \
        --size "$size" --duration "$duration" --warmup "$warmup" --gso "$gso" --io "$io")" || {
        echo "envelope.sh: point ${peers}x${rate} failed" >&2
        echo "nan"
        return 0
    }
    echo "$line" >> "$jsonl"
    echo "$line" > "$scratch/one.jsonl"
    "$bin" csv --jsonl "$scratch/one.jsonl" > "$scratch/one.csv"
    # Columns: mode is 1, delivery_ratio is 13.
    awk -F, '$1 == "intentra" { print $13 }' "$scratch/one.csv"
}

falling=0
IFS=',' read -r -a sweep <<< "$points"
for point in "${sweep[@]}"; do
    peers="${point%x*}"
    rate="${point#*x}"
    echo "envelope: ${peers} peers x ${rate} Hz = $((peers * rate)) pps offered" >&2
    delivery="$(run_point "$peers" "$rate")"
    echo "envelope:   intentra delivery ratio $delivery" >&2
    if [ -z "$capacity" ] || [ "$quick" = 1 ]; then
        continue
    fi
    if awk -v d="$delivery" 'BEGIN { exit !(d == "nan" || d < 0.8) }'; then
        falling=$((falling + 1))
        # One point past the fall is enough to show it.
        [ "$falling" -ge 2 ] && break
    fi
done
if [ -n "$capacity" ] && [ "$quick" = 0 ]; then
    IFS=',' read -r -a extra <<< "$capacity"
    for point in "${extra[@]}"; do
        peers="${point%x*}"
        rate="${point#*x}"
        echo "envelope: capacity point ${peers} peers x ${rate} Hz" >&2
        delivery="$(run_point "$peers" "$rate")"
        echo "envelope:   intentra delivery ratio $delivery" >&2
    done
fi

"$bin" csv --jsonl "$jsonl" > "$csv"
"$bin" plot --csv "$csv" --out "$svg"
echo "envelope: wrote $jsonl, $csv and $svg" >&2
