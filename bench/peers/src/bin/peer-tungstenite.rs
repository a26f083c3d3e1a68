//! `peer-tungstenite --listen ADDR [--tls-cert FILE --tls-key FILE]`: `wsbus
//! echo`'s behaviour over the `tokio-tungstenite` crate, with its default
//! configuration.
//!
//! Echo sockets are the crate's `echo-server` example (the read half, text and
//! binary only, forwarded into the write half: written as they come, flushed
//! when nothing more is ready). `/broadcast` is its `server` example: a map
//! of per-socket unbounded queues, each message cloned into every queue (the
//! payload is shared `Bytes`; tungstenite frames it once per socket, it has no
//! pre-encoded message), each queue forwarded into its socket. Over TLS the
//! crate's `accept_hdr_async` takes the `tokio_rustls` server stream instead
//! of the `TcpStream` (it is generic over the stream), as its users do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bench_peers::{BROADCAST_PATH, options};
use futures_channel::mpsc::{UnboundedSender, unbounded};
use futures_util::{StreamExt, TryStreamExt, future, pin_mut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// The sockets on `/broadcast`.
#[derive(Default)]
struct Hub {
    next_id: AtomicU64,
    sockets: Mutex<HashMap<u64, UnboundedSender<Message>>>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options();
    let listener = TcpListener::bind(options.listen).await?;
    eprintln!(
        "peer-tungstenite listening on {}://{}",
        options.scheme(),
        listener.local_addr()?
    );
    let hub = Arc::new(Hub::default());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let hub = hub.clone();
        match options.tls.clone() {
            None => tokio::spawn(handle(stream, hub)),
            Some(tls) => tokio::spawn(async move {
                if let Ok(stream) = tls.accept(stream).await {
                    handle(stream, hub).await;
                }
            }),
        };
    }
}

// The callback's error type (an HTTP response) is the crate's, not ours.
#[allow(clippy::result_large_err)]
async fn handle<S: AsyncRead + AsyncWrite + Unpin>(stream: S, hub: Arc<Hub>) {
    let mut path = String::new();
    let callback = |req: &Request, response: Response| {
        path = req.uri().path().to_owned();
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    if path == BROADCAST_PATH {
        broadcast_socket(ws, &hub).await;
    } else {
        echo_socket(ws).await;
    }
}

async fn echo_socket<S: AsyncRead + AsyncWrite + Unpin>(ws: WebSocketStream<S>) {
    let (write, read) = ws.split();
    let _ = read
        .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
        .forward(write)
        .await;
}

async fn broadcast_socket<S: AsyncRead + AsyncWrite + Unpin>(ws: WebSocketStream<S>, hub: &Hub) {
    let (queue, queued) = unbounded();
    let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
    hub.sockets.lock().unwrap().insert(id, queue);

    let (outgoing, incoming) = ws.split();
    let relay = incoming.try_for_each(|msg| {
        if msg.is_text() || msg.is_binary() {
            for socket in hub.sockets.lock().unwrap().values() {
                let _ = socket.unbounded_send(msg.clone());
            }
        }
        future::ok(())
    });
    let deliver = queued.map(Ok).forward(outgoing);
    pin_mut!(relay, deliver);
    future::select(relay, deliver).await;

    hub.sockets.lock().unwrap().remove(&id);
}
