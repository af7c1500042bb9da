//! Key hashes as keys: the [`KeyHasher`] of key-hash maps and sets, and [`owner`], the worker
//! whose key range holds a key.

/// Hashes a key hash for a hash table: it already is a uniform hash, so its lower 64 bits
/// are used as they are (std's default SipHash costs more than the rest of a lookup).
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only used for key hashes (`write_u128`); anything else is mixed in byte by byte.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, key: u128) {
        self.0 = key as u64;
    }
}

/// Builds [`KeyHasher`]s.
pub type KeyHashing = std::hash::BuildHasherDefault<KeyHasher>;
/// A map keyed by key hashes.
pub type KeyMap<V> = std::collections::HashMap<u128, V, KeyHashing>;
/// A set of key hashes.
pub type KeySet = std::collections::HashSet<u128, KeyHashing>;

/// The worker (of `peers`) that owns `key`: the key space is cut into `peers` contiguous
/// ranges by the key hash's upper 64 bits, so each worker's keys are one range and the ranges
/// are in worker order. The result is below `peers`.
pub fn owner(key: u128, peers: usize) -> usize {
    (((key >> 64) * peers as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_cut_the_key_space_into_ordered_ranges() {
        for peers in [1usize, 2, 3, 4, 7] {
            assert_eq!(owner(0, peers), 0);
            assert_eq!(owner(u128::MAX, peers), peers - 1);
            let mut last = 0;
            for i in 0..1000u128 {
                let key = i * (u128::MAX / 1000);
                let o = owner(key, peers);
                assert!(o < peers && o >= last, "owner of {key} with {peers} peers");
                last = o;
            }
        }
    }
}
