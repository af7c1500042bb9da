//! Durations as `wharf.toml` writes them.

use std::time::Duration;

/// Parses `30s`, `15m`, `1h`, `2d`, `250ms`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let seconds_per = match unit {
        "ms" => return Some(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(seconds_per).map(Duration::from_secs)
}

/// A duration in the config (`30s`, `15m`, `1h`, `2d`, `250ms`), parsed when the config is
/// read: a value that is not one is an error naming its key, and code reads a [`Duration`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl Span {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl<'de> serde::Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let what = "a duration; write e.g. `500ms`, `30s`, `5m`, `2h`, `1d`";
        from_text(d, parse_duration, what).map(Span)
    }
}

/// Deserializes a value `wharf.toml` writes as text, read by `parse`; text it does not read
/// is an error that says what was expected (`what`: "a duration; write e.g. …").
pub(crate) fn from_text<'de, D: serde::Deserializer<'de>, T>(
    d: D,
    parse: fn(&str) -> Option<T>,
    what: &str,
) -> Result<T, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    parse(&text).ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_what_is_not_a_duration() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 2h "), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        for bad in [
            "",
            "5",
            "s",
            "5 s",
            "5w",
            "-5s",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(parse_duration("999999999999999999d"), None, "overflow");
    }
}
