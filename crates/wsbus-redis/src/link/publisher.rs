//! The task that writes queued publishes (module docs of `link`).

use super::*;

/// Writes queued publishes in order, a pipeline at a time; a failed pipeline
/// is written again after a backoff (receivers drop what arrived twice).
pub(super) async fn run(inner: Arc<Inner>) {
    let mut backoff = Backoff::new();
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
        let mut pipeline = redis::pipe();
        for outgoing in &batch {
            match outgoing {
                Outgoing::Publish(channels, envelope) => {
                    for channel in channels.iter() {
                        pipeline
                            .cmd("SPUBLISH")
                            .arg(channel)
                            .arg(&envelope[..])
                            .ignore();
                    }
                }
                Outgoing::Command(command, _) => {
                    pipeline.add_command(command.clone()).ignore();
                }
            }
        }
        let written = tokio::select! {
            result = inner.query::<()>(&pipeline) => result,
            () = inner.shutdown.cancelled() => return,
        };
        match written {
            Ok(()) => {
                backoff = Backoff::new();
                let mut pending = inner.pending.lock().expect("pending lock");
                for _ in 0..batch.len() {
                    if let Some(outgoing) = pending.queue.pop_front() {
                        pending.bytes -= outgoing.size();
                    }
                }
            }
            Err(error) => {
                tracing::debug!(target: "wsbus::cluster", %error, queued = batch.len(), "publish to Redis failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff.next()) => {}
                    () = inner.shutdown.cancelled() => return,
                }
            }
        }
    }
}
