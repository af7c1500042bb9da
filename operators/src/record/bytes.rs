//! The NDJSON bytes of [`EncodedRecords`](super::EncodedRecords): a buffer of their own, or a
//! range of a buffer shared with the records they were cut from, so that a request cut from a
//! mapped batch is sent without copying its bytes.

use std::ops::{Deref, Range};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes that are owned, or a range of a shared buffer (copied on the first write).
#[derive(Clone)]
pub struct RecordBytes(Repr);

#[derive(Clone)]
enum Repr {
    Owned(Vec<u8>),
    Shared {
        buffer: Arc<Vec<u8>>,
        range: Range<usize>,
    },
}

impl Default for RecordBytes {
    fn default() -> Self {
        RecordBytes(Repr::Owned(Vec::new()))
    }
}

impl From<Vec<u8>> for RecordBytes {
    fn from(bytes: Vec<u8>) -> Self {
        RecordBytes(Repr::Owned(bytes))
    }
}

impl Deref for RecordBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Owned(bytes) => bytes,
            Repr::Shared { buffer, range } => &buffer[range.clone()],
        }
    }
}

impl RecordBytes {
    /// The bytes as a buffer to write to; shared bytes are copied into one of their own first.
    pub fn vec_mut(&mut self) -> &mut Vec<u8> {
        if let Repr::Shared { .. } = self.0 {
            self.0 = Repr::Owned(self.to_vec());
        }
        match &mut self.0 {
            Repr::Owned(bytes) => bytes,
            Repr::Shared { .. } => unreachable!("made owned above"),
        }
    }

    /// Appends `bytes`.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.vec_mut().extend_from_slice(bytes);
    }

    /// Appends one byte.
    pub fn push(&mut self, byte: u8) {
        self.vec_mut().push(byte);
    }

    /// Makes room for `additional` more bytes.
    pub fn reserve(&mut self, additional: usize) {
        self.vec_mut().reserve(additional);
    }

    /// Turns owned bytes into a shared buffer (no copy), from which [`slice`](Self::slice)
    /// cuts ranges without copying.
    pub fn share(&mut self) {
        if let Repr::Owned(bytes) = &mut self.0 {
            let bytes = std::mem::take(bytes);
            let range = 0..bytes.len();
            self.0 = Repr::Shared {
                buffer: Arc::new(bytes),
                range,
            };
        }
    }

    /// `range` of these bytes: the same shared buffer when they are shared, else a copy.
    pub fn slice(&self, range: Range<usize>) -> RecordBytes {
        match &self.0 {
            Repr::Owned(bytes) => RecordBytes(Repr::Owned(bytes[range].to_vec())),
            Repr::Shared {
                buffer,
                range: mine,
            } => {
                assert!(range.start <= range.end && mine.start + range.end <= mine.end);
                RecordBytes(Repr::Shared {
                    buffer: Arc::clone(buffer),
                    range: mine.start + range.start..mine.start + range.end,
                })
            }
        }
    }

    /// Whether these bytes are a range of a shared buffer.
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Repr::Shared { .. })
    }
}

impl PartialEq for RecordBytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for RecordBytes {}

impl std::fmt::Debug for RecordBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// As a `Vec<u8>` is: a sequence of bytes.
impl Serialize for RecordBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for RecordBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<u8>::deserialize(deserializer).map(RecordBytes::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_of_shared_bytes_share_the_buffer_and_copy_on_write() {
        let mut bytes = RecordBytes::from(b"one\ntwo\nthree\n".to_vec());
        assert_eq!(bytes.slice(4..8).as_ref(), b"two\n");
        assert!(!bytes.slice(4..8).is_shared());
        bytes.share();
        let two = bytes.slice(4..8);
        assert!(two.is_shared());
        assert_eq!(two.as_ref(), b"two\n");
        let mut wo = two.slice(1..3);
        assert_eq!(wo.as_ref(), b"wo");
        wo.push(b'!');
        assert!(!wo.is_shared());
        assert_eq!(wo.as_ref(), b"wo!");
        assert_eq!(
            bytes.as_ref(),
            b"one\ntwo\nthree\n",
            "the shared buffer is unchanged"
        );
        // Serialized as a Vec<u8> is, shared or not.
        let json = serde_json::to_string(&two).unwrap();
        assert_eq!(json, serde_json::to_string(&b"two\n".to_vec()).unwrap());
        assert_eq!(serde_json::from_str::<RecordBytes>(&json).unwrap(), two);
    }
}
