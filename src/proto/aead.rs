//! The AEAD seam for transport packets. Work in progress.
