//! The secrets file beside a config: `<config stem>.secrets.toml` (e.g. `wharf.secrets.toml`),
//! a flat table `NAME = "value"`, readable by its owner only (mode 0600). `${NAME}` in
//! `wharf.toml` takes the environment variable `NAME` when it is set, else this file's entry.
//! The console writes the secrets typed into it here, and only `${NAME}` references into
//! `wharf.toml`, so the config can be shown, shared and versioned without them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::ConfigError;

/// The secrets of one config file, by name.
#[derive(Default, Clone)]
pub struct Secrets(BTreeMap<String, String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only, never values.
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Secrets {
    /// The value stored under `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Stores `value` under `name`.
    pub fn set(&mut self, name: &str, value: &str) {
        self.0.insert(name.to_string(), value.to_string());
    }

    /// Forgets the entries whose names start with `prefix`.
    pub fn remove_prefixed(&mut self, prefix: &str) {
        self.0.retain(|k, _| !k.starts_with(prefix));
    }

    /// Every stored value (to scrub them from text that is shown).
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.0.values().map(String::as_str)
    }
}

/// Where the secrets of the config at `config_path` are kept.
pub fn path_for(config_path: &Path) -> PathBuf {
    let stem = config_path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("wharf");
    config_path.with_file_name(format!("{stem}.secrets.toml"))
}

/// Reads the secrets file of `config_path` (none: no secrets). A file that others may read is
/// refused: its secrets would not be secret.
pub fn load(config_path: &Path) -> Result<Secrets, ConfigError> {
    let path = path_for(config_path);
    let err = |message: String| ConfigError {
        file: path.display().to_string(),
        key: "(file)".into(),
        message,
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Secrets::default()),
        Err(e) => return Err(err(format!("cannot read: {e}"))),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .map_err(|e| err(format!("cannot read: {e}")))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "others may read it (mode {:o}); run `chmod 600 {}`",
                mode & 0o777,
                path.display()
            )));
        }
    }
    let table: toml::Table = text.parse().map_err(|_: toml::de::Error| {
        // The parser's message may quote a line of the file: a secret. Say where only.
        err("not TOML; each line must be NAME = \"value\"".into())
    })?;
    let mut out = BTreeMap::new();
    for (k, v) in table {
        match v {
            toml::Value::String(s) => {
                out.insert(k, s);
            }
            _ => return Err(err(format!("`{k}` must be a string"))),
        }
    }
    Ok(Secrets(out))
}

/// Writes `secrets` for the config at `config_path`, mode 0600 from the start (a new file is
/// created under another name and renamed into place).
pub fn save(config_path: &Path, secrets: &Secrets) -> std::io::Result<()> {
    let path = path_for(config_path);
    let mut doc = toml_edit::DocumentMut::new();
    for (k, v) in &secrets.0 {
        doc[k.as_str()] = toml_edit::value(v.as_str());
    }
    let text = format!(
        "# Secrets of {} (written by wharf's console; mode 0600). Never commit this file.\n{doc}",
        config_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("wharf.toml"),
    );
    let tmp = path.with_extension(format!("toml.{}.new", std::process::id()));
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_with_owner_only_mode_and_others_readable_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("wharf.toml");
        assert!(load(&config).unwrap().get("A").is_none());
        let mut s = Secrets::default();
        s.set("A", "p\"w=1");
        save(&config, &s).unwrap();
        let path = dir.path().join("wharf.secrets.toml");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load(&config).unwrap().get("A"), Some("p\"w=1"));
        assert!(!format!("{s:?}").contains("p\"w"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&config).unwrap_err();
        assert!(e.message.contains("chmod 600"), "{e}");
    }
}
