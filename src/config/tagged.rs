//! `type`-tagged tables (`[warehouses.<name>]`, `[destinations.<name>]`): the `type` key
//! chooses the kind, the other keys are the kind's own, and an error keeps its key path.

use serde::Deserialize;

/// Marks the key path inside a `type`-tagged table in an error message
/// (`MARK path MARK message`): serde's tagged enums lose the path, so [`tagged_fields`] keeps
/// it and [`crate::config::Config::parse`] joins it to the outer one.
pub(crate) const INNER_PATH: char = '\u{1f}';

/// Splits a `type`-tagged table into its type (one of `types`) and its other keys.
pub(crate) fn tagged<'de, D: serde::Deserializer<'de>>(
    d: D,
    types: &'static [&'static str],
) -> Result<(String, toml::Value), D::Error> {
    use serde::de::Error;
    let mut table = toml::Table::deserialize(d)?;
    let kind = match table.remove("type") {
        Some(toml::Value::String(k)) if types.contains(&k.as_str()) => k,
        Some(toml::Value::String(k)) => return Err(D::Error::unknown_variant(&k, types)),
        Some(_) => {
            return Err(D::Error::custom(format!(
                "`type` must be a string, one of {}",
                types.join(", ")
            )))
        }
        None => return Err(D::Error::missing_field("type")),
    };
    Ok((kind, toml::Value::Table(table)))
}

/// Deserializes the keys of a `type`-tagged table, keeping the key path of an error.
pub(crate) fn tagged_fields<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(
    rest: toml::Value,
) -> Result<T, D::Error> {
    use serde::de::Error;
    serde_path_to_error::deserialize(rest).map_err(|e| {
        let path = e.path().to_string();
        D::Error::custom(format!("{INNER_PATH}{path}{INNER_PATH}{}", e.into_inner()))
    })
}
