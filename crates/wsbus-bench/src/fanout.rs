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

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, Semaphore};
use wsbus_proto::{Event, Message};

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
}

impl Shared {
    fn elapsed_nanos(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }
}

/// `seq:nanos:` padded with `x` to `size` bytes.
fn encode(seq: u64, nanos: u64, size: usize) -> Message {
    let mut text = format!("{seq}:{nanos}:");
    text.extend(std::iter::repeat_n('x', size.saturating_sub(text.len())));
    Message::text(text)
}

fn decode(message: &Message) -> Option<(u64, u64)> {
    let bytes = message.payload();
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
    let target = Arc::new(Target::new(
        &args.common.url,
        DeflateOffer::None,
        &args.upgrade,
    )?);
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
    });

    progress(format_args!(
        "opening {} subscribers to {}",
        args.subscribers, args.common.url
    ));
    let sockets = connect_all(&target, args.subscribers).await?;
    let mut histograms = Vec::with_capacity(sockets.len());
    for socket in sockets {
        let histogram = Arc::new(Mutex::new(new_histogram()));
        histograms.push(histogram.clone());
        tokio::spawn(subscriber(socket, shared.clone(), histogram));
    }
    let mut publisher = target.connect().await?;
    // The server registers a socket on its broadcast path once the upgrade is
    // done on its side; give the last ones a moment before the first message.
    tokio::time::sleep(Duration::from_millis(300)).await;

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
    report.insert("tls".into(), json!(target.is_tls()));
    report.insert("subscribers".into(), json!(args.subscribers));
    report.insert("size".into(), json!(args.size));
    match args.rate {
        Some(rate) => report.insert("rate".into(), json!(rate)),
        None => report.insert("window".into(), json!(args.window)),
    };
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
                        .send(encode(seq, shared.elapsed_nanos(), size))
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
                        .send(encode(seq, shared.elapsed_nanos(), size))
                        .map_err(std::io::Error::other)?;
                    seq += 1;
                    queued += 1;
                }
                if queued == 0 {
                    let notified = shared.progress.notified();
                    if shared.completed.load(Ordering::Acquire) + window <= seq
                        && !stop.load(Ordering::Relaxed)
                    {
                        drain_relayed(socket, notified).await?;
                    }
                    continue;
                }
            }
        }
        socket.flush().await?;
        if let Some(interval) = interval {
            let wait = next_send.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait.min(interval)).await;
            }
        }
        // Drop what the server relayed back to the publisher.
        socket.process(|_, _| {});
    }
    Ok(seq)
}

/// Wait for progress, reading the publisher's own relayed copies meanwhile
/// (a server would otherwise see it as a slow consumer).
async fn drain_relayed(
    socket: &mut BenchSocket,
    notified: tokio::sync::futures::Notified<'_>,
) -> std::io::Result<()> {
    tokio::pin!(notified);
    loop {
        tokio::select! {
            () = &mut notified => return Ok(()),
            read = socket.fill() => {
                read?;
                if !socket.process(|_, _| {}) {
                    return Err(std::io::Error::other("the server closed the publisher"));
                }
            }
        }
    }
}

async fn subscriber(
    mut socket: BenchSocket,
    shared: Arc<Shared>,
    histogram: Arc<Mutex<hdrhistogram::Histogram<u64>>>,
) {
    let mut next_seq = 0u64;
    let result: std::io::Result<()> = async {
        loop {
            socket.fill().await?;
            let now = shared.elapsed_nanos();
            let measuring = shared.measuring.load(Ordering::Relaxed);
            let mut received = 0u64;
            let mut errors = 0u64;
            let mut completed = 0u64;
            let open = {
                let mut latencies = histogram.lock().expect("histogram lock");
                socket.process(|event, _| {
                    let Event::Message(message) = event else {
                        return;
                    };
                    let Some((seq, sent)) = decode(&message) else {
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
            if completed > 0 {
                shared.completed.fetch_add(completed, Ordering::AcqRel);
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
        assert_eq!(decode(&m), Some((42, 123_456_789)));
    }
}
