//! A secret in settings (an HS256 secret, an API key): readable by the code that verifies
//! with it, and nowhere else. Debug output, logs, errors and `--print-config` show `***`.

use std::{fmt, path::Path};

use secrecy::{ExposeSecret, SecretString};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// What a secret is shown as. Also refused as a secret's value: a configuration rendered by
/// `--print-config` and fed back must not run with `***` as its key.
pub const REDACTED: &str = "***";

const NOT_A_STRING: &str = "a secret must be a string (quote it if it looks like a number)";

#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    /// The secret's text, for the comparison or verification that needs it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// A secret kept in a file (a mounted Kubernetes Secret): its content, without the
    /// trailing newline editors and `echo` add.
    pub fn from_file(path: &Path) -> std::io::Result<Secret> {
        let text = std::fs::read_to_string(path)?;
        Ok(Secret::new(text.trim_end_matches(['\n', '\r'])))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl de::Visitor<'_> for Visit {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a secret as a string (quote it if it looks like a number)")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Secret, E> {
                if value.is_empty() {
                    return Err(E::custom("a secret must not be empty"));
                }
                if value == REDACTED {
                    return Err(E::custom(
                        "a redacted secret (\"***\", as --print-config shows it) cannot be used: \
                         give the secret, or its file with the *_file setting",
                    ));
                }
                Ok(Secret::new(value))
            }
            // serde's own error for these would quote the value: a secret given unquoted
            // in an environment variable would be printed at start.
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
        }
        // `any`, not `str`: deserializers answer a wrong type for `str` with an error that
        // quotes the value; through `any` the visitor above words it.
        deserializer.deserialize_any(Visit)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct Holder {
        key: Secret,
    }

    #[test]
    fn never_shown_and_never_the_redaction_itself() {
        let holder: Holder = serde_json::from_str(r#"{"key": "hunter2-hunter2"}"#).unwrap();
        assert_eq!(holder.key.expose(), "hunter2-hunter2");
        assert!(!format!("{holder:?}").contains("hunter2"));
        assert_eq!(serde_json::to_string(&holder).unwrap(), r#"{"key":"***"}"#);
        let err = serde_json::from_str::<Holder>(r#"{"key": "***"}"#).unwrap_err();
        assert!(err.to_string().contains("redacted"), "{err}");
        assert!(serde_json::from_str::<Holder>(r#"{"key": ""}"#).is_err());
        let err = serde_json::from_str::<Holder>(r#"{"key": 8675309}"#).unwrap_err();
        assert!(!err.to_string().contains("8675309"), "{err}");
    }
}
