//! The anti-replay window (RFC 6479-style bitmap). Owned by helper work in progress.
