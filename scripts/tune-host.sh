#!/usr/bin/env bash
# tune-host.sh: show (and optionally apply) the host settings that matter for intentra.
#
# Owns the list of kernel knobs intentra cares about and the values we recommend.
# By default it only reads: it prints the current value, the recommended value and a
# one-line reason for each. With --apply (root only) it raises the sysctls that are
# below the recommendation (it never lowers a value), for the running kernel only;
# --persist also writes them to /etc/sysctl.d/90-intentra.conf. A setting that cannot
# be read (containers, missing /sys files) is printed as "unavailable", never an error.
# Busy polling is applied only with --busy-poll: it spins a core per waiting socket, which
# on a host with few cores costs more than it saves (perf/host-epyc-2026-12-07g.md, "Machine").
set -euo pipefail

# Overridable so tests can check what --persist writes without touching /etc.
PERSIST_FILE=${INTENTRA_PERSIST_FILE:-/etc/sysctl.d/90-intentra.conf}
# Overridable so tests can point it at an empty directory, like a locked-down container.
SYSCTL_ROOT=${INTENTRA_SYSCTL_ROOT:-/proc/sys}

usage() {
    cat <<'EOF'
Usage: tune-host.sh [--apply [--persist] [--busy-poll]] [--help]

Prints, for every host setting that matters to intentra, its current value, the
recommended value and why.

  --apply     set the sysctls below their recommendation to it (root only; never
              lowers a value; lasts until reboot)
  --persist   with --apply, also write them to /etc/sysctl.d/90-intentra.conf
  --busy-poll with --apply, also set busy_poll/busy_read (left alone otherwise)
  --help      show this help

busy_poll/busy_read trade CPU for latency: every socket waiting in poll or a blocking
read spins for that long first. Worth it only with a core to spare for each busy I/O
thread; on a 2-core host they made each received datagram cost 1.2-2.7x the CPU at
100k-1M/s (mmsg driver, loopback) and 4x at 10,000/s, so they are opt-in.

Advisory only (never changed by --apply): net.ipv4.udp_mem, kernel.io_uring_disabled,
memlock limit, CPU frequency governor, IRQ affinity.
EOF
}

apply=0
persist=0
busy_poll=0
while (($# > 0)); do
    case "$1" in
    --apply) apply=1 ;;
    --persist) persist=1 ;;
    --busy-poll) busy_poll=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "tune-host.sh: unknown option: $1" >&2
        usage >&2
        exit 2
        ;;
    esac
    shift
done
if ((persist && !apply)); then
    echo "tune-host.sh: --persist needs --apply" >&2
    exit 2
fi
if ((busy_poll && !apply)); then
    echo "tune-host.sh: --busy-poll needs --apply" >&2
    exit 2
fi
# Root is needed for the real sysctl tree only (a test points SYSCTL_ROOT at a scratch one).
if ((apply)) && [[ -z ${INTENTRA_SYSCTL_ROOT:-} ]] && [[ $(id -u) -ne 0 ]]; then
    echo "tune-host.sh: --apply needs root" >&2
    exit 1
fi

# Reads a sysctl; whitespace collapsed; "unavailable" if unreadable.
read_sysctl() {
    local path="$SYSCTL_ROOT/${1//.//}"
    local value
    if [[ -r $path ]] && value=$(tr -s '[:space:]' ' ' 2>/dev/null <"$path"); then
        value="${value% }"
        printf '%s' "${value:-unavailable}"
    else
        printf 'unavailable'
    fi
}

is_busy_poll() {
    [[ $1 == net.core.busy_poll || $1 == net.core.busy_read ]]
}

row() {
    printf '%-28s %-22s %-22s %s\n' "$1" "$2" "$3" "$4"
}

# name recommended reason; only single integers, applied by raising.
SYSCTLS=(
    "net.core.rmem_max|16777216|lets intentra ask for a 16 MiB receive buffer so bursts at 1 kHz x many peers are queued, not dropped"
    "net.core.wmem_max|16777216|same for send buffers: a batch of sendmmsg to many peers must not hit ENOBUFS"
    "net.core.rmem_default|1048576|receive buffer of sockets that do not set SO_RCVBUF (intentra does; helps other tools on the path)"
    "net.core.wmem_default|1048576|send buffer of sockets that do not set SO_SNDBUF"
    "net.core.netdev_max_backlog|16384|per-CPU queue between the NIC and the stack; the 1000 default drops bursts before UDP sees them"
    "net.core.busy_poll|50|microseconds poll/epoll spin on the NIC queue: lower latency for more CPU (0 disables); only with --busy-poll and cores to spare"
    "net.core.busy_read|50|microseconds a blocking read spins on the NIC queue: lower latency for more CPU (0 disables); only with --busy-poll and cores to spare"
    "net.ipv4.udp_rmem_min|16384|receive buffer each UDP socket keeps even under memory pressure"
)

apply_list=()

row "setting" "current" "recommended" "why"
for entry in "${SYSCTLS[@]}"; do
    IFS='|' read -r name recommended reason <<<"$entry"
    current=$(read_sysctl "$name")
    row "$name" "$current" "$recommended" "$reason"
    if [[ $current =~ ^[0-9]+$ ]] && ((current < recommended)); then
        if ! is_busy_poll "$name" || ((busy_poll)); then
            apply_list+=("$name=$recommended")
        fi
    fi
done

row "net.ipv4.udp_mem" "$(read_sysctl net.ipv4.udp_mem)" "keep (auto-sized)" \
    "pages for all UDP sockets (min pressure max); raise max if /proc/net/snmp shows UDP RcvbufErrors"

io_uring=$(read_sysctl kernel.io_uring_disabled)
row "kernel.io_uring_disabled" "$io_uring" "0" \
    "the io_uring driver needs 0 (or 1 with the daemon in kernel.io_uring_group); a security policy choice, so not applied"

memlock=$(ulimit -l 2>/dev/null || echo unavailable)
row "memlock ulimit (KiB)" "$memlock" ">= 65536 or unlimited" \
    "io_uring rings count against RLIMIT_MEMLOCK on kernels before 5.12 (running $(uname -r 2>/dev/null || echo unknown)); set in limits.conf or the unit file"

governors="unavailable"
shopt -s nullglob
gov_files=(/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor)
shopt -u nullglob
if ((${#gov_files[@]} > 0)); then
    governors=$(cat "${gov_files[@]}" 2>/dev/null | sort | uniq -c | awk '{printf "%s%s(x%s)", sep, $2, $1; sep=","}') || governors="unavailable"
    governors=${governors:-unavailable}
fi
row "cpu frequency governor" "$governors" "performance" \
    "frequency ramp-up after idle adds tens of microseconds to the first packets of a burst"

thp="unavailable"
thp_file=${INTENTRA_THP_FILE:-/sys/kernel/mm/transparent_hugepage/enabled}
if [[ -r $thp_file ]]; then
    thp=$(sed -n 's/.*\[\([a-z]*\)\].*/\1/p' "$thp_file" 2>/dev/null)
    thp=${thp:-unavailable}
fi
row "transparent huge pages" "$thp" "madvise or always" \
    "the node asks for huge pages under its peer table (madvise); with thousands of peers that saves a TLB miss per packet. never turns it off; not applied"

irqbalance="unavailable"
if command -v pgrep >/dev/null 2>&1; then
    if pgrep -x irqbalance >/dev/null 2>&1; then
        irqbalance="irqbalance running"
    else
        irqbalance="irqbalance not running"
    fi
fi
row "IRQ affinity" "$irqbalance" "NIC IRQs off I/O cores" \
    "pin NIC queue IRQs (/proc/irq/N/smp_affinity) away from the cores running intentra's I/O threads"

if ((!apply)); then
    exit 0
fi

echo
failed=0
if ((${#apply_list[@]} == 0)); then
    echo "nothing to apply: every sysctl already meets its recommendation"
fi
for setting in "${apply_list[@]}"; do
    name=${setting%%=*}
    value=${setting#*=}
    if printf '%s\n' "$value" >"$SYSCTL_ROOT/${name//.//}" 2>/dev/null; then
        echo "set $name=$value"
    else
        echo "could not set $name=$value" >&2
        failed=1
    fi
done
if ((persist)); then
    {
        echo "# Written by intentra's scripts/tune-host.sh; raise-only recommendations."
        for entry in "${SYSCTLS[@]}"; do
            IFS='|' read -r name recommended _ <<<"$entry"
            current=$(read_sysctl "$name")
            if is_busy_poll "$name" && ((!busy_poll)); then
                continue
            fi
            if [[ $current =~ ^[0-9]+$ ]] && ((current > recommended)); then
                recommended=$current
            fi
            echo "$name = $recommended"
        done
    } >"$PERSIST_FILE"
    echo "wrote $PERSIST_FILE"
fi
exit "$failed"
