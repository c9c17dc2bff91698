//! `prefetch`: a cache hint the receive loop gives for the next datagram's state.
//!
//! Owns the one instruction the protocol core may not issue itself (the core has no unsafe
//! code): the core says where a packet's state lies (`Endpoint::hot_state`), the loop asks
//! for those lines here while it handles the datagram before. It must never read memory or
//! fault, whatever the address.

/// Asks the CPU to bring the cache line holding `line` into its caches. A hint: any address
/// is fine, dangling or null included; on targets without a stable prefetch it does nothing.
#[inline]
pub fn prefetch(line: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is only a hint: it never faults, never reads architecturally and
    // changes no memory, so every address is sound, even one that no longer maps anything.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = line;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_address_is_a_harmless_hint() {
        let data = [7u8; 256];
        prefetch(data.as_ptr());
        prefetch(std::ptr::null());
        prefetch(usize::MAX as *const u8);
        assert_eq!(data[0], 7);
    }
}
