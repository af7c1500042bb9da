//! [`Invalid`]: a connector's verdict on its own `wharf.toml` table.

/// A value a connector's config refuses: the key inside the connector's table (empty for the
/// table itself) and what to write instead. [`crate::config::Config::parse`] adds the file
/// and the table's own key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The key inside the table, e.g. `host` (empty: the table as a whole).
    pub key: String,
    /// What is wrong and what to write.
    pub message: String,
}

impl Invalid {
    /// The key `key` is refused with `message`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Refuses a table that sets more than one of `keys` (as `key`), or none of them (with
/// `none`, where one is needed): the connectors whose credentials come in several forms say
/// which one to keep.
pub fn at_most_one(
    keys: &[(&'static str, bool)],
    key: &'static str,
    none: Option<Invalid>,
) -> Result<(), Invalid> {
    match keys.iter().filter(|(_, set)| *set).count() {
        0 => none.map_or(Ok(()), Err),
        1 => Ok(()),
        _ => {
            let mut names: Vec<_> = keys.iter().map(|(k, _)| format!("`{k}`")).collect();
            let last = names.pop().unwrap_or_default();
            Err(Invalid::new(
                key,
                format!("set one of {} and {last}, not several", names.join(", ")),
            ))
        }
    }
}
