//! Decaying strikes against a session. Work in progress.
