//! Mixpanel's per-event validation rules for `/import` (strict mode), written from
//! Mixpanel's documentation independently of wharf's own mapping, so the two cannot drift
//! into agreeing on a mistake.

use super::field::Field;
use super::scan::scan_record;
use super::*;

/// Why a record failed validation: the failing field path and a message.
pub(super) struct Failure {
    pub(super) field: &'static str,
    pub(super) message: String,
}

pub(super) fn fail(field: &'static str, message: String) -> Failure {
    Failure { field, message }
}

macro_rules! reject {
    ($field:expr, $($message:tt)+) => {
        return Err(fail($field, format!($($message)+)))
    };
}

/// The fields the rules look at: the event name, the three checked properties and how many
/// properties there are.
pub(super) struct Checked<'a> {
    event: Field<'a>,
    time: Field<'a>,
    distinct_id: Field<'a>,
    insert_id: Field<'a>,
    properties: usize,
}

/// Mixpanel's strict-mode checks for one record; when it passes, its dedup key and whether its
/// `distinct_id` is blank.
pub(super) fn validate(
    record: &Value,
    json_len: usize,
    now_ms: f64,
) -> Result<(u128, bool), Failure> {
    let Some(event) = record.as_object() else {
        reject!("event", "each record must be a JSON object")
    };
    check_event(&Field::of(event.get("event")))?;
    let props: &Map<String, Value> = match event.get("properties") {
        Some(Value::Object(props)) => props,
        None | Some(Value::Null) => reject!("properties", "properties is required"),
        Some(_) => reject!("properties", "properties must be a JSON object"),
    };
    let fields = checked_fields(event, props);
    let distinct_id = check_properties(&fields, json_len, now_ms)?;
    key_of(&fields, &distinct_id).ok_or_else(|| fail("event", "no dedup key".into()))
}

fn checked_fields<'a>(event: &'a Map<String, Value>, props: &'a Map<String, Value>) -> Checked<'a> {
    Checked {
        event: Field::of(event.get("event")),
        time: Field::of(props.get("time")),
        distinct_id: Field::of(props.get("distinct_id")),
        insert_id: Field::of(props.get("$insert_id")),
        properties: props.len(),
    }
}

fn check_event(event: &Field<'_>) -> Result<(), Failure> {
    match event {
        Field::Str(name) if !name.is_empty() => Ok(()),
        Field::Str(_) => reject!("event", "event name must not be empty"),
        Field::Missing => reject!("event", "event name is required"),
        _ => reject!("event", "event name must be a string"),
    }
}

/// The bytes an `$insert_id` may hold, `[A-Za-z0-9-]`, as a table: checked without a branch
/// per byte (ids are hex or UUIDs, whose digits and letters mix at random).
const INSERT_ID_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric() || b == b'-' as usize;
        b += 1;
    }
    table
};

/// The checks after the event name and the properties' shape; the `distinct_id` on success.
fn check_properties<'f>(
    fields: &'f Checked<'_>,
    json_len: usize,
    now_ms: f64,
) -> Result<Cow<'f, str>, Failure> {
    const TIME: &str = "properties.time";
    const DISTINCT_ID: &str = "properties.distinct_id";
    const INSERT_ID: &str = "properties.$insert_id";
    let time = match &fields.time {
        Field::Num(n) => n.as_f64().unwrap_or(f64::NAN),
        Field::Missing => reject!(TIME, "properties.time is required"),
        _ => reject!(TIME, "properties.time must be a number"),
    };
    let ms = time_ms(time);
    if ms.is_nan() || ms < MIN_TIME_MS {
        reject!(TIME, "time {time} is before 1971-01-01T00:00:00Z");
    }
    if ms > now_ms + MAX_FUTURE_MS {
        reject!(TIME, "time {time} is more than 1 hour in the future");
    }
    let distinct_id = match &fields.distinct_id {
        Field::Missing => reject!(DISTINCT_ID, "properties.distinct_id is required"),
        field => match field.id_str() {
            Some(id) => id,
            None => reject!(DISTINCT_ID, "distinct_id must be a string or a number"),
        },
    };
    let trimmed = distinct_id.trim();
    if BANNED_DISTINCT_IDS
        .split_ascii_whitespace()
        .any(|banned| banned.eq_ignore_ascii_case(trimmed))
    {
        reject!(
            DISTINCT_ID,
            "distinct_id {distinct_id:?} is an invalid placeholder value"
        );
    }
    match &fields.insert_id {
        Field::Str(id) if id.is_empty() || id.len() > 36 => {
            reject!(INSERT_ID, "$insert_id must be 1 to 36 characters long")
        }
        Field::Str(id)
            if !id
                .bytes()
                .fold(true, |ok, b| ok & INSERT_ID_BYTE[usize::from(b)]) =>
        {
            reject!(INSERT_ID, "$insert_id may only contain [A-Za-z0-9-]")
        }
        Field::Str(_) => {}
        Field::Missing => reject!(INSERT_ID, "$insert_id is required"),
        _ => reject!(INSERT_ID, "$insert_id must be a string"),
    }
    if fields.properties > MAX_PROPERTIES {
        reject!(
            "properties",
            "{} properties; the maximum is {MAX_PROPERTIES}",
            fields.properties
        );
    }
    if json_len >= MAX_EVENT_BYTES {
        reject!(
            "properties",
            "event is {json_len} bytes; events must be under 1 MB"
        );
    }
    Ok(distinct_id)
}

/// Seconds or milliseconds since the epoch (values > 1e11 are milliseconds) to milliseconds.
pub(super) fn time_ms(time: f64) -> f64 {
    if time > 1e11 {
        time
    } else {
        time * 1000.0
    }
}

/// A string or number's string form (as Mixpanel reads ids); `None` for other values.
pub(super) fn id_string(value: &Value) -> Option<String> {
    Field::of(Some(value)).id_str().map(Cow::into_owned)
}

/// Mixpanel's dedup key (event, distinct_id, time in ms, $insert_id) hashed to 128 bits,
/// and whether the distinct_id is blank.
pub(super) fn stored_key(record: &Value) -> Option<(u128, bool)> {
    let event = record.as_object()?;
    let props = event.get("properties")?.as_object()?;
    let fields = checked_fields(event, props);
    let distinct_id = fields.distinct_id.id_str()?;
    key_of(&fields, &distinct_id)
}

fn key_of(fields: &Checked<'_>, distinct_id: &str) -> Option<(u128, bool)> {
    let (Field::Str(event), Field::Num(time), Field::Str(insert_id)) =
        (&fields.event, &fields.time, &fields.insert_id)
    else {
        return None;
    };
    let key = dedup_key(event, time.as_f64()?, distinct_id, insert_id);
    Some((key, distinct_id.trim().is_empty()))
}

fn dedup_key(event: &str, time: f64, distinct_id: &str, insert_id: &str) -> u128 {
    let time = time_ms(time).round() as i64;
    let parts = [event, distinct_id, insert_id];
    let len = parts.iter().map(|p| p.len() + 8).sum::<usize>() + 8;
    // Built on the stack when it fits (it nearly always does), hashed in one call.
    let mut stack = [0u8; 256];
    let mut heap = Vec::new();
    let buf: &mut [u8] = if len <= stack.len() {
        &mut stack[..len]
    } else {
        heap.resize(len, 0);
        &mut heap
    };
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    for part in parts {
        put(&(part.len() as u64).to_le_bytes());
        put(part.as_bytes());
    }
    put(&time.to_le_bytes());
    xxhash_rust::xxh3::xxh3_128(buf)
}

/// [`validate`] + [`stored_key`] straight from one record's JSON text, read once by
/// [`scan_record`]: the checked fields are read as [`Field`]s, the other properties validated,
/// counted and skipped (never built into a `Value` tree), and the same checks run on them.
/// `Some` only for a record that passes; anything else — a failing record, a repeated checked
/// field, an unusual shape — is `None`, and the caller takes the `Value` path, which gives the
/// same verdict for everything this accepts.
pub(super) fn accept_fast(text: &str, now_ms: f64) -> Option<(u128, bool)> {
    let scanned = scan_record(text)?;
    let fields = Checked {
        event: scanned.event,
        time: scanned.time,
        distinct_id: scanned.distinct_id,
        insert_id: scanned.insert_id,
        properties: scanned.properties,
    };
    check_event(&fields.event).ok()?;
    let distinct_id = check_properties(&fields, text.len(), now_ms).ok()?;
    key_of(&fields, &distinct_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slow(text: &str, now_ms: f64) -> Option<(u128, bool)> {
        let record: Value = serde_json::from_str(text).ok()?;
        validate(&record, text.len(), now_ms).ok()
    }

    /// The fast path accepts only what the `Value` path accepts, with the same key; and it
    /// does accept ordinary records.
    #[test]
    fn the_fast_path_agrees_with_the_value_path() {
        let now_ms = 1_764_400_000_000.0;
        let many: String = (0..300).map(|i| format!(",\"p{i}\":1")).collect();
        let ok = [
            r#"{"event":"Signed Up","properties":{"time":1764396400,"distinct_id":"u1","$insert_id":"a-1","plan":"pro"}}"#.to_string(),
            r#"{"properties":{"$insert_id":"b2","distinct_id":42,"time":1764396400000,"x":{"y":[1,2]}},"event":"E","extra":1}"#.to_string(),
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"u","$insert_id":"c3","caf\u00e9":1,"café2":2}}"#.to_string(),
            r#"{"event":"Caf\u00e9","properties":{"time":1764396400.5,"distinct_id":-4.5,"$insert_id":"d4"}}"#.to_string(),
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"\u0041nonymous2","$insert_id":"e5","o":{"a":[true,null]}}}"#.to_string(),
        ];
        for text in &ok {
            let fast = accept_fast(text, now_ms);
            assert!(fast.is_some(), "{text}");
            assert_eq!(fast, slow(text, now_ms), "{text}");
        }
        let refused = [
            r#"["E",{"time":1764396400,"distinct_id":"u","$insert_id":"a"}]"#.to_string(),
            r#"{"event":"","properties":{"time":1764396400,"distinct_id":"u","$insert_id":"a"}}"#.to_string(),
            r#"{"event":null,"properties":{"time":1764396400,"distinct_id":"u","$insert_id":"a"}}"#.to_string(),
            r#"{"event":"E","properties":{"time":null,"distinct_id":"u","$insert_id":"a"}}"#.to_string(),
            r#"{"event":"E","properties":{"time":"1764396400","distinct_id":"u","$insert_id":"a"}}"#.to_string(),
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"null","$insert_id":"a"}}"#.to_string(),
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":" Und\u0065fined ","$insert_id":"a"}}"#.to_string(),
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":true,"$insert_id":"a"}}"#.to_string(),
            r#"{"event":{"a":1},"properties":{"time":1764396400,"distinct_id":"u","$insert_id":"a"}}"#.to_string(),
            r#"{"event":"E","properties":{"time":[1764396400],"distinct_id":"u","$insert_id":"a"}}"#.to_string(),
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"u","$insert_id":7}}"#.to_string(),
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"u","$insert_id":"a_b"}}"#.to_string(),
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"u"}}"#.to_string(),
            r#"{"event":"E","properties":[1]}"#.to_string(),
            r#"{"event":"E","properties":{"time":99,"distinct_id":"u","$insert_id":"a"}}"#.to_string(),
            format!(r#"{{"event":"E","properties":{{"time":1764396400,"distinct_id":"u","$insert_id":"a"{many}}}}}"#),
        ];
        for text in &refused {
            assert_eq!(accept_fast(text, now_ms), None, "{text}");
            assert_eq!(slow(text, now_ms), None, "{text}");
        }
        // A repeated ordinary property: both accept, with the same key.
        let text = r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"u","$insert_id":"a","p":1,"p":2}}"#;
        assert!(accept_fast(text, now_ms).is_some());
        assert_eq!(accept_fast(text, now_ms), slow(text, now_ms));
        // 255 distinct names written 256 times: the fast path defers, the `Value` path accepts.
        let names: String = (0..252).map(|i| format!(",\"p{i}\":1")).collect();
        let text = format!(
            r#"{{"event":"E","properties":{{"time":1764396400,"distinct_id":"u","$insert_id":"a"{names},"p0":2}}}}"#
        );
        assert_eq!(accept_fast(&text, now_ms), None);
        assert!(slow(&text, now_ms).is_some());
        // Repeated checked fields: the fast path defers; the `Value` path keeps the last value.
        let repeated = [
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"x","distinct_id":"u","$insert_id":"a"}}"#,
            r#"{"event":"E","event":"F","properties":{"time":1764396400,"distinct_id":"u","$insert_id":"a"}}"#,
        ];
        for text in repeated {
            assert_eq!(accept_fast(text, now_ms), None, "{text}");
            assert!(slow(text, now_ms).is_some(), "{text}");
        }
    }

    /// Found by fuzzing (fuzz/fuzz_targets/json_scanner.rs): an object whose first member is
    /// named like serde_json's raw value marker passed the fast path, but does not read as a
    /// `Value`, so the stored event would not read back (the event log unreadable on the next
    /// start). The fast path defers (on that name anywhere); the `Value` path decides.
    #[test]
    fn the_fast_path_defers_on_serde_jsons_raw_value_marker() {
        let now_ms = 1_764_400_000_000.0;
        for text in [
            r#"{"event":"E","properties":{"$serde_json::private::RawValue":1,"time":1764396400,"distinct_id":"u","$insert_id":"a"}}"#,
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"u","$insert_id":"a","o":{"\u0024serde_json::private::RawValue":1}}}"#,
        ] {
            assert_eq!(accept_fast(text, now_ms), None, "{text}");
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
        }
    }

    /// Soundness on mutated records: whatever the fast path accepts, the `Value` path accepts
    /// with the same key. (It may defer more; it must never accept what serde_json refuses.)
    #[test]
    fn the_fast_path_never_accepts_what_the_value_path_refuses() {
        let now_ms = 1_764_400_000_000.0;
        let bases = [
            r#"{"event":"Page View","properties":{"time":1764396400000,"distinct_id":"user_12","$device_id":"dev-3","$insert_id":"0f3a9c2e5b7d41a8","plan":"pro","revenue":12.5,"items":-3,"is_mobile":true,"tags":["new","vip"],"utm":{"source":"google","n":null},"city":"Z\u00fcrich \"q\" \\ \/","e":1.5e-7,"z":0}}"#,
            r#"{"properties":{"$insert_id":"b2","distinct_id":42,"time":1764396400.25,"x":{"y":[1,2,{"z":[]}]}},"event":"E\n","extra":[true,false,null]}"#,
            r#" {"event":"Kraków","properties":{"time":1764396400,"distinct_id":"東京","$insert_id":"c-3","a":"","b":[],"c":{}}} "#,
        ];
        let alphabet: Vec<char> = "\"{}[],:\\/0123456789-+.eEutrnlfabx \t\n\r\u{1}\u{7f}é$"
            .chars()
            .collect();
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut accepted, mut tried) = (0, 0);
        for base in bases {
            assert!(accept_fast(base, now_ms).is_some(), "{base}");
            assert_eq!(accept_fast(base, now_ms), slow(base, now_ms));
            for _ in 0..40_000 {
                let mut chars: Vec<char> = base.chars().collect();
                for _ in 0..rng.usize(1..=3) {
                    let at = rng.usize(0..chars.len());
                    match rng.u8(0..4) {
                        0 => {
                            chars.remove(at);
                        }
                        1 => chars.insert(at, alphabet[rng.usize(0..alphabet.len())]),
                        2 => chars[at] = alphabet[rng.usize(0..alphabet.len())],
                        _ => {
                            let end = (at + rng.usize(1..8)).min(chars.len());
                            let piece: Vec<char> = chars[at..end].to_vec();
                            let to = rng.usize(0..chars.len());
                            chars.splice(to..to, piece);
                        }
                    }
                    if chars.is_empty() {
                        break;
                    }
                }
                let text: String = chars.into_iter().collect();
                tried += 1;
                if let Some(fast) = accept_fast(&text, now_ms) {
                    accepted += 1;
                    assert_eq!(Some(fast), slow(&text, now_ms), "{text}");
                }
            }
        }
        // The mutations must leave many records valid, or the test checks little.
        assert!(accepted > tried / 20, "{accepted} of {tried}");
        // Edge cases of JSON itself: the fast path gives the `Value` path's verdict.
        let edges = [
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"u","$insert_id":"a","s":"\ud800"}}"#.to_string(),
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"u","$insert_id":"a","n":1e400}}"#.to_string(),
            format!(r#"{{"event":"E","properties":{{"time":1764396400,"distinct_id":"u","$insert_id":"a","d":{}1{}}}}}"#, "[".repeat(120), "]".repeat(120)),
        ];
        for text in &edges {
            assert_eq!(accept_fast(text, now_ms), slow(text, now_ms), "{text}");
        }
        let invalid = [
            "{\"event\":\"E\",\"properties\":{\"time\":1764396400,\"distinct_id\":\"u\",\"$insert_id\":\"a\",\"s\":\"\u{1}\"}}",
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"u","$insert_id":"a","n":01}}"#,
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"u","$insert_id":"a","n":1.}}"#,
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"u","$insert_id":"a","n":-}}"#,
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"u","$insert_id":"a","s":"\x"}}"#,
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"u","$insert_id":"a","s":"\u12g4"}}"#,
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"u","$insert_id":"a","t":tru}}"#,
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"u","$insert_id":"a",}}"#,
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"u","$insert_id":"a"}} x"#,
            r#"{"event":"E","properties":{"time":1764396400,"distinct_id":"u","$insert_id":"a","a":[1,]}}"#,
        ];
        for text in invalid {
            assert_eq!(accept_fast(text, now_ms), None, "{text}");
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
        }
    }
}
