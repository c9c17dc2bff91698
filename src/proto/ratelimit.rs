//! The per-peer token bucket. Work in progress.
