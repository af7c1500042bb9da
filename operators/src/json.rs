//! A validating JSON scanner that builds nothing: it checks text against JSON's grammar while
//! stepping over it, so callers can pick out the few values they need and copy the rest as
//! text (the event mapper's JSON-properties column, the receiver's record checks).
//!
//! It is conservative: what serde_json might judge differently — a surrogate `\u` escape
//! (serde_json checks their pairing), a number that may not fit an `f64`, nesting deeper than
//! [`MAX_DEPTH`], a member named [`RAW_VALUE_TOKEN`] — gives up (`None`) like invalid JSON
//! does, so callers fall back to serde_json, which decides. Text a scanner accepts is therefore
//! always text serde_json reads as the same JSON. The input is a `&str`, so UTF-8 is already
//! valid.

/// Nesting deeper than this gives up (serde_json refuses more than 128).
pub const MAX_DEPTH: usize = 100;

/// The object member name serde_json reserves with its `raw_value` feature (on in this
/// workspace): an object whose first member has it does not read as a `Value` (serde_json
/// takes it for a raw value's marker), so an object naming it, plainly or with escapes, gives
/// up (wherever it stands: simpler, and giving up is always allowed).
pub const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// Whether `raw`, a member name as written (with its quotes; `escaped`: it holds escapes), is
/// [`RAW_VALUE_TOKEN`].
pub fn is_raw_value_token(raw: &str, escaped: bool) -> bool {
    if escaped {
        serde_json::from_str::<String>(raw).is_ok_and(|name| name == RAW_VALUE_TOKEN)
    } else {
        raw.len() == RAW_VALUE_TOKEN.len() + 2 && &raw[1..raw.len() - 1] == RAW_VALUE_TOKEN
    }
}

/// A cursor over JSON text.
pub struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    /// The byte offset of the next unread byte.
    pub at: usize,
    /// Whether whitespace skipped so far held a line break (`\n` or `\r`).
    pub saw_newline: bool,
}

impl<'a> Scanner<'a> {
    /// A scanner at the start of `text`.
    pub fn new(text: &'a str) -> Self {
        Scanner {
            text,
            bytes: text.as_bytes(),
            at: 0,
            saw_newline: false,
        }
    }

    /// The text from `start` to the cursor.
    pub fn since(&self, start: usize) -> &'a str {
        &self.text[start..self.at]
    }

    /// Whether everything has been read.
    pub fn at_end(&self) -> bool {
        self.at == self.bytes.len()
    }

    /// The next byte.
    pub fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Consumes `b` if it is next.
    pub fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// Consumes `b`, or `None` if something else is next.
    pub fn expect(&mut self, b: u8) -> Option<()> {
        self.eat(b).then_some(())
    }

    /// Skips whitespace (noting line breaks in [`Scanner::saw_newline`]).
    pub fn ws(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' => {}
                b'\n' | b'\r' => self.saw_newline = true,
                _ => return,
            }
            self.at += 1;
        }
    }

    /// Skips one value, validating it.
    pub fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' => self.members(depth, b'}', |s| {
                let start = s.at;
                let escaped = s.string()?;
                if is_raw_value_token(s.since(start), escaped) {
                    return None;
                }
                s.ws();
                s.expect(b':')?;
                s.ws();
                s.value(depth + 1)
            }),
            b'[' => self.members(depth, b']', |s| s.value(depth + 1)),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number().map(|_| ()),
            _ => None,
        }
    }

    /// Skips an object or array (at `depth`) whose opening bracket is next, up to its `close`:
    /// `member` skips one member (an object's `"name": value`, an array's value), which starts
    /// after any whitespace.
    fn members(
        &mut self,
        depth: usize,
        close: u8,
        mut member: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.at += 1;
        self.ws();
        if self.eat(close) {
            return Some(());
        }
        loop {
            self.ws();
            member(self)?;
            self.ws();
            if self.eat(close) {
                return Some(());
            }
            self.expect(b',')?;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            Some(())
        } else {
            None
        }
    }

    /// A number by JSON's grammar; `Some(true)` for a plain unsigned integer. Numbers that
    /// might not fit an `f64` (serde_json refuses those) give up.
    pub fn number(&mut self) -> Option<bool> {
        let start = self.at;
        let negative = self.eat(b'-');
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        // The integer part's length, sign included: at most 300 bytes (below 1e300).
        let int_len = self.at - start;
        if int_len > 300 {
            return None;
        }
        let mut plain = !negative;
        if self.eat(b'.') {
            plain = false;
            let from = self.at;
            self.digits();
            if self.at == from {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            plain = false;
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            let from = self.at;
            self.digits();
            // No digits, or an exponent that might overflow: not ours to judge. A two-digit
            // exponent overflows an `f64` too after a long integer part (`1…(250 digits)e60`
            // is past 1e308, which serde_json refuses): at most 200 bytes of it keep the value
            // below 1e299.
            if self.at == from || self.at - from > 2 || int_len > 200 {
                return None;
            }
        }
        Some(plain)
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    /// A string at `"` (validated: escapes, no control characters); `Some(true)` if it had
    /// escapes. Surrogate `\u` escapes give up (serde_json judges their pairing).
    pub fn string(&mut self) -> Option<bool> {
        if !self.eat(b'"') {
            return None;
        }
        let mut escaped = false;
        loop {
            self.skip_plain();
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(escaped);
                }
                b'\\' => {
                    escaped = true;
                    self.at += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                        b'u' => {
                            let hex = self.bytes.get(self.at + 1..self.at + 5)?;
                            let hex = std::str::from_utf8(hex).ok()?;
                            let code = u16::from_str_radix(hex, 16).ok()?;
                            if !hex.bytes().all(|b| b.is_ascii_hexdigit())
                                || (0xD800..=0xDFFF).contains(&code)
                            {
                                return None;
                            }
                            self.at += 5;
                        }
                        _ => return None,
                    }
                }
                // A control character.
                _ => return None,
            }
        }
    }

    /// Advances over string bytes that need no attention.
    fn skip_plain(&mut self) {
        self.at += plain_len(&self.bytes[self.at..]);
    }
}

/// The high bit of each byte of `v` (little-endian) that a JSON string cannot hold as it is
/// (`"`, `\\`, a control character). The lowest flagged byte is exact; a byte above a flagged
/// one may be flagged too (a borrow), never a byte below the first.
#[inline]
fn flagged(v: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let quote = v ^ (ONES * u64::from(b'"'));
    let slash = v ^ (ONES * u64::from(b'\\'));
    // A byte that is zero in `quote` or `slash`, or below 0x20 in `v` (bytes ≥ 0x80 are
    // excluded by `!v`).
    ((quote.wrapping_sub(ONES) & !quote)
        | (slash.wrapping_sub(ONES) & !slash)
        | (v.wrapping_sub(ONES * 0x20) & !v))
        & HIGH
}

/// Whether the first `len` bytes of `chunk` (`len` at most 16) are all plain: a JSON string
/// can hold them as they are.
#[inline]
pub fn plain_prefix_16(chunk: &[u8; 16], len: usize) -> bool {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&chunk[..8]);
    hi.copy_from_slice(&chunk[8..]);
    // The bytes of each word that belong to the string (a flag above them is not ours, and
    // a borrow only flags bytes above a flagged one).
    let mask = |bytes: usize| match bytes {
        0 => 0,
        1..=7 => (1u64 << (8 * bytes)) - 1,
        _ => u64::MAX,
    };
    flagged(u64::from_le_bytes(lo)) & mask(len) == 0
        && flagged(u64::from_le_bytes(hi)) & mask(len.saturating_sub(8)) == 0
}

/// The length of the longest prefix of `bytes` without `"`, `\\` or a control character (the
/// bytes a JSON string can hold as they are), eight bytes at a time while it can.
pub fn plain_len(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let flagged = flagged(u64::from_le_bytes(word));
        if flagged != 0 {
            return at + (flagged.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + bytes[at..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(bytes.len() - at)
}

/// Calls `each(name, escaped, value)` for every member of the JSON object `text` (surrounded by
/// optional whitespace), in order: `name` is the raw text between the name's quotes (still
/// escaped when `escaped`), `value` the value's raw text. `None` when `text` is not an object,
/// or anything [`Scanner`] gives up on; `Some(saw_newline)` otherwise, telling whether any
/// whitespace in it held a line break.
pub fn object_members<'a>(
    text: &'a str,
    mut each: impl FnMut(&'a str, bool, &'a str),
) -> Option<bool> {
    let mut s = Scanner::new(text);
    s.ws();
    s.expect(b'{')?;
    s.ws();
    if !s.eat(b'}') {
        loop {
            s.ws();
            let start = s.at;
            let escaped = s.string()?;
            let name = s.since(start);
            if is_raw_value_token(name, escaped) {
                return None;
            }
            s.ws();
            s.expect(b':')?;
            s.ws();
            let start = s.at;
            s.value(1)?;
            each(&name[1..name.len() - 1], escaped, s.since(start));
            s.ws();
            if s.eat(b'}') {
                break;
            }
            s.expect(b',')?;
        }
    }
    s.ws();
    s.at_end().then_some(s.saw_newline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What serde_json makes of an object: its members in order, names decoded, values as
    /// `Value`s.
    fn serde_members(text: &str) -> Option<Vec<(String, serde_json::Value)>> {
        use serde::de::{Deserializer, MapAccess, Visitor};
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = Vec<(String, serde_json::Value)>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(out)
            }
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let members = de.deserialize_map(Ordered).ok()?;
        de.end().ok()?;
        Some(members)
    }

    fn scanned(text: &str) -> Option<Vec<(String, serde_json::Value)>> {
        let mut out = Vec::new();
        object_members(text, |name, _, value| {
            let name: String = serde_json::from_str(&format!("\"{name}\"")).expect("a JSON name");
            out.push((name, serde_json::from_str(value).expect("a JSON value")));
        })?;
        Some(out)
    }

    const BASE: &str = r#" {"browser":"Chrome","screen":{"w":1440,"h":[810,-0.5e-3]},"ok":true,"n":null,"f":false,"s":"a\"b\\c\/\u00e9\n","e":"","x":[],"y":{},"d":12.25E+2,"z":0} "#;

    #[test]
    fn plain_len_stops_at_the_first_byte_a_string_must_escape() {
        for text in ["", "abc", "abcdefgh", "abcdefghijklmnop", "Zürich 東京 ok"] {
            assert_eq!(plain_len(text.as_bytes()), text.len(), "{text:?}");
        }
        for (i, bad) in [b'"', b'\\', b'\n', 0u8, 0x1f].into_iter().enumerate() {
            for at in 0..20 {
                let mut bytes = vec![b'x'; 20];
                bytes[at] = bad;
                if at + 3 < 20 {
                    bytes[at + 3] = b'"';
                }
                assert_eq!(plain_len(&bytes), at, "{i} at {at}");
            }
        }
        assert_eq!(plain_len(&[0x7f, 0x80, 0xff, 0x20, b'"']), 4);
    }

    proptest! {
        /// The word-at-a-time scan agrees with the plain definition, wherever the first flagged byte
        /// is (or none), over the byte values around the flagged ones.
        #[test]
        fn plain_len_agrees_with_a_byte_by_byte_scan(
            bytes in proptest::collection::vec(prop::sample::select(
                vec![0u8, 0x1f, 0x20, b'"', b'\\', b'a', b'~', 0x7f, 0x80, 0xc3, 0xff]
            ), 0..80),
            plain_prefix in 0usize..70,
        ) {
            let mut bytes = bytes;
            for b in bytes.iter_mut().take(plain_prefix) {
                if *b == b'"' || *b == b'\\' || *b < 0x20 {
                    *b = b'x';
                }
            }
            let want = bytes
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(bytes.len());
            prop_assert_eq!(plain_len(&bytes), want);
        }
    }

    #[test]
    fn reads_an_ordinary_object_like_serde_json() {
        assert!(scanned(BASE).is_some());
        assert_eq!(scanned(BASE), serde_members(BASE));
        assert_eq!(object_members("{}", |_, _, _| {}), Some(false));
        assert_eq!(object_members("{\"a\":\n1}", |_, _, _| {}), Some(true));
    }

    /// Found by fuzzing (fuzz/fuzz_targets/json_scanner.rs): serde_json (with `raw_value`)
    /// refuses an object whose first member is named like its raw value marker, which the
    /// scanner accepted.
    #[test]
    fn gives_up_on_serde_jsons_raw_value_marker() {
        for text in [
            r#"{"$serde_json::private::RawValue":1}"#,
            r#"{"a":[{"$serde_json::private::RawValue":"x"}]}"#,
            r#"{"a":{"\u0024serde_json::private::RawValue":1}}"#,
        ] {
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_err(),
                "{text}"
            );
            assert_eq!(object_members(text, |_, _, _| {}), None, "{text}");
        }
        let near =
            r#"{"$serde_json::private::RawValu":1,"x":{"$serde_json::private::RawValue2":2}}"#;
        assert_eq!(scanned(near), serde_members(near));
        assert!(scanned(near).is_some());
    }

    /// Found by fuzzing (fuzz/fuzz_targets/json_scanner.rs): a long integer part with a
    /// two-digit exponent is past `f64`'s range, which serde_json refuses.
    #[test]
    fn gives_up_on_a_long_integer_part_with_an_exponent() {
        let over = format!("{{\"n\":{}e60}}", "1".repeat(250));
        assert!(serde_json::from_str::<serde_json::Value>(&over).is_err());
        assert_eq!(object_members(&over, |_, _, _| {}), None);
        let mut s = Scanner::new(&over[5..over.len() - 1]);
        assert_eq!(s.number(), None);
        // Still read here: the same digits without an exponent, or with up to 200 of them.
        for ok in [
            format!("{{\"n\":{}}}", "1".repeat(250)),
            format!("{{\"n\":{}e99}}", "9".repeat(200)),
            format!("{{\"n\":-{}.5E+99}}", "9".repeat(199)),
        ] {
            assert!(
                serde_json::from_str::<serde_json::Value>(&ok).is_ok(),
                "{ok}"
            );
            assert!(scanned(&ok).is_some(), "{ok}");
            assert_eq!(scanned(&ok), serde_members(&ok), "{ok}");
        }
    }

    #[test]
    fn gives_up_on_what_serde_json_judges() {
        let deep = format!("{{\"d\":{}1{}}}", "[".repeat(120), "]".repeat(120));
        for text in [
            r#"{"s":"\ud800"}"#,
            r#"{"s":"\udc00\ud800"}"#,
            r#"{"n":1e400}"#,
            r#"{"n":1e-400}"#,
            deep.as_str(),
            r#"{"n":01}"#,
            r#"{"n":1.}"#,
            r#"{"n":-}"#,
            r#"{"n":+1}"#,
            r#"{"n":.5}"#,
            r#"{"s":"\x"}"#,
            r#"{"s":"\u12g4"}"#,
            r#"{"s":"\u+123"}"#,
            "{\"s\":\"\u{1}\"}",
            r#"{"t":tru}"#,
            r#"{"a":1,}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":1} x"#,
            r#"{"a" 1}"#,
            r#"["a"]"#,
            "",
        ] {
            assert_eq!(object_members(text, |_, _, _| {}), None, "{text}");
        }
    }

    proptest! {
        /// Whatever the scanner accepts, serde_json reads as the same members.
        #[test]
        fn never_accepts_what_serde_json_reads_differently(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, prop::sample::select(
                "\"{}[],:\\/0123456789-+.eEutrnlfabx \t\n\r\u{1}\u{7f}é$".chars().collect::<Vec<_>>()
            )), 1..4)
        ) {
            let mut chars: Vec<char> = BASE.chars().collect();
            for (at, kind, c) in edits {
                if chars.is_empty() {
                    break;
                }
                let at = at.index(chars.len());
                match kind {
                    0 => { chars.remove(at); }
                    1 => chars.insert(at, c),
                    2 => chars[at] = c,
                    _ => {
                        let end = (at + 5).min(chars.len());
                        let piece: Vec<char> = chars[at..end].to_vec();
                        chars.splice(at..at, piece);
                    }
                }
            }
            let text: String = chars.into_iter().collect();
            if let Some(ours) = scanned(&text) {
                prop_assert_eq!(Some(ours), serde_members(&text), "{}", text);
            }
        }
    }
}
