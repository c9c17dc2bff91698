#!/usr/bin/env python3
"""Turns the output of scripts/perf-tables.sh (JSON lines) into the Markdown tables of
perf/README.md: one row per point, every figure as the spread (min-max) of its runs.

usage: scripts/perf-tables-summary.py perf/tables-<date>.jsonl
"""
import json
import sys
from collections import OrderedDict


def spread(values, fmt="{:,.0f}"):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    if fmt.format(lo) == fmt.format(hi):
        return fmt.format(lo)
    return f"{fmt.format(lo)}–{fmt.format(hi)}"


def load(path):
    points = OrderedDict()
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            entry = json.loads(line)
            points.setdefault((entry["table"], entry["point"]), []).append(entry)
    return points


def cpu_per_datagram(report):
    value = report.get("receiver_cpu_ns_per_datagram")
    if value is None and report.get("received"):
        value = report["receiver_cpu_s"] * 1e9 / report["received"]
    return value


def compare_rows(points, table):
    rows = []
    for (t, point), runs in points.items():
        if t != table:
            continue
        raw = [r["result"]["raw"] for r in runs]
        ours = [r["result"]["intentra"] for r in runs]
        ratio = [
            cpu_per_datagram(o) / cpu_per_datagram(r)
            for o, r in zip(ours, raw)
            if cpu_per_datagram(r)
        ]
        rows.append(
            "| {} | {} | {} / {} | {} / {} | {} / {} | **{}** | {} / {} | {} / {} | {} |".format(
                point,
                len(runs),
                spread([r["received_pps"] for r in raw]),
                spread([o["received_pps"] for o in ours]),
                spread([r["delivery_ratio"] for r in raw], "{:.4f}"),
                spread([o["delivery_ratio"] for o in ours], "{:.4f}"),
                spread([cpu_per_datagram(r) for r in raw]),
                spread([cpu_per_datagram(o) for o in ours]),
                spread(ratio, "{:.2f}x"),
                spread([r["latency_us"]["p50"] for r in raw], "{:.0f}"),
                spread([o["latency_us"]["p50"] for o in ours], "{:.0f}"),
                spread([r["latency_us"]["p99"] for r in raw], "{:.0f}"),
                spread([o["latency_us"]["p99"] for o in ours], "{:.0f}"),
                spread([o.get("handshake_s") for o in ours], "{:.1f}"),
            )
        )
    return rows


def producer_points(points):
    """Each producer point with its runs' bundling-off and bundling-on reports."""
    for (t, point), runs in points.items():
        if t == "producer":
            yield point, runs, [r["result"]["off"] for r in runs], [r["result"]["on"] for r in runs]


def producer_rows(points):
    rows = []
    for point, runs, off, on in producer_points(points):
        ratio = [r["result"]["ratio"] for r in runs]
        rows.append(
            "| {} | {} | {} / {} | **{}** | {} / {} | {} / {} | {} / {} | **{}** | {} / {} |".format(
                point,
                len(runs),
                spread([o["received_msgs_per_s"] for o in off]),
                spread([o["received_msgs_per_s"] for o in on]),
                spread([r["received_msgs_per_s"] for r in ratio], "{:.2f}x"),
                spread([o["receiver_cpu_ns_per_msg"] for o in off]),
                spread([o["receiver_cpu_ns_per_msg"] for o in on]),
                spread([o["msgs_per_datagram"] for o in off], "{:.1f}"),
                spread([o["msgs_per_datagram"] for o in on], "{:.1f}"),
                spread([o["latency_us"]["p50"] for o in off], "{:.0f}"),
                spread([o["latency_us"]["p50"] for o in on], "{:.0f}"),
                spread([r["p50_latency"] for r in ratio], "{:.2f}x"),
                spread([o["latency_us"]["p99"] for o in off], "{:.0f}"),
                spread([o["latency_us"]["p99"] for o in on], "{:.0f}"),
            )
        )
    return rows


def thread_rows(points):
    """Per-thread CPU of each producer point (runs of builds before these keys: '-')."""
    rows = []
    for point, runs, off, on in producer_points(points):

        def each(reports, key, fmt="{:,.0f}"):
            return spread([o.get(key) for o in reports], fmt)

        def total(o):
            keys = ["generator_cpu_ns_per_msg", "sender_loop_cpu_ns_per_msg", "receiver_cpu_ns_per_msg"]
            if any(o.get(k) is None for k in keys) or not o.get("sender_loop_cpu_s"):
                return None
            return sum(o[k] for k in keys)

        rows.append(
            "| {} | {} | {} / {} | {} / {} | {} / {} | {} / {} | {} / {} |".format(
                point,
                len(runs),
                each(off, "generator_cpu_ns_per_msg"),
                each(on, "generator_cpu_ns_per_msg"),
                each(off, "sender_loop_cpu_ns_per_msg"),
                each(on, "sender_loop_cpu_ns_per_msg"),
                each(off, "receiver_cpu_ns_per_msg"),
                each(on, "receiver_cpu_ns_per_msg"),
                each(off, "sender_loop_utilization", "{:.2f}"),
                each(on, "sender_loop_utilization", "{:.2f}"),
                spread([total(o) for o in off]),
                spread([total(o) for o in on]),
            )
        )
    return rows


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    points = load(sys.argv[1])
    header = (
        "| point | runs | received msgs/s raw / intentra | delivery raw / intentra | "
        "receiver CPU ns per datagram raw / intentra | CPU ratio | p50 µs raw / intentra | "
        "p99 µs raw / intentra | handshakes s |\n|" + "---|" * 9
    )
    for table in ["drivers", "peers", "spin"]:
        rows = compare_rows(points, table)
        if rows:
            print(f"### {table}\n\n{header}")
            print("\n".join(rows) + "\n")
    rows = producer_rows(points)
    if rows:
        print(
            "### producer\n\n| point | runs | delivered msgs/s off / on | on ÷ off | "
            "receiver CPU ns per message off / on | messages per datagram off / on | "
            "p50 µs off / on | p50 on ÷ off | p99 µs off / on |\n|" + "---|" * 9
        )
        print("\n".join(rows) + "\n")
        print(
            "### producer: CPU per delivered message by thread\n\n| point | runs | "
            "producer ns off / on | node loop ns off / on | receiver ns off / on | "
            "node loop busy off / on | all three ns off / on |\n|" + "---|" * 7
        )
        print("\n".join(thread_rows(points)) + "\n")


if __name__ == "__main__":
    main()
