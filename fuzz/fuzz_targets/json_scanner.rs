//! The validating JSON scanner (`wharf_operators::json`), differentially against serde_json.
//!
//! Its contract (module docs): text the scanner accepts is text serde_json reads as the same
//! JSON; it may give up (`None`) on valid JSON only for a surrogate `\u` escape, a number that
//! might not fit an `f64`, nesting deeper than `MAX_DEPTH`, or a member named like serde_json's
//! raw value marker. Both directions are checked here, the second only for text without those.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wharf_operators::json::{object_members, plain_len, Scanner, MAX_DEPTH};

fuzz_target!(|data: &[u8]| {
    // plain_len on any bytes: the word-at-a-time scan agrees with the byte-by-byte definition.
    let want = data
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(data.len());
    assert_eq!(plain_len(data), want);

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let serde = serde_json::from_str::<Value>(text).ok();

    // One whole value, surrounded by whitespace.
    let mut s = Scanner::new(text);
    s.ws();
    let start = s.at;
    let scanned = s.value(0).map(|_| s.since(start)).and_then(|value| {
        s.ws();
        s.at_end().then_some(value)
    });
    if let Some(value) = scanned {
        let ours: Value = serde_json::from_str(value).expect("scanned text is JSON to serde_json");
        assert_eq!(Some(&ours), serde.as_ref(), "{text:?}");
    } else if let Some(v) = &serde {
        if !gives_up_on(text, v) {
            panic!("the scanner refused JSON its contract covers: {text:?}");
        }
    }

    // Object members in order, names and raw values as serde_json reads them.
    let mut members = Vec::new();
    if let Some(saw_newline) = object_members(text, |name, escaped, value| {
        members.push((name, escaped, value));
    }) {
        let Some(Value::Object(_)) = &serde else {
            panic!("object_members accepted what serde_json does not read as an object: {text:?}");
        };
        // Raw line breaks can only be whitespace in JSON text.
        assert_eq!(saw_newline, text.contains(['\n', '\r']));
        for (name, escaped, value) in &members {
            let decoded: String = serde_json::from_str(&format!("\"{name}\"")).expect("a name");
            assert_eq!(*escaped, name.contains('\\'));
            if !escaped {
                assert_eq!(&decoded, name);
            }
            serde_json::from_str::<Value>(value).expect("a member's value is JSON");
        }
        // The last of a repeated name wins in serde_json's map, as in the members' order.
        if let Some(Value::Object(map)) = &serde {
            let mut last = std::collections::BTreeMap::new();
            for (name, _, value) in &members {
                let decoded: String = serde_json::from_str(&format!("\"{name}\"")).unwrap();
                last.insert(decoded, serde_json::from_str::<Value>(value).unwrap());
            }
            assert_eq!(last.len(), map.len());
            for (k, v) in map {
                assert_eq!(last.get(k), Some(v), "{text:?}");
            }
        }
    }

    // A string and a number on their own, as the receiver's record reader uses them.
    let mut s = Scanner::new(text);
    if let Some(escaped) = s.string() {
        let raw = s.since(0);
        let decoded: String = serde_json::from_str(raw).expect("a scanned string is JSON");
        if !escaped {
            assert_eq!(decoded, raw[1..raw.len() - 1]);
        }
    }
    let mut s = Scanner::new(text);
    if let Some(plain) = s.number() {
        let raw = s.since(0);
        let n: Value = serde_json::from_str(raw).expect("a scanned number is JSON");
        if plain {
            assert!(raw.bytes().all(|b| b.is_ascii_digit()), "{raw:?}");
            assert!(n.is_u64() || n.is_f64());
        }
    }
});

/// Whether `text` (which serde_json read as `value`) holds what the scanner may give up on:
/// a `\u` escape of a surrogate, a number with a long integer part or a long exponent, or
/// nesting deeper than `MAX_DEPTH`.
fn gives_up_on(text: &str, value: &Value) -> bool {
    let b = text.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if in_string {
            match c {
                b'\\' if b.get(i + 1) == Some(&b'u') => {
                    let hex = text.get(i + 2..i + 6).unwrap_or("");
                    if u16::from_str_radix(hex, 16).is_ok_and(|u| (0xD800..=0xDFFF).contains(&u)) {
                        return true;
                    }
                    i += 6;
                    continue;
                }
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else if c == b'"' {
            in_string = true;
        } else if c == b'-' || c.is_ascii_digit() {
            // A number token: its integer part and exponent digits.
            let start = i;
            i += usize::from(c == b'-');
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            let int_len = i - start;
            if b.get(i) == Some(&b'.') {
                i += 1;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            if matches!(b.get(i), Some(b'e' | b'E')) {
                i += 1;
                if matches!(b.get(i), Some(b'+' | b'-')) {
                    i += 1;
                }
                let from = i;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                if i - from > 2 || int_len > 200 {
                    return true;
                }
            }
            if int_len > 300 {
                return true;
            }
            continue;
        }
        i += 1;
    }
    depth(value) > MAX_DEPTH || names_raw_value_token(text)
}

/// Whether an object in `text` has a member named `RAW_VALUE_TOKEN` (names decoded), read
/// without `Value`, which treats that name specially.
fn names_raw_value_token(text: &str) -> bool {
    use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
    struct Scan;
    impl<'de> serde::Deserialize<'de> for Scan {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Scan)
        }
    }
    impl<'de> Visitor<'de> for Scan {
        type Value = Scan;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Scan, E> {
            Ok(Scan)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Scan, E> {
            Ok(Scan)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Scan, E> {
            Ok(Scan)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Scan, E> {
            Ok(Scan)
        }
        fn visit_str<E>(self, _: &str) -> Result<Scan, E> {
            Ok(Scan)
        }
        fn visit_unit<E>(self) -> Result<Scan, E> {
            Ok(Scan)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Scan, A::Error> {
            while a.next_element::<Scan>()?.is_some() {}
            Ok(Scan)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Scan, A::Error> {
            while let Some(k) = a.next_key::<String>()? {
                if k == wharf_operators::json::RAW_VALUE_TOKEN {
                    return Err(serde::de::Error::custom("token"));
                }
                a.next_value::<Scan>()?;
            }
            Ok(Scan)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    serde::Deserialize::deserialize(&mut de)
        .map(|Scan| ())
        .is_err()
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
