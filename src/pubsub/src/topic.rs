//! Topic names and the 64-bit identifiers that stand for them on the wire.

use core::fmt;

use sha2::{Digest, Sha256};

/// The longest topic name, in bytes of UTF-8.
pub const MAX_TOPIC_NAME_LEN: usize = 128;

/// The domain-separation prefix hashed in front of every topic name, so a topic id
/// can never be mistaken for a hash computed for another purpose.
pub const TOPIC_ID_DOMAIN: &[u8] = b"intentra-topic-v1";

/// A topic's wire identifier: the first 8 bytes of
/// `SHA-256("intentra-topic-v1" || name)`, read as a little-endian `u64`.
///
/// Eight bytes keep every PUBLISH header small; the full name travels only in
/// SUBSCRIBE and ADVERTISE, which is where a collision is detected and refused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub u64);

impl TopicId {
    /// The identifier of `name` (which need not be valid: validation is [`TopicName`]'s).
    pub fn of(name: &str) -> TopicId {
        let mut h = Sha256::new();
        h.update(TOPIC_ID_DOMAIN);
        h.update(name.as_bytes());
        let d = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&d[..8]);
        TopicId(u64::from_le_bytes(first))
    }
}

impl fmt::Debug for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicId({:016x})", self.0)
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why a string is not a topic name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_TOPIC_NAME_LEN`] bytes.
    TooLong,
    /// The name contains a control character (U+0000..U+001F or U+007F), which
    /// would make logs and the CLI ambiguous.
    ControlCharacter,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicError::Empty => "topic name is empty",
            TopicError::TooLong => "topic name is longer than 128 bytes",
            TopicError::ControlCharacter => "topic name contains a control character",
        })
    }
}

impl std::error::Error for TopicError {}

/// Checks that `name` is a valid topic name (1..=128 bytes of UTF-8, no control characters).
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(TopicError::TooLong);
    }
    if name.chars().any(|c| c.is_ascii_control()) {
        return Err(TopicError::ControlCharacter);
    }
    Ok(())
}

/// A validated topic name together with its identifier.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct TopicName {
    name: String,
    id: TopicId,
}

impl TopicName {
    /// Validates `name` and derives its identifier.
    pub fn new(name: &str) -> Result<TopicName, TopicError> {
        validate_topic_name(name)?;
        Ok(TopicName {
            name: name.to_owned(),
            id: TopicId::of(name),
        })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The identifier.
    pub fn id(&self) -> TopicId {
        self.id
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_matches_pubsub_md() {
        // PUBSUB.md section 3 quotes this value; a change here is a wire change.
        assert_eq!(TopicId::of("md/btc-usd").0, WORKED_EXAMPLE_ID);
    }

    const WORKED_EXAMPLE_ID: u64 = 0xfb82_2d94_f593_3e16;

    #[test]
    fn names_are_validated() {
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(
            validate_topic_name(&"a".repeat(129)),
            Err(TopicError::TooLong)
        );
        assert!(validate_topic_name(&"a".repeat(128)).is_ok());
        assert_eq!(
            validate_topic_name("a\nb"),
            Err(TopicError::ControlCharacter)
        );
        assert!(validate_topic_name("robot/7/joint état").is_ok());
    }
}
