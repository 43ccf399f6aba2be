//! Waiting out a JetStream cluster without a leader: right after a NATS
//! server died the others elect new leaders (for the meta layer and each
//! stream), and requests time out meanwhile, for a few seconds. A node
//! starting (or taking a session over) then retries instead of failing.

use std::future::Future;
use std::time::Duration;

/// How long an operation is retried (an election takes a few seconds).
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);
const PAUSE: Duration = Duration::from_millis(500);

/// Why an attempt failed.
pub(crate) enum Failure {
    /// Perhaps no leader yet: try again.
    Transient(String),
    /// Trying again cannot help (a configuration JetStream refuses).
    Final(String),
}

/// Runs `attempt` until it succeeds, fails for good, or [`PATIENCE`] has
/// passed (then its last error); logs one WARN naming `what` if it retries.
pub(crate) async fn patiently<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut retried = false;
    loop {
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(Failure::Final(error)) => return Err(error),
            Err(Failure::Transient(error)) => error,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(error);
        }
        if !std::mem::replace(&mut retried, true) {
            tracing::warn!(
                what,
                error,
                "JetStream not answering (electing a leader?); retrying for up to {} s",
                PATIENCE.as_secs()
            );
        }
        tokio::time::sleep(PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_and_final_ones_are_not() {
        let calls = AtomicUsize::new(0);
        let got = patiently("test", || async {
            match calls.fetch_add(1, Ordering::Relaxed) {
                0 | 1 => Err(Failure::Transient("timed out".into())),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(got.ok(), Some(2));

        let calls = AtomicUsize::new(0);
        let got: Result<(), String> = patiently("test", || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err(Failure::Final("insufficient resources".into()))
        })
        .await;
        assert_eq!(got.err().as_deref(), Some("insufficient resources"));
        assert_eq!(calls.load(Ordering::Relaxed), 1);

        let got: Result<(), String> = patiently("test", || async {
            Err(Failure::Transient("timed out".into()))
        })
        .await;
        assert_eq!(
            got.err().as_deref(),
            Some("timed out"),
            "gives up after PATIENCE"
        );
    }
}
