//! ACK coalescing at the endpoint: what a receiver sends back for a batch of Reliable
//! segments, driven by hand on the virtual clock (no wall time anywhere).

use std::net::SocketAddr;
use std::time::Duration;

use intentra_proto::sim::Network;
use intentra_proto::wire::MAX_DATAGRAM_LEN;
use intentra_proto::{Endpoint, EndpointConfig, Mode, PeerId, Sent, Timestamp, MAX_ACK_DELAY};

/// The cleartext type byte of a transport header (section 7.1) that marks an Ack.
const ACK_TYPE: u8 = 7;

struct Pair {
    net: Network,
    /// Node 0's handle for node 1 (the sender's peer).
    to_b: PeerId,
}

fn pair(tweak: impl Fn(&mut EndpointConfig)) -> Pair {
    let (mut net, to_b, _) = Network::connected_pair(41, tweak);
    // Let every handshake leftover (confirmations, the first keepalives' timers) settle.
    net.run_for(Duration::from_millis(5), 1_000);
    assert!(net.idle());
    Pair { net, to_b }
}

impl Pair {
    fn addrs(&self) -> (SocketAddr, SocketAddr) {
        (self.net.nodes[0].addr, self.net.nodes[1].addr)
    }

    /// Node 0 seals `count` Reliable segments; returns the datagrams, not yet delivered.
    fn seal(&mut self, count: usize) -> Vec<Vec<u8>> {
        let now = self.net.now;
        let mut out = Vec::new();
        for i in 0..count {
            let mut buf = [0u8; MAX_DATAGRAM_LEN];
            let payload = (i as u32).to_le_bytes();
            let sent = self.net.nodes[0]
                .endpoint
                .send(now, self.to_b, Mode::Reliable, &payload, &mut buf)
                .expect("accepted");
            let Sent::Now(transmit) = sent else {
                panic!("segment {i} was queued, the window should be open");
            };
            out.push(buf[..transmit.len].to_vec());
        }
        out
    }

    /// Node 1 handles `datagrams` as one receive batch, then its transmits are drained as
    /// a driver does after a batch; returns what it sent.
    fn receive_batch(&mut self, datagrams: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let (a_addr, _) = self.addrs();
        let now = self.net.now;
        for datagram in datagrams {
            let mut copy = datagram.clone();
            self.b().handle_datagram(now, a_addr, &mut copy);
            while self.b().poll_event().is_some() {}
        }
        self.b_transmits()
    }

    fn b(&mut self) -> &mut Endpoint {
        &mut self.net.nodes[1].endpoint
    }

    fn b_transmits(&mut self) -> Vec<Vec<u8>> {
        let now = self.net.now;
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        while let Some(transmit) = self.b().poll_transmit(now, &mut buf) {
            out.push(buf[..transmit.len].to_vec());
        }
        out
    }

    /// Runs node 1's timers at `at` and returns what it sent.
    fn b_timeout(&mut self, at: Timestamp) -> Vec<Vec<u8>> {
        self.net.now = at;
        self.b().handle_timeout(at);
        self.b_transmits()
    }

    /// Hands node 1's datagrams to node 0 and returns node 0's Reliable bytes still queued.
    fn deliver_to_a(&mut self, datagrams: &[Vec<u8>]) -> usize {
        let (_, b_addr) = self.addrs();
        let now = self.net.now;
        let a = &mut self.net.nodes[0].endpoint;
        for datagram in datagrams {
            let mut copy = datagram.clone();
            a.handle_datagram(now, b_addr, &mut copy);
        }
        a.peer_info(self.to_b).unwrap().reliable_queued_bytes
    }
}

/// When a delayed Ack for data that first arrived at `arrival` is due (PROTOCOL.md 15): the
/// Ack delay later, rounded down to a multiple of a quarter of it, so that many peers' Acks
/// fall due together.
fn delayed_ack_due(arrival: Timestamp, delay: Duration) -> Timestamp {
    let latest = (arrival + delay).as_nanos();
    let grain = delay.as_nanos() as u64 / 4;
    let due = Timestamp::from_nanos(latest - latest % grain);
    assert!(due.as_nanos() > latest - grain && due > arrival);
    due
}

/// The Acks `node` sent while the network captured (the capture is taken).
fn captured_acks_from(net: &mut Network, node: usize) -> usize {
    let addr = net.nodes[node].addr;
    let capture = net.capture.take().expect("capturing");
    capture
        .iter()
        .filter(|(src, _, bytes)| *src == addr && bytes[1] == ACK_TYPE)
        .count()
}

fn acks(datagrams: &[Vec<u8>]) -> usize {
    datagrams.iter().filter(|d| d[1] == ACK_TYPE).count()
}

#[test]
fn a_batch_of_in_order_segments_gets_one_ack_after_the_delay() {
    let mut p = pair(|_| {});
    let batch = p.seal(10);
    let start = p.net.now;
    let sent = p.receive_batch(&batch);
    assert_eq!(acks(&sent), 0, "in-order data may wait for more");
    let due = delayed_ack_due(start, MAX_ACK_DELAY);
    assert_eq!(p.b().poll_timeout(), Some(due), "the default Ack delay");
    let sent = p.b_timeout(due);
    assert_eq!((sent.len(), acks(&sent)), (1, 1), "one Ack for the batch");
    assert_eq!(p.deliver_to_a(&sent), 0, "the one Ack covers all ten");
    assert!(p.b_timeout(due + MAX_ACK_DELAY).is_empty());
}

#[test]
fn a_large_batch_is_acknowledged_at_once_by_one_ack() {
    let mut p = pair(|_| {});
    // More than `ack_after_segments` (16): due at once, but written after the batch.
    let batch = p.seal(40);
    let sent = p.receive_batch(&batch);
    assert_eq!((sent.len(), acks(&sent)), (1, 1));
    assert_eq!(p.deliver_to_a(&sent), 0, "it covers all forty");
    let delivered = p.net.nodes[1].endpoint.stats().messages_delivered;
    assert_eq!(delivered, 40);
    // Nothing is left pending: no second Ack when the delay would have expired.
    let later = p.net.now + MAX_ACK_DELAY;
    assert_eq!(acks(&p.b_timeout(later)), 0);
}

#[test]
fn a_gap_is_acknowledged_at_once() {
    let mut p = pair(|_| {});
    let batch = p.seal(3);
    // Segment 0 is lost: 1 arrives above a hole, and the sender must hear of it now.
    let sent = p.receive_batch(&batch[1..2]);
    assert_eq!(acks(&sent), 1);
    // The retransmitted 0 fills the gap: acknowledged at once as well.
    let sent = p.receive_batch(&batch[0..1]);
    assert_eq!(acks(&sent), 1);
    // Then in order again: it may wait.
    let sent = p.receive_batch(&batch[2..3]);
    assert_eq!(acks(&sent), 0);
    let sent = p.b_timeout(p.net.now + MAX_ACK_DELAY);
    assert_eq!(acks(&sent), 1);
    assert_eq!(p.deliver_to_a(&sent), 0);
}

#[test]
fn the_configured_ack_delay_is_respected_on_the_virtual_clock() {
    let mut p = pair(|config| {
        config.reliable.ack_delay = Duration::from_millis(4);
        config.reliable.ack_after_segments = 1_000;
    });
    let first = p.seal(1);
    let start = p.net.now;
    assert_eq!(acks(&p.receive_batch(&first)), 0);
    // More arrives within the delay: the deadline stays that of the first arrival.
    p.net.now = start + Duration::from_millis(3);
    let more = p.seal(2);
    assert_eq!(acks(&p.receive_batch(&more)), 0);
    // At most the delay after the first arrival, rounded down to a quarter of it (1 ms).
    let due = delayed_ack_due(start, Duration::from_millis(4));
    assert_eq!(p.b().poll_timeout(), Some(due));
    let early = p.b_timeout(Timestamp::from_nanos(due.as_nanos() - 1));
    assert_eq!(acks(&early), 0, "not before the deadline");
    let sent = p.b_timeout(due);
    assert_eq!(acks(&sent), 1);
    assert_eq!(p.deliver_to_a(&sent), 0, "one Ack for the three");
}

#[test]
fn a_stream_through_the_simulated_link_sends_far_fewer_acks_than_segments() {
    let (mut net, to_b, _) = Network::connected_pair(43, |_| {});
    net.capture = Some(Vec::new());
    let mut sent = 0u32;
    // 20 segments per simulated millisecond for 100 ms, every one delivered in order.
    for _ in 0..100 {
        for _ in 0..20 {
            net.send(0, to_b, Mode::Reliable, &sent.to_le_bytes())
                .expect("the window has room at this rate");
            sent += 1;
        }
        net.run_for(Duration::from_millis(1), 10_000);
    }
    net.run_for(Duration::from_millis(50), 10_000);
    assert_eq!(net.nodes[1].messages(Mode::Reliable).count(), 2_000);
    let acks = captured_acks_from(&mut net, 1);
    // One per batch and at least every 16 segments: 20 arrive each millisecond, so one
    // or two per ms.
    assert!(acks <= 250, "{acks} Acks for 2000 segments");
    assert!(acks >= 100, "{acks}: at least one per batch is still sent");
}

/// A 1 kHz stream, the rate the protocol is built for: each Ack covers most of an Ack
/// delay's worth of segments instead of one (on loopback an Ack costs the receiver about
/// three times a message), and the sender, whose RTT is far below the delay, never
/// retransmits what only waits for a delayed Ack: its RTO allows for the delay.
#[test]
fn a_1khz_stream_is_acknowledged_every_few_segments_without_spurious_retransmissions() {
    let (mut net, to_b, _) = Network::connected_pair(44, |_| {});
    net.capture = Some(Vec::new());
    let segments = 300u32;
    for seq in 0..segments {
        net.send(0, to_b, Mode::Reliable, &seq.to_le_bytes())
            .expect("the window has room at this rate");
        net.run_for(Duration::from_millis(1), 1_000);
    }
    net.run_for(MAX_ACK_DELAY * 2, 1_000);
    assert_eq!(
        net.nodes[1].messages(Mode::Reliable).count(),
        segments as usize
    );
    let acks = captured_acks_from(&mut net, 1);
    // A delayed Ack covers the arrivals of 7.5 to 10 ms (the delay rounded down to its
    // quarter): between 30 and 40 Acks for 300 ms, with a few to spare.
    assert!(
        (25..=45).contains(&acks),
        "{acks} Acks for {segments} segments"
    );
    let sender = net.nodes[0].endpoint.stats();
    assert_eq!(
        sender.reliable_retransmits, 0,
        "an RTO shorter than the Ack delay"
    );
    assert_eq!(
        net.nodes[0]
            .endpoint
            .peer_info(to_b)
            .unwrap()
            .reliable_queued_bytes,
        0
    );
}
