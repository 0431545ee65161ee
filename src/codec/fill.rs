//! Writing a head's pieces into a buffer after one reservation for all of them.
//! Invariant: only bytes this module wrote are ever taken into the buffer's length, and
//! nothing is written past the capacity reserved.

use bytes::BytesMut;

/// Places pieces one after another in a buffer's spare room, reserved once for all of them
/// (`new`), and takes them into the buffer's length once (`commit`): no capacity check and no
/// length update per piece (that `put_slice` bookkeeping was ~200 instructions per chat
/// request in the response head alone, callgrind). A piece that does not fit (a measuring bug
/// in the caller) stops the filling: nothing past the room is written, and the head comes out
/// short rather than overflowing.
pub(crate) struct Fill<'a> {
    out: &'a mut BytesMut,
    /// The start of `out`'s spare room, and how many bytes of it may be written.
    dst: *mut u8,
    room: usize,
    at: usize,
}

impl<'a> Fill<'a> {
    /// Reserves `len` bytes behind what `out` holds.
    #[inline(always)]
    pub(crate) fn new(out: &'a mut BytesMut, len: usize) -> Self {
        out.reserve(len);
        let spare = out.spare_capacity_mut();
        let (dst, room) = (spare.as_mut_ptr().cast::<u8>(), spare.len());
        Fill { out, dst, room, at: 0 }
    }

    #[inline(always)]
    pub(crate) fn put(&mut self, piece: &[u8]) {
        // The one check per piece: a compare against the room (`at <= room` always holds).
        if piece.len() > self.room - self.at {
            // Nothing more fits: later pieces (but empty ones) fail this test too.
            self.room = self.at;
            return;
        }
        // SAFETY: `at + piece.len() <= room`, and the first `room` bytes from `dst` are the
        // spare capacity `new` found, which belongs to `out` alone (a `BytesMut` never shares
        // it, and `out` is not touched until `commit`), so the write stays inside it and
        // cannot overlap `piece`. `u8` has no invalid values.
        #[allow(unsafe_code)]
        unsafe {
            copy_short(piece, self.dst.add(self.at));
        }
        self.at += piece.len();
    }

    /// `name: value` CRLF.
    #[inline(always)]
    pub(crate) fn field(&mut self, name: &[u8], value: &[u8]) {
        self.put(name);
        self.put(b": ");
        self.put(value);
        self.put(b"\r\n");
    }

    /// Takes what was written into the buffer; returns how many bytes that was.
    #[inline(always)]
    pub(crate) fn commit(self) -> usize {
        let written = self.at;
        // SAFETY: `put` wrote each of the first `written` bytes of the spare capacity, in
        // order and without gaps (`at` only moves past a piece once it is written), and never
        // past it (`at <= room`). So every byte taken into the length is initialised and
        // within capacity.
        #[allow(unsafe_code)]
        unsafe {
            self.out.set_len(self.out.len() + written);
        }
        written
    }
}

/// Copies `src` to `dst` as `copy_nonoverlapping` does, with two loads and two stores for up
/// to 32 bytes: a head's pieces are names, values and digits, mostly that short, and a call
/// into `memcpy` for each cost ~20 instructions with its set-up (16 calls per chat answer's
/// head, callgrind). Two overlapping words cover every length of a size class.
///
/// # Safety
/// `dst` must be valid for `src.len()` bytes of writes and not overlap `src`.
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn copy_short(src: &[u8], dst: *mut u8) {
    /// The first and the last `N` bytes of `src` (of at least `N`) at `dst`.
    ///
    /// # Safety
    /// As [`copy_short`], with `src.len() >= N`.
    #[inline(always)]
    unsafe fn ends<const N: usize>(src: &[u8], dst: *mut u8) {
        if let (Some(first), Some(last)) = (src.first_chunk::<N>(), src.last_chunk::<N>()) {
            // SAFETY: both `N`-byte writes lie within the `src.len()` bytes at `dst`.
            unsafe {
                dst.cast::<[u8; N]>().write_unaligned(*first);
                dst.add(src.len() - N).cast::<[u8; N]>().write_unaligned(*last);
            }
        }
    }
    let n = src.len();
    // SAFETY (each arm): `ends::<N>` is called only with `n >= N`; the rest as the caller's.
    unsafe {
        match n {
            0 => {}
            1..=3 => {
                *dst = src[0];
                *dst.add(n / 2) = src[n / 2];
                *dst.add(n - 1) = src[n - 1];
            }
            4..=7 => ends::<4>(src, dst),
            8..=15 => ends::<8>(src, dst),
            16..=32 => ends::<16>(src, dst),
            _ => std::ptr::copy_nonoverlapping(src.as_ptr(), dst, n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_land_in_order_behind_what_was_there() {
        let mut out = BytesMut::from(&b"ab"[..]);
        let mut fill = Fill::new(&mut out, 9);
        fill.put(b"c");
        fill.field(b"n", b"v");
        fill.put(b"");
        assert_eq!(fill.commit(), 7);
        assert_eq!(&out[..], b"abcn: v\r\n");
    }

    /// A piece past the reserved room stops the filling: what fitted is kept, nothing after it.
    #[test]
    fn a_piece_past_the_room_stops_the_filling() {
        let mut out = BytesMut::with_capacity(4);
        let cap = out.capacity();
        let mut fill = Fill::new(&mut out, 4);
        fill.put(b"1234");
        fill.put(&vec![b'x'; cap]);
        fill.put(b"5");
        assert_eq!(fill.commit(), 4);
        assert_eq!(&out[..], b"1234");
    }

    /// Every length up to past the short copies' reach, at every offset behind what the buffer
    /// held: each piece lands whole, and nothing around it changes.
    #[test]
    fn short_copies_place_every_length_exactly() {
        let source: Vec<u8> = (0..80u8).map(|b| b.wrapping_mul(37).wrapping_add(1)).collect();
        for len in 0..=70 {
            for before in 0..9 {
                let mut out = BytesMut::with_capacity(before + len + 16);
                out.extend_from_slice(&vec![0xaa; before]);
                let piece = &source[len % 7..len % 7 + len];
                let mut fill = Fill::new(&mut out, len + 1);
                fill.put(piece);
                fill.put(b"|");
                assert_eq!(fill.commit(), len + 1);
                assert_eq!(&out[..before], &vec![0xaa; before][..], "{len} {before}");
                assert_eq!(&out[before..before + len], piece, "{len} {before}");
                assert_eq!(&out[before + len..], b"|", "{len} {before}");
            }
        }
    }
}
