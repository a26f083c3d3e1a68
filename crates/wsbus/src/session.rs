//! HTTP sessions and the sockets bound to them.
//!
//! In this crate "session" always means an HTTP session: a cookie-identified
//! login. (A WebSocket connection is a *socket*; a Bayeux client's state on
//! the bus is a *client*.) A WebSocket opened by a request that carries a
//! session is bound to it: when the session ends — logout or idle expiry —
//! sockets opened with `terminate_on_session_exit` are closed with 1008
//! `HTTP session ended`. Idle sessions are expired by a sweep that runs every
//! idle-timeout / 10, clamped to [10 s, 10 min].
//!
//! # Time
//!
//! Sessions carry a wall-clock expiry ([`Session::expires_at`]), so that a
//! store shared by several processes (Redis) can keep it as a TTL. The wall
//! clock is read once when [`Sessions`] is created and advanced from then on
//! by tokio's monotonic clock: a step of the system clock (NTP, an operator)
//! does not expire every session at once, and tests can pause time
//! (`tokio::time::pause`) to expire sessions without waiting.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use tokio::time::Instant;
use wsbus_proto::CloseCode;

use crate::hub::{Hub, SocketId};

/// The cookie that carries the session id.
pub const SESSION_COOKIE: &str = "wsbus_session";

/// The close reason for sockets whose session ended.
pub const SESSION_ENDED_REASON: &str = "HTTP session ended";

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct User {
    /// The login name, unique.
    pub login: String,
    /// The name to show; the login unless set otherwise.
    pub display_name: String,
}

impl User {
    /// A user whose display name is its login.
    pub fn new(login: impl Into<String>) -> Self {
        let login = login.into();
        User {
            display_name: login.clone(),
            login,
        }
    }
}

/// A session id: 32 random bytes, base64url. Never logged.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// A new id: 32 bytes from a cryptographically secure generator, so
    /// that ids cannot be guessed. ([`Sessions::login`] makes them; stores
    /// and their tests may too.)
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::rng().random();
        SessionId(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// An id as it travelled (a cookie's value, another node's message).
    pub fn from_raw(id: impl Into<String>) -> Self {
        SessionId(id.into())
    }

    /// The id as it travels in the cookie. A bearer secret: never log it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// A session as stored.
#[derive(Clone, Debug)]
pub struct Session {
    /// Its id (the cookie's value).
    pub id: SessionId,
    /// Who logged in.
    pub user: User,
    /// When it ends unless used again: its last use plus the idle timeout.
    pub expires_at: SystemTime,
}

/// What a [`SessionStore`] method returns: a boxed future, so that the trait
/// stays dyn-compatible (`Arc<dyn SessionStore>`) and a store can wait on the
/// network (Redis).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The store could not answer (Redis unreachable, a command timed out): not
/// the same as "no such session". [`Sessions`] treats it as "unknown for
/// now": the request gets no login, but no socket is closed and nothing is
/// swept, since the session may well be alive.
///
/// The message says what failed, never which session: ids are secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError {
    message: String,
}

impl StoreError {
    /// An error with this description. It is logged: it must not contain a
    /// session id.
    pub fn new(message: impl Into<String>) -> Self {
        StoreError {
            message: message.into(),
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "session store unavailable: {}", self.message)
    }
}

impl std::error::Error for StoreError {}

/// Where sessions live. In memory by default ([`MemorySessionStore`]); a
/// cluster keeps them in Redis (`wsbus_redis::session::RedisSessionStore`),
/// so that a session made on one node is known on every node.
///
/// Times are wall-clock instants handed in by [`Sessions`] (the store reads
/// no clock), so a store can keep expiry as a TTL (`PEXPIREAT`). Every method
/// distinguishes an answer from [`StoreError`] ("could not ask"); a store
/// that can wait (on the network) must bound the wait itself, since request
/// handlers await it.
///
/// **A store shared by several nodes must tell them of removals.** When a
/// session is removed on one node (logout), the sockets bound to it on every
/// other node must close: the store (or the cluster engine beside it, see
/// `wsbus-redis`) passes the news on, and each node calls
/// [`Sessions::end_bindings`]. Without that, other nodes only notice at their
/// next sweep ([`Sessions::sweep_interval`]), which also catches sessions a
/// store expired by itself (a TTL).
pub trait SessionStore: Send + Sync + 'static {
    /// Store a new session.
    fn insert(&self, session: Session) -> StoreFuture<'_, Result<(), StoreError>>;
    /// The session with this id, unless it has expired by `now`.
    fn get<'a>(
        &'a self,
        id: &'a SessionId,
        now: SystemTime,
    ) -> StoreFuture<'a, Result<Option<Session>, StoreError>>;
    /// Move the session's expiry to `expires_at`. Returns false if it does
    /// not exist.
    fn touch<'a>(
        &'a self,
        id: &'a SessionId,
        expires_at: SystemTime,
    ) -> StoreFuture<'a, Result<bool, StoreError>>;
    /// Remove the session. Returns whether it existed.
    fn remove<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, Result<bool, StoreError>>;
    /// Remove every session expired by `now` and return their ids. A store
    /// that expires entries by itself (a TTL) may return none: [`Sessions`]
    /// also ends the bindings of sessions that `get` no longer finds.
    fn remove_expired(
        &self,
        now: SystemTime,
    ) -> StoreFuture<'_, Result<Vec<SessionId>, StoreError>>;
}

/// The in-memory session store. Its futures are ready at once, and it never
/// fails.
#[derive(Debug, Default)]
pub struct MemorySessionStore {
    sessions: Mutex<HashMap<SessionId, Session>>,
}

impl MemorySessionStore {
    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Session>> {
        self.sessions.lock().expect("sessions lock")
    }
}

/// A future that is ready at once with `value`.
fn ready<'a, T: Send + 'a>(value: T) -> StoreFuture<'a, Result<T, StoreError>> {
    Box::pin(std::future::ready(Ok(value)))
}

impl SessionStore for MemorySessionStore {
    fn insert(&self, session: Session) -> StoreFuture<'_, Result<(), StoreError>> {
        self.sessions().insert(session.id.clone(), session);
        ready(())
    }

    fn get<'a>(
        &'a self,
        id: &'a SessionId,
        now: SystemTime,
    ) -> StoreFuture<'a, Result<Option<Session>, StoreError>> {
        ready(
            self.sessions()
                .get(id)
                .filter(|session| session.expires_at > now)
                .cloned(),
        )
    }

    fn touch<'a>(
        &'a self,
        id: &'a SessionId,
        expires_at: SystemTime,
    ) -> StoreFuture<'a, Result<bool, StoreError>> {
        let found = match self.sessions().get_mut(id) {
            Some(session) => {
                session.expires_at = expires_at;
                true
            }
            None => false,
        };
        ready(found)
    }

    fn remove<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, Result<bool, StoreError>> {
        ready(self.sessions().remove(id).is_some())
    }

    fn remove_expired(
        &self,
        now: SystemTime,
    ) -> StoreFuture<'_, Result<Vec<SessionId>, StoreError>> {
        let mut sessions = self.sessions();
        let expired: Vec<SessionId> = sessions
            .values()
            .filter(|s| s.expires_at <= now)
            .map(|s| s.id.clone())
            .collect();
        for id in &expired {
            sessions.remove(id);
        }
        ready(expired)
    }
}

/// A socket bound to a session.
#[derive(Clone, Copy, Debug)]
struct Binding {
    socket: SocketId,
    terminate_on_exit: bool,
}

/// The wall clock of [`Sessions`]: read once, then advanced by tokio's
/// monotonic clock (module docs, "Time").
#[derive(Debug)]
struct WallClock {
    anchor: Instant,
    anchor_wall: SystemTime,
}

impl WallClock {
    fn new() -> Self {
        WallClock {
            anchor: Instant::now(),
            anchor_wall: SystemTime::now(),
        }
    }

    fn now(&self) -> SystemTime {
        self.anchor_wall + self.anchor.elapsed()
    }
}

/// Sessions and the sockets bound to them: login, lookup by cookie, logout,
/// idle expiry. One per [`Runtime`](crate::Runtime).
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    idle_timeout: Duration,
    clock: WallClock,
    hub: Hub,
    bindings: Mutex<HashMap<SessionId, Vec<Binding>>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// Sessions kept in `store`, ending after `idle_timeout` without use;
    /// bound sockets are closed through `hub`.
    pub(crate) fn new(store: Arc<dyn SessionStore>, idle_timeout: Duration, hub: Hub) -> Self {
        Sessions {
            store,
            idle_timeout,
            clock: WallClock::new(),
            hub,
            bindings: Mutex::default(),
        }
    }

    /// How long a session lives without use.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// How often idle sessions are swept: a tenth of the idle timeout,
    /// clamped to [10 s, 10 min]: often enough that an idle session ends
    /// within a tenth of its timeout, rarely enough that a sweep of many
    /// sessions is cheap.
    pub fn sweep_interval(&self) -> Duration {
        (self.idle_timeout / 10).clamp(Duration::from_secs(10), Duration::from_secs(600))
    }

    /// Start a session for `user`. Fails only if the store is unavailable
    /// (then there is no session: answer 503, not a cookie).
    pub async fn login(&self, user: User) -> Result<SessionId, StoreError> {
        let id = SessionId::generate();
        self.store
            .insert(Session {
                id: id.clone(),
                user,
                expires_at: self.clock.now() + self.idle_timeout,
            })
            .await?;
        Ok(id)
    }

    /// The live session with this id, refreshed (an HTTP request is activity).
    ///
    /// `None` if there is none — then sockets bound to it close — or if the
    /// store is unavailable: then this request has no login, but bound
    /// sockets stay open, since the session may well be alive.
    pub async fn resolve(&self, id: &SessionId) -> Option<Session> {
        let now = self.clock.now();
        let mut session = match self.store.get(id, now).await {
            Ok(Some(session)) => session,
            Ok(None) => {
                // Unknown, or expired and not swept yet: end it now. If the
                // removal fails the store's own expiry or sweep removes it.
                if let Err(error) = self.store.remove(id).await {
                    tracing::debug!(target: "wsbus::session", %error, "removing an expired session");
                }
                self.end(id);
                return None;
            }
            Err(error) => {
                // Per request, hence debug: the store reports its outage
                // (`wsbus-redis` logs each change of state).
                tracing::debug!(target: "wsbus::session", %error, "session lookup failed: request served without login");
                return None;
            }
        };
        session.expires_at = now + self.idle_timeout;
        if let Err(error) = self.store.touch(id, session.expires_at).await {
            // Found a moment ago: serve the request; the session is refreshed
            // by its next use.
            tracing::debug!(target: "wsbus::session", %error, "refreshing a session");
        }
        Some(session)
    }

    /// The session named by a request's `Cookie` headers, if live (see
    /// [`Self::resolve`]). The headers are read before the returned future
    /// is first polled, so it does not borrow them.
    pub fn from_cookies<'a>(
        &self,
        cookie_headers: impl IntoIterator<Item = &'a str>,
    ) -> impl Future<Output = Option<Session>> + Send + '_ {
        let id = Self::id_from_cookies(cookie_headers);
        async move {
            match id {
                Some(id) => self.resolve(&id).await,
                None => None,
            }
        }
    }

    /// The session id that a request's `Cookie` headers carry, whether or
    /// not such a session exists (logout needs no lookup).
    pub fn id_from_cookies<'a>(
        cookie_headers: impl IntoIterator<Item = &'a str>,
    ) -> Option<SessionId> {
        cookie_headers
            .into_iter()
            .flat_map(|h| h.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, value)| SessionId(value.to_owned()))
    }

    /// Refresh a session (inbound WebSocket activity with `session_access`).
    /// Returns false if it does not exist.
    pub async fn touch(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.store
            .touch(id, self.clock.now() + self.idle_timeout)
            .await
    }

    /// End a session (logout): bound sockets with `terminate_on_session_exit`
    /// are closed with 1008. Returns whether it existed.
    ///
    /// If the store is unavailable nothing ends (the session is still in the
    /// store, usable from any node): the caller says so, and the user can
    /// try again.
    pub async fn logout(&self, id: &SessionId) -> Result<bool, StoreError> {
        let existed = self.store.remove(id).await?;
        self.end(id);
        Ok(existed)
    }

    /// A session ended on another node: close this node's sockets bound to
    /// it (those with `terminate_on_session_exit`, with 1008) and forget the
    /// bindings. The store is not asked: a cluster engine calls this when it
    /// hears of a logout elsewhere (see [`SessionStore`]).
    pub fn end_bindings(&self, id: &SessionId) {
        self.end(id);
    }

    /// Expire idle sessions now and close their bound sockets; returns how
    /// many sessions with bindings or in the store ended.
    ///
    /// While the store is unavailable nothing ends: a session it cannot
    /// confirm is not taken for gone.
    pub async fn sweep(&self) -> usize {
        let now = self.clock.now();
        let mut ended: HashSet<SessionId> = match self.store.remove_expired(now).await {
            Ok(expired) => expired.into_iter().collect(),
            Err(error) => {
                tracing::warn!(target: "wsbus::session", %error, "session sweep skipped");
                return 0;
            }
        };
        // Sessions that the store expired by itself (a TTL), or that another
        // process removed: their sockets here are bound to nothing.
        let bound: Vec<SessionId> = self
            .bindings
            .lock()
            .expect("bindings lock")
            .keys()
            .filter(|id| !ended.contains(*id))
            .cloned()
            .collect();
        for id in bound {
            match self.store.get(&id, now).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    ended.insert(id);
                }
                Err(error) => {
                    tracing::warn!(target: "wsbus::session", %error, "session sweep stopped");
                    break;
                }
            }
        }
        for id in &ended {
            self.end(id);
        }
        ended.len()
    }

    /// Run [`Self::sweep`] every [`Self::sweep_interval`] until the returned
    /// task is aborted.
    pub fn spawn_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let sessions = Arc::downgrade(self);
        let period = self.sweep_interval();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(sessions) = sessions.upgrade() else {
                    return;
                };
                let ended = sessions.sweep().await;
                if ended > 0 {
                    tracing::debug!(target: "wsbus::session", ended, "idle sessions expired");
                }
            }
        })
    }

    fn end(&self, id: &SessionId) {
        let bound = self
            .bindings
            .lock()
            .expect("bindings lock")
            .remove(id)
            .unwrap_or_default();
        for binding in bound.iter().filter(|b| b.terminate_on_exit) {
            self.hub.close(
                binding.socket,
                CloseCode::POLICY_VIOLATION,
                SESSION_ENDED_REASON,
            );
        }
    }

    /// The number of open sockets of this node bound to session `id`.
    pub fn bound_sockets(&self, id: &SessionId) -> usize {
        self.bindings
            .lock()
            .expect("bindings lock")
            .get(id)
            .map_or(0, Vec::len)
    }

    pub(crate) fn bind(&self, id: &SessionId, socket: SocketId, terminate_on_exit: bool) {
        self.bindings
            .lock()
            .expect("bindings lock")
            .entry(id.clone())
            .or_default()
            .push(Binding {
                socket,
                terminate_on_exit,
            });
    }

    pub(crate) fn unbind(&self, id: &SessionId, socket: SocketId) {
        let mut bindings = self.bindings.lock().expect("bindings lock");
        if let Some(bound) = bindings.get_mut(id) {
            bound.retain(|b| b.socket != socket);
            if bound.is_empty() {
                bindings.remove(id);
            }
        }
    }

    /// The `Set-Cookie` value that stores a session in the browser.
    pub fn cookie(id: &SessionId, secure: bool) -> String {
        let secure = if secure { "; Secure" } else { "" };
        format!(
            "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax{secure}",
            id.0
        )
    }

    /// The `Set-Cookie` value that removes it.
    pub fn clear_cookie(secure: bool) -> String {
        let secure = if secure { "; Secure" } else { "" };
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::SocketShared;

    #[test]
    fn sweep_interval_is_clamped() {
        let with = |idle| {
            Sessions::new(Arc::new(MemorySessionStore::default()), idle, Hub::new())
                .sweep_interval()
        };
        assert_eq!(with(Duration::from_secs(30)), Duration::from_secs(10));
        assert_eq!(with(Duration::from_secs(1800)), Duration::from_secs(180));
        assert_eq!(with(Duration::from_secs(86_400)), Duration::from_secs(600));
    }

    #[test]
    fn cookies_are_http_only_and_lax() {
        let id = SessionId("abc".into());
        assert_eq!(
            Sessions::cookie(&id, false),
            "wsbus_session=abc; Path=/; HttpOnly; SameSite=Lax"
        );
        assert!(Sessions::cookie(&id, true).ends_with("; Secure"));
        assert!(format!("{id:?}").contains("redacted"));
    }

    fn sessions(idle: Duration) -> (Sessions, Hub) {
        let hub = Hub::new();
        let sessions = Sessions::new(Arc::new(MemorySessionStore::default()), idle, hub.clone());
        (sessions, hub)
    }

    /// Idle expiry on tokio's paused clock: no real waiting, no timing window.
    #[tokio::test(start_paused = true)]
    async fn idle_sessions_expire_and_use_keeps_them() {
        let idle = Duration::from_secs(30 * 60);
        let (sessions, _hub) = sessions(idle);
        let idle_one = sessions.login(User::new("idle")).await.unwrap();
        let used = sessions.login(User::new("used")).await.unwrap();
        tokio::time::advance(idle - Duration::from_secs(1)).await;
        assert_eq!(sessions.sweep().await, 0);
        assert!(sessions.touch(&used).await.unwrap());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(sessions.sweep().await, 1, "only the unused session ends");
        assert!(sessions.resolve(&idle_one).await.is_none());
        assert_eq!(sessions.resolve(&used).await.unwrap().user.login, "used");
        // resolve is use too: a full idle timeout later, it is still alive.
        tokio::time::advance(idle - Duration::from_secs(1)).await;
        assert!(sessions.resolve(&used).await.is_some());
        tokio::time::advance(idle).await;
        assert!(sessions.resolve(&used).await.is_none());
    }

    /// A session that expired before the sweep saw it closes its sockets on
    /// the next lookup, and the sweep closes bound sockets with 1008.
    #[tokio::test(start_paused = true)]
    async fn expiry_closes_bound_sockets_with_1008() {
        let idle = Duration::from_secs(60);
        let (sessions, hub) = sessions(idle);
        let swept = sessions.login(User::new("swept")).await.unwrap();
        let looked_up = sessions.login(User::new("looked-up")).await.unwrap();
        let (a_shared, b_shared, c_shared) = (hub.register(), hub.register(), hub.register());
        let (a, b, c) = (a_shared.id(), b_shared.id(), c_shared.id());
        sessions.bind(&swept, a, true);
        sessions.bind(&swept, b, false);
        sessions.bind(&looked_up, c, true);
        tokio::time::advance(idle).await;
        assert!(sessions.resolve(&looked_up).await.is_none());
        let closes = |shared: &SocketShared| {
            shared
                .drain()
                .into_iter()
                .filter_map(|item| match item {
                    crate::hub::Outbound::Close(code, reason) => Some((code, reason)),
                    crate::hub::Outbound::Message(_) | crate::hub::Outbound::Overflowed => None,
                })
                .collect::<Vec<_>>()
        };
        let ended = vec![(CloseCode::POLICY_VIOLATION, SESSION_ENDED_REASON.to_owned())];
        assert_eq!(closes(&c_shared), ended);
        assert_eq!(sessions.sweep().await, 1);
        assert_eq!(closes(&a_shared), ended);
        assert_eq!(
            closes(&b_shared),
            vec![],
            "terminate_on_session_exit = false"
        );
        assert!(sessions.bindings.lock().unwrap().is_empty());
    }

    /// A store that expires sessions by itself (a TTL) returns nothing from
    /// `remove_expired`; the sweep still ends the bindings of what is gone.
    #[tokio::test(start_paused = true)]
    async fn sessions_gone_from_the_store_end_their_bindings() {
        let (sessions, hub) = sessions(Duration::from_secs(60));
        let id = sessions.login(User::new("elsewhere")).await.unwrap();
        let shared = hub.register();
        sessions.bind(&id, shared.id(), true);
        assert!(
            sessions.store.remove(&id).await.unwrap(),
            "removed by another node"
        );
        assert_eq!(sessions.sweep().await, 1);
        assert_eq!(shared.drain().len(), 1);
    }

    #[tokio::test]
    async fn login_resolve_logout() {
        let sessions = Sessions::new(
            Arc::new(MemorySessionStore::default()),
            Duration::from_secs(60),
            Hub::new(),
        );
        let id = sessions.login(User::new("ana")).await.unwrap();
        let cookie = format!("x=1; {SESSION_COOKIE}={}", id.as_str());
        assert_eq!(
            sessions
                .from_cookies([cookie.as_str()])
                .await
                .unwrap()
                .user
                .login,
            "ana"
        );
        assert!(sessions.logout(&id).await.unwrap());
        assert!(sessions.from_cookies([cookie.as_str()]).await.is_none());
    }

    /// A store that can be switched off, as a Redis that stopped answering.
    #[derive(Default)]
    struct Flaky {
        inner: MemorySessionStore,
        down: std::sync::atomic::AtomicBool,
    }

    impl Flaky {
        /// `answer()`, or an error without asking the inner store while
        /// down (its methods act before their futures are polled).
        fn or_down<'a, T: Send + 'a>(
            &self,
            answer: impl FnOnce() -> StoreFuture<'a, Result<T, StoreError>>,
        ) -> StoreFuture<'a, Result<T, StoreError>> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                Box::pin(std::future::ready(Err(StoreError::new("down"))))
            } else {
                answer()
            }
        }
    }

    impl SessionStore for Flaky {
        fn insert(&self, session: Session) -> StoreFuture<'_, Result<(), StoreError>> {
            self.or_down(|| self.inner.insert(session))
        }
        fn get<'a>(
            &'a self,
            id: &'a SessionId,
            now: SystemTime,
        ) -> StoreFuture<'a, Result<Option<Session>, StoreError>> {
            self.or_down(|| self.inner.get(id, now))
        }
        fn touch<'a>(
            &'a self,
            id: &'a SessionId,
            expires_at: SystemTime,
        ) -> StoreFuture<'a, Result<bool, StoreError>> {
            self.or_down(|| self.inner.touch(id, expires_at))
        }
        fn remove<'a>(&'a self, id: &'a SessionId) -> StoreFuture<'a, Result<bool, StoreError>> {
            self.or_down(|| self.inner.remove(id))
        }
        fn remove_expired(
            &self,
            now: SystemTime,
        ) -> StoreFuture<'_, Result<Vec<SessionId>, StoreError>> {
            self.or_down(|| self.inner.remove_expired(now))
        }
    }

    /// A store that cannot answer is not a store that says "no such
    /// session": no socket closes, no sweep ends anything, a logout fails
    /// instead of passing for done; once it answers again all is as before.
    #[tokio::test(start_paused = true)]
    async fn an_unavailable_store_ends_nothing() {
        use std::sync::atomic::Ordering::SeqCst;
        let store = Arc::new(Flaky::default());
        let hub = Hub::new();
        let sessions = Sessions::new(store.clone(), Duration::from_secs(60), hub.clone());
        let id = sessions.login(User::new("ana")).await.unwrap();
        let shared = hub.register();
        sessions.bind(&id, shared.id(), true);

        store.down.store(true, SeqCst);
        assert!(sessions.login(User::new("bo")).await.is_err());
        assert!(sessions.resolve(&id).await.is_none(), "no login for now");
        assert!(sessions.touch(&id).await.is_err());
        assert_eq!(sessions.sweep().await, 0);
        assert!(sessions.logout(&id).await.is_err());
        assert_eq!(sessions.bound_sockets(&id), 1);
        assert!(shared.drain().is_empty(), "nothing sent to the socket");

        store.down.store(false, SeqCst);
        assert_eq!(sessions.resolve(&id).await.unwrap().user.login, "ana");
        assert!(sessions.logout(&id).await.unwrap());
        assert_eq!(sessions.bound_sockets(&id), 0);
        assert_eq!(shared.drain().len(), 1, "closed by the logout");
    }

    /// `end_bindings` (a logout heard from another node) closes this node's
    /// bound sockets without asking the store.
    #[tokio::test]
    async fn end_bindings_closes_bound_sockets_only() {
        let (sessions, hub) = sessions(Duration::from_secs(60));
        let id = sessions.login(User::new("ana")).await.unwrap();
        let (bound, kept) = (hub.register(), hub.register());
        sessions.bind(&id, bound.id(), true);
        sessions.bind(&id, kept.id(), false);
        sessions.end_bindings(&id);
        assert_eq!(bound.drain().len(), 1);
        assert!(kept.drain().is_empty(), "terminate_on_session_exit = false");
        assert_eq!(sessions.bound_sockets(&id), 0);
        assert!(
            sessions.resolve(&id).await.is_some(),
            "the store is another node's business"
        );
    }
}
