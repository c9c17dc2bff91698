//! Walking a UDP_GRO coalesced receive buffer into its datagrams, in place.
//!
//! The kernel coalesces consecutive datagrams of one flow into one buffer and
//! reports the segment size in a cmsg: every segment has exactly that size
//! except possibly a shorter last one. This module owns only that rule; it must
//! never copy, allocate or look at the datagram contents.

/// Calls `f` once per segment of `buf`, each a disjoint sub-slice of `buf` in
/// order, and returns how many segments there were. A `segment` of zero (no GRO
/// cmsg, or a nonsensical one) means "one datagram": the whole buffer. An empty
/// buffer is a single empty datagram (zero-length UDP payloads are legal).
pub fn for_each_segment(buf: &mut [u8], segment: usize, mut f: impl FnMut(&mut [u8])) -> usize {
    if segment == 0 || segment >= buf.len() {
        f(buf);
        return 1;
    }
    let mut count = 0;
    for chunk in buf.chunks_mut(segment) {
        f(chunk);
        count += 1;
    }
    count
}

/// How many segments `for_each_segment` would produce for `len` bytes.
pub fn segment_count(len: usize, segment: usize) -> usize {
    if segment == 0 || segment >= len {
        1
    } else {
        len.div_ceil(segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(buf: &mut [u8], seg: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let n = for_each_segment(buf, seg, |s| out.push(s.to_vec()));
        assert_eq!(n, out.len());
        assert_eq!(n, segment_count(buf.len(), seg));
        out
    }

    #[test]
    fn splits_even_and_short_last_segments() {
        let mut buf: Vec<u8> = (0..10).collect();
        assert_eq!(
            collect(&mut buf, 4),
            vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
        );
        assert_eq!(
            collect(&mut buf, 5),
            vec![vec![0, 1, 2, 3, 4], vec![5, 6, 7, 8, 9]]
        );
        assert_eq!(collect(&mut buf, 1).len(), 10);
    }

    #[test]
    fn no_or_oversized_segment_is_one_datagram() {
        let mut buf = [1u8, 2, 3];
        assert_eq!(collect(&mut buf, 0), vec![vec![1, 2, 3]]);
        assert_eq!(collect(&mut buf, 3), vec![vec![1, 2, 3]]);
        assert_eq!(collect(&mut buf, 64), vec![vec![1, 2, 3]]);
        assert_eq!(collect(&mut [], 8), vec![Vec::<u8>::new()]);
    }

    #[test]
    fn segments_are_writable_in_place() {
        let mut buf = [0u8; 7];
        let mut i = 0u8;
        for_each_segment(&mut buf, 3, |s| {
            i += 1;
            s.fill(i);
        });
        assert_eq!(buf, [1, 1, 1, 2, 2, 2, 3]);
    }
}
