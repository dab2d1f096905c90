//! The database as the receiver sees it: up, or down until the next try.
//! After a failure, tries wait a capped exponential back-off; the change
//! of state (not each failure) is logged, with the gateway and batch that
//! saw it, and `fixgate_receive_db_up` follows it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::land::LandError;

/// The first wait after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// The longest wait between tries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Up or down, shared by every landing task.
#[derive(Debug, Default)]
pub struct Database {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// `None` while up.
    down: Option<Down>,
}

#[derive(Debug, Clone, Copy)]
struct Down {
    back_off: Duration,
    next_try: Instant,
}

impl Database {
    /// Up, until a failure says otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long to wait before the next try; `None`: try now.
    pub fn wait(&self) -> Option<Duration> {
        let down = self.state().down?;
        let now = Instant::now();
        (down.next_try > now).then(|| down.next_try - now)
    }

    /// A landing failed: down (again), for longer each time.
    pub fn failed(&self, gateway: &str, batch: u64, err: &LandError) {
        let mut state = self.state();
        let back_off = match state.down {
            None => {
                tracing::warn!(
                    gateway,
                    batch,
                    "database unavailable, batches not acknowledged: {err}"
                );
                metrics::gauge!("fixgate_receive_db_up").set(0.0);
                BACKOFF_MIN
            }
            Some(down) => (down.back_off * 2).min(BACKOFF_MAX),
        };
        state.down = Some(Down {
            back_off,
            next_try: Instant::now() + back_off,
        });
    }

    /// A landing committed: up.
    pub fn succeeded(&self, gateway: &str, batch: u64) {
        let mut state = self.state();
        if state.down.take().is_some() {
            tracing::info!(gateway, batch, "database available again");
            metrics::gauge!("fixgate_receive_db_up").set(1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure() -> LandError {
        LandError::Connect(deadpool_postgres::PoolError::Closed)
    }

    #[tokio::test(start_paused = true)]
    async fn the_back_off_doubles_up_to_its_cap_and_a_success_ends_it() {
        let db = Database::new();
        assert_eq!(db.wait(), None);
        db.failed("gw", 1, &failure());
        assert_eq!(db.wait(), Some(BACKOFF_MIN));
        for _ in 0..10 {
            db.failed("gw", 1, &failure());
        }
        assert_eq!(db.wait(), Some(BACKOFF_MAX));
        tokio::time::advance(BACKOFF_MAX).await;
        assert_eq!(db.wait(), None);
        db.succeeded("gw", 2);
        assert_eq!(db.wait(), None);
    }
}
