//! User and group profiles as Mixpanel keeps them, built by applying accepted updates in
//! order. Every accepted update is appended to a log (`engage.ndjson`, `groups.ndjson`) with
//! the time it was applied, and the logs are replayed at start, so the profiles survive a
//! restart on the same directory.

use std::collections::BTreeMap;

use super::ndjson_log::scan_ndjson;
use super::profile_update::{parse_update, Op, ProfileKind, Target, TokenCheck, Update};
use super::*;

/// The update log of `kind`'s profiles.
fn log_file(kind: ProfileKind) -> &'static str {
    match kind {
        ProfileKind::Users => "engage.ndjson",
        ProfileKind::Groups => "groups.ndjson",
    }
}

/// Properties of one profile.
pub type Properties = Map<String, Value>;
/// User profiles: `distinct_id → properties`.
pub type UserProfiles = BTreeMap<String, Properties>;
/// Group profiles: `group_key → group_id → properties`.
pub type GroupProfiles = BTreeMap<String, BTreeMap<String, Properties>>;

/// Mixpanel: "Each User Profile can contain up to 2000 properties".
const MAX_PROFILE_PROPERTIES: usize = 2000;

/// The profiles and their logs.
pub(super) struct ProfileState {
    pub(super) users: UserProfiles,
    pub(super) groups: GroupProfiles,
    dir: PathBuf,
    logs: [File; 2],
    logged: [u64; 2],
}

fn slot(kind: ProfileKind) -> usize {
    match kind {
        ProfileKind::Users => 0,
        ProfileKind::Groups => 1,
    }
}

impl ProfileState {
    /// Replays the logs under `dir`.
    pub(super) fn open(dir: &Path) -> Result<Self, ReceiverError> {
        let open = |kind: ProfileKind| {
            let path = dir.join(log_file(kind));
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_error(&path))
        };
        let mut state = ProfileState {
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            dir: dir.to_path_buf(),
            logs: [open(ProfileKind::Users)?, open(ProfileKind::Groups)?],
            logged: [0, 0],
        };
        for kind in [ProfileKind::Users, ProfileKind::Groups] {
            state.replay(kind)?;
        }
        Ok(state)
    }

    fn replay(&mut self, kind: ProfileKind) -> Result<(), ReceiverError> {
        let path = self.dir.join(log_file(kind));
        let mut entries = Vec::new();
        scan_ndjson(&path, |entry| entries.push(entry))?;
        for (line, entry) in entries.iter().enumerate() {
            let applied_at = entry.get("applied_at_ms").and_then(Value::as_i64);
            let update = entry
                .get("update")
                .ok_or_else(|| "no update".to_string())
                .and_then(|u| parse_update(kind, u, &TokenCheck::Any).map_err(|f| f.message));
            match (update, applied_at) {
                (Ok(update), Some(at)) => {
                    // It was accepted once, so it applies the same way again.
                    let _ = self.apply(&update, at);
                }
                (Err(message), _) => {
                    tracing::warn!(path = %path.display(), line = line + 1, %message, "skipping unreadable profile update");
                }
                (Ok(_), None) => {
                    tracing::warn!(path = %path.display(), line = line + 1, "skipping profile update without applied_at_ms");
                }
            }
        }
        self.logged[slot(kind)] = entries.len() as u64;
        Ok(())
    }

    /// Updates accepted (and logged) so far for `kind`.
    pub(super) fn logged_updates(&self, kind: ProfileKind) -> u64 {
        self.logged[slot(kind)]
    }

    /// Appends accepted updates (`{"applied_at_ms":…,"update":…}` lines) in one write. When the
    /// write fails the in-memory state is rebuilt from the logs, so it never holds what the
    /// disk does not.
    pub(super) fn log(&mut self, kind: ProfileKind, lines: &[u8], count: u64) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let written = self.logs[slot(kind)].write_all(lines);
        match written {
            Ok(()) => self.logged[slot(kind)] += count,
            Err(_) => {
                self.users.clear();
                self.groups.clear();
                for kind in [ProfileKind::Users, ProfileKind::Groups] {
                    if let Err(e) = self.replay(kind) {
                        tracing::error!(error = %e, "could not reload profiles after a failed write");
                    }
                }
            }
        }
        written
    }

    /// Applies one validated update at `applied_at_ms`; refuses it when the profile would
    /// hold more than 2000 properties.
    pub(super) fn apply(&mut self, update: &Update, applied_at_ms: i64) -> Result<(), Failure> {
        match &update.target {
            Target::User(id) => {
                // Mixpanel keeps "Updated at" ($last_seen) unless $ignore_time is set; the
                // update's $time wins over the arrival time. Not kept for groups.
                let seen = (!update.ignore_time)
                    .then(|| last_seen(update.time_ms.unwrap_or(applied_at_ms)));
                apply_to(&mut self.users, id, &update.op, seen)
            }
            Target::Group { key, id } => {
                let groups = self.groups.entry(key.clone()).or_default();
                let applied = apply_to(groups, id, &update.op, None);
                if groups.is_empty() {
                    self.groups.remove(key);
                }
                applied
            }
        }
    }
}

/// `$last_seen`'s format: UTC without a zone, to the second (`2008-06-09T23:08:40`).
fn last_seen(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| Value::String(t.format("%Y-%m-%dT%H:%M:%S").to_string()))
        .unwrap_or(Value::Null)
}

pub(super) fn apply_to(
    profiles: &mut BTreeMap<String, Properties>,
    id: &str,
    op: &Op,
    last_seen: Option<Value>,
) -> Result<(), Failure> {
    if *op == Op::Delete {
        profiles.remove(id);
        return Ok(());
    }
    let existing = profiles.get(id);
    if existing.is_none() && matches!(op, Op::Unset(_) | Op::Remove(_)) {
        // Removing from a profile that does not exist creates nothing.
        return Ok(());
    }
    let mut props = existing.cloned().unwrap_or_default();
    match op {
        Op::Set(values) => {
            for (name, value) in values {
                props.insert(name.clone(), value.clone());
            }
        }
        Op::SetOnce(values) => {
            for (name, value) in values {
                props.entry(name.clone()).or_insert_with(|| value.clone());
            }
        }
        Op::Add(values) => {
            for (name, value) in values {
                // A missing (or non-numeric) property counts as 0.
                let sum = add(props.get(name), value);
                props.insert(name.clone(), sum);
            }
        }
        Op::Union(values) => {
            for (name, value) in values {
                with_list(&mut props, name, |list| {
                    for item in value.as_array().into_iter().flatten() {
                        if !list.contains(item) {
                            list.push(item.clone());
                        }
                    }
                });
            }
        }
        Op::Append(values) => {
            for (name, value) in values {
                with_list(&mut props, name, |list| list.push(value.clone()));
            }
        }
        Op::Remove(values) => {
            for (name, value) in values {
                if let Some(Value::Array(list)) = props.get_mut(name) {
                    list.retain(|item| item != value);
                }
            }
        }
        Op::Unset(names) => {
            for name in names {
                props.remove(name);
            }
        }
        Op::Delete => {}
    }
    if let Some(time) = last_seen {
        props.insert("$last_seen".into(), time);
    }
    if props.len() > MAX_PROFILE_PROPERTIES {
        return Err(fail(
            "update",
            format!(
                "the profile would have {} properties; the maximum is {MAX_PROFILE_PROPERTIES}",
                props.len()
            ),
        ));
    }
    profiles.insert(id.to_string(), props);
    Ok(())
}

/// Runs `change` on the list property `name`, created (or replacing a non-list value) if needed.
fn with_list(props: &mut Properties, name: &str, change: impl FnOnce(&mut Vec<Value>)) {
    let mut list = match props.remove(name) {
        Some(Value::Array(list)) => list,
        _ => Vec::new(),
    };
    change(&mut list);
    props.insert(name.to_string(), Value::Array(list));
}

/// `current + increment`, as an integer when both are integers and the sum fits.
fn add(current: Option<&Value>, increment: &Value) -> Value {
    let current = current.filter(|v| v.is_number());
    let as_int = |v: Option<&Value>| v.map_or(Some(0), Value::as_i64);
    if let (Some(a), Some(b)) = (as_int(current), increment.as_i64()) {
        if let Some(sum) = a.checked_add(b) {
            return Value::from(sum);
        }
    }
    let a = current.and_then(Value::as_f64).unwrap_or(0.0);
    let b = increment.as_f64().unwrap_or(0.0);
    serde_json::Number::from_f64(a + b).map_or(Value::Null, Value::Number)
}
