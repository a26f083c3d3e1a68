//! `wsbus bench fanout`: C subscribers and one publisher connected to a
//! broadcast path, where the server relays every message to every socket on
//! that path (`wsbus echo`'s `/broadcast`, the peers' equivalents).
//!
//! Each message carries its sequence number and send time, so a subscriber
//! measures publish-to-delivery latency and notices gaps. The publisher runs
//! either at a fixed rate or as fast as a *delivery window* allows: at most W
//! messages published and not yet delivered to every subscriber.
//!
//! Lost messages: after the window the publisher stops and the subscribers
//! get up to [`DRAIN_TIMEOUT`] to receive what is on its way; every message
//! published × every subscriber that did not arrive counts as lost.
//!
//! Across a cluster: `--subscriber-url` (repeated) spreads the subscribers
//! over several nodes round-robin and `--publisher-url` puts the publisher
//! on another; `--await-membership` has the publisher send markers until
//! every subscriber got one before anything is measured (membership crosses
//! nodes through Redis and takes a moment; whatever a subscriber receives
//! before its first marker, such as a chat's greeting, is not counted), and
//! `--framing socket-io` speaks Socket.IO (see [`Framing`]).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, Semaphore};
use wsbus_proto::Event;

use super::framing::Framing;
use super::socket::{BenchSocket, DeflateOffer, Target, UpgradeOptions};
use super::{
    BenchResult, CONNECT_CONCURRENCY, Common, add_percentiles, merge_histograms, new_histogram,
    progress,
};

/// How long subscribers may take to receive what was published before the
/// end of the window, before the rest counts as lost.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Slots of the per-message delivery counters; a slot is reused only after
/// its message completed, so it must exceed any window by a wide margin.
const COMPLETION_SLOTS: usize = 1 << 16;

/// Smallest payload: the header `seq:nanos:` needs room.
const MIN_SIZE: usize = 32;

/// `--await-membership`: the wait after the first marker before the next;
/// it doubles after each, up to [`MARKER_INTERVAL_MAX`]. Each marker is a
/// fan-out of its own: sent faster than a slow server relays them, they
/// would pile up in front of the measurement.
const MARKER_INTERVAL_FIRST: Duration = Duration::from_millis(50);

/// `--await-membership`: the longest wait between two markers.
const MARKER_INTERVAL_MAX: Duration = Duration::from_secs(1);

/// `--await-membership`: how long every subscriber may take to get a
/// marker before the run fails (joining a group crosses a cluster through
/// Redis; thousands of sockets join one by one).
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(60);

/// What starts a marker payload (a sequence number starts with a digit).
const MARKER_PREFIX: &[u8] = b"r:";

#[derive(Args, Debug)]
#[doc = "The `fanout` scenario's arguments."]
pub struct FanoutArgs {
    #[doc = "Options every scenario takes."]
    #[command(flatten)]
    pub common: Common,
    #[doc = "What the upgrade requests carry."]
    #[command(flatten)]
    pub upgrade: UpgradeOptions,
    /// Subscribers.
    #[arg(long, short = 'c', default_value_t = 1000)]
    pub subscribers: usize,
    /// Payload bytes per message (at least 32).
    #[arg(long, short = 's', default_value_t = 64)]
    pub size: usize,
    /// Publish at this many messages per second.
    #[arg(long, conflicts_with = "window")]
    pub rate: Option<f64>,
    /// As fast as possible with at most this many messages not yet delivered
    /// to every subscriber (the default mode).
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Subscribers connect here instead of --url, spread round-robin when
    /// repeated (e.g. two nodes of a cluster).
    #[arg(long = "subscriber-url", value_name = "URL")]
    pub subscriber_urls: Vec<String>,
    /// The publisher connects here instead of --url (e.g. a third node).
    #[arg(long, value_name = "URL")]
    pub publisher_url: Option<String>,
    /// Before the warm-up, send markers until every subscriber got one: what
    /// a subscriber receives before its first marker (a greeting) is ignored.
    #[arg(long)]
    pub await_membership: bool,
    /// How payloads travel: as they are, or as Socket.IO events.
    #[arg(long, value_enum, default_value_t = Framing::Plain)]
    pub framing: Framing,
}

#[derive(Debug)]
struct Shared {
    started: Instant,
    subscribers: u32,
    measuring: AtomicBool,
    /// Deliveries counted during the measured window.
    window_deliveries: AtomicU64,
    /// Deliveries over the whole run, for the loss count.
    deliveries: AtomicU64,
    /// Messages delivered to every subscriber.
    completed: AtomicU64,
    /// Per message (by `seq % COMPLETION_SLOTS`): subscribers that have it.
    received_by: Vec<AtomicU32>,
    progress: Notify,
    /// Out-of-order or duplicate deliveries, failed connections.
    errors: AtomicU64,
    /// Subscribers that received a marker (all of them without
    /// `--await-membership`).
    members: AtomicU32,
    framing: Framing,
}

impl Shared {
    fn elapsed_nanos(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }
}

/// `seq:nanos:` padded with `x` to `size` bytes.
fn encode(seq: u64, nanos: u64, size: usize) -> String {
    let mut text = format!("{seq}:{nanos}:");
    text.extend(std::iter::repeat_n('x', size.saturating_sub(text.len())));
    text
}

fn decode(bytes: &[u8]) -> Option<(u64, u64)> {
    let mut parts = bytes.splitn(3, |&b| b == b':');
    let seq = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let nanos = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    Some((seq, nanos))
}

pub(crate) async fn run(args: FanoutArgs) -> BenchResult {
    if args.size < MIN_SIZE {
        return Err(format!("--size must be at least {MIN_SIZE}").into());
    }
    if args.window == 0 || args.window >= COMPLETION_SLOTS / 2 {
        return Err(format!("--window must be in 1..{}", COMPLETION_SLOTS / 2).into());
    }
    let target = |url: &str| Target::new(url, DeflateOffer::None, &args.upgrade).map(Arc::new);
    let subscriber_urls = if args.subscriber_urls.is_empty() {
        std::slice::from_ref(&args.common.url)
    } else {
        &args.subscriber_urls[..]
    };
    let subscriber_targets = subscriber_urls
        .iter()
        .map(|url| target(url))
        .collect::<Result<Vec<_>, _>>()?;
    let publisher_target = target(args.publisher_url.as_ref().unwrap_or(&args.common.url))?;
    let shared = Arc::new(Shared {
        started: Instant::now(),
        subscribers: u32::try_from(args.subscribers)?,
        measuring: AtomicBool::new(false),
        window_deliveries: AtomicU64::new(0),
        deliveries: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        received_by: (0..COMPLETION_SLOTS).map(|_| AtomicU32::new(0)).collect(),
        progress: Notify::new(),
        errors: AtomicU64::new(0),
        members: AtomicU32::new(0),
        framing: args.framing,
    });

    let mut histograms = Vec::with_capacity(args.subscribers);
    for (i, target) in subscriber_targets.iter().enumerate() {
        // Subscriber k goes to URL k % urls: the first URLs take the rest.
        let n = (args.subscribers + subscriber_targets.len() - 1 - i) / subscriber_targets.len();
        progress(format_args!(
            "opening {n} subscribers to {}",
            subscriber_urls[i]
        ));
        for socket in connect_all(target, n).await? {
            let histogram = Arc::new(Mutex::new(new_histogram()));
            histograms.push(histogram.clone());
            tokio::spawn(subscriber(
                socket,
                shared.clone(),
                histogram,
                !args.await_membership,
            ));
        }
    }
    let mut publisher = publisher_target.connect().await?;
    args.framing.open(&mut publisher).await?;
    if args.await_membership {
        await_membership(&mut publisher, &shared).await?;
    } else {
        // The server registers a socket on its broadcast path once the
        // upgrade is done on its side; give the last ones a moment before
        // the first message.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let publishing = {
        let (shared, stop) = (shared.clone(), stop.clone());
        let (size, rate, window) = (args.size, args.rate, args.window as u64);
        tokio::spawn(async move {
            let result = publish(&mut publisher, &shared, &stop, size, rate, window).await;
            (result, publisher)
        })
    };

    let end = args.common.measure(&shared.measuring).await;
    let window_deliveries = shared.window_deliveries.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    shared.progress.notify_waiters();
    let (published, _publisher) = publishing.await?;
    let published = published?;

    // Drain: wait until every published message reached every subscriber,
    // or nothing has arrived for a while.
    let expected = published * u64::from(shared.subscribers);
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    while shared.deliveries.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deliveries = shared.deliveries.load(Ordering::Relaxed);

    let merged = merge_histograms(&histograms)?;
    let mut report = Map::new();
    report.insert("scenario".into(), json!("fanout"));
    report.insert("tls".into(), json!(publisher_target.is_tls()));
    report.insert("subscribers".into(), json!(args.subscribers));
    report.insert("size".into(), json!(args.size));
    match args.rate {
        Some(rate) => report.insert("rate".into(), json!(rate)),
        None => report.insert("window".into(), json!(args.window)),
    };
    if !args.subscriber_urls.is_empty() || args.publisher_url.is_some() {
        report.insert("subscriber_urls".into(), json!(subscriber_urls.len()));
    }
    if args.framing != Framing::Plain {
        report.insert("framing".into(), json!("socket-io"));
    }
    report.insert("published".into(), json!(published));
    report.insert("deliveries".into(), json!(window_deliveries));
    end.add_to(&mut report, window_deliveries, "deliveries_per_sec");
    add_percentiles(&mut report, &merged);
    report.insert("lost".into(), json!(expected.saturating_sub(deliveries)));
    report.insert(
        "errors".into(),
        json!(shared.errors.load(Ordering::Relaxed)),
    );
    progress(format_args!(
        "fanout: {:.0} deliveries/s, p99 {} µs, lost {}, server {} µs/delivery",
        window_deliveries as f64 / end.secs,
        merged.value_at_quantile(0.99),
        expected.saturating_sub(deliveries),
        report["server_cpu_us_per_op"]
    ));
    Ok(Value::Object(report))
}

/// Open `n` connections, [`CONNECT_CONCURRENCY`] handshakes at a time.
pub(crate) async fn connect_all(
    target: &Arc<Target>,
    n: usize,
) -> std::io::Result<Vec<BenchSocket>> {
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut pending = Vec::with_capacity(n);
    for _ in 0..n {
        let (target, permits) = (target.clone(), permits.clone());
        pending.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            target.connect().await
        }));
    }
    let mut sockets = Vec::with_capacity(n);
    for handle in pending {
        sockets.push(handle.await.map_err(std::io::Error::other)??);
    }
    Ok(sockets)
}

/// The publisher: sends until `stop`, returns how many it published. It also
/// reads (and drops) what the server relays back to it.
async fn publish(
    socket: &mut BenchSocket,
    shared: &Shared,
    stop: &AtomicBool,
    size: usize,
    rate: Option<f64>,
    window: u64,
) -> std::io::Result<u64> {
    let mut seq = 0u64;
    let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r.max(1e-3)));
    let mut next_send = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match interval {
            Some(interval) => {
                // Send what is due (several per wake-up at high rates).
                let now = Instant::now();
                while next_send <= now {
                    socket
                        .conn
                        .send(
                            shared
                                .framing
                                .wrap(encode(seq, shared.elapsed_nanos(), size)),
                        )
                        .map_err(std::io::Error::other)?;
                    seq += 1;
                    next_send += interval;
                }
            }
            None => {
                let completed = shared.completed.load(Ordering::Acquire);
                let mut queued = 0;
                while seq < completed + window {
                    socket
                        .conn
                        .send(
                            shared
                                .framing
                                .wrap(encode(seq, shared.elapsed_nanos(), size)),
                        )
                        .map_err(std::io::Error::other)?;
                    seq += 1;
                    queued += 1;
                }
                if queued == 0 {
                    let notified = shared.progress.notified();
                    if shared.completed.load(Ordering::Acquire) + window <= seq
                        && !stop.load(Ordering::Relaxed)
                    {
                        drain_relayed(socket, shared.framing, notified).await?;
                    }
                    continue;
                }
            }
        }
        socket.flush().await?;
        if let Some(interval) = interval {
            let wait = next_send.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                // Read the relayed copies while waiting: unread, they would
                // fill the socket's buffers and Socket.IO's pings would go
                // unanswered.
                tokio::select! {
                    () = tokio::time::sleep(wait.min(interval)) => {}
                    read = socket.fill() => read?,
                }
            }
        }
        // Drop what the server relayed back to the publisher (answering
        // Socket.IO's pings).
        socket.process(|event, conn| drop_relayed(shared.framing, event, conn));
    }
    Ok(seq)
}

/// Wait for progress, reading the publisher's own relayed copies meanwhile
/// (a server would otherwise see it as a slow consumer).
async fn drain_relayed(
    socket: &mut BenchSocket,
    framing: Framing,
    notified: tokio::sync::futures::Notified<'_>,
) -> std::io::Result<()> {
    tokio::pin!(notified);
    loop {
        tokio::select! {
            () = &mut notified => return Ok(()),
            read = socket.fill() => {
                read?;
                if !socket.process(|event, conn| drop_relayed(framing, event, conn)) {
                    return Err(std::io::Error::other("the server closed the publisher"));
                }
                socket.flush().await?;
            }
        }
    }
}

/// What a publisher does with a message relayed back to it: nothing, but
/// a Socket.IO ping gets its pong.
fn drop_relayed(framing: Framing, event: Event, conn: &mut wsbus_proto::Connection) {
    if let Event::Message(message) = event {
        framing.unwrap(&message, conn);
    }
}

/// `--await-membership`: send markers, further and further apart, until
/// every subscriber has received one.
async fn await_membership(publisher: &mut BenchSocket, shared: &Shared) -> std::io::Result<()> {
    let deadline = Instant::now() + MEMBERSHIP_TIMEOUT;
    let mut interval = MARKER_INTERVAL_FIRST;
    let mut sent = 0u64;
    let all_members = || shared.members.load(Ordering::Acquire) >= shared.subscribers;
    while !all_members() {
        if Instant::now() >= deadline {
            return Err(std::io::Error::other(format!(
                "only {} of {} subscribers got a marker within {MEMBERSHIP_TIMEOUT:?}",
                shared.members.load(Ordering::Acquire),
                shared.subscribers
            )));
        }
        let marker = format!("{}{sent}", String::from_utf8_lossy(MARKER_PREFIX));
        publisher
            .conn
            .send(shared.framing.wrap(marker))
            .map_err(std::io::Error::other)?;
        publisher.flush().await?;
        sent += 1;
        // Wait out the interval (reading the relayed copies meanwhile),
        // unless every subscriber becomes a member before it ends.
        let next = tokio::time::Instant::now() + interval;
        interval = (interval * 2).min(MARKER_INTERVAL_MAX);
        while !all_members() {
            let notified = shared.progress.notified();
            let drained = drain_relayed(publisher, shared.framing, notified);
            match tokio::time::timeout_at(next, drained).await {
                Ok(read) => read?,
                Err(_) => break,
            }
        }
    }
    progress(format_args!(
        "all {} subscribers are members ({sent} markers)",
        shared.subscribers
    ));
    Ok(())
}

async fn subscriber(
    mut socket: BenchSocket,
    shared: Arc<Shared>,
    histogram: Arc<Mutex<hdrhistogram::Histogram<u64>>>,
    member: bool,
) {
    let mut next_seq = 0u64;
    let mut member = member;
    if member {
        shared.members.fetch_add(1, Ordering::AcqRel);
    }
    let result: std::io::Result<()> = async {
        shared.framing.open(&mut socket).await?;
        loop {
            socket.fill().await?;
            let now = shared.elapsed_nanos();
            let measuring = shared.measuring.load(Ordering::Relaxed);
            let mut received = 0u64;
            let mut errors = 0u64;
            let mut completed = 0u64;
            let mut joined = false;
            let open = {
                let mut latencies = histogram.lock().expect("histogram lock");
                socket.process(|event, conn| {
                    let Event::Message(message) = event else {
                        return;
                    };
                    let Some(payload) = shared.framing.unwrap(&message, conn) else {
                        return;
                    };
                    if payload.starts_with(MARKER_PREFIX) {
                        joined |= !member;
                        member = true;
                        return;
                    }
                    if !member {
                        // Before the first marker: a greeting, not ours.
                        return;
                    }
                    let Some((seq, sent)) = decode(payload) else {
                        errors += 1;
                        return;
                    };
                    if seq != next_seq {
                        errors += 1;
                    }
                    next_seq = seq + 1;
                    received += 1;
                    if measuring {
                        let _ = latencies.record((now.saturating_sub(sent) / 1000).max(1));
                    }
                    let slot = &shared.received_by[(seq as usize) % COMPLETION_SLOTS];
                    if slot.fetch_add(1, Ordering::AcqRel) + 1 == shared.subscribers {
                        slot.store(0, Ordering::Relaxed);
                        completed += 1;
                    }
                })
            };
            shared.deliveries.fetch_add(received, Ordering::Relaxed);
            if measuring {
                shared
                    .window_deliveries
                    .fetch_add(received, Ordering::Relaxed);
            }
            if joined {
                shared.members.fetch_add(1, Ordering::AcqRel);
            }
            if completed > 0 {
                shared.completed.fetch_add(completed, Ordering::AcqRel);
            }
            if completed > 0 || joined {
                shared.progress.notify_waiters();
            }
            if errors > 0 {
                shared.errors.fetch_add(errors, Ordering::Relaxed);
            }
            if !open {
                return Err(std::io::Error::other("the server closed a subscriber"));
            }
            // Pongs or close replies the connection queued.
            socket.flush().await?;
        }
    }
    .await;
    if let Err(err) = result {
        progress(format_args!("subscriber failed: {err}"));
        shared.errors.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_at_the_requested_size() {
        let m = encode(42, 123_456_789, 64);
        assert_eq!(m.len(), 64);
        assert_eq!(decode(m.as_bytes()), Some((42, 123_456_789)));
        // Markers never parse as a sequence number.
        assert_eq!(decode(b"r:12"), None);
    }
}
