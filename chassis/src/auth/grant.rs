//! What a caller may do: the client ids it may write and read, and whether it is an operator.
//!
//! The same shape comes from a token's `eventpipe` claim and from an API key's settings:
//!
//! ```json
//! {"write": ["device-1", "fleet-7:*"], "read": ["device-1"], "operator": false}
//! ```
//!
//! An entry is a client id, or a prefix followed by `*` (`fleet-7:*` covers every client id
//! that starts with `fleet-7:`; `*` alone covers all). A `*` anywhere but at the end is
//! refused, not guessed at. `operator` reads every client and sees the pipeline view; it
//! grants no writes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("{list} entry {index} is empty")]
    Empty { list: &'static str, index: usize },
    #[error(
        "{list} entry {index} has a `*` before its end; only a trailing `*` (a prefix) is allowed"
    )]
    Wildcard { list: &'static str, index: usize },
}

/// One entry of a grant list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    /// Every client id starting with this (empty: every client id).
    Prefix(String),
}

impl Pattern {
    fn parse(entry: &str, list: &'static str, index: usize) -> Result<Pattern, GrantError> {
        if entry.is_empty() {
            return Err(GrantError::Empty { list, index });
        }
        let (head, prefix) = match entry.strip_suffix('*') {
            Some(head) => (head, true),
            None => (entry, false),
        };
        if head.contains('*') {
            return Err(GrantError::Wildcard { list, index });
        }
        Ok(if prefix {
            Pattern::Prefix(head.to_owned())
        } else {
            Pattern::Exact(head.to_owned())
        })
    }

    fn covers(&self, client_id: &str) -> bool {
        match self {
            Pattern::Exact(id) => id == client_id,
            Pattern::Prefix(prefix) => client_id.starts_with(prefix.as_str()),
        }
    }
}

/// The client ids one list covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patterns(Vec<Pattern>);

impl Patterns {
    fn parse(entries: &[String], list: &'static str) -> Result<Patterns, GrantError> {
        entries
            .iter()
            .enumerate()
            .map(|(index, entry)| Pattern::parse(entry, list, index))
            .collect::<Result<_, _>>()
            .map(Patterns)
    }

    pub fn covers(&self, client_id: &str) -> bool {
        self.0.iter().any(|p| p.covers(client_id))
    }
}

/// A grant as written: in a token's `eventpipe` claim or an API key's settings. Unknown
/// fields of a claim are ignored (a newer issuer may add some); settings refuse them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantSpec {
    /// Client ids (or `prefix*`) whose events the caller may post. Default none.
    #[serde(default)]
    pub write: Vec<String>,
    /// Client ids (or `prefix*`) whose events the caller may read. Default none.
    #[serde(default)]
    pub read: Vec<String>,
    /// Reads every client and sees `/pipeline`, `/pipeline/stream`. Default false.
    #[serde(default)]
    pub operator: bool,
}

/// A checked grant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    write: Patterns,
    read: Patterns,
    operator: bool,
}

impl Grant {
    pub fn parse(spec: &GrantSpec) -> Result<Grant, GrantError> {
        Ok(Grant {
            write: Patterns::parse(&spec.write, "write")?,
            read: Patterns::parse(&spec.read, "read")?,
            operator: spec.operator,
        })
    }

    pub fn may_write(&self, client_id: &str) -> bool {
        self.write.covers(client_id)
    }

    pub fn may_read(&self, client_id: &str) -> bool {
        self.operator || self.read.covers(client_id)
    }

    pub fn is_operator(&self) -> bool {
        self.operator
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn grant(json: &str) -> Result<Grant, GrantError> {
        Grant::parse(&serde_json::from_str::<GrantSpec>(json).unwrap())
    }

    #[test]
    fn exact_entries_cover_only_themselves() {
        let g = grant(r#"{"write": ["device-1"], "read": ["device-1", "device-2"]}"#).unwrap();
        assert!(g.may_write("device-1"));
        assert!(!g.may_write("device-10"), "an exact entry is not a prefix");
        assert!(!g.may_write("device-"));
        assert!(!g.may_write("device-2"), "read does not grant write");
        assert!(g.may_read("device-2"));
        assert!(!g.may_read("device-3"));
        assert!(!g.is_operator());
    }

    #[test]
    fn a_trailing_star_is_a_prefix_at_its_exact_boundary() {
        let g = grant(r#"{"write": ["fleet-7:*"]}"#).unwrap();
        assert!(g.may_write("fleet-7:a"));
        assert!(
            g.may_write("fleet-7:"),
            "the prefix itself, with nothing after it"
        );
        assert!(!g.may_write("fleet-7"), "one character short of the prefix");
        assert!(!g.may_write("fleet-70:a"));
        assert!(!g.may_write("Fleet-7:a"), "client ids are case-sensitive");
        let all = grant(r#"{"read": ["*"]}"#).unwrap();
        assert!(all.may_read("anything") && !all.may_write("anything"));
    }

    #[test]
    fn operator_reads_everything_and_writes_nothing() {
        let g = grant(r#"{"operator": true}"#).unwrap();
        assert!(g.may_read("any-client") && g.is_operator());
        assert!(!g.may_write("any-client"));
    }

    #[test]
    fn an_absent_or_empty_claim_grants_nothing() {
        let g = grant("{}").unwrap();
        assert!(!g.may_read("a") && !g.may_write("a") && !g.is_operator());
    }

    #[test]
    fn misplaced_stars_and_empty_entries_are_refused() {
        assert_eq!(
            grant(r#"{"write": ["ok", "a*b"]}"#).unwrap_err(),
            GrantError::Wildcard {
                list: "write",
                index: 1
            }
        );
        assert!(grant(r#"{"read": ["**"]}"#).is_err());
        assert_eq!(
            grant(r#"{"read": [""]}"#).unwrap_err(),
            GrantError::Empty {
                list: "read",
                index: 0
            }
        );
    }

    #[test]
    fn claims_may_carry_fields_this_version_does_not_know() {
        let spec: GrantSpec =
            serde_json::from_str(r#"{"write": ["a"], "admin_ui": true}"#).unwrap();
        assert_eq!(spec.write, vec!["a".to_owned()]);
    }
}
