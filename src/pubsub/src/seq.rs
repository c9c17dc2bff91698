//! Per-publisher sequence numbers and gap detection for Realtime publishes
//! (PUBSUB.md section 5).

/// A Realtime publish's sequence number: per publisher and topic, the first is 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub u64);

/// How far behind the newest delivered number a publish may arrive and still be
/// recognised as a late or duplicate copy; anything older means the publisher began
/// again (it restarted), since a stream of updates is never reordered that far.
pub const REORDER_WINDOW: u64 = 64;

/// What to do with an arriving sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it. `missing` numbers were skipped between the previous newest and it;
    /// `restarted` says the stream began again (no gap is reported across a restart).
    Deliver {
        /// Numbers skipped (reported as a gap when non-zero).
        missing: u64,
        /// The stream restarted.
        restarted: bool,
    },
    /// Already delivered (or already seen late): drop.
    Duplicate,
    /// Older than the newest delivered and never seen: it was already reported in a
    /// gap, so it is dropped, never delivered after a newer value.
    Late,
}

/// Tracks one publisher's stream on one topic.
///
/// Invariant: every number from the first one seen to `highest` is either delivered
/// once or reported missing once; late copies never change what was reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqTracker {
    /// The newest number delivered; 0 before the first.
    highest: u64,
    /// Bit `i` set: `highest - i` was seen.
    seen: u64,
}

impl SeqTracker {
    /// A tracker that has seen nothing.
    pub fn new() -> SeqTracker {
        SeqTracker::default()
    }

    /// Forgets the stream (its publisher went away): the next number starts it afresh.
    pub fn reset(&mut self) {
        *self = SeqTracker::default();
    }

    /// The newest number delivered, if any.
    pub fn highest(&self) -> Option<Seq> {
        (self.highest != 0).then_some(Seq(self.highest))
    }

    /// Decides what to do with `seq` (which must be non-zero) and records it.
    pub fn accept(&mut self, seq: Seq) -> Verdict {
        let s = seq.0;
        if self.highest == 0 {
            // Joining a stream mid-way is not a gap: nothing before this was ours.
            self.highest = s;
            self.seen = 1;
            return Verdict::Deliver {
                missing: 0,
                restarted: false,
            };
        }
        if s > self.highest {
            let d = s - self.highest;
            self.seen = if d >= REORDER_WINDOW {
                0
            } else {
                self.seen << d
            } | 1;
            self.highest = s;
            return Verdict::Deliver {
                missing: d - 1,
                restarted: false,
            };
        }
        let age = self.highest - s;
        if age < REORDER_WINDOW {
            let bit = 1u64 << age;
            let dup = self.seen & bit != 0;
            self.seen |= bit;
            return if dup {
                Verdict::Duplicate
            } else {
                Verdict::Late
            };
        }
        self.highest = s;
        self.seen = 1;
        Verdict::Deliver {
            missing: 0,
            restarted: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(missing: u64) -> Verdict {
        Verdict::Deliver {
            missing,
            restarted: false,
        }
    }

    #[test]
    fn in_order_loss_reorder_duplicate() {
        let mut t = SeqTracker::new();
        assert_eq!(t.accept(Seq(5)), d(0));
        assert_eq!(t.accept(Seq(6)), d(0));
        assert_eq!(t.accept(Seq(9)), d(2));
        assert_eq!(t.accept(Seq(9)), Verdict::Duplicate);
        assert_eq!(t.accept(Seq(7)), Verdict::Late);
        assert_eq!(t.accept(Seq(7)), Verdict::Duplicate);
        assert_eq!(t.accept(Seq(6)), Verdict::Duplicate);
        assert_eq!(t.accept(Seq(10)), d(0));
        assert_eq!(t.highest(), Some(Seq(10)));
    }

    #[test]
    fn far_behind_is_a_restart() {
        let mut t = SeqTracker::new();
        assert_eq!(t.accept(Seq(1000)), d(0));
        assert_eq!(t.accept(Seq(1000 - 63)), Verdict::Late);
        assert_eq!(
            t.accept(Seq(1)),
            Verdict::Deliver {
                missing: 0,
                restarted: true
            }
        );
        assert_eq!(t.accept(Seq(2)), d(0));
    }

    #[test]
    fn big_jump_clears_the_window() {
        let mut t = SeqTracker::new();
        t.accept(Seq(1));
        assert_eq!(t.accept(Seq(200)), d(198));
        assert_eq!(t.accept(Seq(199)), Verdict::Late);
        t.reset();
        assert_eq!(t.accept(Seq(3)), d(0));
    }
}
