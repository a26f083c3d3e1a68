//! The task that writes queued publishes (module docs of `link`).

use super::*;

/// Writes queued publishes in order, a pipeline at a time; a failed pipeline
/// is written again after a backoff (receivers drop what arrived twice),
/// once the channels' subscribers are back ([`wait_for_subscribers`]).
pub(super) async fn run(inner: Arc<Inner>) {
    let mut backoff = Backoff::new();
    let mut subscribers = Subscribers::default();
    // Whether the last write failed: Redis went away, or stalled.
    let mut outage = false;
    loop {
        let batch: Vec<Outgoing> = {
            let pending = inner.pending.lock().expect("pending lock");
            pending.queue.iter().take(PUBLISH_BATCH).cloned().collect()
        };
        if batch.is_empty() {
            tokio::select! {
                () = inner.pending_ready.notified() => continue,
                () = inner.shutdown.cancelled() => return,
            }
        }
        if outage {
            let waited = tokio::select! {
                waited = wait_for_subscribers(&inner, &batch, &subscribers) => waited,
                () = inner.shutdown.cancelled() => return,
            };
            if let Err(error) = waited {
                tracing::debug!(target: "wsbus::cluster", %error, "Redis still unreachable; publishes stay queued");
                tokio::select! {
                    () = tokio::time::sleep(backoff.next()) => {}
                    () = inner.shutdown.cancelled() => return,
                }
                continue;
            }
        }
        let mut pipeline = redis::pipe();
        for outgoing in &batch {
            match outgoing {
                Outgoing::Publish(channels, envelope) => {
                    // Not ignored: each SPUBLISH's count of receivers is
                    // remembered for the next outage (`Subscribers`).
                    for channel in channels.iter() {
                        pipeline.cmd("SPUBLISH").arg(channel).arg(&envelope[..]);
                    }
                }
                Outgoing::Command(command, _) => {
                    pipeline.add_command(command.clone()).ignore();
                }
            }
        }
        let written = tokio::select! {
            result = inner.query::<Vec<u64>>(&pipeline) => result,
            () = inner.shutdown.cancelled() => return,
        };
        match written {
            Ok(receivers) => {
                backoff = Backoff::new();
                outage = false;
                for (channel, receivers) in published_channels(&batch).zip(receivers) {
                    subscribers.saw(channel, receivers);
                }
                let mut pending = inner.pending.lock().expect("pending lock");
                for _ in 0..batch.len() {
                    if let Some(outgoing) = pending.queue.pop_front() {
                        pending.bytes -= outgoing.size();
                    }
                }
            }
            Err(error) => {
                outage = true;
                tracing::debug!(target: "wsbus::cluster", %error, queued = batch.len(), "publish to Redis failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff.next()) => {}
                    () = inner.shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// The channels of a batch's `SPUBLISH`es, in pipeline order (a script
/// publishes by itself: its channels are not counted).
fn published_channels(batch: &[Outgoing]) -> impl Iterator<Item = &String> {
    batch.iter().flat_map(|outgoing| match outgoing {
        Outgoing::Publish(channels, _) => channels.iter(),
        Outgoing::Command(..) => [].iter(),
    })
}

/// How many subscribers (nodes) each channel had at its latest publish, for
/// the channels that had any, up to [`REMEMBERED_CHANNELS_MAX`] of them.
#[derive(Default)]
struct Subscribers(HashMap<String, u64>);

impl Subscribers {
    fn saw(&mut self, channel: &str, receivers: u64) {
        if receivers == 0 {
            self.0.remove(channel);
        } else if let Some(known) = self.0.get_mut(channel) {
            *known = receivers;
        } else if self.0.len() < REMEMBERED_CHANNELS_MAX {
            self.0.insert(channel.to_owned(), receivers);
        }
    }
}

/// After an outage, waits until every channel of `batch` has again as many
/// subscribers as at its latest publish before it (`PUBSUB SHARDNUMSUB`),
/// or [`RESUBSCRIBE_WAIT_MAX`] passed since Redis answered: the nodes that
/// were listening lost their subscriptions too, and a message published
/// before they are back would reach none of them (pub/sub keeps nothing).
/// An error: Redis is not answering yet.
async fn wait_for_subscribers(
    inner: &Inner,
    batch: &[Outgoing],
    subscribers: &Subscribers,
) -> Result<(), RedisError> {
    let mut wanted: Vec<(&str, u64)> = published_channels(batch)
        .filter_map(|channel| Some((channel.as_str(), *subscribers.0.get(channel)?)))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut pipeline = redis::pipe();
    let command = pipeline.cmd("PUBSUB").arg("SHARDNUMSUB");
    for (channel, _) in &wanted {
        command.arg(*channel);
    }
    let mut deadline = None;
    loop {
        let (now,): (HashMap<String, u64>,) = inner.query(&pipeline).await?;
        let missing = wanted
            .iter()
            .filter(|(channel, before)| now.get(*channel).copied().unwrap_or(0) < *before)
            .count();
        if missing == 0 {
            return Ok(());
        }
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + RESUBSCRIBE_WAIT_MAX);
        if Instant::now() >= deadline {
            tracing::warn!(target: "wsbus::cluster", channels = missing, "after the outage, some channels' subscribers did not come back: publishing to those that did");
            return Ok(());
        }
        tokio::time::sleep(RESUBSCRIBE_POLL).await;
    }
}
