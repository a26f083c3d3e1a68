//! `wsbus bench idle`: open N connections, leave them idle, and report how
//! much the server's resident memory grew per connection.
//!
//! With `--exchange-size` each connection first sends one message and waits
//! for one back, so that what the server keeps per connection after a
//! conversation is measured (with `--deflate-offer browser`: its
//! compression contexts, kept between messages unless a
//! `*_no_context_takeover` was agreed, RFC 7692 §7.1.1).

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;
use wsbus_proto::{Event, Message};

use super::fanout::connect_all;
use super::socket::{BenchSocket, DeflateOffer, Target, UpgradeOptions};
use super::{BenchResult, Common, ProcessProbe, json_like_text, progress, round3};

/// How long one connection's exchange may take before it counts as failed:
/// far beyond a round trip, even with thousands of connections exchanging
/// at once on a loaded machine.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args, Debug)]
#[doc = "The `idle` scenario's arguments."]
pub struct IdleArgs {
    #[doc = "Options every scenario takes."]
    #[command(flatten)]
    pub common: Common,
    #[doc = "What the upgrade requests carry."]
    #[command(flatten)]
    pub upgrade: UpgradeOptions,
    /// Connections to hold.
    #[arg(long, short = 'c', default_value_t = 10_000)]
    pub connections: usize,
    /// Seconds the server gets, after the last handshake, to finish what it
    /// does per connection (tasks spawned, buffers released) before its RSS
    /// is read.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// What to offer of permessage-deflate: none, plain (wsbus's offer, the
    /// server must accept it) or browser (exactly Chromium's offer).
    #[arg(long, value_enum, default_value_t = DeflateOffer::None)]
    pub deflate_offer: DeflateOffer,
    /// After upgrading, each connection sends one JSON-like text message of
    /// this many bytes and waits for a message to arrive after it (the echo,
    /// or whatever the server sends), then goes idle (0: no exchange).
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    pub exchange_size: usize,
}

pub(crate) async fn run(args: IdleArgs) -> BenchResult {
    let probe = ProcessProbe::new(&args.common.server_pid);
    let before = probe
        .sample()
        .ok_or("idle needs --server-pid of a running server (reads /proc/PID/status)")?;
    let target = Arc::new(Target::new(
        &args.common.url,
        args.deflate_offer,
        &args.upgrade,
    )?);
    progress(format_args!(
        "opening {} idle connections to {}",
        args.connections, args.common.url
    ));
    let mut sockets = connect_all(&target, args.connections).await?;
    let extensions = sockets
        .first()
        .and_then(|s| s.extensions.clone())
        .unwrap_or_default();
    let mut exchange_errors = 0usize;
    if args.exchange_size > 0 {
        let message = Message::text(json_like_text(args.exchange_size));
        let mut exchanges = JoinSet::new();
        for socket in sockets.drain(..) {
            let message = message.clone();
            exchanges.spawn(async move {
                let result =
                    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(socket, message)).await;
                match result {
                    Ok(result) => result,
                    Err(_) => Err(std::io::Error::other("no answer within the timeout")),
                }
            });
        }
        while let Some(done) = exchanges.join_next().await {
            match done? {
                Ok(socket) => sockets.push(socket),
                Err(err) => {
                    if exchange_errors < 5 {
                        progress(format_args!("exchange failed: {err}"));
                    }
                    exchange_errors += 1;
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let after = probe.sample().ok_or("the server exited")?;
    // Still connected: the server must not have dropped any while we waited.
    let mut closed = 0usize;
    for socket in &mut sockets {
        if socket.closed_by_peer().await {
            closed += 1;
        }
    }
    let grown = after.rss_kib.saturating_sub(before.rss_kib);
    let per_conn = grown as f64 / args.connections.max(1) as f64;
    let mut report = Map::new();
    report.insert("scenario".into(), json!("idle"));
    report.insert("connections".into(), json!(args.connections));
    report.insert("tls".into(), json!(target.is_tls()));
    report.insert("deflate_offer".into(), json!(args.deflate_offer.as_str()));
    report.insert("extensions".into(), json!(extensions));
    report.insert("exchange_size".into(), json!(args.exchange_size));
    report.insert("exchange_errors".into(), json!(exchange_errors));
    report.insert("rss_before_kib".into(), json!(before.rss_kib));
    report.insert("rss_after_kib".into(), json!(after.rss_kib));
    report.insert("rss_per_conn_kib".into(), json!(round3(per_conn)));
    report.insert("closed_by_server".into(), json!(closed));
    progress(format_args!(
        "idle: {} connections, server RSS {} → {} KiB, {per_conn:.2} KiB each",
        args.connections, before.rss_kib, after.rss_kib
    ));
    drop(sockets);
    Ok(Value::Object(report))
}

/// Send `message` and wait for a message that arrives after it. What the
/// server sent before (`/chat`'s welcome, already buffered with the upgrade
/// response) is read and set aside first.
async fn exchange(mut socket: BenchSocket, message: Message) -> std::io::Result<BenchSocket> {
    let closed = || std::io::Error::other("the server closed the connection");
    if !socket.process(|_, _| {}) {
        return Err(closed());
    }
    socket.conn.send(message).map_err(std::io::Error::other)?;
    socket.flush().await?;
    loop {
        socket.fill().await?;
        let mut answered = false;
        let open = socket.process(|event, _| answered |= matches!(event, Event::Message(_)));
        // A ping's pong, queued by the connection.
        socket.flush().await?;
        if answered {
            return Ok(socket);
        }
        if !open {
            return Err(closed());
        }
    }
}
