//! Mixpanel's per-event validation rules for `/import` (strict mode), written from
//! Mixpanel's documentation independently of wharf's own mapping, so the two cannot drift
//! into agreeing on a mistake.

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

/// Mixpanel's strict-mode checks for one record.
pub(super) fn validate(record: &Value, json_len: usize, now_ms: f64) -> Result<(), Failure> {
    const TIME: &str = "properties.time";
    const DISTINCT_ID: &str = "properties.distinct_id";
    const INSERT_ID: &str = "properties.$insert_id";
    let Some(event) = record.as_object() else {
        reject!("event", "each record must be a JSON object")
    };
    match event.get("event") {
        Some(Value::String(name)) if !name.is_empty() => {}
        Some(Value::String(_)) => reject!("event", "event name must not be empty"),
        None | Some(Value::Null) => reject!("event", "event name is required"),
        Some(_) => reject!("event", "event name must be a string"),
    }
    let props: &Map<String, Value> = match event.get("properties") {
        Some(Value::Object(props)) => props,
        None | Some(Value::Null) => reject!("properties", "properties is required"),
        Some(_) => reject!("properties", "properties must be a JSON object"),
    };
    let time = match props.get("time") {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        None | Some(Value::Null) => reject!(TIME, "properties.time is required"),
        Some(_) => reject!(TIME, "properties.time must be a number"),
    };
    let ms = time_ms(time);
    if ms.is_nan() || ms < MIN_TIME_MS {
        reject!(TIME, "time {time} is before 1971-01-01T00:00:00Z");
    }
    if ms > now_ms + MAX_FUTURE_MS {
        reject!(TIME, "time {time} is more than 1 hour in the future");
    }
    let distinct_id = match props.get("distinct_id") {
        None | Some(Value::Null) => reject!(DISTINCT_ID, "properties.distinct_id is required"),
        Some(value) => match id_string(value) {
            Some(id) => id,
            None => reject!(DISTINCT_ID, "distinct_id must be a string or a number"),
        },
    };
    let normalized = distinct_id.trim().to_ascii_lowercase();
    if BANNED_DISTINCT_IDS
        .split(' ')
        .any(|banned| banned == normalized)
    {
        reject!(
            DISTINCT_ID,
            "distinct_id {distinct_id:?} is an invalid placeholder value"
        );
    }
    match props.get("$insert_id") {
        Some(Value::String(id)) if id.is_empty() || id.len() > 36 => {
            reject!(INSERT_ID, "$insert_id must be 1 to 36 characters long")
        }
        Some(Value::String(id)) if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
            reject!(INSERT_ID, "$insert_id may only contain [A-Za-z0-9-]")
        }
        Some(Value::String(_)) => {}
        None | Some(Value::Null) => reject!(INSERT_ID, "$insert_id is required"),
        Some(_) => reject!(INSERT_ID, "$insert_id must be a string"),
    }
    if props.len() > MAX_PROPERTIES {
        reject!(
            "properties",
            "{} properties; the maximum is {MAX_PROPERTIES}",
            props.len()
        );
    }
    if json_len >= MAX_EVENT_BYTES {
        reject!(
            "properties",
            "event is {json_len} bytes; events must be under 1 MB"
        );
    }
    Ok(())
}

/// Seconds or milliseconds since the epoch (values > 1e11 are milliseconds) to milliseconds.
pub(super) fn time_ms(time: f64) -> f64 {
    if time > 1e11 {
        time
    } else {
        time * 1000.0
    }
}

pub(super) fn id_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Mixpanel's dedup key (event, distinct_id, time in ms, $insert_id) hashed to 128 bits,
/// plus the distinct_id's string form.
pub(super) fn stored_key(record: &Value) -> Option<(u128, String)> {
    let event = record.get("event")?.as_str()?;
    let props = record.get("properties")?.as_object()?;
    let time = time_ms(props.get("time")?.as_f64()?).round() as i64;
    let distinct_id = id_string(props.get("distinct_id")?)?;
    let insert_id = props.get("$insert_id")?.as_str()?;
    let mut buf = Vec::with_capacity(event.len() + distinct_id.len() + insert_id.len() + 32);
    for part in [event, distinct_id.as_str(), insert_id] {
        buf.extend_from_slice(&(part.len() as u64).to_le_bytes());
        buf.extend_from_slice(part.as_bytes());
    }
    buf.extend_from_slice(&time.to_le_bytes());
    Some((xxhash_rust::xxh3::xxh3_128(&buf), distinct_id))
}
