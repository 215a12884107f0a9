//! How far this replica has consumed each partition, and waiting for it to pass a
//! read-your-writes token.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use schemas::ReadToken;
use tokio::sync::watch;

pub struct Progress {
    /// Next offset to consume per (topic, partition): everything below is in the in-flight
    /// set or in PostgreSQL.
    next: Mutex<HashMap<(String, i32), i64>>,
    changed: watch::Sender<u64>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            next: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
        }
    }
}

impl Progress {
    pub fn advance(&self, topic: &str, partition: i32, next: i64) {
        if let Ok(mut map) = self.next.lock() {
            let slot = map.entry((topic.to_owned(), partition)).or_insert(next);
            *slot = (*slot).max(next);
        }
        // Only wake readers when someone waits: this runs once per consumed message.
        if self.changed.receiver_count() > 0 {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    pub fn covers(&self, token: &ReadToken) -> bool {
        let Ok(map) = self.next.lock() else {
            return false;
        };
        token.positions().all(|(topic, partition, offset)| {
            map.get(&(topic.to_owned(), partition))
                .is_some_and(|next| *next > offset)
        })
    }

    /// Waits until every position of `token` was consumed; false if `wait` ran out first.
    pub async fn wait_for(&self, token: &ReadToken, wait: Duration) -> bool {
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.covers(token) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.covers(token),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn token(positions: &[(&str, i32, i64)]) -> ReadToken {
        let mut token = ReadToken::default();
        for (t, p, o) in positions {
            token.observe(t, *p, *o);
        }
        token
    }

    #[test]
    fn covers_only_consumed_positions() {
        let progress = Progress::default();
        progress.advance("events", 0, 10);
        assert!(progress.covers(&token(&[("events", 0, 9)])));
        assert!(!progress.covers(&token(&[("events", 0, 10)])));
        assert!(!progress.covers(&token(&[("events", 0, 1), ("events", 1, 0)])));
    }

    #[tokio::test]
    async fn waits_until_consumption_passes_the_token() {
        let progress = Arc::new(Progress::default());
        let waiter = {
            let progress = progress.clone();
            tokio::spawn(async move {
                progress
                    .wait_for(&token(&[("events", 2, 5)]), Duration::from_secs(5))
                    .await
            })
        };
        tokio::task::yield_now().await;
        progress.advance("events", 2, 3);
        progress.advance("events", 2, 6);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_wait() {
        let progress = Progress::default();
        assert!(
            !progress
                .wait_for(&token(&[("events", 0, 0)]), Duration::from_millis(200))
                .await
        );
    }
}
