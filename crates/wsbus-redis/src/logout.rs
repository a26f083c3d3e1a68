//! A session that ends on one node ends on all: [`ClusterSessionStore`].
//!
//! A logout removes the session from Redis, and every node's sockets bound
//! to it must close with 1008 `HTTP session ended`. The store that removed
//! it publishes the end on `wsbus:sessions`, to which every node
//! subscribes, and each node ends its own bindings
//! ([`wsbus::session::Sessions::end_bindings`]). A session that expires by
//! itself (its Redis TTL) is noticed by each node's sweep, within
//! [`Sessions::sweep_interval`](wsbus::session::Sessions::sweep_interval).
//!
//! While Redis is down a logout fails (503: the session could not be
//! removed), so no node can miss one that succeeded except through the
//! link's queue bound, and the sweep catches that too.

use std::sync::{Arc, Weak};
use std::time::SystemTime;

use wsbus::session::{Session, SessionId, SessionStore, Sessions, StoreError, StoreFuture};

use crate::envelope::Envelope;
use crate::link::{Receiver, RedisLink};
use crate::session::RedisSessionStore;

/// The envelope kind of "this session ended".
const KIND_SESSION_ENDED: u8 = 32;

/// The channel every node hears session ends on.
const SESSIONS_CHANNEL: &str = "wsbus:sessions";

/// [`RedisSessionStore`] that tells every node when it removes a session.
#[derive(Debug)]
pub struct ClusterSessionStore {
    store: RedisSessionStore,
    link: RedisLink,
}

impl ClusterSessionStore {
    /// `store`, telling the other nodes of removals through `link`.
    pub fn new(store: RedisSessionStore, link: RedisLink) -> Self {
        ClusterSessionStore { store, link }
    }
}

impl SessionStore for ClusterSessionStore {
    fn insert(&self, session: Session) -> StoreFuture<'_, Result<(), StoreError>> {
        self.store.insert(session)
    }

    fn get<'a>(
        &'a self,
        id: &'a SessionId,
        now: SystemTime,
    ) -> StoreFuture<'a, Result<Option<Session>, StoreError>> {
        self.store.get(id, now)
    }

    fn touch<'a>(
        &'a self,
        id: &'a SessionId,
        expires_at: SystemTime,
    ) -> StoreFuture<'a, Result<bool, StoreError>> {
        self.store.touch(id, expires_at)
    }

    fn remove<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let existed = self.store.remove(id).await?;
            // Also when it was gone already (expired): other nodes may still
            // have sockets bound to it.
            self.link
                .publish_to(SESSIONS_CHANNEL, KIND_SESSION_ENDED, id.as_str().as_bytes());
            Ok(existed)
        })
    }

    fn remove_expired(
        &self,
        now: SystemTime,
    ) -> StoreFuture<'_, Result<Vec<SessionId>, StoreError>> {
        self.store.remove_expired(now)
    }
}

/// Ends this node's bindings of sessions that ended on other nodes.
pub fn follow_session_ends(link: &RedisLink, sessions: &Arc<Sessions>) {
    link.register(
        &[KIND_SESSION_ENDED],
        Arc::new(EndedElsewhere {
            sessions: Arc::downgrade(sessions),
        }),
    );
    link.subscribe(SESSIONS_CHANNEL);
}

struct EndedElsewhere {
    sessions: Weak<Sessions>,
}

impl Receiver for EndedElsewhere {
    fn message(&self, channel: &str, envelope: Envelope) {
        let Some(sessions) = self.sessions.upgrade() else {
            return;
        };
        match std::str::from_utf8(&envelope.payload) {
            Ok(id) => sessions.end_bindings(&SessionId::from_raw(id)),
            Err(_) => {
                tracing::warn!(target: "wsbus::cluster", channel, "ignored a session end that is not UTF-8")
            }
        }
    }
}
