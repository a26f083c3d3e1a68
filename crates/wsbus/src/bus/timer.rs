//! The bus's clock: a task that calls the engine's `handle_timeout` at its
//! next deadline (held connects' deadlines, client expiry, the history
//! window).

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{Bus, Inner, now};

/// How long the task sleeps when the engine has no deadline before it looks
/// again (and notices that the bus was dropped).
const IDLE_RECHECK: Duration = Duration::from_secs(60);

/// What the timer task sleeps until, and its wake-up.
#[derive(Debug, Default)]
pub(super) struct Timer {
    /// The engine deadline the task sleeps until (`None`: none). Only an
    /// earlier deadline needs to wake it: most calls (a held connect, a
    /// delivery) add none earlier than the ones it knows.
    armed: Mutex<Option<Instant>>,
    /// Wakes the task when the engine's next deadline moved earlier than
    /// `armed`.
    wake: Notify,
}

impl Timer {
    /// The engine's next deadline is now `next`: wakes the task if that is
    /// earlier than what it sleeps until. Called under the engine lock, after
    /// every engine call.
    pub(super) fn reschedule(&self, next: Option<Instant>) {
        let mut armed = self.armed.lock().expect("timer lock");
        let earlier = match (next, *armed) {
            (Some(next), Some(armed)) => next < armed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if earlier {
            // Set here too, so that the calls before the task runs do not
            // wake it again.
            *armed = next;
            drop(armed);
            self.wake.notify_one();
        }
    }
}

/// Calls `handle_timeout` whenever the engine's next deadline comes, until
/// the bus is dropped. Holds the bus only while it works, not while it
/// sleeps.
pub(super) async fn run(inner: Weak<Inner>, timer: Arc<Timer>) {
    loop {
        let next = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let engine = inner.engine.lock().expect("bus lock");
            let next = engine.next_timeout();
            *timer.armed.lock().expect("timer lock") = next;
            next
        };
        // Created after `armed` is set: an earlier deadline found by a call
        // from now on stores a permit that ends this wait at once.
        let wake = timer.wake.notified();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                // Nothing scheduled: look again now and then, so the task
                // notices when the bus is dropped.
                None => tokio::time::sleep(IDLE_RECHECK).await,
            }
        };
        tokio::select! {
            () = wake => {}
            () = sleep => {
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                Bus { inner }.drive(|engine| engine.handle_timeout(now()));
            }
        }
    }
}
