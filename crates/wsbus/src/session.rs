//! HTTP sessions and the sockets bound to them (SPEC §3, seed 004).
//!
//! A session is a cookie-identified login. A WebSocket opened by a request
//! that carries a session is bound to it: when the session ends — logout or
//! idle expiry — sockets opened with `terminate_on_session_exit` are closed
//! with 1008 `HTTP session ended`. Idle sessions are expired by a sweep that
//! runs every idle-timeout / 10, clamped to [10 s, 10 min].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    pub display_name: String,
}

impl User {
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
    fn generate() -> Self {
        let bytes: [u8; 32] = rand::rng().random();
        SessionId(URL_SAFE_NO_PAD.encode(bytes))
    }

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
    pub id: SessionId,
    pub user: User,
    pub last_access: Instant,
}

/// Where sessions live. In memory by default; the cluster engine stores them
/// in Redis so that a logout on any node ends them everywhere.
pub trait SessionStore: Send + Sync + 'static {
    fn insert(&self, session: Session);
    fn get(&self, id: &SessionId) -> Option<Session>;
    /// Mark the session used now. Returns false if it does not exist.
    fn touch(&self, id: &SessionId, now: Instant) -> bool;
    /// Remove the session. Returns whether it existed.
    fn remove(&self, id: &SessionId) -> bool;
    /// Remove and return every session idle since before `cutoff`.
    fn remove_idle(&self, cutoff: Instant) -> Vec<SessionId>;
}

/// The in-memory session store.
#[derive(Debug, Default)]
pub struct MemorySessionStore {
    sessions: Mutex<HashMap<SessionId, Session>>,
}

impl SessionStore for MemorySessionStore {
    fn insert(&self, session: Session) {
        self.sessions
            .lock()
            .expect("sessions lock")
            .insert(session.id.clone(), session);
    }

    fn get(&self, id: &SessionId) -> Option<Session> {
        self.sessions
            .lock()
            .expect("sessions lock")
            .get(id)
            .cloned()
    }

    fn touch(&self, id: &SessionId, now: Instant) -> bool {
        match self.sessions.lock().expect("sessions lock").get_mut(id) {
            Some(session) => {
                session.last_access = now;
                true
            }
            None => false,
        }
    }

    fn remove(&self, id: &SessionId) -> bool {
        self.sessions
            .lock()
            .expect("sessions lock")
            .remove(id)
            .is_some()
    }

    fn remove_idle(&self, cutoff: Instant) -> Vec<SessionId> {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let idle: Vec<SessionId> = sessions
            .values()
            .filter(|s| s.last_access < cutoff)
            .map(|s| s.id.clone())
            .collect();
        for id in &idle {
            sessions.remove(id);
        }
        idle
    }
}

/// A socket bound to a session.
#[derive(Clone, Copy, Debug)]
struct Binding {
    socket: SocketId,
    terminate_on_exit: bool,
}

/// Sessions and their socket bindings.
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    idle_timeout: Duration,
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
    pub fn new(store: Arc<dyn SessionStore>, idle_timeout: Duration, hub: Hub) -> Self {
        Sessions {
            store,
            idle_timeout,
            hub,
            bindings: Mutex::default(),
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// How often idle sessions are swept: a tenth of the idle timeout,
    /// clamped to [10 s, 10 min] (seed 004).
    pub fn sweep_interval(&self) -> Duration {
        (self.idle_timeout / 10).clamp(Duration::from_secs(10), Duration::from_secs(600))
    }

    /// Start a session for `user`.
    pub fn login(&self, user: User) -> SessionId {
        let id = SessionId::generate();
        self.store.insert(Session {
            id: id.clone(),
            user,
            last_access: Instant::now(),
        });
        id
    }

    /// The live session with this id, refreshed (an HTTP request is activity).
    pub fn resolve(&self, id: &SessionId) -> Option<Session> {
        let session = self.store.get(id)?;
        if session.last_access + self.idle_timeout < Instant::now() {
            self.end(id);
            return None;
        }
        self.store.touch(id, Instant::now());
        Some(session)
    }

    /// The session named by a request's `Cookie` headers, if live.
    pub fn from_cookies<'a>(
        &self,
        cookie_headers: impl IntoIterator<Item = &'a str>,
    ) -> Option<Session> {
        let id = cookie_headers
            .into_iter()
            .flat_map(|h| h.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, value)| SessionId(value.to_owned()))?;
        self.resolve(&id)
    }

    /// Refresh a session (inbound WebSocket activity with `session_access`).
    pub fn touch(&self, id: &SessionId) -> bool {
        self.store.touch(id, Instant::now())
    }

    /// End a session (logout): bound sockets with `terminate_on_session_exit`
    /// are closed with 1008.
    pub fn logout(&self, id: &SessionId) -> bool {
        let existed = self.store.remove(id);
        self.end(id);
        existed
    }

    /// Expire idle sessions now; returns how many ended.
    pub fn sweep(&self) -> usize {
        let ended = self.store.remove_idle(Instant::now() - self.idle_timeout);
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
                let ended = sessions.sweep();
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

    #[tokio::test]
    async fn login_resolve_logout() {
        let sessions = Sessions::new(
            Arc::new(MemorySessionStore::default()),
            Duration::from_secs(60),
            Hub::new(),
        );
        let id = sessions.login(User::new("ana"));
        let cookie = format!("x=1; {SESSION_COOKIE}={}", id.as_str());
        assert_eq!(
            sessions.from_cookies([cookie.as_str()]).unwrap().user.login,
            "ana"
        );
        assert!(sessions.logout(&id));
        assert!(sessions.from_cookies([cookie.as_str()]).is_none());
    }
}
