//! Keeping the configured peers (`[[node.peers]]`) connected: redial with
//! exponential back-off and jitter after every loss.
//!
//! Owns `Redial`, a state machine with no I/O, no clock and no randomness of
//! its own: the worker hands it the loop's `now`, the node's events and a
//! random number per scheduled attempt, and asks which peers are due. A peer
//! is redialled after any loss (peer restarted and went idle, network blip,
//! handshake timeout, closed by the peer, refused because our allow-list did
//! not list it) until it is up again. The delay doubles from `initial` to
//! `max`; each delay is drawn from `[d/2, d]` ("equal jitter"), so peers that
//! lost the same link do not redial in lock-step. It must never dial a peer
//! twice at once: while a handshake is in flight nothing is due.

use core::time::Duration;
use std::net::SocketAddr;

use intentra::metrics::ConfiguredPeer;
use intentra::proto::PeerId;
use intentra::proto::PublicKey;
use intentra::proto::Timestamp;

/// The back-off bounds (`timers.redial_initial_ms`, `timers.redial_max_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedialPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl RedialPolicy {
    /// The delay before the next attempt, for a back-off of `backoff` and a random draw.
    pub fn jittered(backoff: Duration, random: u64) -> Duration {
        let ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
        let half = ms / 2;
        let spread = ms - half;
        Duration::from_millis(half + random % spread.saturating_add(1))
    }
}

/// What one configured peer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    /// A handshake is in flight (`id` is its peer).
    Dialling(PeerId),
    /// Established.
    Up(PeerId),
    /// Waiting until `at` for the next attempt.
    Waiting { at: Timestamp },
    /// Not dialled: the peer has a session with one of our listening workers that it
    /// initiated, and its key is the smaller, so that session is the pair's one (both
    /// daemons apply the same rule). Due again as soon as that session ends.
    Covered,
}

/// One configured peer.
#[derive(Debug, Clone)]
pub struct Target {
    pub public_key: PublicKey,
    pub addr: SocketAddr,
    pub state: TargetState,
    /// The next delay before jitter.
    backoff: Duration,
    pub attempts: u64,
    /// Why the last session or attempt ended (a `CloseReason` or `ConnectError` label).
    pub last_reason: &'static str,
}

/// A scheduled retry, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    pub addr: SocketAddr,
    pub public_key: PublicKey,
    pub delay: Duration,
}

/// The configured peers of one worker.
#[derive(Debug, Clone)]
pub struct Redial {
    policy: RedialPolicy,
    targets: Vec<Target>,
}

impl Redial {
    /// Every peer starts due at `Timestamp::ZERO`: the first `due` call dials them all.
    pub fn new(
        policy: RedialPolicy,
        peers: impl IntoIterator<Item = (PublicKey, SocketAddr)>,
    ) -> Redial {
        let targets = peers
            .into_iter()
            .map(|(public_key, addr)| Target {
                public_key,
                addr,
                state: TargetState::Waiting {
                    at: Timestamp::ZERO,
                },
                backoff: policy.initial,
                attempts: 0,
                last_reason: "not yet dialled",
            })
            .collect();
        Redial { policy, targets }
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Indices of the peers whose next attempt is due at `now`.
    pub fn due(&self, now: Timestamp) -> impl Iterator<Item = usize> + '_ {
        self.targets
            .iter()
            .enumerate()
            .filter(move |(_, t)| matches!(t.state, TargetState::Waiting { at } if at <= now))
            .map(|(i, _)| i)
    }

    /// An attempt on target `index` started a handshake as `id`.
    pub fn dialled(&mut self, index: usize, id: PeerId) {
        if let Some(target) = self.targets.get_mut(index) {
            target.attempts += 1;
            target.state = TargetState::Dialling(id);
        }
    }

    /// An attempt on target `index` could not even start (`reason`, e.g. not on
    /// the allow-list): try again after the back-off.
    pub fn refused(
        &mut self,
        index: usize,
        now: Timestamp,
        reason: &'static str,
        random: u64,
    ) -> Option<Scheduled> {
        let policy = self.policy;
        let target = self.targets.get_mut(index)?;
        target.attempts += 1;
        target.last_reason = reason;
        Some(schedule(target, policy, now, random))
    }

    /// A session came up. Returns the target's index if it is a configured peer.
    pub fn up(&mut self, key: &PublicKey, id: PeerId) -> Option<usize> {
        let index = self.targets.iter().position(|t| t.public_key == *key)?;
        let target = self.targets.get_mut(index)?;
        target.state = TargetState::Up(id);
        target.backoff = self.policy.initial;
        Some(index)
    }

    /// Peer `id` went down with `reason`. If it was a configured peer's session
    /// or attempt, schedules the next attempt and says when.
    pub fn down(
        &mut self,
        id: PeerId,
        now: Timestamp,
        reason: &'static str,
        random: u64,
    ) -> Option<Scheduled> {
        let policy = self.policy;
        let target = self.targets.iter_mut().find(
            |t| matches!(t.state, TargetState::Dialling(d) | TargetState::Up(d) if d == id),
        )?;
        target.last_reason = reason;
        Some(schedule(target, policy, now, random))
    }

    /// The allow-list was reloaded: everyone not up is due now, from the initial back-off.
    pub fn retry_now(&mut self) {
        for target in &mut self.targets {
            target.backoff = self.policy.initial;
            if let TargetState::Waiting { at } = &mut target.state {
                *at = Timestamp::ZERO;
            }
        }
    }

    /// The peer `key` has (`true`) or no longer has (`false`) an inbound session that is the
    /// pair's one (see `TargetState::Covered`). Returns the peer this worker must close, if
    /// it had its own session or attempt, and whether the target's state changed.
    pub fn covered(
        &mut self,
        key: &PublicKey,
        covered: bool,
        now: Timestamp,
    ) -> (Option<PeerId>, bool) {
        let Some(target) = self.targets.iter_mut().find(|t| t.public_key == *key) else {
            return (None, false);
        };
        match (covered, target.state) {
            (true, TargetState::Covered)
            | (false, TargetState::Up(_) | TargetState::Dialling(_))
            | (false, TargetState::Waiting { .. }) => (None, false),
            (true, TargetState::Up(id) | TargetState::Dialling(id)) => {
                target.state = TargetState::Covered;
                (Some(id), true)
            }
            (true, TargetState::Waiting { .. }) => {
                target.state = TargetState::Covered;
                (None, true)
            }
            (false, TargetState::Covered) => {
                target.backoff = self.policy.initial;
                target.state = TargetState::Waiting { at: now };
                (None, true)
            }
        }
    }

    /// Whether target `index` is established.
    pub fn is_up(&self, index: usize) -> bool {
        self.targets
            .get(index)
            .is_some_and(|t| matches!(t.state, TargetState::Up(_)))
    }

    /// The metric view: one entry per configured peer.
    pub fn snapshot(&self) -> Vec<ConfiguredPeer> {
        self.targets
            .iter()
            .map(|t| ConfiguredPeer {
                public_key: t.public_key,
                addr: t.addr,
                up: matches!(t.state, TargetState::Up(_) | TargetState::Covered),
                attempts: t.attempts,
            })
            .collect()
    }
}

fn schedule(target: &mut Target, policy: RedialPolicy, now: Timestamp, random: u64) -> Scheduled {
    let delay = RedialPolicy::jittered(target.backoff, random);
    target.backoff = target.backoff.saturating_mul(2).min(policy.max);
    target.state = TargetState::Waiting { at: now + delay };
    Scheduled {
        addr: target.addr,
        public_key: target.public_key,
        delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use intentra::proto::Keypair;

    fn policy() -> RedialPolicy {
        RedialPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        }
    }

    fn ms(v: u64) -> Timestamp {
        Timestamp::from_millis(v)
    }

    fn key_pair(byte: u8) -> Keypair {
        Keypair::from_secret(intentra::proto::SecretKey::from_bytes([byte; 32]).unwrap())
    }

    fn key(byte: u8) -> PublicKey {
        key_pair(byte).public
    }

    #[test]
    fn jitter_stays_within_half_to_full_delay() {
        let d = Duration::from_millis(1000);
        for random in [0, 1, 499, 500, 501, u64::MAX] {
            let j = RedialPolicy::jittered(d, random);
            assert!(j >= Duration::from_millis(500) && j <= d, "{j:?}");
        }
        assert_eq!(RedialPolicy::jittered(Duration::ZERO, 7), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_to_the_bound_and_resets_when_up() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut redial = Redial::new(policy(), [(key(1), addr)]);
        assert_eq!(redial.due(ms(0)).collect::<Vec<_>>(), vec![0]);
        let mut now = ms(0);
        let mut delays = Vec::new();
        for _ in 0..8 {
            // `u64::MAX % (spread + 1)` is the top of the range for these round numbers.
            let s = redial.refused(0, now, "not_allowed", u64::MAX).unwrap();
            delays.push(s.delay.as_millis());
            assert_eq!(redial.due(now).count(), 0, "nothing due before the delay");
            now += s.delay;
            assert_eq!(redial.due(now).collect::<Vec<_>>(), vec![0]);
        }
        assert!(delays.windows(2).all(|w| w[1] >= w[0]), "{delays:?}");
        assert!(*delays.last().unwrap() <= 1000, "{delays:?}");
        assert!(*delays.first().unwrap() <= 100, "{delays:?}");
        assert_eq!(redial.targets()[0].attempts, 8);
    }

    #[test]
    fn a_lost_session_is_scheduled_and_nothing_is_due_while_dialling() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut redial = Redial::new(policy(), [(key(1), addr), (key(2), addr)]);
        let ids: Vec<PeerId> = {
            // Real ids come from an endpoint; make two by connecting a throwaway one.
            use rand_core::SeedableRng;
            let config = intentra::proto::EndpointConfig::new(key_pair(9));
            let mut endpoint = intentra::proto::Endpoint::new(
                config,
                ms(0),
                rand_chacha::ChaCha20Rng::seed_from_u64(1),
            );
            vec![
                endpoint.connect(ms(0), addr, key(1)).unwrap(),
                endpoint.connect(ms(0), addr, key(2)).unwrap(),
            ]
        };
        redial.dialled(0, ids[0]);
        redial.dialled(1, ids[1]);
        assert_eq!(redial.due(ms(1_000_000)).count(), 0);
        assert_eq!(redial.up(&key(1), ids[0]), Some(0));
        assert!(redial.is_up(0));
        assert!(redial.snapshot()[0].up && !redial.snapshot()[1].up);
        let s = redial.down(ids[1], ms(10), "handshake_timeout", 0).unwrap();
        assert_eq!(s.delay, Duration::from_millis(50));
        assert_eq!(redial.due(ms(59)).count(), 0);
        assert_eq!(redial.due(ms(60)).collect::<Vec<_>>(), vec![1]);
        // A reload makes waiting peers due at once.
        let _ = redial.down(ids[0], ms(10), "idle_timeout", 0).unwrap();
        redial.retry_now();
        assert_eq!(redial.due(ms(20)).collect::<Vec<_>>(), vec![0, 1]);
        // Unknown ids are ignored.
        assert!(redial.down(ids[0], ms(30), "x", 0).is_none());
    }
}
