//! Sizes as `wharf.toml` writes them (`64MB`, `1GiB`).

/// Parses a whole number of bytes with a unit: `b`, `kB`/`MB`/`GB`/`TB` (powers of 1000) or
/// `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024), in any case, with or without a space.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let per: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(per)
}

/// A size in bytes in the config, parsed when the config is read: a value that is not one is
/// an error naming its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let what = "a size; write e.g. `64MB`, `512MiB`, `2GB`";
        crate::duration::from_text(d, parse_size, what).map(ByteSize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_what_is_not_a_size() {
        assert_eq!(parse_size("64MB"), Some(64_000_000));
        assert_eq!(parse_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_size("512mib"), Some(512 << 20));
        assert_eq!(parse_size("100b"), Some(100));
        for bad in ["", "64", "MB", "-1GB", "1.5GB", "64 XB", "99999999999TB"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }
}
