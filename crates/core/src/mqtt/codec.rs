//! Wire primitives: a borrowing [`Reader`] that cannot read past a length prefix, the
//! variable byte integer, UTF-8 strings with the MQTT rules, and the matching writers.

use super::DecodeError;

/// Largest value of a Variable Byte Integer (§1.5.5): 268,435,455.
pub const MAX_VARINT: u32 = 268_435_455;

/// A cursor over a borrowed buffer. Every read is bounds-checked and [`Reader::sub`] hands out a
/// reader limited to a length prefix, so a field can never consume bytes beyond its own.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// A reader over the next `n` bytes, which this reader skips.
    pub fn sub(&mut self, n: usize) -> Result<Reader<'a>, DecodeError> {
        self.take(n).map(Reader::new)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// A big-endian two byte integer (§1.5.2).
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian four byte integer (§1.5.3).
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A Variable Byte Integer (§1.5.5): at most four bytes [MQTT-1.5.5-1].
    pub fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for i in 0..4 {
            let b = self.u8()?;
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::MalformedVarint)
    }

    /// Binary data with a two-byte length prefix (§1.5.6).
    pub fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    /// A UTF-8 Encoded String (§1.5.4): valid UTF-8 [MQTT-1.5.4-1] without U+0000
    /// [MQTT-1.5.4-2]. (Rust strings cannot hold surrogates, so U+D800..U+DFFF is refused by
    /// the UTF-8 check.)
    pub fn string(&mut self) -> Result<&'a str, DecodeError> {
        let bytes = self.binary()?;
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
        if s.contains('\0') {
            return Err(DecodeError::NulInString);
        }
        Ok(s)
    }
}

/// Number of bytes a Variable Byte Integer takes.
pub fn varint_len(v: u32) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Appends a Variable Byte Integer (values above [`MAX_VARINT`] are clamped; callers check).
pub fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    v = v.min(MAX_VARINT);
    loop {
        let mut b = (v & 0x7f) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            return;
        }
    }
}

/// Appends a two-byte integer.
pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a four-byte integer.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends length-prefixed binary data (at most 65,535 bytes; longer input is truncated,
/// which packet constructors prevent).
pub fn put_binary(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len().min(usize::from(u16::MAX));
    put_u16(out, n as u16);
    out.extend_from_slice(&b[..n]);
}

/// Appends a length-prefixed UTF-8 string.
pub fn put_string(out: &mut Vec<u8>, s: &str) {
    put_binary(out, s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::both_targets_test;

    both_targets_test! {
        fn varint_boundaries_from_table_1_1() {
            for (v, bytes) in [
                (0u32, &[0x00][..]),
                (127, &[0x7f]),
                (128, &[0x80, 0x01]),
                (16_383, &[0xff, 0x7f]),
                (16_384, &[0x80, 0x80, 0x01]),
                (2_097_151, &[0xff, 0xff, 0x7f]),
                (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
                (268_435_455, &[0xff, 0xff, 0xff, 0x7f]),
            ] {
                let mut out = Vec::new();
                put_varint(&mut out, v);
                assert_eq!(out, bytes, "{v}");
                assert_eq!(varint_len(v), bytes.len());
                assert_eq!(Reader::new(bytes).varint().unwrap(), v);
            }
            assert_eq!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x01]).varint(), Err(DecodeError::MalformedVarint));
            assert_eq!(Reader::new(&[0x80]).varint(), Err(DecodeError::Truncated));
        }
    }

    both_targets_test! {
        fn strings_follow_1_5_4() {
            assert_eq!(Reader::new(&[0, 2, b'h', b'i']).string().unwrap(), "hi");
            assert_eq!(Reader::new(&[0, 1, 0]).string(), Err(DecodeError::NulInString));
            // U+D800 encoded as CESU/WTF-8 bytes is not UTF-8
            assert_eq!(Reader::new(&[0, 3, 0xed, 0xa0, 0x80]).string(), Err(DecodeError::InvalidUtf8));
            assert_eq!(Reader::new(&[0, 5, b'a']).string(), Err(DecodeError::Truncated));
        }
    }

    both_targets_test! {
        fn sub_reader_cannot_read_past_its_prefix() {
            let mut r = Reader::new(&[1, 2, 3, 4, 5]);
            let mut s = r.sub(2).unwrap();
            assert_eq!(s.u16().unwrap(), 0x0102);
            assert_eq!(s.u8(), Err(DecodeError::Truncated));
            assert_eq!(r.remaining(), 3);
        }
    }
}
