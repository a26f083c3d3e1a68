//! Our client role against real servers: Node `ws` and Python `websockets`,
//! with and without permessage-deflate. The peers live in
//! `conformance/interop/` and are installed by `conformance/setup.sh`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use wsbus::client::{self, ClientOptions};
use wsbus::proto::{CloseCode, DeflateConfig, Event, Message};

fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../conformance")
}

/// A peer server process, killed on drop.
struct Peer {
    child: Child,
    port: u16,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, Debug)]
enum PeerKind {
    NodeWs,
    PythonWebsockets,
}

fn start_peer(kind: PeerKind, deflate: bool) -> Peer {
    let dir = conformance_dir();
    let interop = dir.join("interop");
    let mut command = match kind {
        PeerKind::NodeWs => {
            assert!(
                interop.join("node_modules/ws").exists(),
                "Node ws is not installed: run conformance/setup.sh"
            );
            let mut c = Command::new("node");
            c.arg(interop.join("ws_echo_server.mjs"));
            c
        }
        PeerKind::PythonWebsockets => {
            let python = dir.join(".venv/bin/python");
            assert!(
                python.exists(),
                "the Python venv is missing: run conformance/setup.sh"
            );
            let mut c = Command::new(python);
            c.arg(interop.join("websockets_echo_server.py"));
            c
        }
    };
    command
        .args(["--port", "0"])
        .current_dir(&interop)
        .stdout(Stdio::piped());
    if deflate {
        command.arg("--deflate");
    }
    let mut child = command.spawn().expect("start peer server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("{kind:?} did not start: {line:?}"))
        .parse()
        .unwrap();
    Peer { child, port }
}

async fn exercise(kind: PeerKind, deflate: bool) {
    let peer = start_peer(kind, deflate);
    let options = ClientOptions {
        deflate: deflate.then(|| DeflateConfig {
            threshold: 0,
            ..DeflateConfig::with_context_takeover()
        }),
        ..ClientOptions::default()
    };
    let url = format!("ws://127.0.0.1:{}/interop", peer.port);
    let mut ws = client::connect(&url, options).await.unwrap();
    assert_eq!(ws.negotiated().deflate.is_some(), deflate, "{kind:?}");

    // The peer reports the extension it agreed to.
    ws.send(Message::text("__extensions__")).await.unwrap();
    let Some(Message::Text(agreed)) = ws.recv_message().await.unwrap() else {
        panic!("expected the extensions report");
    };
    assert_eq!(
        agreed.as_str().starts_with("permessage-deflate"),
        deflate,
        "{kind:?}: {agreed}"
    );

    let json = r#"{"channel":"/chat","data":{"text":"hello hello hello"}}"#.repeat(2000);
    let messages = [
        Message::text("hello"),
        Message::text("ünïcödé ☃ 😀"),
        Message::text(""),
        Message::binary((0..=255u8).collect::<Vec<_>>()),
        Message::text(json.clone()),
        Message::binary(vec![7u8; 300_000]),
    ];
    for message in messages {
        ws.send(message.clone()).await.unwrap();
        assert_eq!(
            ws.recv_message().await.unwrap(),
            Some(message),
            "{kind:?} deflate={deflate}"
        );
    }
    // Fragmented, and (with deflate) compressed before fragmenting.
    ws.send_fragmented(Message::text(json.clone()), 4096)
        .await
        .unwrap();
    assert_eq!(ws.recv_message().await.unwrap(), Some(Message::text(json)));
    ws.send_fragmented(Message::binary(vec![1u8; 10_000]), 999)
        .await
        .unwrap();
    assert_eq!(
        ws.recv_message().await.unwrap(),
        Some(Message::binary(vec![1u8; 10_000]))
    );

    ws.ping(&b"ping!"[..]).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Some(Event::Pong("ping!".into())));

    // A clean close: the peer echoes 1000 and closes TCP.
    assert_eq!(
        ws.close(CloseCode::NORMAL, "done").await.unwrap(),
        CloseCode::NORMAL
    );
}

#[tokio::test]
async fn against_node_ws() {
    exercise(PeerKind::NodeWs, false).await;
}

#[tokio::test]
async fn against_node_ws_with_deflate() {
    exercise(PeerKind::NodeWs, true).await;
}

#[tokio::test]
async fn against_python_websockets() {
    exercise(PeerKind::PythonWebsockets, false).await;
}

#[tokio::test]
async fn against_python_websockets_with_deflate() {
    exercise(PeerKind::PythonWebsockets, true).await;
}
