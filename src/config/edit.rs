//! Edits of `wharf.toml` made by the console: a warehouse or destination table set or
//! removed, a sync added, replaced or removed. The file keeps its comments and layout
//! (`toml_edit`); every edit is checked by the same loader as the CLI
//! ([`Config::parse_with`]) before anything is written, and a refused edit leaves the file as
//! it was. Secrets typed into the console go to the secrets file ([`super::secrets`]); the
//! config gets `${NAME}` references to them.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use serde_json::Value;
use toml_edit::{DocumentMut, Item, Table};

use super::fields::Field;
use super::secrets::{self, Secrets};
use super::{Config, ConfigError};

/// Why an edit was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditError {
    /// The edit is wrong: `field` (relative to the edited table, e.g. `mapping.time_column`)
    /// is what it concerns, when known.
    Invalid {
        /// What is wrong.
        message: String,
        /// The key it concerns.
        field: Option<String>,
    },
    /// No such entry.
    NotFound(String),
    /// It conflicts with the file as it is (a name in use, a stale version).
    Conflict(String),
    /// The file could not be read or written.
    Io(String),
}

impl std::fmt::Display for EditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EditError::Invalid { message, .. } => f.write_str(message),
            EditError::NotFound(m) | EditError::Conflict(m) | EditError::Io(m) => f.write_str(m),
        }
    }
}

fn invalid(message: impl Into<String>, field: Option<&str>) -> EditError {
    EditError::Invalid {
        message: message.into(),
        field: field.map(str::to_string),
    }
}

/// A config file opened for one edit: its text as read, the document and its secrets.
pub struct Edit {
    path: PathBuf,
    text: String,
    /// The document being edited.
    pub doc: DocumentMut,
    /// The secrets being edited.
    pub secrets: Secrets,
    secrets_changed: bool,
}

/// The sections whose entries are named tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `[warehouses.<name>]`.
    Warehouses,
    /// `[destinations.<name>]`.
    Destinations,
}

impl Section {
    /// Its key in `wharf.toml`.
    pub fn key(self) -> &'static str {
        match self {
            Section::Warehouses => "warehouses",
            Section::Destinations => "destinations",
        }
    }
}

/// Whether `name` may name a warehouse, destination or sync (it also goes into secret names
/// and addresses).
pub fn check_name(name: &str) -> Result<(), EditError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            format!("`{name}` is not a name: use 1-64 letters, digits, `_` or `-`"),
            Some("name"),
        ))
    }
}

impl Edit {
    /// Reads the config at `path` and its secrets.
    pub fn open(path: &Path) -> Result<Edit, EditError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EditError::Io(format!("{}: cannot read: {e}", path.display())))?;
        let doc: DocumentMut = text
            .parse()
            .map_err(|e| EditError::Io(format!("{}: not TOML: {e}", path.display())))?;
        let secrets = secrets::load(path).map_err(|e| EditError::Io(e.to_string()))?;
        Ok(Edit {
            path: path.to_path_buf(),
            text,
            doc,
            secrets,
            secrets_changed: false,
        })
    }

    /// The table `[<section>.<name>]`, if there is one.
    pub fn entry(&self, section: Section, name: &str) -> Option<&Table> {
        self.doc
            .get(section.key())
            .and_then(Item::as_table)
            .and_then(|t| t.get(name))
            .and_then(Item::as_table)
    }

    /// The names and tables of a section.
    pub fn entries(&self, section: Section) -> Vec<(String, &Table)> {
        self.doc
            .get(section.key())
            .and_then(Item::as_table)
            .map(|t| {
                t.iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v.as_table()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets `[<section>.<name>]`'s `type = kind` and `settings`: a key given a value is set,
    /// a key given `null` or `""` removed, a key not given kept (so tables the form does not
    /// show, e.g. a `service_account`, stay as written) — unless the kind changes, which starts
    /// the table afresh. Each of `secret_values` (the kind's secret `fields`) goes to the
    /// secrets file unless it is a `${ENV}` reference; one left empty keeps its value. New keys
    /// are written in the order of `fields`, then by name.
    pub fn set_entry(
        &mut self,
        section: Section,
        name: &str,
        kind: &str,
        fields: &[Field],
        settings: &serde_json::Map<String, Value>,
        secret_values: &serde_json::Map<String, Value>,
    ) -> Result<(), EditError> {
        let secret_keys: Vec<&str> = fields.iter().filter(|f| f.secret).map(|f| f.name).collect();
        let order: Vec<&str> = fields.iter().map(|f| f.name).collect();
        check_name(name)?;
        let same_kind = self
            .entry(section, name)
            .and_then(|t| t.get("type"))
            .and_then(Item::as_str)
            == Some(kind);
        let root = self.doc.as_table_mut();
        if !root.contains_key(section.key()) {
            let mut t = Table::new();
            t.set_implicit(true);
            root.insert(section.key(), Item::Table(t));
        }
        let Some(tables) = root.get_mut(section.key()).and_then(Item::as_table_mut) else {
            return Err(invalid(
                format!("`{}` in the config is not a table", section.key()),
                None,
            ));
        };
        if !tables.contains_key(name) {
            tables.insert(name, Item::Table(Table::new()));
        }
        let Some(table) = tables.get_mut(name).and_then(Item::as_table_mut) else {
            return Err(invalid(
                format!("`{}.{name}` in the config is not a table", section.key()),
                None,
            ));
        };
        if !same_kind {
            table.clear();
        }
        table.insert("type", toml_edit::value(kind));
        let rank = |k: &str| order.iter().position(|o| *o == k).unwrap_or(order.len());
        let mut given: Vec<(&String, &Value)> = settings.iter().collect();
        given.sort_by_key(|(k, _)| (rank(k), (*k).clone()));
        for (k, v) in given {
            if k == "type" || secret_keys.contains(&k.as_str()) {
                continue;
            }
            match to_item(v, k)? {
                Some(item) => {
                    table.insert(k, item);
                }
                None => {
                    table.remove(k);
                }
            }
        }
        for (k, v) in secret_values {
            if !secret_keys.contains(&k.as_str()) {
                return Err(invalid(
                    format!("`{k}` is not a secret of `{kind}`"),
                    Some(k),
                ));
            }
            let Some(text) = v.as_str().filter(|t| !t.is_empty()) else {
                continue;
            };
            let reference = if text.starts_with("${") && text.ends_with('}') {
                text.to_string()
            } else {
                let var = secret_name(section, name, k);
                self.secrets.set(&var, text);
                self.secrets_changed = true;
                format!("${{{var}}}")
            };
            table.insert(k, toml_edit::value(reference));
        }
        Ok(())
    }

    /// Removes `[<section>.<name>]` and its secrets.
    pub fn remove_entry(&mut self, section: Section, name: &str) -> Result<(), EditError> {
        let removed = self
            .doc
            .get_mut(section.key())
            .and_then(Item::as_table_mut)
            .and_then(|t| t.remove(name));
        if removed.is_none() {
            return Err(EditError::NotFound(format!(
                "no {} named `{name}`",
                &section.key()[..section.key().len() - 1]
            )));
        }
        self.secrets
            .remove_prefixed(&secret_name(section, name, ""));
        self.secrets_changed = true;
        Ok(())
    }

    fn syncs_mut(&mut self) -> Result<&mut toml_edit::ArrayOfTables, EditError> {
        let root = self.doc.as_table_mut();
        if !root.contains_key("syncs") {
            root.insert(
                "syncs",
                Item::ArrayOfTables(toml_edit::ArrayOfTables::new()),
            );
        }
        root.get_mut("syncs")
            .and_then(Item::as_array_of_tables_mut)
            .ok_or_else(|| {
                invalid(
                    "`syncs` in the config is not a list of [[syncs]] tables",
                    None,
                )
            })
    }

    fn sync_index(&self, name: &str) -> Option<usize> {
        self.doc
            .get("syncs")
            .and_then(Item::as_array_of_tables)?
            .iter()
            .position(|t| t.get("name").and_then(Item::as_str) == Some(name))
    }

    /// The sync `name` as JSON (its `[[syncs]]` table) and its version.
    pub fn sync(&self, name: &str) -> Result<(Value, String), EditError> {
        let i = self
            .sync_index(name)
            .ok_or_else(|| EditError::NotFound(format!("no sync named `{name}`")))?;
        let table = self
            .doc
            .get("syncs")
            .and_then(Item::as_array_of_tables)
            .and_then(|a| a.get(i))
            .ok_or_else(|| EditError::NotFound(format!("no sync named `{name}`")))?;
        let text = table_text(table);
        let parsed: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| EditError::Io(e.to_string()))?;
        let json = serde_json::to_value(parsed).map_err(|e| EditError::Io(e.to_string()))?;
        Ok((json, version_of(&text)))
    }

    /// Adds the sync `draft` (a `[[syncs]]` table as JSON).
    pub fn add_sync(&mut self, draft: &Value) -> Result<String, EditError> {
        let (name, table) = sync_table(draft)?;
        if self.sync_index(&name).is_some() {
            return Err(EditError::Conflict(format!(
                "a sync named `{name}` exists; choose another name"
            )));
        }
        self.syncs_mut()?.push(table);
        Ok(name)
    }

    /// Replaces the sync `name` with `draft`, if its version is still `version`.
    pub fn replace_sync(
        &mut self,
        name: &str,
        draft: &Value,
        version: &str,
    ) -> Result<(), EditError> {
        let (_, current) = self.sync(name)?;
        if current != version {
            return Err(EditError::Conflict(format!(
                "sync `{name}` was changed since you opened it (by another tab or person); reload it and make your change again"
            )));
        }
        let (new_name, mut table) = sync_table(draft)?;
        if new_name != name && self.sync_index(&new_name).is_some() {
            return Err(EditError::Conflict(format!(
                "a sync named `{new_name}` exists; choose another name"
            )));
        }
        let i = self
            .sync_index(name)
            .ok_or_else(|| EditError::NotFound(format!("no sync named `{name}`")))?;
        let syncs = self.syncs_mut()?;
        if let Some(old) = syncs.get_mut(i) {
            // Keep the comments written above the old table.
            table.set_position(old.position());
            *table.decor_mut() = old.decor().clone();
            *old = table;
        }
        Ok(())
    }

    /// Removes the sync `name`.
    pub fn remove_sync(&mut self, name: &str) -> Result<(), EditError> {
        let i = self
            .sync_index(name)
            .ok_or_else(|| EditError::NotFound(format!("no sync named `{name}`")))?;
        self.syncs_mut()?.remove(i);
        Ok(())
    }

    /// The edited config, checked by the loader; nothing is written.
    pub fn check(&self) -> Result<Config, EditError> {
        let text = self.doc.to_string();
        Config::parse_with(&text, &self.path.display().to_string(), &self.secrets)
            .map_err(|e| from_config_error(&e))
    }

    /// Checks the edited config and writes it (the secrets first), unless the file changed
    /// since it was read. Returns the text it replaced, to put back with [`restore`] when the
    /// new one cannot be loaded after all.
    pub fn save(self) -> Result<Saved, EditError> {
        self.check()?;
        let now = std::fs::read_to_string(&self.path)
            .map_err(|e| EditError::Io(format!("{}: cannot read: {e}", self.path.display())))?;
        if now != self.text {
            return Err(EditError::Conflict(format!(
                "{} was changed while this edit was made; try again",
                self.path.display()
            )));
        }
        let old_secrets = secrets::load(&self.path).map_err(|e| EditError::Io(e.to_string()))?;
        if self.secrets_changed {
            secrets::save(&self.path, &self.secrets)
                .map_err(|e| EditError::Io(format!("cannot write the secrets file: {e}")))?;
        }
        write_atomically(&self.path, &self.doc.to_string())?;
        Ok(Saved {
            path: self.path,
            text: self.text,
            secrets: self.secrets_changed.then_some(old_secrets),
        })
    }
}

/// What [`Edit::save`] replaced.
pub struct Saved {
    path: PathBuf,
    text: String,
    secrets: Option<Secrets>,
}

impl Saved {
    /// Puts the replaced config (and secrets) back.
    pub fn restore(self) -> Result<(), EditError> {
        if let Some(s) = &self.secrets {
            secrets::save(&self.path, s)
                .map_err(|e| EditError::Io(format!("cannot write the secrets file: {e}")))?;
        }
        write_atomically(&self.path, &self.text)
    }
}

fn write_atomically(path: &Path, text: &str) -> Result<(), EditError> {
    let io = |e: std::io::Error| EditError::Io(format!("{}: cannot write: {e}", path.display()));
    let tmp = path.with_extension(format!("toml.{}.new", std::process::id()));
    std::fs::write(&tmp, text).map_err(io)?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// The secrets-file name of `key` of `[<section>.<name>]` (`""`: the prefix of them all).
fn secret_name(section: Section, name: &str, key: &str) -> String {
    let up = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    format!("WHARF_{}_{}__{}", up(section.key()), up(name), up(key))
}

fn table_text(table: &Table) -> String {
    let mut doc = DocumentMut::new();
    for (k, v) in table.iter() {
        doc.insert(k, v.clone());
    }
    doc.to_string()
}

/// A stable version of a table's text (a changed sync gets another).
fn version_of(text: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The `[[syncs]]` table of a draft, and its name.
fn sync_table(draft: &Value) -> Result<(String, Table), EditError> {
    let Some(obj) = draft.as_object() else {
        return Err(invalid("a sync must be a JSON object", None));
    };
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("give the sync a name", Some("name")))?
        .to_string();
    check_name(&name)?;
    let mut table = Table::new();
    // In the order people write a sync (README's), the rest by name; `mapping` last, as its
    // sub-table comes after the sync's own keys.
    const ORDER: &[&str] = &[
        "name",
        "warehouse",
        "table",
        "query",
        "table_type",
        "mode",
        "destinations",
        "schedule",
        "primary_key",
    ];
    let rank = |k: &str| match ORDER.iter().position(|o| *o == k) {
        Some(i) => i,
        None if k == "mapping" => ORDER.len() + 1,
        None => ORDER.len(),
    };
    let mut keys: Vec<(&String, &Value)> = obj.iter().collect();
    keys.sort_by_key(|(k, _)| (rank(k), (*k).clone()));
    for (k, v) in keys {
        if let Some(item) = to_item(v, k)? {
            table.insert(k, item);
        }
    }
    Ok((name, table))
}

/// A JSON value as a TOML item: objects become sub-tables; null and "" are left out.
fn to_item(v: &Value, key: &str) -> Result<Option<Item>, EditError> {
    Ok(match v {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::Object(o) => {
            let mut t = Table::new();
            for (k, v) in o {
                if let Some(item) = to_item(v, &format!("{key}.{k}"))? {
                    t.insert(k, item);
                }
            }
            if t.is_empty() {
                None
            } else {
                Some(Item::Table(t))
            }
        }
        other => Some(Item::Value(to_value(other, key)?)),
    })
}

fn to_value(v: &Value, key: &str) -> Result<toml_edit::Value, EditError> {
    Ok(match v {
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.into(),
            (None, Some(f)) => f.into(),
            _ => return Err(invalid(format!("`{n}` is out of range"), Some(key))),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(a) => {
            let mut out = toml_edit::Array::new();
            for (i, v) in a.iter().enumerate() {
                out.push(to_value(v, &format!("{key}[{i}]"))?);
            }
            toml_edit::Value::Array(out)
        }
        Value::Object(o) => {
            let mut t = toml_edit::InlineTable::new();
            for (k, v) in o {
                t.insert(k, to_value(v, &format!("{key}.{k}"))?);
            }
            toml_edit::Value::InlineTable(t)
        }
        Value::Null => return Err(invalid("null is not a value", Some(key))),
    })
}

/// A loader error as an edit error: `syncs[3].mapping.time_column` concerns the form's
/// `mapping.time_column`, `warehouses.demo.path` its `path`.
fn from_config_error(e: &ConfigError) -> EditError {
    let key = e.key.as_str();
    let field = if let Some(rest) = key.strip_prefix("syncs[") {
        rest.split_once("].").map(|(_, f)| f.to_string())
    } else if let Some(rest) = key
        .strip_prefix("warehouses.")
        .or_else(|| key.strip_prefix("destinations."))
    {
        rest.split_once('.').map(|(_, f)| f.to_string())
    } else {
        None
    };
    EditError::Invalid {
        message: format!("{}: {}", e.key, e.message),
        field,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"# my syncs
state_dir = ".wharf"

[warehouses.wh]   # the demo server
type = "postgres"
host = "127.0.0.1"
database = "test"
user = "postgres"

[destinations.out]
type = "file"
path = "out.ndjson"

# the first sync
[[syncs]]
name = "a"
warehouse = "wh"
table = "t"
table_type = "events"
mode = "append"
destinations = ["out"]
[syncs.mapping]
event_name = "e"
time_column = "ts"
"#;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wharf.toml");
        std::fs::write(&path, CONFIG).unwrap();
        (dir, path)
    }

    #[test]
    fn a_sync_added_keeps_the_files_comments_and_loads() {
        let (_d, path) = setup();
        let mut e = Edit::open(&path).unwrap();
        let draft = serde_json::json!({
            "name": "b", "warehouse": "wh", "table": "t2", "table_type": "events",
            "mode": "append", "destinations": ["out"], "schedule": "hourly",
            "mapping": {"event_name": "x", "time_column": "ts", "user_id_column": ""}
        });
        assert_eq!(e.add_sync(&draft).unwrap(), "b");
        e.save().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(CONFIG), "{text}");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.syncs.len(), 2);
        let e = Edit::open(&path).unwrap();
        let (json, _) = e.sync("b").unwrap();
        assert_eq!(json["mapping"]["time_column"], "ts");
        assert!(json["mapping"].get("user_id_column").is_none());
    }

    #[test]
    fn a_stale_version_a_bad_field_and_a_taken_name_are_refused_and_change_nothing() {
        let (_d, path) = setup();
        let e = Edit::open(&path).unwrap();
        let (mut draft, version) = e.sync("a").unwrap();
        draft["schedule"] = "daily".into();
        let mut e1 = Edit::open(&path).unwrap();
        e1.replace_sync("a", &draft, &version).unwrap();
        e1.save().unwrap();
        let after_first = std::fs::read_to_string(&path).unwrap();
        assert!(after_first.contains("# the first sync"));
        let mut e2 = Edit::open(&path).unwrap();
        draft["schedule"] = "weekly".into();
        assert!(matches!(
            e2.replace_sync("a", &draft, &version),
            Err(EditError::Conflict(_))
        ));
        let mut e3 = Edit::open(&path).unwrap();
        draft["name"] = "c".into();
        draft["mode"] = "sideways".into();
        e3.add_sync(&draft).unwrap();
        match e3.save() {
            Err(EditError::Invalid { field, .. }) => assert_eq!(field.as_deref(), Some("mode")),
            other => panic!("{:?}", other.err()),
        }
        let mut e4 = Edit::open(&path).unwrap();
        draft["name"] = "a".into();
        assert!(matches!(e4.add_sync(&draft), Err(EditError::Conflict(_))));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), after_first);
    }

    #[test]
    fn secrets_go_to_the_secrets_file_and_stay_when_left_empty() {
        let (dir, path) = setup();
        let set_pg = |host: &str, secrets: serde_json::Value| {
            let mut e = Edit::open(&path).unwrap();
            let settings = serde_json::json!({"host": host, "database": "d", "user": "u"});
            e.set_entry(
                Section::Warehouses,
                "pg",
                "postgres",
                crate::warehouse::postgres::config::FIELDS,
                settings.as_object().unwrap(),
                secrets.as_object().unwrap(),
            )
            .unwrap();
            e.save().unwrap();
        };
        set_pg("127.0.0.1", serde_json::json!({"password": "hunter2"}));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("${WHARF_WAREHOUSES_PG__PASSWORD}"), "{text}");
        let stored = std::fs::read_to_string(dir.path().join("wharf.secrets.toml")).unwrap();
        assert!(stored.contains("hunter2"));
        let config = Config::load(&path).unwrap();
        match &config.warehouses["pg"] {
            crate::config::WarehouseConfig::Postgres(p) => {
                assert_eq!(p.password.as_ref().unwrap().expose(), "hunter2")
            }
            other => panic!("{other:?}"),
        }
        // Edited without the password: it stays.
        set_pg("localhost", serde_json::json!({}));
        let config = Config::load(&path).unwrap();
        match &config.warehouses["pg"] {
            crate::config::WarehouseConfig::Postgres(p) => {
                assert_eq!(p.host, "localhost");
                assert_eq!(p.password.as_ref().unwrap().expose(), "hunter2")
            }
            other => panic!("{other:?}"),
        }
        let mut e = Edit::open(&path).unwrap();
        e.remove_entry(Section::Warehouses, "pg").unwrap();
        e.save().unwrap();
        let stored = std::fs::read_to_string(dir.path().join("wharf.secrets.toml")).unwrap();
        assert!(!stored.contains("hunter2"));
    }
}
