//! HTTP sessions in Redis: [`RedisSessionStore`], the
//! [`SessionStore`] that every node of a cluster shares, so that a session
//! made on one node is known on every node.
//!
//! # Keys
//!
//! One string key per session, `wsbus:session:<id>`, holding JSON
//! `{"login": …, "display_name": …}`, with the session's wall-clock expiry as
//! the key's expiry (`SET … PXAT`, `PEXPIREAT`): Redis drops idle sessions by
//! itself, so [`SessionStore::remove_expired`] has nothing to do, and the
//! sweep of [`Sessions`](wsbus::session::Sessions) ends the bindings of
//! sessions it no longer finds. Needs Redis 7.0 (`PEXPIRETIME`).
//!
//! # When Redis does not answer
//!
//! Every call is bounded by [`COMMAND_TIMEOUT`] and fails with a
//! [`StoreError`] (at once for [`FAIL_FAST`] after a call found Redis
//! unreachable), never with "no such session": a node that cannot reach
//! Redis must not take every session for ended and close every bound
//! socket. Requests get no login meanwhile; logins and logouts fail (503);
//! the connection is re-established in the background (the `redis` crate's
//! `ConnectionManager`, with backoff and jitter) and the store works again
//! as soon as Redis does — with no sessions if Redis came back empty.
//!
//! # Secrets
//!
//! A session id is a bearer secret: it is in Redis keys (Redis is trusted
//! with sessions), never in a log line or an error of this module. Errors
//! carry the `redis` crate's description of what failed, which names no
//! key.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, RedisResult};
use wsbus::session::{Session, SessionId, SessionStore, StoreError, StoreFuture, User};

/// The prefix of every session key; the id follows.
pub const KEY_PREFIX: &str = "wsbus:session:";

/// How long one store call may take, connecting included, before it fails
/// with [`StoreError`]: request handlers await the store (a WebSocket
/// upgrade or an HTTP request looks up its session), so a paused or
/// unreachable Redis must cost a request at most this. A local Redis answers
/// in well under a millisecond; two seconds leave room for a loaded one.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The first delay before reconnecting after the connection broke; then
/// doubling with jitter up to [`RECONNECT_MAX_DELAY`].
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);

/// The longest delay between reconnection attempts: after an outage, how
/// long at most until the store notices that Redis is back.
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);

/// Attempts per reconnection round. When a round fails, the next call that
/// finds the connection broken starts another, so this only bounds how long
/// one round keeps retrying on its own.
const RECONNECT_ATTEMPTS: usize = 6;

/// After a call found Redis unreachable (an I/O error or no answer in
/// time), how long further calls fail at once instead of waiting up to
/// [`COMMAND_TIMEOUT`] each: during an outage a request then costs nothing,
/// and one call per period probes (and the connection keeps reconnecting in
/// the background). Short, so that a Redis that is back is used soon.
pub const FAIL_FAST: Duration = Duration::from_secs(1);

/// The session store of a cluster, in Redis (module docs). Cheap to clone:
/// clones share one multiplexed connection and its [`Health`].
#[derive(Clone)]
pub struct RedisSessionStore {
    connection: ConnectionManager,
    health: Arc<Mutex<Health>>,
}

/// Whether Redis answered lately: the [`FAIL_FAST`] window, and the state
/// whose changes are logged (once per outage, not once per request).
#[derive(Debug, Default)]
struct Health {
    /// Until when calls fail at once.
    fail_fast_until: Option<Instant>,
    /// Whether the last call found Redis unreachable.
    down: bool,
}

impl std::fmt::Debug for RedisSessionStore {
    // The connection's own Debug shows the client's connection info, which
    // may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessionStore").finish_non_exhaustive()
    }
}

/// A session as its key holds it (the id is the key, the expiry the key's
/// expiry).
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    login: String,
    display_name: String,
}

impl RedisSessionStore {
    /// A store on the Redis at `url` (`redis://host:port[/db]`). Connects
    /// lazily, so a node starts while Redis is unreachable (calls fail with
    /// [`StoreError`] until it is reachable). Must be called within a tokio
    /// runtime.
    ///
    /// # Errors
    /// If `url` is not a Redis URL.
    pub fn open(url: &str) -> RedisResult<Self> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY)
            .set_number_of_retries(RECONNECT_ATTEMPTS);
        let connection = ConnectionManager::new_lazy_with_config(Client::open(url)?, config)?;
        Ok(Self::with_connection(connection))
    }

    /// A store over an existing connection (shared with other users of the
    /// node's command connection). Calls are still bounded by
    /// [`COMMAND_TIMEOUT`].
    pub fn with_connection(connection: ConnectionManager) -> Self {
        RedisSessionStore {
            connection,
            health: Arc::default(),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().expect("health lock")
    }

    /// Whether a recent call found Redis unreachable (see [`FAIL_FAST`]).
    fn failing_fast(&self) -> bool {
        self.health()
            .fail_fast_until
            .is_some_and(|until| Instant::now() < until)
    }

    fn answered(&self) {
        let mut health = self.health();
        if health.down {
            *health = Health::default();
            tracing::info!(target: "wsbus::session", "redis answers the session store again");
        }
    }

    fn unreachable(&self, error: &StoreError) {
        let mut health = self.health();
        health.fail_fast_until = Some(Instant::now() + FAIL_FAST);
        if !health.down {
            health.down = true;
            tracing::warn!(target: "wsbus::session", %error, "redis unreachable: no logins until it answers; bound sockets stay open");
        }
    }

    /// Run `command` on a clone of the connection (clones share it), within
    /// [`COMMAND_TIMEOUT`].
    fn call<'a, T, F>(
        &self,
        command: impl FnOnce(ConnectionManager) -> F + Send + 'a,
    ) -> StoreFuture<'a, Result<T, StoreError>>
    where
        F: Future<Output = RedisResult<T>> + Send + 'a,
        T: Send + 'a,
    {
        let store = self.clone();
        Box::pin(async move {
            if store.failing_fast() {
                return Err(StoreError::new("redis unreachable a moment ago"));
            }
            match tokio::time::timeout(COMMAND_TIMEOUT, command(store.connection.clone())).await {
                Ok(Ok(answer)) => {
                    store.answered();
                    Ok(answer)
                }
                // A server's error answer (say, out of memory) is an answer:
                // only a connection that fails is unreachable.
                Ok(Err(error))
                    if !(error.is_io_error()
                        || error.is_timeout()
                        || error.is_unrecoverable_error()) =>
                {
                    Err(store_error(&error))
                }
                Ok(Err(error)) => {
                    let error = store_error(&error);
                    store.unreachable(&error);
                    Err(error)
                }
                Err(_elapsed) => {
                    let error =
                        StoreError::new(format!("redis did not answer within {COMMAND_TIMEOUT:?}"));
                    store.unreachable(&error);
                    Err(error)
                }
            }
        })
    }
}

fn key(id: &SessionId) -> String {
    format!("{KEY_PREFIX}{}", id.as_str())
}

/// Milliseconds since the Unix epoch, as Redis expiries take them. A time
/// before the epoch is the epoch (long expired).
fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The error as [`Sessions`](wsbus::session::Sessions) logs it. The `redis`
/// crate describes the failure (I/O, timeout, a server error's code and
/// message); none of the commands here makes Redis quote a key back.
fn store_error(error: &RedisError) -> StoreError {
    StoreError::new(format!("redis: {error}"))
}

impl SessionStore for RedisSessionStore {
    fn insert(&self, session: Session) -> StoreFuture<'_, Result<(), StoreError>> {
        let record = Record {
            login: session.user.login,
            display_name: session.user.display_name,
        };
        let value = serde_json::to_string(&record).expect("strings serialize");
        let key = key(&session.id);
        let expires_at = unix_ms(session.expires_at);
        self.call(move |mut connection| async move {
            // One command: a session never exists without its expiry.
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PXAT")
                .arg(expires_at)
                .query_async::<()>(&mut connection)
                .await
        })
    }

    fn get<'a>(
        &'a self,
        id: &'a SessionId,
        now: SystemTime,
    ) -> StoreFuture<'a, Result<Option<Session>, StoreError>> {
        let key = key(id);
        let found = self.call(move |mut connection| async move {
            // Atomic, so the expiry read is the value's.
            redis::pipe()
                .atomic()
                .cmd("GET")
                .arg(&key)
                .cmd("PEXPIRETIME")
                .arg(&key)
                .query_async::<(Option<String>, i64)>(&mut connection)
                .await
        });
        Box::pin(async move {
            let (Some(value), expires_ms) = found.await? else {
                return Ok(None);
            };
            // PEXPIRETIME is -1 for a key without expiry, which this store
            // never writes: someone else's key; -2 (gone) cannot follow a
            // value in one transaction.
            let Ok(expires_ms) = u64::try_from(expires_ms) else {
                tracing::warn!(target: "wsbus::session", "a session key without expiry in redis: ignored");
                return Ok(None);
            };
            let Ok(record) = serde_json::from_str::<Record>(&value) else {
                tracing::warn!(target: "wsbus::session", "a malformed session record in redis: ignored");
                return Ok(None);
            };
            let expires_at = UNIX_EPOCH + Duration::from_millis(expires_ms);
            // Our clock, not Redis's, decides (the two may differ a little).
            Ok((expires_at > now).then(|| Session {
                id: id.clone(),
                user: User {
                    login: record.login,
                    display_name: record.display_name,
                },
                expires_at,
            }))
        })
    }

    fn touch<'a>(
        &'a self,
        id: &'a SessionId,
        expires_at: SystemTime,
    ) -> StoreFuture<'a, Result<bool, StoreError>> {
        let key = key(id);
        let expires_at = unix_ms(expires_at);
        // PEXPIREAT answers 0, and creates nothing, when the key is gone.
        self.call(move |mut connection| async move {
            redis::cmd("PEXPIREAT")
                .arg(key)
                .arg(expires_at)
                .query_async::<bool>(&mut connection)
                .await
        })
    }

    fn remove<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, Result<bool, StoreError>> {
        let key = key(id);
        self.call(move |mut connection| async move {
            redis::cmd("DEL")
                .arg(key)
                .query_async::<u64>(&mut connection)
                .await
                .map(|deleted| deleted > 0)
        })
    }

    /// Nothing to do: Redis expires session keys by itself.
    fn remove_expired(
        &self,
        _now: SystemTime,
    ) -> StoreFuture<'_, Result<Vec<SessionId>, StoreError>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_unix_milliseconds() {
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1_234)), 1_234);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
