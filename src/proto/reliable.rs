//! Reliable, ordered, exactly-once delivery. Work in progress.
