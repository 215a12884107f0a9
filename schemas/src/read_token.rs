use std::{collections::BTreeMap, fmt, str::FromStr};

/// Read-your-writes token: the highest acknowledged offset per topic-partition of one
/// producer request. A reader that has consumed past every position has seen the request.
///
/// Wire form (URL-safe, opaque to clients): `v1~<topic>~<partition>~<offset>~...`.
/// Kafka topic names cannot contain `~`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadToken {
    positions: BTreeMap<(String, i32), i64>,
}

const VERSION: &str = "v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed read token: {0}")]
pub struct TokenError(&'static str);

impl ReadToken {
    /// Records an acknowledged offset, keeping the highest per partition.
    pub fn observe(&mut self, topic: &str, partition: i32, offset: i64) {
        let slot = self
            .positions
            .entry((topic.to_owned(), partition))
            .or_insert(offset);
        *slot = (*slot).max(offset);
    }

    /// `(topic, partition, highest offset)` for every partition the token covers.
    pub fn positions(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.positions
            .iter()
            .map(|((topic, partition), offset)| (topic.as_str(), *partition, *offset))
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

impl fmt::Display for ReadToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(VERSION)?;
        for (topic, partition, offset) in self.positions() {
            write!(f, "~{topic}~{partition}~{offset}")?;
        }
        Ok(())
    }
}

impl FromStr for ReadToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('~');
        if parts.next() != Some(VERSION) {
            return Err(TokenError("unknown version"));
        }
        let mut token = ReadToken::default();
        loop {
            let Some(topic) = parts.next() else {
                return Ok(token);
            };
            let (Some(partition), Some(offset)) = (parts.next(), parts.next()) else {
                return Err(TokenError("truncated position"));
            };
            if topic.is_empty() {
                return Err(TokenError("empty topic"));
            }
            let partition = partition
                .parse::<i32>()
                .ok()
                .filter(|p| *p >= 0)
                .ok_or(TokenError("bad partition"))?;
            let offset = offset
                .parse::<i64>()
                .ok()
                .filter(|o| *o >= 0)
                .ok_or(TokenError("bad offset"))?;
            token.observe(topic, partition, offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_highest_offset_and_round_trips() {
        let mut token = ReadToken::default();
        token.observe("events", 3, 10);
        token.observe("events", 3, 7);
        token.observe("events-critical", 0, 1);
        let text = token.to_string();
        assert_eq!(text, "v1~events~3~10~events-critical~0~1");
        assert_eq!(text.parse::<ReadToken>().unwrap(), token);
    }

    #[test]
    fn rejects_malformed_tokens() {
        for bad in ["", "v2~a~1~2", "v1~a~1", "v1~a~x~2", "v1~a~1~-5", "v1~~1~2"] {
            assert!(bad.parse::<ReadToken>().is_err(), "{bad:?}");
        }
        assert!("v1".parse::<ReadToken>().unwrap().is_empty());
    }
}
