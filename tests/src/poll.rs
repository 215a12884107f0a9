use std::{future::Future, time::Duration};

use tokio::time::Instant;

/// Polls `check` until it returns `Some`, or panics with `what` after `deadline`.
/// Tests wait for conditions this way, never with a fixed sleep.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_seen(deadline, what, || {
        let checked = check();
        async move { checked.await.ok_or_else(String::new) }
    })
    .await
}

/// As [`eventually`], with `check` saying what it saw instead (`Err`): the panic after
/// `deadline` shows the last of it.
pub async fn eventually_seen<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let until = Instant::now() + deadline;
    let mut pause = Duration::from_millis(20);
    loop {
        let seen = match check().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if Instant::now() >= until {
            if seen.is_empty() {
                panic!("timed out after {deadline:?} waiting for {what}");
            }
            panic!("timed out after {deadline:?} waiting for {what}; last seen: {seen}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}
