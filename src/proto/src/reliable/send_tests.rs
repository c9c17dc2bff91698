//! Unit tests of the sender.

use super::*;
use crate::reliable::test_util::*;
use crate::reliable::{
    Receive, ReliableReceiver, DEFAULT_QUEUE_BYTES, MAX_ACK_DELAY, MAX_IN_FLIGHT,
};

#[test]
fn push_blocks_on_the_byte_bound_and_resumes_after_an_ack() {
    let mut sender = ReliableSender::new(config(100));
    assert_eq!(sender.push(t(0), &[1; 60]), sent_now(0));
    assert_eq!(sender.push(t(0), &[2; 40]), sent_now(1));
    assert_eq!(sender.queued_bytes(), 100);
    assert_eq!(sender.push(t(0), &[3; 1]), Err(PushError::WouldBlock));
    // An empty payload needs no bytes, only a slot.
    assert_eq!(sender.push(t(0), &[]), sent_now(2));
    let outcome = sender.on_ack(t(10), ack(1, 0)).unwrap();
    assert_eq!(outcome.newly_acked, 1);
    assert_eq!(outcome.bytes_freed, 60);
    assert_eq!(sender.push(t(10), &[3; 60]), sent_now(3));
    assert_eq!(sender.push(t(10), &[4; 1]), Err(PushError::WouldBlock));
    assert_eq!(
        sender.push(t(10), &[4; 101]),
        Err(PushError::ExceedsBound { bound: 100 })
    );
}

#[test]
fn selectively_acked_bytes_count_until_the_cumulative_point_passes_them() {
    let mut sender = ReliableSender::new(config(100));
    sender.push(t(0), &[1; 50]).unwrap();
    sender.push(t(0), &[2; 50]).unwrap();
    let outcome = sender.on_ack(t(1), ack(0, 0b1)).unwrap();
    assert_eq!((outcome.newly_acked, outcome.bytes_freed), (1, 50));
    assert_eq!(sender.unacked_bytes(), 50);
    // The receiver still buffers seq 1 behind the hole at 0.
    assert_eq!(sender.queued_bytes(), 100);
    assert_eq!(sender.push(t(1), &[3; 1]), Err(PushError::WouldBlock));
    let outcome = sender.on_ack(t(2), ack(2, 0)).unwrap();
    assert_eq!((outcome.newly_acked, outcome.bytes_freed), (1, 50));
    assert_eq!((sender.queued_bytes(), sender.unacked_bytes()), (0, 0));
    assert_eq!(sender.push(t(2), &[3; 100]), sent_now(2));
}

#[test]
fn push_blocks_on_the_segment_window_and_resumes_after_an_ack() {
    let mut sender = ReliableSender::new(config(10_000));
    for seq in 0..MAX_IN_FLIGHT as u64 {
        assert_eq!(sender.push(t(0), &[seq as u8]), sent_now(seq));
    }
    assert_eq!(sender.in_flight(), MAX_IN_FLIGHT);
    assert_eq!(sender.push(t(0), &[0]), Err(PushError::WouldBlock));
    // Selectively acknowledging everything but the oldest frees bytes, not window:
    // seq 1024 would be out of a receiver's window while seq 0 is missing.
    let all_but_the_oldest: Vec<u64> = (0..MAX_IN_FLIGHT as u64 - 1).collect();
    sender
        .on_ack(t(5), ack_bits(0, &all_but_the_oldest))
        .unwrap();
    assert_eq!(sender.in_flight(), 1);
    assert_eq!(sender.push(t(5), &[0]), Err(PushError::WouldBlock));
    sender.on_ack(t(6), ack(1, 0)).unwrap();
    assert_eq!(sender.in_flight(), 0);
    assert_eq!(sender.push(t(6), &[9]), sent_now(MAX_IN_FLIGHT as u64));
}

#[test]
fn the_default_bound_holds_a_message_of_the_maximum_payload() {
    use crate::wire::MAX_RELIABLE_PAYLOAD;
    let mut sender = ReliableSender::new(ReliableConfig::default());
    assert!(sender.push(t(0), &[1; MAX_RELIABLE_PAYLOAD]).is_ok());
    let mut receiver = ReliableReceiver::new(ReliableConfig::default());
    assert_eq!(
        receiver.on_segment(t(0), 1, &[1; MAX_RELIABLE_PAYLOAD]),
        Receive::Buffered
    );
}

#[test]
fn a_huge_configured_bound_is_capped_at_what_can_ever_be_in_flight() {
    use crate::reliable::MAX_QUEUE_BYTES;
    let huge = config(1 << 30);
    assert_eq!(huge.queue_bound(), MAX_QUEUE_BYTES);
    let mut sender = ReliableSender::new(huge);
    assert_eq!(
        sender.push(t(0), &vec![0; MAX_QUEUE_BYTES + 1]),
        Err(PushError::ExceedsBound {
            bound: MAX_QUEUE_BYTES
        })
    );
    assert_eq!(config(512).queue_bound(), 512);
}

#[test]
fn storage_is_allocated_as_payloads_arrive_not_up_front() {
    use crate::reliable::MAX_QUEUE_BYTES;
    let mut sender = ReliableSender::new(config(MAX_QUEUE_BYTES));
    assert_eq!(sender.allocated_bytes(), 0);
    // A steady stream of 100-byte messages, two in flight at a time.
    let mut grown = 0;
    for seq in 0..2_000u64 {
        assert_eq!(sender.push(t(seq), &[seq as u8; 100]), sent_now(seq));
        if seq > 0 {
            sender.on_ack(t(seq), ack(seq, 0)).unwrap();
        }
        if seq == 100 {
            grown = sender.allocated_bytes();
        }
    }
    assert!(grown > 0 && grown <= 17 * 1024, "{grown}");
    assert_eq!(
        sender.allocated_bytes(),
        grown,
        "steady state allocates no more"
    );
    // A burst up to the bound grows storage to hold it, and no further.
    sender.on_ack(t(3_000), ack(2_000, 0)).unwrap();
    for seq in 2_000..2_064u64 {
        assert!(sender.push(t(3_000), &[1; 1_400]).is_ok(), "{seq}");
    }
    let bound = MAX_QUEUE_BYTES + MAX_QUEUE_BYTES / 2;
    assert!(
        sender.allocated_bytes() <= bound,
        "{}",
        sender.allocated_bytes()
    );
}

#[test]
fn a_full_window_of_small_updates_never_grows_the_first_allocation() {
    // A stream that keeps within the first slots (here 60 updates of 128 bytes in
    // flight) reaches its steady state with its first message: the storage never grows
    // mid-stream, whatever the acknowledgements do.
    let mut sender = ReliableSender::new(ReliableConfig::default());
    sender.push(t(0), &[0; 128]).unwrap();
    let first = sender.allocated_bytes();
    for seq in 1..60 {
        sender.push(t(seq), &[seq as u8; 128]).unwrap();
    }
    assert_eq!(sender.allocated_bytes(), first);
    for round in 0..100u64 {
        acknowledge_and_refill(&mut sender, round, 30);
        assert_eq!(sender.allocated_bytes(), first, "round {round}");
    }
}

/// Acknowledges the oldest `batch` of a window kept `batch`-aligned, and pushes as many
/// 128-byte updates again.
fn acknowledge_and_refill(sender: &mut ReliableSender, round: u64, batch: u64) {
    let base = round * batch;
    sender.on_ack(t(base), ack(base + batch, 0)).unwrap();
    for seq in 0..batch {
        sender
            .push(t(base + seq), &[1; 128])
            .expect("room after the ack");
    }
}

#[test]
fn a_stream_that_fills_the_byte_window_grows_once_and_then_stays() {
    // A slow or lossy path fills the whole default window with 128-byte updates (1,024 of
    // them, as many as may be in flight): storage grows while the window first fills and
    // is first refilled (the arena's slack for compaction), never again afterwards.
    let mut sender = ReliableSender::new(ReliableConfig::default());
    let mut pushed = 0u64;
    while sender.push(t(pushed), &[1; 128]).is_ok() {
        pushed += 1;
    }
    assert_eq!(pushed as usize, DEFAULT_QUEUE_BYTES / 128);
    assert_eq!(sender.slots.capacity(), DEFAULT_QUEUE_BYTES / 128);
    let mut grown = None;
    for round in 0..100u64 {
        acknowledge_and_refill(&mut sender, round, 256);
        assert_eq!(sender.push(t(0), &[1; 128]), Err(PushError::WouldBlock));
        let now = (sender.allocated_bytes(), sender.slots.capacity());
        assert_eq!(*grown.get_or_insert(now), now, "round {round}");
    }
}

#[test]
fn too_large_is_permanent() {
    let mut sender = ReliableSender::new(config(512));
    assert_eq!(
        sender.push(t(0), &[0; 513]),
        Err(PushError::ExceedsBound { bound: 512 })
    );
    assert_eq!(sender.push(t(0), &[0; 512]), sent_now(0));
    assert_eq!(
        sender.push(t(0), &[0; 513]),
        Err(PushError::ExceedsBound { bound: 512 })
    );
    let mut zero = ReliableSender::new(config(0));
    assert_eq!(
        zero.push(t(0), &[0]),
        Err(PushError::ExceedsBound { bound: 0 })
    );
    assert_eq!(zero.push(t(0), &[]), sent_now(0));
}

#[test]
fn forged_acks_are_invalid_and_change_nothing() {
    let mut sender = ReliableSender::new(config(512));
    for _ in 0..3 {
        sender.push(t(0), &[7; 10]).unwrap();
    }
    sender.on_ack(t(1), ack(1, 0)).unwrap();
    let before = sender.clone();
    let forged = [
        ack(4, 0),                 // cumulative beyond next_seq (3)
        ack(u64::MAX, 0),          // far beyond
        ack(1, 0b10),              // selective bit for seq 3, never sent
        ack(1, 1 << 63),           // selective bit 64 beyond
        ack(3, 1),                 // cumulative fine, selective seq 4 not
        ack(u64::MAX - 1, 1 << 5), // selective arithmetic would overflow
        ack(u64::MAX, u64::MAX),
    ];
    for forged in forged {
        assert_eq!(
            sender.on_ack(t(2), forged),
            Err(AckError::Invalid),
            "{forged:?}"
        );
        assert!(sender == before, "state changed by {forged:?}");
    }
    // The limits themselves are fine.
    assert_eq!(sender.on_ack(t(2), ack(1, 0b1)).unwrap().newly_acked, 1);
    assert_eq!(sender.on_ack(t(2), ack(3, 0)).unwrap().newly_acked, 1);
}

#[test]
fn stale_and_duplicate_acks_are_harmless() {
    let mut sender = ReliableSender::new(config(512));
    for _ in 0..4 {
        sender.push(t(0), &[1; 4]).unwrap();
    }
    assert_eq!(sender.on_ack(t(1), ack(2, 0)).unwrap().newly_acked, 2);
    assert_eq!(
        sender.on_ack(t(1), ack(2, 0)).unwrap(),
        AckOutcome::default()
    );
    assert_eq!(
        sender.on_ack(t(1), ack(0, 0b1)).unwrap(),
        AckOutcome::default()
    );
    assert_eq!(sender.in_flight(), 2);
    assert_eq!(sender.queued_bytes(), 8);
}

#[test]
fn rtt_estimator_follows_rfc_6298() {
    let mut sender = ReliableSender::new(config(512));
    assert_eq!(sender.rto(), Duration::from_millis(50));
    assert_eq!(sender.srtt(), None);
    sender.push(t(0), &[1]).unwrap();
    let outcome = sender.on_ack(t(20), ack(1, 0)).unwrap();
    assert_eq!(outcome.rtt_sample, Some(Duration::from_millis(20)));
    // SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR + the peer's ACK delay allowance.
    assert_eq!(sender.srtt(), Some(Duration::from_millis(20)));
    assert_eq!(sender.rto(), Duration::from_millis(60) + MAX_ACK_DELAY);
    sender.push(t(100), &[2]).unwrap();
    sender.on_ack(t(112), ack(2, 0)).unwrap();
    // RTTVAR = 3/4 * 10 + 1/4 * |20 - 12| = 9.5; SRTT = 7/8 * 20 + 1/8 * 12 = 19.
    assert_eq!(sender.srtt(), Some(Duration::from_millis(19)));
    assert_eq!(sender.rto(), Duration::from_millis(57) + MAX_ACK_DELAY);
    // Steady 1 ms RTTs: the path's part is floored at min_rto (5 ms), then the allowance
    // comes on top: a timer shorter than the peer's ACK delay would retransmit what
    // arrived, and one with no margin above it would on any scheduling hiccup.
    sender.push(t(200), &[3]).unwrap();
    for seq in 3..200u64 {
        sender.push(t(200 + seq), &[3]).unwrap();
        sender.on_ack(t(200 + seq), ack(seq, 0)).unwrap();
    }
    assert_eq!(sender.rto(), Duration::from_millis(5) + MAX_ACK_DELAY);
    // A larger min_rto is the floor of the path's part; huge RTTs clamp to max_rto.
    let mut floored = ReliableSender::new(ReliableConfig {
        min_rto: Duration::from_millis(30),
        ..config(512)
    });
    floored.push(t(0), &[1]).unwrap();
    floored.on_ack(t(1), ack(1, 0)).unwrap();
    assert_eq!(floored.rto(), Duration::from_millis(30) + MAX_ACK_DELAY);
    let mut slow = ReliableSender::new(config(512));
    slow.push(t(0), &[1]).unwrap();
    slow.on_ack(t(0), ack(0, 0)).unwrap();
    slow.on_ack(t(900), ack(1, 0)).unwrap();
    assert_eq!(slow.rto(), Duration::from_secs(1));
}

#[test]
fn karn_takes_no_sample_from_a_retransmitted_segment() {
    let mut sender = ReliableSender::new(config(512));
    sender.push(t(0), &[1]).unwrap();
    let segment = sender.poll_retransmit(t(50)).unwrap();
    assert_eq!(segment.seq, 0);
    let outcome = sender.on_ack(t(55), ack(1, 0)).unwrap();
    assert_eq!(outcome.newly_acked, 1);
    assert_eq!(outcome.rtt_sample, None);
    assert_eq!(sender.srtt(), None);
    // The backed-off RTO survives until a clean sample.
    assert_eq!(sender.rto(), Duration::from_millis(100));
    // Of two segments acked together, the clean one gives the sample.
    sender.push(t(60), &[2]).unwrap();
    sender.push(t(70), &[3]).unwrap();
    assert_eq!(sender.poll_retransmit(t(160)).map(|s| s.seq), Some(1));
    assert_eq!(sender.poll_retransmit(t(160)), None);
    let outcome = sender.on_ack(t(165), ack(3, 0)).unwrap();
    assert_eq!(outcome.newly_acked, 2);
    assert_eq!(outcome.rtt_sample, Some(Duration::from_millis(95)));
}

#[test]
fn timeout_backoff_doubles_and_caps() {
    let mut sender = ReliableSender::new(config(512));
    sender.push(t(0), &[42; 3]).unwrap();
    assert_eq!(sender.next_timeout(), Some(t(50)));
    assert_eq!(sender.poll_retransmit(t(49)), None);
    let mut now = 50;
    for expected in [100, 200, 400, 800, 1000, 1000, 1000] {
        let segment = sender.poll_retransmit(t(now)).unwrap();
        assert_eq!((segment.seq, segment.payload), (0, &[42u8; 3][..]));
        assert_eq!(sender.poll_retransmit(t(now)), None);
        assert_eq!(sender.rto(), Duration::from_millis(expected));
        now += expected;
        assert_eq!(sender.next_timeout(), Some(t(now)));
    }
}

#[test]
fn fast_retransmit_on_three_sacked_segments_above_a_hole() {
    let mut sender = ReliableSender::new(config(512));
    for seq in 0..6u8 {
        sender.push(t(0), &[seq]).unwrap();
    }
    // Two above the hole: not enough evidence.
    sender.on_ack(t(2), ack(0, 0b11)).unwrap();
    assert_eq!(sender.poll_retransmit(t(2)), None);
    // Three above seq 0 (1, 2, 3): seq 0 is due now, long before its RTO.
    sender.on_ack(t(3), ack(0, 0b111)).unwrap();
    assert_eq!(sender.next_timeout(), Some(t(3)));
    let rto = sender.rto();
    assert!(t(3) + rto < t(50), "fast means before the first timeout");
    let segment = sender.poll_retransmit(t(3)).unwrap();
    assert_eq!((segment.seq, segment.payload), (0, &[0u8][..]));
    assert_eq!(sender.poll_retransmit(t(3)), None);
    // No backoff for a fast retransmit.
    assert_eq!(sender.rto(), rto);
    // More ACKs still showing the hole within one RTO do not repeat it: what they cover
    // was transmitted before the retransmission, so it says nothing about that copy.
    sender.on_ack(t(4), ack(0, 0b1111)).unwrap();
    assert_eq!(sender.poll_retransmit(t(4)), None);
    // After an RTO, the same evidence may trigger it once more.
    let later = t(3) + sender.rto();
    sender.on_ack(later, ack(0, 0b1111)).unwrap();
    assert_eq!(sender.poll_retransmit(later).map(|s| s.seq), Some(0));
    assert_eq!(sender.poll_retransmit(later), None);
    // A hole higher up: seq 4 missing, but only 5 received above it.
    let mut sender = ReliableSender::new(config(512));
    for seq in 0..10u8 {
        sender.push(t(0), &[seq]).unwrap();
    }
    // next_expected 4; received 6, 7, 8 (bits 1, 2, 3); 4 and 5 missing.
    sender.on_ack(t(1), ack(4, 0b1110)).unwrap();
    assert_eq!(sender.poll_retransmit(t(1)).map(|s| s.seq), Some(4));
    assert_eq!(sender.poll_retransmit(t(1)).map(|s| s.seq), Some(5));
    assert_eq!(sender.poll_retransmit(t(1)), None);
}

/// A retransmission lost again is found like the first loss, by segments transmitted
/// after it being acknowledged, about a round trip later, not after a timeout; and
/// evidence that predates a retransmission never repeats it.
#[test]
fn a_retransmission_lost_again_is_retransmitted_again_without_a_timeout() {
    let mut sender = ReliableSender::new(config(4096));
    for seq in 0..4u8 {
        sender.push(t(0), &[seq]).unwrap();
    }
    // 0 lost; 1, 2, 3 arrive: 0 goes again (its 5th transmission, order number 4).
    sender.on_ack(t(2), ack(0, 0b111)).unwrap();
    assert_eq!(sender.poll_retransmit(t(2)).map(|s| s.seq), Some(0));
    // New segments 4..=7 go out after the retransmission (order numbers 5..=8).
    for seq in 4..8u8 {
        assert_eq!(sender.push(t(2), &[seq]), sent_now(u64::from(seq)));
    }
    // 4 and 5 are acknowledged, not 0: two transmissions after it, not yet evidence
    // (and the RTO since the first flag has not passed).
    sender.on_ack(t(4), ack(0, 0b11111)).unwrap();
    assert_eq!(sender.poll_retransmit(t(4)), None);
    // 6 too: three transmissions after the retransmission arrived and it did not. Lost
    // again, before any timer and before an RTO since the first flag.
    let timer = sender.next_timeout().unwrap();
    assert!(t(5) < timer && t(5) < t(2) + sender.rto());
    sender.on_ack(t(5), ack(0, 0b111111)).unwrap();
    let again = sender.poll_retransmit(t(5)).unwrap();
    assert_eq!((again.seq, again.retransmission), (0, true));
    assert_eq!(sender.poll_retransmit(t(5)), None);
    // 7 is missing with nothing received above it: it waits for more evidence or its timer.
    sender.on_ack(t(6), ack(7, 0)).unwrap();
    assert_eq!(sender.in_flight(), 1);
    assert_eq!(sender.poll_retransmit(t(6)), None);
}

/// An ACK for a retransmitted segment may answer its older copy, so it is no evidence
/// that what was sent before the newer copy is lost (Karn's ambiguity).
#[test]
fn an_ack_for_a_retransmitted_segment_is_no_loss_evidence() {
    let mut sender = ReliableSender::new(config(4096));
    for seq in 0..8u8 {
        sender.push(t(0), &[seq]).unwrap(); // order numbers 0..=7
    }
    // 0 lost (1, 2, 3 received): retransmitted, order 8.
    sender.on_ack(t(2), ack(0, 0b111)).unwrap();
    assert_eq!(sender.poll_retransmit(t(2)).map(|s| s.seq), Some(0));
    for seq in 8..10u8 {
        sender.push(t(2), &[seq]).unwrap(); // orders 9, 10
    }
    // 4 lost (5, 6, 7 received): retransmitted, order 11.
    sender.on_ack(t(3), ack(0, 0b111_0111)).unwrap();
    assert_eq!(sender.poll_retransmit(t(3)).map(|s| s.seq), Some(4));
    assert_eq!(sender.poll_retransmit(t(3)), None);
    // 4 is acknowledged: order 11 is three after 0's order 8, but it may be the first copy
    // (order 4) that arrived, so 0 is not called lost.
    sender.on_ack(t(4), ack(0, 0b111_1111)).unwrap();
    assert_eq!(sender.poll_retransmit(t(4)), None);
    // A segment sent once, three transmissions after 0's copy, is evidence.
    sender.push(t(4), &[10]).unwrap(); // order 12
    sender
        .on_ack(t(5), ack(0, 0b10_0000_0000 | 0b111_1111))
        .unwrap();
    assert_eq!(sender.poll_retransmit(t(5)).map(|s| s.seq), Some(0));
}

#[test]
fn retransmitted_payloads_survive_arena_compaction() {
    // Room for three 10-byte payloads in a 60-byte arena: every few pushes the
    // tail reaches the end and the live payloads, with holes between them left by
    // selective ACKs, must be slid to the front.
    let mut sender = ReliableSender::new(config(30));
    let payload = |seq: u64| [seq as u8 + 1; 10];
    let check_stored = |sender: &ReliableSender, expected: &[u64]| {
        let mut probe = sender.clone();
        let mut seen = Vec::new();
        while let Some(segment) = probe.poll_retransmit(t(1_000_000)) {
            assert_eq!(segment.payload, &payload(segment.seq)[..]);
            seen.push(segment.seq);
        }
        assert_eq!(seen, expected);
    };
    for seq in 0..3 {
        assert_eq!(sender.push(t(0), &payload(seq)), sent_now(seq));
    }
    for cycle in 0..20u64 {
        let a = 3 * cycle;
        let now = t(cycle);
        check_stored(&sender, &[a, a + 1, a + 2]);
        // Free a (cumulatively) and a + 2 (selectively, bit 0 = a + 2).
        sender.on_ack(now, ack(a + 1, 0b1)).unwrap();
        check_stored(&sender, &[a + 1]);
        assert_eq!(sender.push(now, &payload(a + 3)), sent_now(a + 3));
        assert_eq!(
            sender.push(now, &payload(a + 4)),
            Err(PushError::WouldBlock)
        );
        sender.on_ack(now, ack(a + 2, 0)).unwrap();
        check_stored(&sender, &[a + 3]);
        assert_eq!(sender.push(now, &payload(a + 4)), sent_now(a + 4));
        assert_eq!(sender.push(now, &payload(a + 5)), sent_now(a + 5));
    }
}

/// Bytes of the sequence numbers that were transmitted and are not yet covered
/// cumulatively: what the receiver may have to buffer, by the test's own count.
fn outstanding(sent: &[(u64, usize)], cumulative: u64) -> usize {
    sent.iter()
        .filter(|&&(seq, _)| seq >= cumulative)
        .map(|&(_, len)| len)
        .sum()
}

#[test]
fn a_sender_never_has_more_in_flight_than_the_peer_window() {
    let mut sender = ReliableSender::new(config(4_096));
    sender.set_peer_window(600);
    let mut transmitted: Vec<(u64, usize)> = Vec::new();
    let mut now = 0;
    // 40 messages of 100 bytes, far more than the window: the excess waits, no error.
    for seq in 0..40u64 {
        let pushed = sender.push(t(now), &[seq as u8; 100]).unwrap();
        assert_eq!(pushed.seq, seq);
        if pushed.send_now {
            transmitted.push((seq, 100));
        }
    }
    assert_eq!(transmitted.len(), 6, "600 bytes of 100-byte messages");
    assert_eq!(sender.window_bytes(), 600);
    assert_eq!(sender.queued_bytes(), 4_000);
    // Acknowledge the oldest two, one ACK at a time, as a slow receiver would.
    let mut cumulative = 0;
    while cumulative < 40 {
        now += 1;
        cumulative += 2.min(40 - cumulative);
        let highest_sent = transmitted.iter().map(|&(seq, _)| seq + 1).max().unwrap();
        sender
            .on_ack(t(now), ack(cumulative.min(highest_sent), 0))
            .unwrap();
        if transmitted.len() < 40 {
            // The window opened: the endpoint's timer must come back for the queue now.
            assert!(sender.next_timeout().is_some_and(|at| at <= t(now)));
        }
        while let Some(segment) = sender.poll_retransmit(t(now)) {
            assert!(!segment.retransmission, "nothing was lost");
            transmitted.push((segment.seq, segment.payload.len()));
        }
        assert!(outstanding(&transmitted, cumulative) <= 600);
        assert!(sender.window_bytes() <= 600);
    }
    let seqs: Vec<u64> = transmitted.iter().map(|&(seq, _)| seq).collect();
    assert_eq!(
        seqs,
        (0..40).collect::<Vec<_>>(),
        "each sent once, in order"
    );
}

#[test]
fn a_message_larger_than_the_peer_window_goes_alone() {
    // The peer can always take the next in-order segment (it is delivered in place),
    // so one larger than its window is sent once nothing else is in flight.
    let mut sender = ReliableSender::new(config(4_096));
    sender.set_peer_window(100);
    assert!(sender.push(t(0), &[1; 50]).unwrap().send_now);
    let big = sender.push(t(0), &[2; 300]).unwrap();
    assert!(!big.send_now);
    assert_eq!(sender.poll_retransmit(t(1)), None);
    sender.on_ack(t(2), ack(1, 0)).unwrap();
    let segment = sender.poll_retransmit(t(2)).unwrap();
    assert_eq!((segment.seq, segment.payload.len()), (1, 300));
    assert!(!sender.push(t(2), &[3; 10]).unwrap().send_now);
}

#[test]
fn an_ack_for_a_queued_segment_never_sent_is_invalid() {
    let mut sender = ReliableSender::new(config(4_096));
    sender.set_peer_window(100);
    sender.push(t(0), &[1; 100]).unwrap();
    sender.push(t(0), &[2; 100]).unwrap();
    assert_eq!(sender.on_ack(t(1), ack(2, 0)), Err(AckError::Invalid));
    assert_eq!(sender.on_ack(t(1), ack(0, 1)), Err(AckError::Invalid));
    assert_eq!(sender.on_ack(t(1), ack(1, 0)).unwrap().newly_acked, 1);
}
