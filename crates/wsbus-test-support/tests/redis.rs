//! The Redis harness itself, against a real `redis-server`.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use wsbus_test_support::redis::RedisServer;

/// How long a paused Redis is given to show that it does not answer: a
/// running one answers in microseconds, so a reply within this is a failure
/// of the pause, and no reply is only the expected outcome, not a race.
const SILENCE: Duration = Duration::from_millis(300);

#[test]
fn starts_answers_survives_kill9_and_restarts_empty_on_the_same_port() {
    let mut redis = RedisServer::start();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_eq!(redis.command(&["SET", "k", "v"]), "OK");
    assert_eq!(redis.command(&["GET", "k"]), "v");
    assert_eq!(redis.command(&["DBSIZE"]), "1");
    assert_eq!(redis.command(&["GET", "missing"]), "(nil)");
    assert_eq!(redis.command(&["PUBLISH", "nobody", "hi"]), "0");

    let (port, pid) = (redis.port(), redis.pid());
    redis.kill9();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens after kill -9"
    );
    redis.restart();
    assert_eq!(redis.port(), port);
    assert_ne!(redis.pid(), pid);
    assert_eq!(redis.command(&["DBSIZE"]), "0", "it came back empty");
}

#[test]
fn a_paused_redis_does_not_answer_until_resumed() {
    let mut redis = RedisServer::start();
    let mut client = std::net::TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
    redis.pause();
    client.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    client.set_read_timeout(Some(SILENCE)).unwrap();
    let mut reply = [0u8; 7];
    assert!(
        client.read_exact(&mut reply).is_err(),
        "paused, yet answered"
    );
    redis.resume();
    // The PING sent while paused is answered once it runs again.
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+PONG\r\n");
    assert_eq!(redis.command(&["PING"]), "PONG");
}

#[test]
fn drop_stops_the_process_even_when_paused() {
    let mut redis = RedisServer::start();
    let pid = redis.pid();
    redis.pause();
    let started = Instant::now();
    drop(redis);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "redis-server {pid} still runs after drop ({:?})",
        started.elapsed()
    );
}
