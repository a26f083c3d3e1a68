//! `peer-fastwebsockets --listen ADDR [--tls-cert FILE --tls-key FILE]`:
//! `wsbus echo`'s behaviour over the `fastwebsockets` crate (hyper 1
//! upgrades). Over TLS hyper serves the `tokio_rustls` server stream instead
//! of the `TcpStream` (hyper serves any `AsyncRead + AsyncWrite`); the
//! upgraded socket is the same `Upgraded` type either way.
//!
//! Echo sockets are handled as in the crate's own `echo_server` example (the
//! one its benchmarks run): a `FragmentCollector`, read a frame, write it back.
//! `/broadcast` sockets are split: the read half relays each message to every
//! `/broadcast` socket's queue; a writer task per socket drains its queue into
//! a buffered write half and flushes once the queue is empty. The payload is
//! shared (`Bytes`), only the 2–10 byte header is written per socket, which is
//! as close to "encode once" as this crate allows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bench_peers::{BROADCAST_PATH, options};
use bytes::Bytes;
use fastwebsockets::{
    FragmentCollector, FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError,
    WebSocketWrite, upgrade,
};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, BufWriter, WriteHalf};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

type Stream = TokioIo<Upgraded>;

/// One frame for a broadcast socket's writer: a relayed message, or a pong /
/// close reply the read half owes the peer.
struct Outgoing {
    opcode: OpCode,
    payload: Bytes,
}

/// The sockets on `/broadcast`.
#[derive(Default)]
struct Hub {
    next_id: AtomicU64,
    sockets: Mutex<HashMap<u64, UnboundedSender<Outgoing>>>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options();
    let listener = TcpListener::bind(options.listen).await?;
    eprintln!(
        "peer-fastwebsockets listening on {}://{}",
        options.scheme(),
        listener.local_addr()?
    );
    let hub = Arc::new(Hub::default());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let hub = hub.clone();
        let tls = options.tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_http(stream, hub).await,
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        serve_http(stream, hub).await;
                    }
                }
            }
        });
    }
}

/// One HTTP/1.1 connection, whose upgrades become WebSocket sockets.
async fn serve_http<S>(stream: S, hub: Arc<Hub>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    let service = service_fn(move |req| server_upgrade(req, hub.clone()));
    let _ = http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades()
        .await;
}

async fn server_upgrade(
    mut req: Request<Incoming>,
    hub: Arc<Hub>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let broadcast = req.uri().path() == BROADCAST_PATH;
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::spawn(async move {
        let result = match fut.await {
            Ok(ws) if broadcast => broadcast_socket(ws, hub).await,
            // As in the crate's echo_server example.
            Ok(ws) => tokio::task::unconstrained(echo_socket(FragmentCollector::new(ws))).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            // A peer going away is no error; over TLS, rustls reports a TCP
            // close without `close_notify` as an `UnexpectedEof` I/O error.
            let gone = match &e {
                WebSocketError::ConnectionClosed | WebSocketError::UnexpectedEOF => true,
                WebSocketError::IoError(io) => io.kind() == std::io::ErrorKind::UnexpectedEof,
                _ => false,
            };
            if !gone {
                eprintln!("socket error: {e}");
            }
        }
    });
    Ok(response)
}

async fn echo_socket(mut ws: FragmentCollector<Stream>) -> Result<(), WebSocketError> {
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}

async fn broadcast_socket(
    ws: fastwebsockets::WebSocket<Stream>,
    hub: Arc<Hub>,
) -> Result<(), WebSocketError> {
    let (read, write) = ws.split(|stream| {
        let (read, write) = tokio::io::split(stream);
        (read, BufWriter::new(write))
    });
    let mut read = FragmentCollectorRead::new(read);
    let (queue, queued) = unbounded_channel();
    let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
    hub.sockets.lock().unwrap().insert(id, queue.clone());
    let writer = tokio::spawn(write_queued(write, queued));

    let result = async {
        loop {
            // Pongs and the close reply go through this socket's own queue.
            let mut owed = |frame: Frame<'_>| {
                let sent = queue.send(Outgoing::owned(frame));
                async move { sent.map_err(|_| "writer gone") }
            };
            let frame = read.read_frame(&mut owed).await?;
            match frame.opcode {
                OpCode::Close => return Ok(()),
                OpCode::Text | OpCode::Binary => {
                    let opcode = frame.opcode;
                    let payload = into_bytes(frame.payload);
                    for socket in hub.sockets.lock().unwrap().values() {
                        let _ = socket.send(Outgoing {
                            opcode,
                            payload: payload.clone(),
                        });
                    }
                }
                _ => {}
            }
        }
    }
    .await;

    hub.sockets.lock().unwrap().remove(&id);
    drop(queue);
    // The writer ends once it has written what is queued (the close reply
    // included) and every sender is gone.
    let written = writer
        .await
        .unwrap_or(Err(WebSocketError::ConnectionClosed));
    result.and(written)
}

async fn write_queued(
    mut write: WebSocketWrite<BufWriter<WriteHalf<Stream>>>,
    mut queued: UnboundedReceiver<Outgoing>,
) -> Result<(), WebSocketError> {
    while let Some(mut next) = queued.recv().await {
        loop {
            let closing = next.opcode == OpCode::Close;
            let frame = Frame::new(true, next.opcode, None, Payload::Borrowed(&next.payload));
            write.write_frame(frame).await?;
            if closing {
                return write.flush().await;
            }
            match queued.try_recv() {
                Ok(more) => next = more,
                Err(_) => break,
            }
        }
        write.flush().await?;
    }
    Ok(())
}

impl Outgoing {
    fn owned(frame: Frame<'_>) -> Self {
        Self {
            opcode: frame.opcode,
            payload: into_bytes(frame.payload),
        }
    }
}

/// The payload as `Bytes`, without a copy when the crate handed it over owned.
fn into_bytes(payload: Payload<'_>) -> Bytes {
    match payload {
        Payload::Bytes(bytes) => bytes.freeze(),
        Payload::Owned(vec) => Bytes::from(vec),
        other => Bytes::copy_from_slice(&other),
    }
}
