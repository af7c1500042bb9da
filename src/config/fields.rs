//! What the console's forms ask for each kind of warehouse and destination: each connector's
//! `config.rs` lists its usual keys as [`Field`]s (the rest of its keys can still be written in
//! `wharf.toml`, and the same loader checks them all).

use serde::Serialize;

/// How a field is entered.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Input {
    /// Free text.
    Text,
    /// An integer.
    Number,
    /// One of [`Field::options`].
    Select,
    /// true / false.
    Bool,
}

/// One key of a connector's table, as a form shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Field {
    /// The key in `wharf.toml`.
    pub name: &'static str,
    /// What the form calls it.
    pub label: &'static str,
    /// Whether the table needs it.
    pub required: bool,
    /// A secret: stored in the secrets file (or as a `${ENV}` reference), never shown again.
    pub secret: bool,
    /// How it is entered.
    pub kind: Input,
    /// The choices of a [`Input::Select`].
    pub options: &'static [&'static str],
    /// A hint under the field.
    pub help: &'static str,
}

impl Field {
    /// A required text field.
    pub const fn text(name: &'static str, label: &'static str, help: &'static str) -> Field {
        Field {
            name,
            label,
            required: true,
            secret: false,
            kind: Input::Text,
            options: &[],
            help,
        }
    }

    /// Not required.
    pub const fn optional(mut self) -> Field {
        self.required = false;
        self
    }

    /// A secret.
    pub const fn secret(mut self) -> Field {
        self.secret = true;
        self
    }

    /// An integer.
    pub const fn number(mut self) -> Field {
        self.kind = Input::Number;
        self
    }

    /// true / false.
    pub const fn boolean(mut self) -> Field {
        self.kind = Input::Bool;
        self
    }

    /// One of `options`.
    pub const fn select(mut self, options: &'static [&'static str]) -> Field {
        self.kind = Input::Select;
        self.options = options;
        self
    }
}

/// A kind of warehouse or destination and its form.
#[derive(Debug, Clone, Serialize)]
pub struct Kind {
    /// Its `type` in `wharf.toml`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Its name.
    pub label: &'static str,
    /// Its form.
    pub fields: &'static [Field],
}
