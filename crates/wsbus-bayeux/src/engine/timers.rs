//! Time: held connects' deadlines, session expiry, history's window.

use std::time::Instant;

use crate::id::ClientId;

use super::{CloseReason, Engine};

impl Engine {
    /// Advances time: answers held connects at their deadline, expires
    /// sessions without a connect for `maxInterval` (their subscriptions go,
    /// presence leaves are published), drops history past its window.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(id) = self.holds.first_due(now).cloned() {
            if self.sessions.get(&id).is_some_and(|s| s.token_expired(now)) {
                // Answers the hold with `401::Token expired` and wakes.
                self.remove_session(&id, CloseReason::TokenExpired, now);
                continue;
            }
            let (hold_id, replies) = self.release_hold(&id, now).expect("a due connect is held");
            self.holds.stash_released(now, &id, hold_id, replies);
            self.wake(&id);
        }
        while let Some((expiry, id)) = self.expiries.first().cloned() {
            if expiry > now {
                break;
            }
            self.expiries.remove(&(expiry, id.clone()));
            if let Some(session) = self.sessions.get_mut(&id) {
                session.expires_at = None;
            }
            self.removals.push((id, CloseReason::Expired));
        }
        self.process_removals(now);
        self.history.expire(now);
        self.holds.drop_uncollected(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work.
    pub fn next_timeout(&self) -> Option<Instant> {
        [
            self.holds.next_deadline(),
            self.expiries.first().map(|(t, _)| *t),
            self.history.next_expiry(),
            self.holds.next_uncollected_drop(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(super) fn set_expiry(&mut self, id: &ClientId, expires_at: Option<Instant>) {
        let Some(session) = self.sessions.get_mut(id) else {
            return;
        };
        if let Some(old) = session.expires_at.take() {
            self.expiries.remove(&(old, id.clone()));
        }
        if let Some(new) = expires_at {
            self.expiries.insert((new, id.clone()));
        }
        session.expires_at = expires_at;
    }
}
