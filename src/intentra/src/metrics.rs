//! Prometheus exposition of the workers' counters.
//!
//! Owns the hand-off between workers and the scraper (`MetricsHub`: one lock
//! taken once per publish interval by each worker and once per scrape) and the
//! text encoding (prometheus-client's OpenMetrics encoder, fed from a collector
//! over plain snapshots). It must never be touched per packet: workers count in
//! their own `Stats` and `BucketCounts` and publish copies here.
//!
//! Names: counters are written by prometheus-client with a `_total` sample
//! suffix, so their families are declared without it. The two legacy counters
//! whose names have no `_total` (`intentra_packets_dropped_rate_limit`,
//! `intentra_packets_dropped_crypto`) are declared `unknown`, the only
//! OpenMetrics type whose samples carry the family name unchanged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use intentra_proto::PublicKey;
use intentra_proto::Stats;

/// The content type of `encode`'s output.
#[cfg(feature = "prometheus")]
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The most finite bucket bounds a histogram may have (the `+Inf` bucket is extra).
pub const MAX_BUCKETS: usize = 24;

/// Receive batch sizes: powers of two up to the largest `io.batch_size`.
pub const BATCH_SIZE_BOUNDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Handshake durations in seconds: 100 us (loopback) to 10 s (the default timeout).
pub const HANDSHAKE_SECONDS_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A histogram with fixed bounds kept as plain integers, for a single thread.
/// `observe` neither allocates nor locks.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketCounts {
    bounds: &'static [f64],
    /// `counts[i]` counts observations in `(bounds[i-1], bounds[i]]`; the slot
    /// after the last bound is the `+Inf` bucket. Not cumulative.
    counts: [u64; MAX_BUCKETS + 1],
    sum: f64,
    count: u64,
}

/// Bucket bounds that `BucketCounts` cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketError {
    /// More than `MAX_BUCKETS` bounds.
    TooMany(usize),
    /// Not strictly increasing, or not finite.
    NotIncreasing,
}

impl BucketCounts {
    /// Bounds must be finite and strictly increasing, at most `MAX_BUCKETS`.
    pub fn new(bounds: &'static [f64]) -> Result<BucketCounts, BucketError> {
        if bounds.len() > MAX_BUCKETS {
            return Err(BucketError::TooMany(bounds.len()));
        }
        if bounds.iter().any(|b| !b.is_finite()) || bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(BucketError::NotIncreasing);
        }
        Ok(BucketCounts {
            bounds,
            counts: [0; MAX_BUCKETS + 1],
            sum: 0.0,
            count: 0,
        })
    }

    /// For `WorkerSnapshot::batch_sizes`.
    pub fn batch_sizes() -> BucketCounts {
        BucketCounts {
            bounds: BATCH_SIZE_BOUNDS,
            counts: [0; MAX_BUCKETS + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// For `WorkerSnapshot::handshake_durations`, in seconds.
    pub fn handshake_seconds() -> BucketCounts {
        BucketCounts {
            bounds: HANDSHAKE_SECONDS_BOUNDS,
            counts: [0; MAX_BUCKETS + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one value. NaN is ignored: it has no bucket and would poison the sum.
    pub fn observe(&mut self, value: f64) {
        if value.is_nan() {
            return;
        }
        // Bounds are few (<= 24) and sorted: a linear scan beats a binary
        // search at this size and is branch-predictable for steady traffic.
        let slot = self
            .bounds
            .iter()
            .position(|&bound| value <= bound)
            .unwrap_or(self.bounds.len());
        if let Some(count) = self.counts.get_mut(slot) {
            *count += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    /// The finite upper bounds of the buckets.
    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum of every observation.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Observations in bucket `i` alone (not cumulative); `i == bounds().len()` is `+Inf`.
    pub fn bucket(&self, i: usize) -> u64 {
        self.counts.get(i).copied().unwrap_or(0)
    }

    /// Adds another histogram with the same bounds; returns false (and adds
    /// nothing) if the bounds differ.
    pub fn accumulate(&mut self, other: &BucketCounts) -> bool {
        if self.bounds != other.bounds {
            return false;
        }
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.sum += other.sum;
        self.count += other.count;
        true
    }

    #[cfg(feature = "prometheus")]
    /// `(upper bound, count)` pairs in prometheus-client's form (`f64::MAX` means `+Inf`).
    fn encoder_buckets(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(self.counts.iter().copied())
            .collect()
    }
}

/// One connected peer as a worker last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSnapshot {
    /// The peer's static public key.
    pub public_key: PublicKey,
    /// Where its packets come from.
    pub addr: SocketAddr,
    /// The smoothed round-trip time, once measured.
    pub rtt_us: Option<u64>,
    /// Packets received from it.
    pub packets_received: u64,
    /// Packets sent to it.
    pub packets_sent: u64,
    /// Its packets dropped, for any reason.
    pub drops: u64,
}

/// What one worker publishes every `metrics.publish_interval_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSnapshot {
    /// Which worker published it.
    pub worker: usize,
    /// The worker's endpoint counters.
    pub stats: Stats,
    /// Receive batch sizes.
    pub batch_sizes: BucketCounts,
    /// Handshake durations in seconds.
    pub handshake_durations: BucketCounts,
    /// Filled only when `metrics.per_peer` is on.
    pub peers: Vec<PeerSnapshot>,
}

impl WorkerSnapshot {
    /// An empty snapshot with the standard histogram bounds.
    pub fn new(worker: usize) -> WorkerSnapshot {
        WorkerSnapshot {
            worker,
            stats: Stats::default(),
            batch_sizes: BucketCounts::batch_sizes(),
            handshake_durations: BucketCounts::handshake_seconds(),
            peers: Vec::new(),
        }
    }
}

/// A peer named in the daemon's configuration (`[[node.peers]]`) and whether a
/// session with it is established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredPeer {
    /// The peer's static public key.
    pub public_key: PublicKey,
    /// The configured address.
    pub addr: SocketAddr,
    /// A session with it is established.
    pub up: bool,
    /// Connection attempts made so far (the first dial included).
    pub attempts: u64,
}

/// When a peer's session last authenticated a packet, as wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSeen {
    /// The peer's static public key.
    pub public_key: PublicKey,
    /// Where its packets came from.
    pub addr: SocketAddr,
    /// Seconds since the Unix epoch.
    pub unix_seconds: u64,
}

/// What the daemon around the nodes publishes (not per worker): its configured
/// peers and the allow-list reloads. Embedders that do not set it export none
/// of these series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DaemonSnapshot {
    /// `None`: this process has no configured-peer view (no series exported).
    pub configured_peers: Option<Vec<ConfiguredPeer>>,
    /// `None`: no allow-list reload bookkeeping (no series exported).
    pub allow_list: Option<AllowListReloads>,
    /// Per worker, filled only when `metrics.per_peer` is on.
    pub peers_seen: BTreeMap<usize, Vec<PeerSeen>>,
}

/// Allow-list reload outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AllowListReloads {
    /// Reloads (SIGHUP) that failed and kept the previous list.
    pub failures: u64,
    /// Seconds since the Unix epoch of the last successful load (start-up included).
    pub last_success_unix: f64,
}

/// The shared slot array between workers and the metrics server.
#[derive(Debug, Clone, Default)]
pub struct MetricsHub {
    slots: Arc<Mutex<Vec<Option<WorkerSnapshot>>>>,
    daemon: Arc<Mutex<DaemonSnapshot>>,
}

impl MetricsHub {
    /// Preallocates one slot per worker so publishing never grows the vector.
    pub fn new(workers: usize) -> MetricsHub {
        MetricsHub {
            slots: Arc::new(Mutex::new(vec![None; workers])),
            daemon: Arc::default(),
        }
    }

    /// Changes the daemon-level part (configured peers, reloads, last seen).
    pub fn update_daemon(&self, fill: impl FnOnce(&mut DaemonSnapshot)) {
        let mut daemon = self
            .daemon
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        fill(&mut daemon);
    }

    /// A copy of the daemon-level part.
    pub fn daemon_snapshot(&self) -> DaemonSnapshot {
        self.daemon
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Option<WorkerSnapshot>>> {
        // A worker that panicked while copying left at worst a torn snapshot
        // of plain numbers; keep exporting rather than take the server down.
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the worker's slot.
    pub fn publish(&self, snapshot: WorkerSnapshot) {
        let worker = snapshot.worker;
        let mut slots = self.lock();
        if worker >= slots.len() {
            slots.resize(worker + 1, None);
        }
        if let Some(slot) = slots.get_mut(worker) {
            *slot = Some(snapshot);
        }
    }

    /// Lets a worker copy into its existing slot (`clone_from`), reusing the
    /// slot's peer vector instead of allocating a new snapshot each interval.
    pub fn update(&self, worker: usize, fill: impl FnOnce(&mut WorkerSnapshot)) {
        let mut slots = self.lock();
        if worker >= slots.len() {
            slots.resize(worker + 1, None);
        }
        if let Some(slot) = slots.get_mut(worker) {
            let snapshot = slot.get_or_insert_with(|| WorkerSnapshot::new(worker));
            fill(snapshot);
            snapshot.worker = worker;
        }
    }

    /// Copies of every published snapshot, in worker order.
    pub fn snapshot(&self) -> Vec<WorkerSnapshot> {
        self.lock().iter().flatten().cloned().collect()
    }
}

#[cfg(feature = "prometheus")]
pub use text::{encode, encode_with_daemon};

/// The OpenMetrics text encoder (the `prometheus` feature): a collector over the snapshots.
#[cfg(feature = "prometheus")]
mod text {
    use super::*;
    use intentra_proto::{CloseReason, DropReason};
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::DescriptorEncoder;
    use prometheus_client::metrics::MetricType;
    use prometheus_client::registry::{Registry, Unit};

    /// Encodes the snapshots as OpenMetrics text (see `CONTENT_TYPE`).
    pub fn encode(snapshots: &[WorkerSnapshot], per_peer: bool) -> String {
        encode_with_daemon(snapshots, &DaemonSnapshot::default(), per_peer)
    }

    /// `encode` plus the daemon-level series of `daemon`.
    pub fn encode_with_daemon(
        snapshots: &[WorkerSnapshot],
        daemon: &DaemonSnapshot,
        per_peer: bool,
    ) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SnapshotCollector {
            workers: snapshots.to_vec(),
            daemon: daemon.clone(),
            per_peer,
        }));
        let mut out = String::with_capacity(16 * 1024);
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            // Writing to a String cannot fail; say so in-band rather than panic.
            return format!("# encoding failed: {err}\n# EOF\n");
        }
        out
    }

    #[derive(Debug)]
    struct SnapshotCollector {
        workers: Vec<WorkerSnapshot>,
        daemon: DaemonSnapshot,
        per_peer: bool,
    }

    /// A family read from one field of `T` (a worker's `Stats`, or a peer's totals).
    struct CounterFamily<T = Stats> {
        /// For counters, without the `_total` that the encoder appends.
        name: &'static str,
        help: &'static str,
        value: fn(&T) -> u64,
    }

    /// A histogram read from a worker snapshot.
    struct HistogramFamily {
        /// Without the unit suffix, which the encoder appends.
        name: &'static str,
        help: &'static str,
        unit: Option<Unit>,
        counts: fn(&WorkerSnapshot) -> &BucketCounts,
    }

    const COUNTERS: &[CounterFamily<Stats>] = &[
        CounterFamily {
            name: "intentra_packets_received",
            help: "Datagrams received, before any check.",
            value: |s| s.packets_received,
        },
        CounterFamily {
            name: "intentra_bytes_received",
            help: "Bytes of datagrams received.",
            value: |s| s.bytes_received,
        },
        CounterFamily {
            name: "intentra_packets_sent",
            help: "Datagrams sent.",
            value: |s| s.packets_sent,
        },
        CounterFamily {
            name: "intentra_bytes_sent",
            help: "Bytes of datagrams sent.",
            value: |s| s.bytes_sent,
        },
        CounterFamily {
            name: "intentra_messages_delivered",
            help: "Messages delivered to the application.",
            value: |s| s.messages_delivered,
        },
        CounterFamily {
            name: "intentra_bytes_delivered",
            help: "Payload bytes delivered to the application.",
            value: |s| s.bytes_delivered,
        },
        CounterFamily {
            name: "intentra_replay_rejections",
            help: "Data packets rejected as replays (counter already seen or older than the window), checked before authentication; the same count as intentra_packets_dropped_total{reason=\"replay\"}.",
            value: |s| s.dropped(DropReason::Replay),
        },
        CounterFamily {
            name: "intentra_strike_events",
            help: "Protocol violations counted against a peer.",
            value: |s| s.strike_events,
        },
        CounterFamily {
            name: "intentra_handshakes_initiated",
            help: "Handshakes this node started.",
            value: |s| s.handshakes_initiated,
        },
        CounterFamily {
            name: "intentra_handshakes_completed",
            help: "Handshakes completed: as responder on reading HandshakeFinish, as initiator on reading HandshakeResponse (before the responder confirms).",
            value: |s| s.handshakes_completed,
        },
        CounterFamily {
            name: "intentra_handshake_retransmits",
            help: "Handshake messages sent again after a timeout.",
            value: |s| s.handshake_retransmits,
        },
        CounterFamily {
            name: "intentra_cookie_replies_sent",
            help: "Cookie replies sent instead of processing a handshake.",
            value: |s| s.cookie_replies_sent,
        },
        CounterFamily {
            name: "intentra_handshakes_displaced",
            help: "Handshakes in flight from sources that proved nothing, given up for a cookie-proven one.",
            value: |s| s.handshakes_displaced,
        },
        CounterFamily {
            name: "intentra_simultaneous_opens",
            help: "Handshakes set aside because both sides connected at once and the other one won.",
            value: |s| s.simultaneous_opens,
        },
        CounterFamily {
            name: "intentra_reliable_abandoned",
            help: "Reliable messages never acknowledged when their session ended or restarted.",
            value: |s| s.reliable_abandoned,
        },
        CounterFamily {
            name: "intentra_rekeys",
            help: "Sessions rekeyed.",
            value: |s| s.rekeys,
        },
        CounterFamily {
            name: "intentra_reliable_retransmits",
            help: "Reliable segments sent again.",
            value: |s| s.reliable_retransmits,
        },
        CounterFamily {
            name: "intentra_send_would_block",
            help: "Reliable sends refused with WouldBlock because the peer's queue was full.",
            value: |s| s.send_would_block,
        },
        CounterFamily {
            name: "intentra_packets_send_dropped",
            help: "Datagrams the driver could not send (socket buffer full, ENOBUFS, errors), counted, never retried forever.",
            value: |s| s.packets_send_dropped,
        },
    ];

    /// Counters whose original names lack `_total`; exposed unchanged as `unknown`.
    const LEGACY_COUNTERS: &[CounterFamily] = &[
        CounterFamily {
            name: "intentra_packets_dropped_rate_limit",
            help: "Legacy name of intentra_packets_dropped_total{reason=\"rate_limit\"}: datagrams dropped by the per-peer rate limit before any cryptography (a counter).",
            value: |s| s.dropped(DropReason::RateLimit),
        },
        CounterFamily {
            name: "intentra_packets_dropped_crypto",
            help: "Legacy name of intentra_packets_dropped_total{reason=\"crypto\"}: datagrams dropped because AEAD authentication failed (a counter).",
            value: |s| s.dropped(DropReason::Crypto),
        },
    ];

    const GAUGES: &[CounterFamily] = &[
        CounterFamily {
            name: "intentra_handshake_in_flight",
            help: "Handshakes started and not yet completed or abandoned.",
            value: |s| s.handshakes_in_flight,
        },
        CounterFamily {
            name: "intentra_connections_active",
            help: "Established sessions on this worker.",
            value: |s| s.sessions_active,
        },
        CounterFamily {
            name: "intentra_reorder_buffer_bytes",
            help: "Bytes held in reliable reorder buffers.",
            value: |s| s.reorder_buffer_bytes,
        },
        CounterFamily {
            name: "intentra_retransmit_queue_bytes",
            help: "Bytes held for reliable retransmission.",
            value: |s| s.retransmit_queue_bytes,
        },
    ];

    /// A gauge value that prometheus-client encodes as an integer.
    fn as_gauge(value: u64) -> i64 {
        i64::try_from(value).unwrap_or(i64::MAX)
    }

    impl SnapshotCollector {
        fn worker_label(worker: &WorkerSnapshot) -> [(&'static str, String); 1] {
            [("worker", worker.worker.to_string())]
        }

        fn encode_counters(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
            for family in COUNTERS {
                let mut metric = encoder.encode_descriptor(
                    family.name,
                    family.help,
                    None,
                    MetricType::Counter,
                )?;
                for worker in &self.workers {
                    let labels = Self::worker_label(worker);
                    metric
                        .encode_family(&labels)?
                        .encode_counter::<(), _, u64>(&(family.value)(&worker.stats), None)?;
                }
            }
            for (families, metric_type) in [
                (LEGACY_COUNTERS, MetricType::Unknown),
                (GAUGES, MetricType::Gauge),
            ] {
                for family in families {
                    let mut metric =
                        encoder.encode_descriptor(family.name, family.help, None, metric_type)?;
                    for worker in &self.workers {
                        let labels = Self::worker_label(worker);
                        metric
                            .encode_family(&labels)?
                            .encode_gauge(&as_gauge((family.value)(&worker.stats)))?;
                    }
                }
            }
            Ok(())
        }

        fn encode_reasons(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let mut metric = encoder.encode_descriptor(
                "intentra_packets_dropped",
                "Datagrams dropped, by reason.",
                None,
                MetricType::Counter,
            )?;
            for worker in &self.workers {
                for reason in DropReason::ALL {
                    let labels = [
                        ("worker", worker.worker.to_string()),
                        ("reason", reason.label().to_owned()),
                    ];
                    metric
                        .encode_family(&labels)?
                        .encode_counter::<(), _, u64>(&worker.stats.dropped(reason), None)?;
                }
            }
            let mut metric = encoder.encode_descriptor(
                "intentra_connection_closes",
                "Sessions closed, by reason.",
                None,
                MetricType::Counter,
            )?;
            for worker in &self.workers {
                for reason in CloseReason::ALL {
                    let labels = [
                        ("worker", worker.worker.to_string()),
                        ("reason", reason.label().to_owned()),
                    ];
                    metric
                        .encode_family(&labels)?
                        .encode_counter::<(), _, u64>(&worker.stats.closes(reason), None)?;
                }
            }
            Ok(())
        }

        fn encode_histograms(
            &self,
            encoder: &mut DescriptorEncoder,
        ) -> Result<(), std::fmt::Error> {
            let histograms = [
                HistogramFamily {
                    name: "intentra_receive_batch_size",
                    help: "Datagrams returned by one receive call.",
                    unit: None,
                    counts: |w| &w.batch_sizes,
                },
                HistogramFamily {
                    name: "intentra_handshake_duration",
                    help: "Time from first handshake message to an established session.",
                    unit: Some(Unit::Seconds),
                    counts: |w| &w.handshake_durations,
                },
            ];
            for family in histograms {
                let mut metric = encoder.encode_descriptor(
                    family.name,
                    family.help,
                    family.unit.as_ref(),
                    MetricType::Histogram,
                )?;
                for worker in &self.workers {
                    let labels = Self::worker_label(worker);
                    let counts = (family.counts)(worker);
                    metric.encode_family(&labels)?.encode_histogram::<()>(
                        counts.sum(),
                        counts.count(),
                        &counts.encoder_buckets(),
                        None,
                    )?;
                }
            }
            Ok(())
        }

        fn encode_peers(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
            // A peer belongs to one worker, but sum by key anyway: two series with
            // identical labels would make the whole scrape invalid.
            let mut peers: BTreeMap<PublicKey, PeerTotals> = BTreeMap::new();
            for worker in &self.workers {
                for peer in &worker.peers {
                    let totals = peers.entry(peer.public_key).or_default();
                    totals.addr = totals.addr.or(Some(peer.addr));
                    totals.received += peer.packets_received;
                    totals.sent += peer.packets_sent;
                    totals.drops += peer.drops;
                    totals.rtt_us = totals.rtt_us.or(peer.rtt_us);
                }
            }
            let keys: Vec<(String, String, &PeerTotals)> = peers
                .iter()
                .map(|(key, t)| {
                    let addr = t.addr.map(|a| a.to_string()).unwrap_or_default();
                    (key.to_hex(), addr, t)
                })
                .collect();
            let counters: [CounterFamily<PeerTotals>; 3] = [
                CounterFamily {
                    name: "intentra_peer_packets_received",
                    help: "Packets accepted from this peer.",
                    value: |t| t.received,
                },
                CounterFamily {
                    name: "intentra_peer_packets_sent",
                    help: "Packets sent to this peer.",
                    value: |t| t.sent,
                },
                CounterFamily {
                    name: "intentra_peer_drops",
                    help: "Packets from this peer's session that were dropped.",
                    value: |t| t.drops,
                },
            ];
            for family in counters {
                let mut metric = encoder.encode_descriptor(
                    family.name,
                    family.help,
                    None,
                    MetricType::Counter,
                )?;
                for (key, addr, totals) in &keys {
                    let labels = [("peer", key.as_str()), ("address", addr.as_str())];
                    metric
                        .encode_family(&labels)?
                        .encode_counter::<(), _, u64>(&(family.value)(totals), None)?;
                }
            }
            let mut metric = encoder.encode_descriptor(
                "intentra_peer_rtt",
                "Smoothed round-trip time to this peer.",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            for (key, addr, totals) in &keys {
                if let Some(rtt_us) = totals.rtt_us {
                    let labels = [("peer", key.as_str()), ("address", addr.as_str())];
                    // Precision loss above 2^53 us (285 years) is irrelevant.
                    metric
                        .encode_family(&labels)?
                        .encode_gauge(&(rtt_us as f64 / 1e6))?;
                }
            }
            let mut metric = encoder.encode_descriptor(
                "intentra_peer_last_seen_timestamp",
                "When a packet from this peer last authenticated (Unix time, sampled every publish interval).",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            let mut seen: BTreeMap<PublicKey, &PeerSeen> = BTreeMap::new();
            for peer in self.daemon.peers_seen.values().flatten() {
                let entry = seen.entry(peer.public_key).or_insert(peer);
                if peer.unix_seconds > entry.unix_seconds {
                    *entry = peer;
                }
            }
            for (key, peer) in seen {
                let (key, addr) = (key.to_hex(), peer.addr.to_string());
                let labels = [("peer", key.as_str()), ("address", addr.as_str())];
                metric
                    .encode_family(&labels)?
                    .encode_gauge(&as_gauge(peer.unix_seconds))?;
            }
            Ok(())
        }

        fn encode_daemon(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
            if let Some(peers) = &self.daemon.configured_peers {
                let mut metric = encoder.encode_descriptor(
                    "intentra_configured_peer_up",
                    "1 if a session with this configured peer ([[node.peers]]) is established, else 0.",
                    None,
                    MetricType::Gauge,
                )?;
                for peer in peers {
                    let (key, addr) = (peer.public_key.to_hex(), peer.addr.to_string());
                    let labels = [("peer", key.as_str()), ("address", addr.as_str())];
                    metric
                        .encode_family(&labels)?
                        .encode_gauge(&i64::from(peer.up))?;
                }
                let mut metric = encoder.encode_descriptor(
                    "intentra_configured_peer_connect_attempts",
                    "Connection attempts (handshakes started) to this configured peer, the first dial included.",
                    None,
                    MetricType::Counter,
                )?;
                for peer in peers {
                    let (key, addr) = (peer.public_key.to_hex(), peer.addr.to_string());
                    let labels = [("peer", key.as_str()), ("address", addr.as_str())];
                    metric
                        .encode_family(&labels)?
                        .encode_counter::<(), _, u64>(&peer.attempts, None)?;
                }
            }
            if let Some(reloads) = self.daemon.allow_list {
                let mut metric = encoder.encode_descriptor(
                    "intentra_allow_list_reload_failures",
                    "Allow-list reloads (SIGHUP) that failed and kept the previous list.",
                    None,
                    MetricType::Counter,
                )?;
                metric.encode_counter::<(), _, u64>(&reloads.failures, None)?;
                let mut metric = encoder.encode_descriptor(
                    "intentra_allow_list_last_reload_success_timestamp",
                    "When the key file and allow-list were last loaded successfully (Unix time; start-up counts).",
                    Some(&Unit::Seconds),
                    MetricType::Gauge,
                )?;
                metric.encode_gauge(&reloads.last_success_unix)?;
            }
            Ok(())
        }
    }

    #[derive(Debug, Default)]
    struct PeerTotals {
        addr: Option<SocketAddr>,
        received: u64,
        sent: u64,
        drops: u64,
        rtt_us: Option<u64>,
    }

    impl Collector for SnapshotCollector {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            self.encode_counters(&mut encoder)?;
            self.encode_reasons(&mut encoder)?;
            self.encode_histograms(&mut encoder)?;
            if self.per_peer {
                self.encode_peers(&mut encoder)?;
            }
            self.encode_daemon(&mut encoder)?;
            Ok(())
        }
    }
}

#[cfg(all(test, feature = "prometheus"))]
mod tests {
    use super::*;

    #[test]
    fn buckets_use_le_semantics_and_ignore_nan() {
        let mut h = BucketCounts::batch_sizes();
        h.observe(1.0);
        h.observe(1.5);
        h.observe(2.0);
        h.observe(5000.0);
        h.observe(f64::NAN);
        assert_eq!(h.count(), 4);
        assert_eq!(h.bucket(0), 1);
        assert_eq!(h.bucket(1), 2);
        assert_eq!(h.bucket(BATCH_SIZE_BOUNDS.len()), 1);
        assert_eq!(h.sum(), 5004.5);
    }

    #[test]
    fn bounds_are_checked() {
        assert_eq!(
            BucketCounts::new(&[1.0, 1.0]),
            Err(BucketError::NotIncreasing)
        );
        assert_eq!(
            BucketCounts::new(&[1.0, f64::INFINITY]),
            Err(BucketError::NotIncreasing)
        );
        assert!(BucketCounts::new(HANDSHAKE_SECONDS_BOUNDS).is_ok());
        let mut a = BucketCounts::batch_sizes();
        a.observe(3.0);
        assert!(!a.accumulate(&BucketCounts::handshake_seconds()));
        let b = a.clone();
        assert!(a.accumulate(&b));
        assert_eq!(a.count(), 2);
    }

    #[test]
    fn hub_keeps_latest_snapshot_per_worker() {
        let hub = MetricsHub::new(2);
        let mut s = WorkerSnapshot::new(1);
        s.stats.packets_received = 5;
        hub.publish(s.clone());
        s.stats.packets_received = 7;
        hub.publish(s);
        hub.update(0, |w| w.stats.packets_sent = 3);
        hub.update(3, |w| w.stats.rekeys = 1);
        let all = hub.snapshot();
        assert_eq!(
            all.iter().map(|w| w.worker).collect::<Vec<_>>(),
            vec![0, 1, 3]
        );
        assert_eq!(all[0].stats.packets_sent, 3);
        assert_eq!(all[1].stats.packets_received, 7);
    }
}
