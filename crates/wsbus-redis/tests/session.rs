//! `RedisSessionStore` against a real `redis-server` of the test's own.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wsbus::session::{Session, SessionId, SessionStore, StoreError, User};
use wsbus::{Runtime, ServerConfig};
use wsbus_redis::session::{COMMAND_TIMEOUT, KEY_PREFIX, RedisSessionStore};
use wsbus_test_support::redis::RedisServer;

/// How long a test waits for something that must happen (Redis expiring a
/// key, a reconnection): generous, since a loaded machine is slow, and only
/// a failing test waits it out.
const DEADLINE: Duration = Duration::from_secs(20);

/// How often a wait checks again.
const POLL: Duration = Duration::from_millis(50);

/// How long a session lives in these tests unless a test says otherwise:
/// long enough that nothing expires by accident while a test runs.
const LIFETIME: Duration = Duration::from_secs(600);

fn session(login: &str, expires_at: SystemTime) -> Session {
    Session {
        id: SessionId::generate(),
        user: User {
            login: login.to_owned(),
            display_name: format!("{login} (display)"),
        },
        expires_at,
    }
}

/// Milliseconds since the epoch: Redis keeps expiries to the millisecond.
fn ms(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH).unwrap().as_millis()
}

/// `call` must come back, with anything, well within the deadline: a store
/// call never hangs.
async fn bounded<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, call)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {DEADLINE:?}"))
}

/// Repeat `attempt` until it gives `Some`, for at most [`DEADLINE`].
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn insert_get_touch_remove() {
    let redis = RedisServer::start();
    let store = RedisSessionStore::open(&redis.url()).unwrap();
    let now = SystemTime::now();
    let ana = session("ana", now + LIFETIME);
    store.insert(ana.clone()).await.unwrap();
    assert_eq!(
        redis.command(&["KEYS", "*"]),
        format!("{KEY_PREFIX}{}", ana.id.as_str())
    );

    let got = store.get(&ana.id, now).await.unwrap().expect("stored");
    assert_eq!(got.id, ana.id);
    assert_eq!(got.user, ana.user);
    assert_eq!(ms(got.expires_at), ms(ana.expires_at));
    // Expired by the caller's clock, though Redis still keeps it.
    let later = ana.expires_at + Duration::from_secs(1);
    assert!(store.get(&ana.id, later).await.unwrap().is_none());

    let moved = now + 2 * LIFETIME;
    assert!(store.touch(&ana.id, moved).await.unwrap());
    let got = store.get(&ana.id, later).await.unwrap().expect("moved on");
    assert_eq!(ms(got.expires_at), ms(moved));

    let unknown = SessionId::generate();
    assert!(store.get(&unknown, now).await.unwrap().is_none());
    assert!(!store.touch(&unknown, moved).await.unwrap());
    assert!(!store.remove(&unknown).await.unwrap());
    assert_eq!(redis.command(&["DBSIZE"]), "1", "touch creates nothing");

    assert!(store.remove_expired(later).await.unwrap().is_empty());
    assert!(store.remove(&ana.id).await.unwrap());
    assert!(!store.remove(&ana.id).await.unwrap());
    assert!(store.get(&ana.id, now).await.unwrap().is_none());
    assert_eq!(redis.command(&["DBSIZE"]), "0");
}

/// Redis drops a session at its expiry by itself (the store's wall clock,
/// handed in as `expires_at`, is the key's expiry).
#[tokio::test]
async fn redis_expires_sessions_by_itself() {
    let redis = RedisServer::start();
    let store = RedisSessionStore::open(&redis.url()).unwrap();
    let short = session("short", SystemTime::now() + Duration::from_millis(300));
    let long = session("long", SystemTime::now() + LIFETIME);
    store.insert(short.clone()).await.unwrap();
    store.insert(long.clone()).await.unwrap();
    eventually("redis to expire the short session", || async {
        (redis.command(&["EXISTS", &format!("{KEY_PREFIX}{}", short.id.as_str())]) == "0")
            .then_some(())
    })
    .await;
    // Asked with a clock that says the short one is still alive: gone all
    // the same, since Redis no longer has it.
    let before = short.expires_at - Duration::from_secs(1);
    assert!(store.get(&short.id, before).await.unwrap().is_none());
    assert!(store.get(&long.id, before).await.unwrap().is_some());

    // Already expired when stored: never seen.
    let past = session("past", SystemTime::now() - Duration::from_secs(1));
    store.insert(past.clone()).await.unwrap();
    assert!(store.get(&past.id, before).await.unwrap().is_none());
    assert_eq!(redis.command(&["DBSIZE"]), "1");
}

/// Two nodes, one Redis: a session made on one is known on the other, and a
/// logout on either ends it for both.
#[tokio::test]
async fn a_session_made_on_one_node_is_known_on_another() {
    let redis = RedisServer::start();
    let node = || {
        let store = RedisSessionStore::open(&redis.url()).unwrap();
        Runtime::builder(ServerConfig::default())
            .session_store(Arc::new(store))
            .build()
    };
    let (a, b) = (node(), node());
    let id = a.sessions().login(User::new("ana")).await.unwrap();
    let cookie = format!("wsbus_session={}", id.as_str());
    let on_b = b.sessions().from_cookies([cookie.as_str()]).await;
    assert_eq!(on_b.expect("known on b").user, User::new("ana"));
    assert!(b.sessions().logout(&id).await.unwrap());
    assert!(a.sessions().from_cookies([cookie.as_str()]).await.is_none());
    assert!(!a.sessions().logout(&id).await.unwrap(), "already ended");
}

/// A Redis of its own, a store on it, and one session stored at `now`.
async fn one_session_stored() -> (RedisServer, RedisSessionStore, SystemTime, Session) {
    let redis = RedisServer::start();
    let store = RedisSessionStore::open(&redis.url()).unwrap();
    let now = SystemTime::now();
    let stored = session("stored", now + LIFETIME);
    store.insert(stored.clone()).await.unwrap();
    (redis, store, now, stored)
}

/// `result` is a store error (not an answer) that does not name `id`.
fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, StoreError>, id: &SessionId) {
    let error = result.expect_err("an error, not an answer").to_string();
    assert!(
        !error.contains(id.as_str()),
        "the error names the session: {error}"
    );
}

/// A Redis that is gone is an error, never "no such session"; the error
/// names no session; a Redis that came back (empty) is used again.
#[tokio::test]
async fn a_killed_redis_gives_errors_and_a_restarted_one_works() {
    let (mut redis, store, now, before) = one_session_stored().await;
    redis.kill9();
    let id = &before.id;
    assert_unavailable(bounded("get", store.get(id, now)).await, id);
    let touched = bounded("touch", store.touch(id, now + LIFETIME)).await;
    assert_unavailable(touched, id);
    assert_unavailable(bounded("remove", store.remove(id)).await, id);
    let during = session("during", now + LIFETIME);
    let during_id = during.id.clone();
    assert_unavailable(bounded("insert", store.insert(during)).await, &during_id);

    redis.restart();
    let after = session("after", now + LIFETIME);
    eventually("the store to reconnect", || async {
        bounded("insert", store.insert(after.clone())).await.ok()
    })
    .await;
    assert!(store.get(&after.id, now).await.unwrap().is_some());
    assert!(
        store.get(id, now).await.unwrap().is_none(),
        "redis came back empty"
    );
}

/// A Redis that stops answering (SIGSTOP) fails calls after the command
/// timeout rather than hanging them; once it runs again, so does the store.
#[tokio::test]
async fn a_paused_redis_times_out_and_a_resumed_one_works() {
    let (mut redis, store, now, stored) = one_session_stored().await;
    redis.pause();
    assert_unavailable(bounded("get", store.get(&stored.id, now)).await, &stored.id);
    redis.resume();
    let got = eventually("the store to answer again", || async {
        bounded("get", store.get(&stored.id, now)).await.ok()
    })
    .await;
    assert_eq!(got.expect("still there").user, stored.user);
    assert!(COMMAND_TIMEOUT < DEADLINE, "bounded() allows the timeout");
}
