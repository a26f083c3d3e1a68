//! `/metrics` of `wsbus serve` after a scripted session, read the way a
//! scraper reads it: parsed by the Prometheus project's own Python parsers
//! (`prometheus_client`, in conformance/.venv; see
//! conformance/metrics/parse_exposition.py), in both the Prometheus text
//! format and OpenMetrics. Every family SPEC §8 names must have samples,
//! with the labels it names and the values the session implies.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wsbus::client::{self, ClientOptions, WebSocket};
use wsbus::proto::{CloseCode, Message};
use wsbus_test_support::wire::{self, http_exchange};

mod common;
use common::serve;

/// How long a response may take: the server answers at once, but a loaded
/// test machine can delay it by seconds.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);

/// The families SPEC §8 names, as sample names, with the label each must
/// carry (`None`: unlabelled).
const SPEC_FAMILIES: [(&str, Option<&str>); 11] = [
    ("wsbus_connections", Some("transport")),
    ("wsbus_handshakes_total", Some("status")),
    ("wsbus_messages_total", Some("direction")),
    ("wsbus_bytes_total", Some("direction")),
    ("wsbus_closes_total", Some("code")),
    ("wsbus_bus_sessions", Some("transport")),
    ("wsbus_bus_deliveries_total", None),
    ("wsbus_auth_failures_total", Some("reason")),
    ("wsbus_limit_hits_total", Some("limit")),
    ("wsbus_schema_rejections_total", Some("direction")),
    ("wsbus_cluster_redis_up", None),
];

fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../conformance")
}

/// One parsed sample: its name, labels and value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The exposition `text` parsed by `prometheus_client` in `format`
/// (`prometheus` or `openmetrics`): the families' JSON and every sample.
fn parse(format: &str, text: &str) -> (Value, Vec<Sample>) {
    let python = conformance_dir().join(".venv/bin/python");
    assert!(
        python.exists(),
        "the Python venv is missing: run conformance/setup.sh"
    );
    let mut child = Command::new(python)
        .arg(conformance_dir().join("metrics/parse_exposition.py"))
        .arg(format)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the parser");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client ({format}) refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let families: Value = serde_json::from_slice(&output.stdout).unwrap();
    let samples = families
        .as_object()
        .unwrap()
        .values()
        .flat_map(|family| family["samples"].as_array().unwrap())
        .map(|s| Sample {
            name: s[0].as_str().unwrap().to_owned(),
            labels: serde_json::from_value(s[1].clone()).unwrap(),
            value: s[2].as_f64().unwrap_or(f64::INFINITY),
        })
        .collect();
    (families, samples)
}

/// The value of the sample `name` with exactly `labels`, if there is one.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// `GET /metrics`, with `accept` if any: the content type and the body.
fn scrape(addr: &str, accept: Option<&str>) -> (String, String) {
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    let response = http_exchange(
        addr,
        &format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"),
        b"",
        RESPONSE_TIMEOUT,
    )
    .expect("a response");
    assert_eq!(wire::status_code(&response), 200, "{response}");
    let content_type = response
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .expect("a content type");
    (content_type, wire::body(&response).to_owned())
}

/// A Bayeux batch over long-polling; the replies.
fn bayeux(addr: &str, messages: Value) -> Vec<Value> {
    let body = messages.to_string();
    let head = format!(
        "POST /amb HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let response = http_exchange(addr, &head, body.as_bytes(), RESPONSE_TIMEOUT).unwrap();
    assert_eq!(wire::status_code(&response), 200, "{response}");
    serde_json::from_str(wire::body(&response)).unwrap()
}

/// A long-polling bus session subscribed to `channel`: its client id.
fn long_polling_subscriber(addr: &str, channel: &str) -> String {
    let reply = bayeux(
        addr,
        json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}]),
    );
    let id = reply[0]["clientId"].as_str().unwrap().to_owned();
    let reply = bayeux(
        addr,
        json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": channel}]),
    );
    assert_eq!(reply[0]["successful"], true, "{reply:?}");
    id
}

async fn next_message(ws: &mut WebSocket) -> Message {
    tokio::time::timeout(RESPONSE_TIMEOUT, ws.recv_message())
        .await
        .expect("a message in time")
        .expect("no I/O error")
        .expect("a message before the end")
}

#[test]
fn every_spec_family_has_samples_after_a_scripted_session() {
    let server = serve(&[]);
    let addr = server.addr.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Kept open while scraping: a chat socket and a bus WebSocket session.
    let _open = runtime.block_on(async {
        // A chat socket that sends and receives, then closes with 1000.
        let url = format!("ws://{addr}/chat");
        let mut chat = client::connect(&url, ClientOptions::default()).await.unwrap();
        let welcome = next_message(&mut chat).await;
        assert!(welcome.payload().starts_with(b"Welcome"), "{welcome:?}");
        chat.send(Message::text("hello")).await.unwrap();
        assert_eq!(next_message(&mut chat).await, Message::text("hello"));
        assert_eq!(
            chat.close(CloseCode::NORMAL, "bye").await.unwrap(),
            CloseCode::NORMAL
        );
        // One that stays.
        let mut staying = client::connect(&url, ClientOptions::default()).await.unwrap();
        next_message(&mut staying).await;

        // The bus over WebSocket: a handshake and a connect.
        let mut bus = client::connect(&format!("ws://{addr}/amb"), ClientOptions::default())
            .await
            .unwrap();
        let send = |m: Value| Message::text(m.to_string());
        bus.send(send(json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["websocket"]}])))
            .await
            .unwrap();
        let reply: Value = serde_json::from_slice(next_message(&mut bus).await.payload()).unwrap();
        let id = reply[0]["clientId"].as_str().unwrap().to_owned();
        bus.send(send(json!([{"channel": "/meta/connect", "clientId": id, "connectionType": "websocket"}])))
            .await
            .unwrap();
        (staying, bus)
    });

    // The bus over long-polling: two sessions subscribe, one publishes, the
    // other's connect brings the message.
    let reader = long_polling_subscriber(&addr, "/chat/metrics");
    let writer = long_polling_subscriber(&addr, "/chat/metrics");
    let reply = bayeux(
        &addr,
        json!([{"channel": "/chat/metrics", "clientId": writer, "data": {"text": "hi"}}]),
    );
    assert_eq!(reply[0]["successful"], true, "{reply:?}");
    let delivered = bayeux(
        &addr,
        json!([{"channel": "/meta/connect", "clientId": reader, "connectionType": "long-polling"}]),
    );
    assert!(
        delivered.iter().any(|m| m["data"]["text"] == "hi"),
        "{delivered:?}"
    );

    // A refused upgrade: another site's origin.
    let refused = http_exchange(
        &addr,
        &format!(
            "GET /chat HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
        b"",
        RESPONSE_TIMEOUT,
    )
    .unwrap();
    assert_eq!(wire::status_code(&refused), 403, "{refused}");

    // The first chat socket's end is counted once its task has finished
    // (after its close reply was written): wait for that, not for a time.
    let deadline = Instant::now() + RESPONSE_TIMEOUT;
    let (content_type, text) = loop {
        let (content_type, text) = scrape(&addr, None);
        if text.contains("wsbus_closes_total{code=\"1000\"} 1") {
            break (content_type, text);
        }
        assert!(Instant::now() < deadline, "no close counted:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");

    let (families, samples) = parse("prometheus", &text);
    for (name, label) in SPEC_FAMILIES {
        let found: Vec<&Sample> = samples.iter().filter(|s| s.name == name).collect();
        assert!(!found.is_empty(), "no samples of {name} in\n{text}");
        if let Some(label) = label {
            assert!(
                found.iter().all(|s| s.labels.contains_key(label)),
                "{name} without its label {label}: {found:?}"
            );
        }
    }
    let get = |name: &str, labels: &[(&str, &str)]| {
        value(&samples, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
    };
    // The staying chat socket and the bus socket.
    assert_eq!(get("wsbus_connections", &[("transport", "websocket")]), 2.0);
    assert_eq!(
        get("wsbus_connections", &[("transport", "long-polling")]),
        0.0
    );
    assert_eq!(get("wsbus_handshakes_total", &[("status", "101")]), 3.0);
    assert_eq!(get("wsbus_handshakes_total", &[("status", "403")]), 1.0);
    assert_eq!(
        get(
            "wsbus_handshake_refusals_total",
            &[("reason", "origin_not_allowed")]
        ),
        1.0
    );
    // In: "hello", the bus handshake and connect. Out: two welcomes, the
    // broadcast "hello", the bus handshake reply.
    assert!(get("wsbus_messages_total", &[("direction", "in")]) >= 3.0);
    assert!(get("wsbus_messages_total", &[("direction", "out")]) >= 4.0);
    assert!(get("wsbus_bytes_total", &[("direction", "in")]) > 0.0);
    assert!(get("wsbus_bytes_total", &[("direction", "out")]) > 0.0);
    assert_eq!(get("wsbus_closes_total", &[("code", "1000")]), 1.0);
    assert_eq!(
        get("wsbus_bus_sessions", &[("transport", "websocket")]),
        1.0
    );
    assert_eq!(
        get("wsbus_bus_sessions", &[("transport", "long-polling")]),
        2.0
    );
    assert_eq!(get("wsbus_bus_publishes_total", &[]), 1.0);
    assert!(get("wsbus_bus_deliveries_total", &[]) >= 1.0);
    assert_eq!(
        get("wsbus_auth_failures_total", &[("reason", "missing")]),
        0.0
    );
    assert_eq!(
        get(
            "wsbus_limit_hits_total",
            &[("limit", "messages_per_second")]
        ),
        0.0
    );
    assert_eq!(
        get("wsbus_schema_rejections_total", &[("direction", "in")]),
        0.0
    );
    assert_eq!(get("wsbus_cluster_redis_up", &[]), 0.0);
    assert_eq!(get("wsbus_cluster_enabled", &[]), 0.0);
    assert_eq!(get("wsbus_handshake_duration_seconds_count", &[]), 4.0);
    assert_eq!(
        get("wsbus_handshake_duration_seconds_bucket", &[("le", "+Inf")]),
        4.0
    );
    assert!(get("wsbus_tcp_connections_accepted_total", &[]) >= 4.0);
    // Types and help as a scraper reads them.
    assert_eq!(families["wsbus_connections"]["type"], "gauge");
    assert_eq!(families["wsbus_handshakes"]["type"], "counter");
    assert_eq!(
        families["wsbus_handshake_duration_seconds"]["type"],
        "histogram"
    );
    assert!(
        families
            .as_object()
            .unwrap()
            .values()
            .all(|f| !f["help"].as_str().unwrap().is_empty()),
        "every family has HELP"
    );

    // Every metric the Grafana dashboard queries is one the server exposes.
    let dashboard = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ops/grafana/wsbus.json"),
    )
    .unwrap();
    let mut queried: Vec<&str> = dashboard
        .match_indices("wsbus_")
        .map(|(at, _)| {
            let rest = &dashboard[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    queried.dedup();
    assert!(queried.len() > 10, "{queried:?}");
    for name in queried {
        assert!(
            samples.iter().any(|s| s.name == name),
            "the dashboard queries {name}, which /metrics does not expose"
        );
    }

    // OpenMetrics, when asked for, passes the strict parser too.
    let (content_type, text) = scrape(
        &addr,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    let (families, samples) = parse("openmetrics", &text);
    for (name, _) in SPEC_FAMILIES {
        assert!(
            samples.iter().any(|s| s.name == name),
            "no samples of {name} in\n{text}"
        );
    }
    assert_eq!(
        families["wsbus_handshake_duration_seconds"]["unit"],
        "seconds"
    );
}
