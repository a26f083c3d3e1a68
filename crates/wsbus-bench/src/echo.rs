//! `wsbus bench echo`: C connections, each keeping W messages of S bytes in
//! flight; every echo received is answered with the next message.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use clap::Args;
use serde_json::{Map, Value, json};
use wsbus_proto::{Event, Message};

use super::socket::{Target, UpgradeOptions};
use super::{
    BenchResult, Common, add_percentiles, json_like_text, merge_histograms, new_histogram,
    progress, round3,
};

#[derive(Args, Debug)]
#[doc = "The `echo` scenario's arguments."]
pub struct EchoArgs {
    #[doc = "Options every scenario takes."]
    #[command(flatten)]
    pub common: Common,
    #[doc = "What the upgrade requests carry."]
    #[command(flatten)]
    pub upgrade: UpgradeOptions,
    /// Connections.
    #[arg(long, short = 'c', default_value_t = 50)]
    pub connections: usize,
    /// Payload bytes per message.
    #[arg(long, short = 's', default_value_t = 20)]
    pub size: usize,
    /// Messages in flight per connection (1: ping-pong).
    #[arg(long, short = 'w', default_value_t = 8)]
    pub in_flight: usize,
    /// Binary messages (default: text that looks like JSON).
    #[arg(long)]
    pub binary: bool,
    /// Offer permessage-deflate (the server must accept it).
    #[arg(long)]
    pub deflate: bool,
    /// Send this file's contents as every message instead of generated
    /// bytes (text, so UTF-8, unless --binary; --size is then ignored): e.g.
    /// a JSON document for a server that validates messages against a schema.
    #[arg(long, value_name = "FILE")]
    pub payload_file: Option<PathBuf>,
}

/// What the connection tasks share with the measuring task.
#[derive(Debug, Default)]
struct Shared {
    measuring: AtomicBool,
    messages: AtomicU64,
    /// Echoes whose size differs from what was sent, and failed connections.
    errors: AtomicU64,
}

pub(crate) async fn run(args: EchoArgs) -> BenchResult {
    let target = Target::with_headers(&args.common.url, args.deflate, &args.upgrade.headers)?;
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|err| format!("--payload-file {}: {err}", path.display()))
    };
    let message = match (&args.payload_file, args.binary) {
        (Some(path), true) => Message::Binary(Bytes::from(read(path)?)),
        (Some(path), false) => Message::text(String::from_utf8(read(path)?).map_err(|_| {
            format!(
                "--payload-file {}: not UTF-8 (add --binary)",
                path.display()
            )
        })?),
        (None, true) => Message::Binary(Bytes::from(vec![0xA5; args.size])),
        (None, false) => Message::text(json_like_text(args.size)),
    };
    let size = message.len();
    let in_flight = args.in_flight.max(1);
    let shared = Arc::new(Shared::default());
    let mut histograms = Vec::with_capacity(args.connections);

    progress(format_args!(
        "opening {} connections to {}",
        args.connections, args.common.url
    ));
    let mut sockets = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        sockets.push(target.connect().await?);
    }
    for mut socket in sockets {
        let histogram = Arc::new(Mutex::new(new_histogram()));
        histograms.push(histogram.clone());
        let shared = shared.clone();
        let message = message.clone();
        tokio::spawn(async move {
            let mut sent_at = VecDeque::with_capacity(in_flight);
            let expected_len = message.len();
            let result: std::io::Result<()> = async {
                let now = Instant::now();
                for _ in 0..in_flight {
                    socket
                        .conn
                        .send(message.clone())
                        .map_err(std::io::Error::other)?;
                    sent_at.push_back(now);
                }
                socket.flush().await?;
                loop {
                    socket.fill().await?;
                    let now = Instant::now();
                    let measuring = shared.measuring.load(Ordering::Relaxed);
                    let mut received = 0u64;
                    let mut wrong = 0u64;
                    let open = {
                        let mut latencies = histogram.lock().expect("histogram lock");
                        socket.process(|event, conn| {
                            if let Event::Message(echo) = event {
                                // Not an echo of ours (a greeting, say): an
                                // error, neither timed nor answered, so the
                                // messages in flight stay W.
                                if echo.len() != expected_len {
                                    wrong += 1;
                                    return;
                                }
                                received += 1;
                                if let Some(sent) = sent_at.pop_front()
                                    && measuring
                                {
                                    let _ =
                                        latencies.record((now - sent).as_micros().max(1) as u64);
                                }
                                if conn.send(message.clone()).is_ok() {
                                    sent_at.push_back(now);
                                }
                            }
                        })
                    };
                    if measuring {
                        shared.messages.fetch_add(received, Ordering::Relaxed);
                    }
                    shared.errors.fetch_add(wrong, Ordering::Relaxed);
                    if !open {
                        return Err(std::io::Error::other("the server closed the connection"));
                    }
                    socket.flush().await?;
                }
            }
            .await;
            if let Err(err) = result {
                progress(format_args!("connection failed: {err}"));
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    let end = args.common.measure(&shared.measuring).await;
    let messages = shared.messages.load(Ordering::Relaxed);

    let merged = merge_histograms(&histograms)?;
    let mut report = Map::new();
    report.insert("scenario".into(), json!("echo"));
    report.insert("connections".into(), json!(args.connections));
    report.insert("size".into(), json!(size));
    report.insert("in_flight".into(), json!(in_flight));
    report.insert("binary".into(), json!(args.binary));
    report.insert("deflate".into(), json!(args.deflate));
    report.insert("messages".into(), json!(messages));
    end.add_to(&mut report, messages, "messages_per_sec");
    report.insert(
        "mb_per_sec".into(),
        json!(round3(messages as f64 * size as f64 / end.secs / 1e6)),
    );
    add_percentiles(&mut report, &merged);
    report.insert(
        "errors".into(),
        json!(shared.errors.load(Ordering::Relaxed)),
    );
    progress(format_args!(
        "echo: {:.0} msg/s, p99 {} µs, server {} µs/msg",
        messages as f64 / end.secs,
        merged.value_at_quantile(0.99),
        report["server_cpu_us_per_op"]
    ));
    Ok(Value::Object(report))
}
