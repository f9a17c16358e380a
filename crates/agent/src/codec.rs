//! The byte-level encoding of journal events: LEB128 varints, length-prefixed
//! UTF-8 strings, little-endian fixed-width integers.
//!
//! Invariant: decoding never panics and never allocates more than the input
//! could hold: every length is checked against the bytes left before use.

use tiffany_llm::ToolCall;

use crate::journal::JournalError;

/// Appends values to a byte buffer.
#[derive(Default)]
pub(crate) struct Encoder {
    pub(crate) buf: Vec<u8>,
}

impl Encoder {
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub(crate) fn u64_fixed(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.varint(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    pub(crate) fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    pub(crate) fn tool_calls(&mut self, calls: &[ToolCall]) {
        self.varint(calls.len() as u64);
        for c in calls {
            self.str(&c.id);
            self.str(&c.name);
            self.str(&c.arguments);
        }
    }

    pub(crate) fn opt_varint(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.varint(v);
            }
        }
    }
}

/// Reads values back, failing with [`JournalError::Malformed`] on any
/// inconsistency.
pub(crate) struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Decoder<'a> {
        Decoder { bytes, pos: 0 }
    }

    /// The error for an unexpected value at the current position.
    pub(crate) fn malformed(&self, what: &'static str) -> JournalError {
        JournalError::Malformed {
            offset: self.pos,
            what,
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, JournalError> {
        let v = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| self.malformed("a byte"))?;
        self.pos += 1;
        Ok(v)
    }

    pub(crate) fn bool(&mut self) -> Result<bool, JournalError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.malformed("a boolean")),
        }
    }

    pub(crate) fn varint(&mut self) -> Result<u64, JournalError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if shift == 63 && b > 1 {
                    return Err(self.malformed("a varint within 64 bits"));
                }
                return Ok(v);
            }
        }
        Err(self.malformed("a varint within 64 bits"))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, JournalError> {
        u32::try_from(self.varint()?).map_err(|_| self.malformed("a 32-bit number"))
    }

    pub(crate) fn u64_fixed(&mut self) -> Result<u64, JournalError> {
        let end = self.pos + 8;
        let raw = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| self.malformed("8 bytes"))?;
        self.pos = end;
        Ok(u64::from_le_bytes(raw.try_into().unwrap_or_default()))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], JournalError> {
        let len = self.varint()?;
        let left = (self.bytes.len() - self.pos) as u64;
        if len > left {
            return Err(self.malformed("a length within the record"));
        }
        let end = self.pos + len as usize;
        let v = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(v)
    }

    pub(crate) fn string(&mut self) -> Result<String, JournalError> {
        let raw = self.bytes()?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| self.malformed("UTF-8 text"))
    }

    pub(crate) fn opt_varint(&mut self) -> Result<Option<u64>, JournalError> {
        Ok(if self.bool()? {
            Some(self.varint()?)
        } else {
            None
        })
    }

    pub(crate) fn tool_calls(&mut self) -> Result<Vec<ToolCall>, JournalError> {
        // Three length bytes at least: reserving exactly (most messages
        // have one call, which a growing Vec would give room for four).
        let count = self.count_of(3)?;
        let mut calls = Vec::with_capacity(count);
        for _ in 0..count {
            calls.push(ToolCall {
                id: self.string()?,
                name: self.string()?,
                arguments: self.string()?,
            });
        }
        Ok(calls)
    }

    /// A count of items that each take at least one byte (so a corrupt count
    /// cannot make the caller reserve more than the input holds).
    pub(crate) fn count(&mut self) -> Result<usize, JournalError> {
        self.count_of(1)
    }

    /// A count of items that each take at least `min_bytes` bytes, checked
    /// against the bytes left, so that reserving room for them is bounded
    /// by the input.
    pub(crate) fn count_of(&mut self, min_bytes: usize) -> Result<usize, JournalError> {
        let n = self.varint()?;
        let left = ((self.bytes.len() - self.pos) / min_bytes.max(1)) as u64;
        if n > left {
            return Err(self.malformed("an item count within the record"));
        }
        Ok(n as usize)
    }

    pub(crate) fn finish(self) -> Result<(), JournalError> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(self.malformed("the end of the record"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut e = Encoder::default();
            e.varint(v);
            let mut d = Decoder::new(&e.buf);
            assert_eq!(d.varint().unwrap(), v);
            d.finish().unwrap();
        }
    }

    #[test]
    fn overlong_varints_and_lengths_are_rejected() {
        assert!(Decoder::new(&[0xff; 11]).varint().is_err());
        assert!(
            Decoder::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .varint()
                .is_err()
        );
        let mut e = Encoder::default();
        e.varint(1 << 40);
        assert!(Decoder::new(&e.buf).bytes().is_err());
        assert!(Decoder::new(&e.buf).count().is_err());
    }
}
