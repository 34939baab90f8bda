//! Secrets (tokens, webhook URLs) never reach logs, Debug output or `config show`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret value and, when it came from `${NAME}`, the variable's name, which
/// is safe to show and is what `config show` prints back.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret {
    value: String,
    var: Option<String>,
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret { value: value.into(), var: None }
    }

    /// An unresolved `${NAME}`: resolved by the loader.
    pub fn template(var: &str) -> Self {
        Secret { value: format!("${{{var}}}"), var: None }
    }

    pub(super) fn resolved(value: String, var: Option<String>) -> Self {
        Secret { value, var }
    }

    pub fn expose(&self) -> &str {
        &self.value
    }

    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// The environment variable it came from, to name in error messages.
    pub fn var(&self) -> Option<&str> {
        self.var.as_deref()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.var, self.value.is_empty()) {
            (_, true) => f.write_str("Secret(empty)"),
            (Some(v), false) => write!(f, "Secret(${{{v}}})"),
            (None, false) => f.write_str("Secret(<redacted>)"),
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (&self.var, self.value.is_empty()) {
            // Where it comes from is shown also when that variable is unset.
            (Some(v), _) => s.serialize_str(&format!("${{{v}}}")),
            (None, true) => s.serialize_str(""),
            (None, false) if self.value.starts_with("${") => s.serialize_str(&self.value),
            (None, false) => s.serialize_str("<redacted>"),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_the_value() {
        let s = Secret::resolved("hunter2".into(), Some("TOKEN".into()));
        assert_eq!(format!("{s:?}"), "Secret(${TOKEN})");
        let s = Secret::new("https://discord.com/api/webhooks/1/abc");
        assert!(!format!("{s:?}").contains("abc"));
        assert_eq!(serde_json::to_string(&s).unwrap_or_default(), "\"<redacted>\"");
    }
}
