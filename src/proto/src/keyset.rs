//! One set of transport keys: the sealing and opening of every packet after the handshake.
//!
//! Owns the per-direction keys from the Noise split, the send counter (which is
//! the nonce, so it only ever increases and is never reused) and the replay
//! window, checked before the AEAD and marked after it. It must never allocate,
//! copy a packet, or decide what a packet means: that is the endpoint's.

use super::aead::{PacketCipher, PacketKey};
use super::keys::PublicKey;
use super::noise::SessionKeys;
use super::replay_window::{ReplayError, ReplayWindow};
use super::time::Timestamp;
use super::wire::{
    self, Counter, SessionIndex, TransportKind, TRANSPORT_HEADER_LEN, TRANSPORT_OVERHEAD,
};

/// Start a new handshake once this many packets were sealed under one key (WireGuard's bound).
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// A counter more than this far above the highest one accepted is *stray*: no packet a
/// peer sent since can have got through to us, so it is most likely forged, and it is
/// opened only from a small budget of its own (PROTOCOL.md section 8, step 4).
pub const STRAY_AHEAD: u64 = 1 << 16;
/// Refuse to seal past this counter: the nonce space must never wrap.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// The buffer cannot hold header, plaintext and tag.
    BufferTooSmall,
    /// The send counter reached REJECT_AFTER_MESSAGES: these keys are spent.
    CounterExhausted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Rejected by the replay window before any cryptography.
    Replay(ReplayError),
    /// A counter of `REJECT_AFTER_MESSAGES` or more, which no sender may use: refused
    /// before any cryptography.
    CounterLimit,
    /// AEAD authentication failed.
    Crypto,
}

/// The transport keys of one key set, handed out when `EndpointConfig::export_session_keys`
/// is on (for a capture's key log, like SSLKEYLOGFILE). Packets to `local_index` open with
/// `recv`; packets to `remote_index` open with `send`. Only these keys: never the static key,
/// ephemeral keys or cookie secrets. Not `Copy`, and the keys are wiped when it is dropped,
/// so no stray copy of them outlives its use.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionSecrets {
    /// The logging endpoint's index of this key set: packets to it carry it as `receiver`.
    pub local_index: SessionIndex,
    /// The peer's index: packets from the logging endpoint carry it.
    pub remote_index: SessionIndex,
    /// The key of packets the logging endpoint sends.
    pub send: [u8; 32],
    /// The key of packets the logging endpoint receives.
    pub recv: [u8; 32],
    /// The peer's static public key.
    pub peer: PublicKey,
    /// Whether this side initiated the handshake (then `send` is k1, else k2).
    pub initiator: bool,
    /// A rekey of a session that goes on, not a new session.
    pub rekey: bool,
    /// When the key set was installed.
    pub created: Timestamp,
}

impl Drop for SessionSecrets {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.send.zeroize();
        self.recv.zeroize();
    }
}

/// Not `Debug` with the keys in it: a stray `{:?}` must not log them.
impl core::fmt::Debug for SessionSecrets {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SessionSecrets")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("initiator", &self.initiator)
            .field("rekey", &self.rekey)
            .finish_non_exhaustive()
    }
}

/// A packet that authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Plaintext bytes, at `packet[16..]`.
    pub len: usize,
    /// Its counter is higher than any packet opened under these keys before: only such a
    /// packet may move the session to a new address (a replayed or delayed one may not).
    pub newest: bool,
}

/// Keys, counters and replay state of one session (one completed handshake).
///
/// `repr(C)`: first what a received packet reads (the receive key, the index, the replay
/// window's highest counter), then the window's bitmap, of which a packet reads one word,
/// then what sending reads: a receive touches one run of adjacent cache lines, which the
/// hardware prefetcher follows, and one more, instead of lines scattered over the set. The
/// 16-byte-aligned key leads so that the small fields after it fill no alignment padding
/// inside the run (`Endpoint::hot_state` names it; the endpoint's
/// `the_hot_state_covers_what_a_received_packet_reads` counts its lines).
#[repr(C)]
pub struct KeySet {
    recv: PacketKey,
    pub local_index: SessionIndex,
    /// Set once any packet opened under these keys: the peer has them too.
    pub received_any: bool,
    replay: ReplayWindow,
    pub remote_index: SessionIndex,
    next_counter: u64,
    /// Before the send key, in what would otherwise be its alignment padding.
    pub created: Timestamp,
    send: PacketKey,
}

impl KeySet {
    /// Bytes from the start of a key set to the end of the run that opening any packet reads
    /// (receive key, index, the replay window's highest counter). Besides it a packet reads
    /// one word of the window's bitmap ([`Self::replay_word_offset`]); the send half after
    /// the window is not needed to receive.
    pub const RECEIVE_EXTENT: usize = core::mem::offset_of!(KeySet, replay) + ReplayWindow::HEAD;

    /// Where, from the start of a key set, the replay bitmap word lies that opening a packet
    /// with `counter` reads and marks.
    pub fn replay_word_offset(counter: Counter) -> usize {
        core::mem::offset_of!(KeySet, replay) + ReplayWindow::word_offset(counter)
    }

    /// Bytes from the start of a key set to where what sealing a packet reads begins (the
    /// peer's index, the send counter and key); it runs to the end of the set.
    pub const SEND_START: usize = core::mem::offset_of!(KeySet, remote_index);

    pub fn new(
        keys: &SessionKeys,
        local_index: SessionIndex,
        remote_index: SessionIndex,
        now: Timestamp,
    ) -> KeySet {
        KeySet {
            local_index,
            remote_index,
            send: PacketKey::new(&keys.send),
            recv: PacketKey::new(&keys.recv),
            next_counter: 0,
            replay: ReplayWindow::new(),
            created: now,
            received_any: false,
        }
    }

    /// Seals `buf[16..16 + plaintext_len]`, already written by the caller, into a packet of
    /// `kind` addressed to the peer's index, and returns the packet's length.
    pub fn seal(
        &mut self,
        kind: TransportKind,
        buf: &mut [u8],
        plaintext_len: usize,
    ) -> Result<usize, SealError> {
        let len = plaintext_len + TRANSPORT_OVERHEAD;
        let packet = buf.get_mut(..len).ok_or(SealError::BufferTooSmall)?;
        if self.next_counter >= REJECT_AFTER_MESSAGES {
            return Err(SealError::CounterExhausted);
        }
        let counter = Counter(self.next_counter);
        self.next_counter += 1;
        let header: &mut [u8; TRANSPORT_HEADER_LEN] = (&mut packet[..TRANSPORT_HEADER_LEN])
            .try_into()
            .map_err(|_| SealError::BufferTooSmall)?;
        wire::write_transport_header(header, kind, self.remote_index, counter);
        self.send
            .seal_in_place(counter, packet)
            .map_err(|_| SealError::BufferTooSmall)?;
        Ok(len)
    }

    /// Whether `counter` could still be accepted (below the limit, not a replay), with no
    /// cryptography and no change of state.
    pub fn precheck(&self, counter: Counter) -> Result<(), OpenError> {
        if counter.0 >= REJECT_AFTER_MESSAGES {
            return Err(OpenError::CounterLimit);
        }
        self.replay.check(counter).map_err(OpenError::Replay)
    }

    /// Whether `counter` is more than `STRAY_AHEAD` above every counter accepted so far
    /// (or, before any, not below `STRAY_AHEAD`).
    pub fn is_stray(&self, counter: Counter) -> bool {
        match self.replay.highest() {
            Some(highest) => counter.0 > highest.0.saturating_add(STRAY_AHEAD),
            None => counter.0 >= STRAY_AHEAD,
        }
    }

    /// Checks the counter and the replay window, opens `packet` in place, then marks the
    /// counter seen. The plaintext is at `packet[16..]`.
    pub fn open(&mut self, counter: Counter, packet: &mut [u8]) -> Result<Opened, OpenError> {
        self.precheck(counter)?;
        let len = self
            .recv
            .open_in_place(counter, packet)
            .map_err(|_| OpenError::Crypto)?;
        let newest = self
            .replay
            .highest()
            .is_none_or(|highest| counter > highest);
        self.replay.mark(counter).map_err(OpenError::Replay)?;
        self.received_any = true;
        Ok(Opened { len, newest })
    }

    pub fn messages_sent(&self) -> u64 {
        self.next_counter
    }

    /// Test hook: where the key set and its receive key start (the key leads), where the
    /// receive key ends, and where the send key lies, as addresses.
    #[cfg(test)]
    pub fn layout(&self) -> (usize, usize, usize) {
        let start = core::ptr::from_ref(self) as usize;
        let receive_end =
            core::ptr::from_ref(&self.recv) as usize + core::mem::size_of::<PacketKey>();
        let send = core::ptr::from_ref(&self.send) as usize;
        (start, receive_end, send)
    }

    /// Test hook: the addresses of the replay window's highest counter and of the bitmap
    /// word that opening `counter` reads.
    #[cfg(test)]
    pub fn replay_layout(&self, counter: Counter) -> (usize, usize) {
        let window = core::ptr::from_ref(&self.replay) as usize;
        (window, window + ReplayWindow::word_offset(counter))
    }

    /// Test hook: the addresses of what sealing reads (remote index, send counter, the send
    /// key's first and last byte).
    #[cfg(test)]
    pub fn send_layout(&self) -> [usize; 4] {
        let send = core::ptr::from_ref(&self.send) as usize;
        [
            core::ptr::from_ref(&self.remote_index) as usize,
            core::ptr::from_ref(&self.next_counter) as usize,
            send,
            send + core::mem::size_of::<PacketKey>() - 1,
        ]
    }

    /// Test hook: jump the send counter, to exercise exhaustion without 2^60 packets.
    #[cfg(test)]
    pub(crate) fn set_next_counter(&mut self, counter: u64) {
        self.next_counter = counter;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (KeySet, KeySet) {
        let a = SessionKeys {
            send: [1; 32],
            recv: [2; 32],
        };
        let b = SessionKeys {
            send: [2; 32],
            recv: [1; 32],
        };
        let ia = SessionIndex::new(10).unwrap();
        let ib = SessionIndex::new(20).unwrap();
        (
            KeySet::new(&a, ia, ib, Timestamp::ZERO),
            KeySet::new(&b, ib, ia, Timestamp::ZERO),
        )
    }

    fn seal(keys: &mut KeySet, body: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; wire::MAX_DATAGRAM_LEN];
        buf[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + body.len()].copy_from_slice(body);
        let len = keys
            .seal(TransportKind::Realtime, &mut buf, body.len())
            .unwrap();
        buf.truncate(len);
        buf
    }

    fn counter_of(packet: &[u8]) -> Counter {
        match wire::parse_header(packet).unwrap() {
            wire::Header::Transport { counter, .. } => counter,
            other => panic!("not transport: {other:?}"),
        }
    }

    /// PROTOCOL.md's rule to the counter: more than 2^16 above the highest accepted is stray,
    /// and before any is accepted, 2^16 or more (nothing accepted counts as below 0).
    #[test]
    fn stray_is_measured_from_the_highest_accepted_or_from_below_zero() {
        let (mut a, mut b) = pair();
        assert!(!b.is_stray(Counter(0)));
        assert!(!b.is_stray(Counter(STRAY_AHEAD - 1)));
        assert!(b.is_stray(Counter(STRAY_AHEAD)));
        // After counter 0: the bound is 0 + 2^16, inclusive.
        let mut first = seal(&mut a, b"first");
        b.open(counter_of(&first), &mut first).unwrap();
        assert!(!b.is_stray(Counter(STRAY_AHEAD)));
        assert!(b.is_stray(Counter(STRAY_AHEAD + 1)));
        a.set_next_counter(1_000);
        let mut later = seal(&mut a, b"later");
        b.open(counter_of(&later), &mut later).unwrap();
        assert!(!b.is_stray(Counter(1_000 + STRAY_AHEAD)));
        assert!(b.is_stray(Counter(1_000 + STRAY_AHEAD + 1)));
    }

    #[test]
    fn every_packet_gets_a_fresh_nonce() {
        let (mut a, _) = pair();
        let first = seal(&mut a, b"ack");
        let second = seal(&mut a, b"ack");
        assert_eq!(counter_of(&first), Counter(0));
        assert_eq!(counter_of(&second), Counter(1));
        // Same plaintext, different nonce: different ciphertext and tag.
        assert_ne!(
            first[TRANSPORT_HEADER_LEN..],
            second[TRANSPORT_HEADER_LEN..]
        );
    }

    #[test]
    fn open_checks_replay_before_and_after() {
        let (mut a, mut b) = pair();
        let packet = seal(&mut a, b"hello");
        let mut copy = packet.clone();
        assert_eq!(b.open(counter_of(&copy), &mut copy).map(|o| o.len), Ok(5));
        assert_eq!(&copy[16..21], b"hello");
        let mut again = packet.clone();
        assert_eq!(
            b.open(counter_of(&again), &mut again),
            Err(OpenError::Replay(ReplayError::Duplicate))
        );
        let mut forged = seal(&mut a, b"x");
        forged[17] ^= 1;
        assert_eq!(
            b.open(counter_of(&forged), &mut forged),
            Err(OpenError::Crypto)
        );
    }

    #[test]
    fn a_forged_packet_does_not_burn_its_counter() {
        let (mut a, mut b) = pair();
        let good = seal(&mut a, b"x");
        let mut forged = good.clone();
        forged[20] ^= 1;
        assert_eq!(b.open(Counter(0), &mut forged), Err(OpenError::Crypto));
        let mut good = good;
        assert_eq!(b.open(Counter(0), &mut good).map(|o| o.len), Ok(1));
    }

    #[test]
    fn only_a_packet_newer_than_all_before_is_newest() {
        let (mut a, mut b) = pair();
        let first = seal(&mut a, b"1");
        let second = seal(&mut a, b"2");
        let mut late = first.clone();
        let mut on_time = second.clone();
        assert!(b.open(Counter(1), &mut on_time).unwrap().newest);
        // The delayed packet still opens (it is inside the window) but is not the newest.
        assert!(!b.open(Counter(0), &mut late).unwrap().newest);
    }

    #[test]
    fn a_counter_past_the_reject_limit_is_refused_before_the_aead() {
        let (mut a, mut b) = pair();
        for counter in [REJECT_AFTER_MESSAGES, u64::MAX - 1, u64::MAX] {
            // The sender refuses to use such a counter: forge it into a genuine packet.
            let mut packet = seal(&mut a, b"x");
            packet[8..16].copy_from_slice(&counter.to_le_bytes());
            assert_eq!(
                b.open(Counter(counter), &mut packet),
                Err(OpenError::CounterLimit)
            );
        }
        // A counter just below the limit is judged by the AEAD as usual.
        let mut packet = seal(&mut a, b"x");
        assert_eq!(
            b.open(Counter(REJECT_AFTER_MESSAGES - 1), &mut packet),
            Err(OpenError::Crypto)
        );
    }

    #[test]
    fn counter_exhaustion_is_refused() {
        let (mut a, _) = pair();
        a.set_next_counter(REJECT_AFTER_MESSAGES);
        let mut buf = [0u8; 64];
        assert_eq!(
            a.seal(TransportKind::Keepalive, &mut buf, 0),
            Err(SealError::CounterExhausted)
        );
        assert_eq!(
            a.seal(TransportKind::Realtime, &mut buf[..40], 20),
            Err(SealError::BufferTooSmall)
        );
    }
}
