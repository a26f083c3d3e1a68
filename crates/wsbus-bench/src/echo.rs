//! `wsbus bench echo`: C connections, each keeping W messages of S bytes in
//! flight; every echo received is answered with the next message.
//!
//! Two shapes of writing ([`Shape`]): `burst` queues the answers to every
//! echo one read brought and writes them with one `writev` (cheap for the
//! generator, and it lets the server read many frames per wake-up);
//! `per-message` writes each message with its own write as soon as the echo
//! that calls for it is parsed, as browsers and most client libraries do.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};
use wsbus_proto::{Event, Message};

use super::socket::{BenchSocket, DeflateOffer, Target, UpgradeOptions};
use super::tls::WireBytes;
use super::{
    BenchResult, Common, add_percentiles, json_like_text, merge_histograms, new_histogram,
    progress, round3,
};

/// How each connection writes its messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Shape {
    /// The answers to all the echoes one read brought, written together with
    /// one writev (the generator's historical load).
    #[default]
    Burst,
    /// Every message with its own write syscall (a `writev` of its frame's
    /// header and payload, never of two frames): the W first ones as W
    /// writes, then one write per echo, as soon as that echo is parsed.
    PerMessage,
}

impl Shape {
    /// The name on the command line and in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Burst => "burst",
            Shape::PerMessage => "per-message",
        }
    }
}

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
    /// How messages are written: burst (the answers to one read's echoes in
    /// one writev) or per-message (one write syscall per message, sent as
    /// soon as its echo is parsed, like a browser).
    #[arg(long, value_enum, default_value_t = Shape::Burst)]
    pub shape: Shape,
    /// Binary messages (default: text that looks like JSON).
    #[arg(long)]
    pub binary: bool,
    /// What to offer of permessage-deflate: none; plain (wsbus's offer, the
    /// server must accept it); browser (exactly Chromium's
    /// `permessage-deflate; client_max_window_bits`, compressing every
    /// message as the server's answer allows).
    #[arg(long, value_enum, default_value_t = DeflateOffer::None)]
    pub deflate_offer: DeflateOffer,
    /// Same as --deflate-offer plain.
    #[arg(long, conflicts_with = "deflate_offer")]
    pub deflate: bool,
    /// Send different text messages of the same size, as a chat's messages
    /// are (each one chat-like JSON with its own sequence number and words),
    /// cycling through more of them than a 32 KiB deflate window holds.
    /// For compression rows: one message repeated would let context
    /// takeover shrink every copy to a back-reference.
    #[arg(long, conflicts_with_all = ["binary", "payload_file"])]
    pub vary: bool,
    /// Send this file's contents as every message instead of generated
    /// bytes (text, so UTF-8, unless --binary; --size is then ignored): e.g.
    /// a JSON document for a server that validates messages against a schema.
    #[arg(long, value_name = "FILE")]
    pub payload_file: Option<PathBuf>,
}

impl EchoArgs {
    /// --deflate-offer, with --deflate as its alias for `plain`.
    pub fn offer(&self) -> DeflateOffer {
        if self.deflate {
            DeflateOffer::Plain
        } else {
            self.deflate_offer
        }
    }
}

/// What the connection tasks share with the measuring task.
#[derive(Debug, Default)]
struct Shared {
    measuring: AtomicBool,
    messages: AtomicU64,
    /// Bytes on the wire (after TLS) during the window.
    wire_sent: AtomicU64,
    wire_received: AtomicU64,
    /// Echoes whose size differs from what was sent, and failed connections.
    errors: AtomicU64,
}

/// One connection's task state.
struct Flow {
    shared: Arc<Shared>,
    histogram: Arc<Mutex<Histogram<u64>>>,
    /// What to send: one message, or with `--vary` several of the same
    /// size, sent in turn from `next`.
    messages: Arc<[Message]>,
    next: usize,
    /// Messages in flight (W).
    in_flight: usize,
    /// Send times of the messages in flight, oldest first.
    sent_at: VecDeque<Instant>,
    /// The socket's byte counts when last added to the totals.
    wire: WireBytes,
}

impl Flow {
    /// The message to send next, in turn.
    fn next_message(&mut self) -> Message {
        let message = self.messages[self.next].clone();
        self.next = (self.next + 1) % self.messages.len();
        message
    }

    /// After a read: add what it brought to the totals while measuring.
    fn account(&mut self, socket: &BenchSocket, measuring: bool, received: u64, wrong: u64) {
        let wire = socket.wire();
        if measuring {
            let shared = &self.shared;
            shared.messages.fetch_add(received, Ordering::Relaxed);
            shared
                .wire_sent
                .fetch_add(wire.sent - self.wire.sent, Ordering::Relaxed);
            shared
                .wire_received
                .fetch_add(wire.received - self.wire.received, Ordering::Relaxed);
        }
        self.wire = wire;
        if wrong > 0 {
            self.shared.errors.fetch_add(wrong, Ordering::Relaxed);
        }
    }

    /// The W first messages, then the burst loop: every echo of one read is
    /// answered, and all the answers go out in one `writev`.
    async fn burst(&mut self, socket: &mut BenchSocket) -> io::Result<()> {
        let now = Instant::now();
        for _ in 0..self.in_flight {
            socket
                .conn
                .send(self.next_message())
                .map_err(io::Error::other)?;
            self.sent_at.push_back(now);
        }
        socket.flush().await?;
        loop {
            socket.fill().await?;
            let now = Instant::now();
            let measuring = self.shared.measuring.load(Ordering::Relaxed);
            let mut received = 0u64;
            let mut wrong = 0u64;
            let open = {
                let size = self.messages[0].len();
                let (messages, next, sent_at) = (&self.messages, &mut self.next, &mut self.sent_at);
                let mut latencies = self.histogram.lock().expect("histogram lock");
                socket.process(|event, conn| {
                    if let Event::Message(echo) = event {
                        // Not an echo of ours (a greeting, say): an error,
                        // neither timed nor answered, so the messages in
                        // flight stay W.
                        if echo.len() != size {
                            wrong += 1;
                            return;
                        }
                        received += 1;
                        if let Some(sent) = sent_at.pop_front()
                            && measuring
                        {
                            let _ = latencies.record((now - sent).as_micros().max(1) as u64);
                        }
                        *next = (*next + 1) % messages.len();
                        if conn.send(messages[*next].clone()).is_ok() {
                            sent_at.push_back(now);
                        }
                    }
                })
            };
            socket.flush().await?;
            self.account(socket, measuring, received, wrong);
            if !open {
                return Err(io::Error::other("the server closed the connection"));
            }
        }
    }

    /// The per-message loop: each message is queued and written on its own
    /// (one frame, one write syscall), the next one as soon as an echo is
    /// parsed, before the following echo of the same read is looked at.
    async fn per_message(&mut self, socket: &mut BenchSocket) -> io::Result<()> {
        for _ in 0..self.in_flight {
            socket
                .conn
                .send(self.next_message())
                .map_err(io::Error::other)?;
            self.sent_at.push_back(Instant::now());
            socket.flush().await?;
        }
        loop {
            socket.fill().await?;
            let measuring = self.shared.measuring.load(Ordering::Relaxed);
            let mut received = 0u64;
            let mut wrong = 0u64;
            while let Some(event) = socket.next_event() {
                let Event::Message(echo) = event else {
                    continue;
                };
                if echo.len() != self.messages[0].len() {
                    wrong += 1;
                    continue;
                }
                received += 1;
                let now = Instant::now();
                if let Some(sent) = self.sent_at.pop_front()
                    && measuring
                {
                    let _ = self
                        .histogram
                        .lock()
                        .expect("histogram lock")
                        .record((now - sent).as_micros().max(1) as u64);
                }
                let message = self.next_message();
                if socket.conn.send(message).is_ok() {
                    self.sent_at.push_back(now);
                }
                socket.flush().await?;
            }
            // Control frames the read brought (a pong, our close reply).
            socket.flush().await?;
            self.account(socket, measuring, received, wrong);
            if socket.conn.state() == wsbus_proto::State::Closed {
                return Err(io::Error::other("the server closed the connection"));
            }
        }
    }
}

/// How many different messages `--vary` cycles through: at ~200 bytes each,
/// about 400 KiB, far more than the 32 KiB a deflate window can refer back
/// to, so no message finds its own earlier copy in the window.
const VARIED_MESSAGES: usize = 2048;

/// A chat message of exactly `size` bytes (ASCII), different for every
/// `seq`: a sequence number, a user, a time and words drawn from a small
/// vocabulary by a deterministic generator, as chat traffic repeats words
/// and keys but rarely whole messages.
fn chat_like_text(size: usize, seq: usize) -> String {
    const WORDS: [&str; 32] = [
        "hello", "meeting", "today", "the", "deploy", "is", "green", "can", "you", "check", "logs",
        "again", "thanks", "lunch", "at", "noon", "build", "failed", "on", "main", "review", "my",
        "branch", "please", "ship", "it", "tomorrow", "sounds", "good", "ok", "later", "now",
    ];
    // xorshift64*, seeded by the sequence number: the same messages on
    // every run.
    let mut state = (seq as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut text = format!(
        r#"{{"seq":{seq},"user":"user{}","ts":{},"text":""#,
        next() % 500,
        1_700_000_000_000 + next() % 1_000_000_000
    );
    while text.len() < size {
        text.push_str(WORDS[(next() % 32) as usize]);
        text.push(' ');
    }
    text.truncate(size.saturating_sub(2));
    text.push_str("\"}");
    text.truncate(size);
    text
}

pub(crate) async fn run(args: EchoArgs) -> BenchResult {
    let offer = args.offer();
    let target = Target::new(&args.common.url, offer, &args.upgrade)?;
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
    let messages: Arc<[Message]> = if args.vary {
        (0..VARIED_MESSAGES)
            .map(|seq| Message::text(chat_like_text(size, seq)))
            .collect()
    } else {
        Arc::new([message])
    };
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
    let extensions = sockets
        .first()
        .and_then(|s| s.extensions.clone())
        .unwrap_or_default();
    for (index, mut socket) in sockets.into_iter().enumerate() {
        let histogram = Arc::new(Mutex::new(new_histogram()));
        histograms.push(histogram.clone());
        let mut flow = Flow {
            shared: shared.clone(),
            histogram,
            messages: messages.clone(),
            // Connections start at different places of the cycle.
            next: index * 7 % messages.len(),
            in_flight,
            sent_at: VecDeque::with_capacity(in_flight),
            wire: socket.wire(),
        };
        let shape = args.shape;
        tokio::spawn(async move {
            let result = match shape {
                Shape::Burst => flow.burst(&mut socket).await,
                Shape::PerMessage => flow.per_message(&mut socket).await,
            };
            if let Err(err) = result {
                progress(format_args!("connection failed: {err}"));
                flow.shared.errors.fetch_add(1, Ordering::Relaxed);
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
    report.insert("shape".into(), json!(args.shape.as_str()));
    report.insert("binary".into(), json!(args.binary));
    report.insert("tls".into(), json!(target.is_tls()));
    report.insert("deflate".into(), json!(offer != DeflateOffer::None));
    report.insert("deflate_offer".into(), json!(offer.as_str()));
    report.insert("extensions".into(), json!(extensions));
    report.insert("messages".into(), json!(messages));
    end.add_to(&mut report, messages, "messages_per_sec");
    report.insert(
        "mb_per_sec".into(),
        json!(round3(messages as f64 * size as f64 / end.secs / 1e6)),
    );
    let per_message = |bytes: &AtomicU64| match messages {
        0 => Value::Null,
        n => json!(round3(bytes.load(Ordering::Relaxed) as f64 / n as f64)),
    };
    report.insert(
        "wire_bytes_sent_per_msg".into(),
        per_message(&shared.wire_sent),
    );
    report.insert(
        "wire_bytes_received_per_msg".into(),
        per_message(&shared.wire_received),
    );
    add_percentiles(&mut report, &merged);
    report.insert(
        "errors".into(),
        json!(shared.errors.load(Ordering::Relaxed)),
    );
    progress(format_args!(
        "echo ({}): {:.0} msg/s, p99 {} µs, server {} µs/msg",
        args.shape.as_str(),
        messages as f64 / end.secs,
        merged.value_at_quantile(0.99),
        report["server_cpu_us_per_op"]
    ));
    Ok(Value::Object(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varied_messages_have_the_exact_size_and_differ() {
        for size in [0, 1, 2, 20, 200, 1024] {
            for seq in 0..50 {
                assert_eq!(chat_like_text(size, seq).len(), size);
            }
        }
        let first = chat_like_text(200, 0);
        assert!(
            first.starts_with(r#"{"seq":0,"#) && first.ends_with(r#""}"#),
            "{first}"
        );
        let distinct: std::collections::HashSet<_> = (0..VARIED_MESSAGES)
            .map(|seq| chat_like_text(200, seq))
            .collect();
        assert_eq!(distinct.len(), VARIED_MESSAGES);
    }
}
