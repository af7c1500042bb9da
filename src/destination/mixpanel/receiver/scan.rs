//! A one-pass reader of an `/import` record's text for the rules' fast path
//! ([`super::rules::accept_fast`]), on [`wharf_operators::json::Scanner`]: it validates the
//! whole record as JSON while reading the fields the rules check, and skips everything else
//! without building anything.
//!
//! Like the scanner, it is deliberately conservative: a repeated `event` or `properties`, a
//! checked field repeated, or anything the scanner gives up on makes it give up (`None`), and
//! the caller takes the `Value` path (serde_json), which decides. So it may only ever accept
//! text that serde_json reads as the same JSON; the tests check that on mutated records.

use std::borrow::Cow;

use wharf_operators::json::Scanner;

use super::rules::Field;

/// What [`scan_record`] read: the top-level `event`, the three checked properties and how many
/// property names there are (counted as written).
pub(super) struct Scanned<'a> {
    pub(super) event: Field<'a>,
    pub(super) time: Field<'a>,
    pub(super) distinct_id: Field<'a>,
    pub(super) insert_id: Field<'a>,
    pub(super) properties: usize,
}

/// Reads one record (a JSON object, optionally surrounded by whitespace); `None` if it is not
/// JSON, has no `properties` object, or is anything the scanner leaves to serde_json.
pub(super) fn scan_record(text: &str) -> Option<Scanned<'_>> {
    let mut s = Scanner::new(text);
    s.ws();
    s.expect(b'{')?;
    let (mut event, mut props) = (None, None);
    s.ws();
    if !s.eat(b'}') {
        loop {
            s.ws();
            let name = name(&mut s)?;
            s.ws();
            s.expect(b':')?;
            s.ws();
            match name.as_ref() {
                "event" if event.is_none() => event = Some(field(&mut s, 0)?),
                "properties" if props.is_none() => props = Some(properties(&mut s)?),
                "event" | "properties" => return None,
                _ => s.value(0)?,
            }
            s.ws();
            if s.eat(b'}') {
                break;
            }
            s.expect(b',')?;
        }
    }
    s.ws();
    if !s.at_end() {
        return None;
    }
    let props = props?;
    Some(Scanned {
        event: event.unwrap_or(Field::Missing),
        time: props.time.unwrap_or(Field::Missing),
        distinct_id: props.distinct_id.unwrap_or(Field::Missing),
        insert_id: props.insert_id.unwrap_or(Field::Missing),
        properties: props.count,
    })
}

struct Props<'a> {
    time: Option<Field<'a>>,
    distinct_id: Option<Field<'a>>,
    insert_id: Option<Field<'a>>,
    count: usize,
}

/// The properties object: its checked fields read, the rest skipped, names counted.
fn properties<'a>(s: &mut Scanner<'a>) -> Option<Props<'a>> {
    s.expect(b'{')?;
    let mut out = Props {
        time: None,
        distinct_id: None,
        insert_id: None,
        count: 0,
    };
    s.ws();
    if s.eat(b'}') {
        return Some(out);
    }
    loop {
        s.ws();
        let name = name(s)?;
        s.ws();
        s.expect(b':')?;
        s.ws();
        out.count += 1;
        let slot = match name.as_ref() {
            "time" => &mut out.time,
            "distinct_id" => &mut out.distinct_id,
            "$insert_id" => &mut out.insert_id,
            _ => {
                s.value(1)?;
                s.ws();
                if s.eat(b'}') {
                    return Some(out);
                }
                s.expect(b',')?;
                continue;
            }
        };
        // The `Value` path keeps the last of a repeated checked field: leave it to that.
        if slot.is_some() {
            return None;
        }
        *slot = Some(field(s, 1)?);
        s.ws();
        if s.eat(b'}') {
            return Some(out);
        }
        s.expect(b',')?;
    }
}

/// An object member's name: borrowed, or decoded when it has escapes. serde_json's raw value
/// marker gives up, as in the scanner (a `Value` cannot hold an object naming it).
fn name<'a>(s: &mut Scanner<'a>) -> Option<Cow<'a, str>> {
    let start = s.at;
    let escaped = s.string()?;
    let raw = s.since(start);
    if wharf_operators::json::is_raw_value_token(raw, escaped) {
        return None;
    }
    if escaped {
        serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(&raw[1..raw.len() - 1]))
    }
}

/// A checked field's value: plain strings and unsigned integers read here, anything else
/// validated here and then read by serde_json.
fn field<'a>(s: &mut Scanner<'a>, depth: usize) -> Option<Field<'a>> {
    let start = s.at;
    match s.peek()? {
        b'"' => {
            let escaped = s.string()?;
            let raw = s.since(start);
            if !escaped {
                return Some(Field::Str(Cow::Borrowed(&raw[1..raw.len() - 1])));
            }
        }
        b'0'..=b'9' => {
            let plain = s.number()?;
            let raw = s.since(start);
            if plain {
                if let Ok(n) = raw.parse::<u64>() {
                    return Some(Field::Num(n.into()));
                }
            }
        }
        _ => s.value(depth)?,
    }
    serde_json::from_str::<Field<'a>>(s.since(start)).ok()
}
