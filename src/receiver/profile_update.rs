//! One `/engage` or `/groups` update read and validated: what it targets, its one operation,
//! its token, after Mixpanel's ingestion reference. Used for each update of a request
//! (`profiles`) and again when the logs are replayed at start (`profile_state`).

use super::*;

/// Which profiles an update is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ProfileKind {
    /// `/engage`.
    Users,
    /// `/groups`.
    Groups,
}

/// One profile operation with its argument.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Op {
    Set(Properties),
    SetOnce(Properties),
    Add(Properties),
    Union(Properties),
    Append(Properties),
    Remove(Properties),
    Unset(Vec<String>),
    Delete,
}

/// The profile an update is for.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Target {
    User(String),
    Group { key: String, id: String },
}

/// A validated update.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Update {
    pub(super) target: Target,
    pub(super) op: Op,
    /// `$ignore_time`: leave `$last_seen` alone.
    pub(super) ignore_time: bool,
    /// `$time` in milliseconds, if the update carried one.
    pub(super) time_ms: Option<i64>,
}

/// List and object property values: at most 256 KB on a profile.
const MAX_VALUE_BYTES: usize = 256 * 1024;
/// Object property values: nesting depth at most 3.
const MAX_OBJECT_DEPTH: usize = 3;

const USER_OPS: [&str; 8] = [
    "$set",
    "$set_once",
    "$add",
    "$union",
    "$append",
    "$remove",
    "$unset",
    "$delete",
];
/// The group operations with a documented endpoint of their own (the batch page's prose
/// also names `$add`, which no group endpoint documents).
const GROUP_OPS: [&str; 6] = [
    "$set",
    "$set_once",
    "$union",
    "$remove",
    "$unset",
    "$delete",
];
/// Fields an update may carry besides its identity and its operation.
const META_FIELDS: [&str; 6] = [
    "$ignore_time",
    "$ignore_alias",
    "$ip",
    "$time",
    "$latitude",
    "$longitude",
];

/// How an update's `$token` is checked.
pub(super) enum TokenCheck {
    /// Any non-empty token.
    Any,
    /// Exactly this project token.
    Equals(String),
}

impl TokenCheck {
    pub(super) fn for_config(config: &ReceiverConfig) -> Self {
        let configured = match (&config.project_token, &config.auth) {
            (Some(token), _) | (None, ReceiverAuth::ProjectToken { token }) => Some(token),
            (None, _) => None,
        };
        configured.map_or(TokenCheck::Any, |t| TokenCheck::Equals(t.clone()))
    }
}

macro_rules! refuse {
    ($field:expr, $($message:tt)+) => {
        return Err(fail($field, format!($($message)+)))
    };
}

/// Validates one update for `kind` (used again when replaying the logs).
pub(super) fn parse_update(
    kind: ProfileKind,
    record: &Value,
    token: &TokenCheck,
) -> Result<Update, Failure> {
    let Some(update) = record.as_object() else {
        refuse!("update", "each update must be a JSON object")
    };
    let sent_token = match update.get("$token") {
        Some(Value::String(t)) if !t.trim().is_empty() => t,
        _ => refuse!("$token", "$token, missing or empty"),
    };
    if let TokenCheck::Equals(expected) = token {
        if !constant_time_eq(sent_token, expected) {
            refuse!("$token", "$token is not this project's token");
        }
    }
    let target = match kind {
        ProfileKind::Users => Target::User(profile_id(update, "$distinct_id")?),
        ProfileKind::Groups => {
            let key = match update.get("$group_key") {
                Some(Value::String(k)) if !k.trim().is_empty() => k.clone(),
                _ => refuse!("$group_key", "$group_key, missing or empty"),
            };
            Target::Group {
                key,
                id: profile_id(update, "$group_id")?,
            }
        }
    };
    let (ops, identity): (&[&'static str], &[&str]) = match kind {
        ProfileKind::Users => (&USER_OPS[..], &["$token", "$distinct_id"][..]),
        ProfileKind::Groups => (&GROUP_OPS[..], &["$token", "$group_key", "$group_id"][..]),
    };
    let mut operation: Option<(&'static str, &Value)> = None;
    for (name, value) in update {
        if identity.contains(&name.as_str()) || META_FIELDS.contains(&name.as_str()) {
            continue;
        }
        let Some(&op) = ops.iter().find(|&&op| op == name.as_str()) else {
            if USER_OPS.contains(&name.as_str()) {
                refuse!("update", "{name} is not a group profile operation");
            }
            refuse!("update", "unknown field {name:?}");
        };
        if let Some((first, _)) = operation {
            refuse!(
                "update",
                "more than one operation ({first} and {op}); send one operation per update"
            );
        }
        operation = Some((op, value));
    }
    let Some((name, value)) = operation else {
        refuse!("update", "no operation: expected one of {}", ops.join(", "))
    };
    let op = parse_op(name, value)?;
    let flag = |field: &'static str| match update.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(fail(field, format!("{field} must be true or false"))),
    };
    let ignore_time = flag("$ignore_time")?;
    flag("$ignore_alias")?;
    if let Some(ip) = update.get("$ip") {
        if !(ip.is_string() || ip.is_number()) {
            refuse!("$ip", "$ip must be an IP address string (or 0)");
        }
    }
    for field in ["$latitude", "$longitude"] {
        if update.get(field).is_some_and(|v| !v.is_number()) {
            refuse!("update", "{field} must be a number");
        }
    }
    let time_ms = match update.get("$time") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64().map(|t| time_ms(t).round() as i64),
        Some(_) => refuse!("$time", "$time must be a number (seconds or milliseconds)"),
    };
    Ok(Update {
        target,
        op,
        ignore_time,
        time_ms,
    })
}

/// `$distinct_id` or `$group_id`: a non-empty string or a number.
fn profile_id(update: &Map<String, Value>, field: &'static str) -> Result<String, Failure> {
    match update.get(field).and_then(id_string) {
        Some(id) if !id.trim().is_empty() => Ok(id),
        _ => refuse!(field, "{field}, missing or empty"),
    }
}

fn parse_op(name: &'static str, value: &Value) -> Result<Op, Failure> {
    if name == "$delete" {
        // The value is ignored ("null" in the docs, "" from the official libraries).
        return Ok(Op::Delete);
    }
    if name == "$unset" {
        let names = value.as_array().and_then(|names| {
            names
                .iter()
                .map(|n| n.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        });
        return match names {
            Some(names) => Ok(Op::Unset(names)),
            None => refuse!(name, "$unset must be a list of property names"),
        };
    }
    let Value::Object(props) = value else {
        refuse!(name, "{name} must be a JSON object of properties")
    };
    for (property, value) in props {
        if property.is_empty() {
            refuse!(name, "property names must not be empty");
        }
        match (name, value) {
            ("$add", Value::Number(_)) | ("$union", Value::Array(_)) => {}
            ("$add", _) => refuse!(name, "$add needs numbers; {property:?} is not one"),
            ("$union", _) => refuse!(name, "$union needs lists; {property:?} is not one"),
            _ => {}
        }
        if matches!(value, Value::Array(_) | Value::Object(_)) {
            let bytes = serde_json::to_vec(value).map_or(0, |v| v.len());
            if bytes > MAX_VALUE_BYTES {
                refuse!(
                    name,
                    "{property:?} is {bytes} bytes; list and object values are limited to 256 KB"
                );
            }
            if depth(value) > MAX_OBJECT_DEPTH {
                refuse!(
                    name,
                    "{property:?} nests objects deeper than {MAX_OBJECT_DEPTH} levels"
                );
            }
        }
    }
    let props = props.clone();
    Ok(match name {
        "$set" => Op::Set(props),
        "$set_once" => Op::SetOnce(props),
        "$add" => Op::Add(props),
        "$union" => Op::Union(props),
        "$append" => Op::Append(props),
        _ => Op::Remove(props),
    })
}

/// Nesting depth of objects in `value` (a flat object is 1).
fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
