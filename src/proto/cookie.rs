//! mac1, mac2 and stateless cookies. Work in progress.
