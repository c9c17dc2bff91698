//! `advise_huge_pages`: memory advice for the big tables a receive loop reads at random.
//!
//! Owns the one system call the protocol core may not make itself: the core says where its
//! peer slab lies (`Endpoint::peer_table_memory`), the node asks the kernel here to back it
//! with transparent huge pages before the slots are first touched. With thousands of peers
//! a 4 KiB-page slab spans more pages than the TLB holds, so every packet's peer would cost a
//! page walk besides its cache misses (perf/README.md measures the difference). Advice only:
//! it never changes a byte of the memory.

use std::io;

/// A transparent huge page on x86-64 (and arm64 with 4 KiB base pages).
pub const HUGE_PAGE: usize = 2 << 20;

/// The whole huge pages inside `[start, start + len)`: `(first, bytes)`, bytes 0 when the
/// range holds none. Advice never reaches past the range, so memory beside it that belongs to
/// something else keeps the kernel's defaults.
fn whole_huge_pages(start: usize, len: usize) -> (usize, usize) {
    let Some(first) = start.checked_next_multiple_of(HUGE_PAGE) else {
        return (start, 0);
    };
    let end = start.saturating_add(len) / HUGE_PAGE * HUGE_PAGE;
    (first, end.saturating_sub(first))
}

/// Asks the kernel to back the whole 2 MiB pages inside `[start, start + len)` with
/// transparent huge pages (`madvise(MADV_HUGEPAGE)`), and returns how many bytes it advised:
/// 0 when the range holds no whole huge page (tables under about 4 MiB).
///
/// Takes effect for pages not touched yet, when the system's
/// `/sys/kernel/mm/transparent_hugepage/enabled` is `madvise` or `always` (`never` turns it
/// off for the whole machine). A table touched only in part becomes resident in 2 MiB steps.
/// Fails with the kernel's error, such as `EINVAL` from a kernel without transparent huge
/// pages; callers treat that as "no huge pages", nothing worse.
pub fn advise_huge_pages(start: *const u8, len: usize) -> io::Result<usize> {
    let (first, bytes) = whole_huge_pages(start as usize, len);
    if bytes == 0 {
        return Ok(0);
    }
    // SAFETY: MADV_HUGEPAGE only changes which page size the kernel may back the range with;
    // it never changes the contents, protection or mapping of a byte, so no reference into
    // the memory is invalidated. The range is page-aligned as madvise requires, and a range
    // that is not mapped fails with ENOMEM instead of touching anything.
    let rc = unsafe { libc::madvise(first as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_huge_pages_inside_the_range_are_advised() {
        assert_eq!(whole_huge_pages(0, HUGE_PAGE), (0, HUGE_PAGE));
        assert_eq!(whole_huge_pages(1, HUGE_PAGE), (HUGE_PAGE, 0));
        assert_eq!(whole_huge_pages(1, 2 * HUGE_PAGE), (HUGE_PAGE, HUGE_PAGE));
        assert_eq!(
            whole_huge_pages(16, 3 * HUGE_PAGE),
            (HUGE_PAGE, 2 * HUGE_PAGE)
        );
        assert_eq!(
            whole_huge_pages(16, 3 * HUGE_PAGE - 17),
            (HUGE_PAGE, HUGE_PAGE)
        );
        assert_eq!(
            whole_huge_pages(HUGE_PAGE - 4096, 5 * HUGE_PAGE),
            (HUGE_PAGE, 4 * HUGE_PAGE)
        );
        assert_eq!(whole_huge_pages(usize::MAX - 10, 100), (usize::MAX - 10, 0));
        assert_eq!(whole_huge_pages(HUGE_PAGE, usize::MAX).0, HUGE_PAGE);
    }

    /// The system-wide transparent huge page mode (`always`, `madvise`, `never`), if the
    /// kernel has them.
    fn thp_mode() -> Option<String> {
        let text = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
        let start = text.find('[')? + 1;
        let end = text[start..].find(']')? + start;
        Some(text[start..end].to_string())
    }

    /// `THPeligible` of the mapping that holds `address`, from /proc/self/smaps.
    fn thp_eligible(address: usize) -> Option<bool> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((lo, hi)) = range.split_once('-') {
                    if let (Ok(lo), Ok(hi)) =
                        (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                    {
                        inside = (lo..hi).contains(&address);
                        continue;
                    }
                }
            }
            if inside {
                if let Some(value) = line.strip_prefix("THPeligible:") {
                    return Some(value.trim() == "1");
                }
            }
        }
        None
    }

    #[test]
    fn an_advised_table_keeps_its_bytes_and_becomes_eligible_for_huge_pages() {
        let len = 8 * HUGE_PAGE;
        let mut table: Vec<u8> = Vec::with_capacity(len);
        let advised = match advise_huge_pages(table.as_ptr(), len) {
            Ok(bytes) => bytes,
            // A kernel built without transparent huge pages: nothing to check.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
            Err(e) => panic!("madvise: {e}"),
        };
        let (first, expected) = whole_huge_pages(table.as_ptr() as usize, len);
        assert_eq!(advised, expected);
        assert!(advised >= len - 2 * HUGE_PAGE);
        table.extend((0..len).map(|i| (i % 251) as u8));
        assert!(table.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        match thp_mode().as_deref() {
            Some("madvise") | Some("always") => {
                assert_eq!(thp_eligible(first), Some(true), "the advised range")
            }
            _ => {}
        }
        // Advice for the same range again, or for a range too small to hold a huge page, is fine.
        assert_eq!(advise_huge_pages(table.as_ptr(), len).ok(), Some(advised));
        assert_eq!(advise_huge_pages(table.as_ptr(), 4096).ok(), Some(0));
    }
}
