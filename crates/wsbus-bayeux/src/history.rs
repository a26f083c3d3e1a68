//! Per-channel history with offsets, for replay after a reconnect.
//!
//! Offsets come from one counter for the whole bus, so they increase along
//! every channel and also across channels: "everything after offset 42"
//! means the same thing for `/chat/a`, `/chat/b` and a subscription to
//! `/chat/*`, and an offset is never reused when a channel's history is
//! dropped and starts again.
//!
//! Each channel keeps a ring of its newest messages. A global log (offset,
//! channel, time) in offset order finds the oldest message of the whole bus
//! in O(1), for the window and for the global count and byte limits.
//!
//! # Shared history (several nodes)
//!
//! In a cluster the offsets of channels with history come from a history
//! shared by all nodes (a Redis stream per channel, `wsbus-redis`'s
//! `history`): per channel, consecutive from 1 within an *epoch* (a random
//! name the shared history took when it began; a Redis that came back empty
//! starts a new one). This node's rings then keep what it received, with
//! those offsets ([`record_shared`](History::record_shared)), and what it
//! fetched for a replay ([`merge_fetched`](History::merge_fetched)). A
//! ring holds consecutive offsets: everything in `(dropped_through, last]`.
//! The log stays in arrival order, which is each channel's offset order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::channel::{ChannelName, ChannelPattern};
use crate::config::HistoryConfig;
use crate::message::Outbound;

/// Bytes charged per kept message on top of its JSON: the ring and log
/// entries, so that tiny messages are not free.
const ENTRY_OVERHEAD: usize = 64;

struct Entry {
    offset: u64,
    message: Outbound,
}

#[derive(Default)]
struct Ring {
    entries: VecDeque<Entry>,
    /// The highest offset of this channel that was dropped (0: none). With
    /// shared history: what this node does not have (it may never have
    /// received it).
    dropped_through: u64,
    /// The shared history's epoch these offsets belong to (`None` on a
    /// single node).
    epoch: Option<Arc<str>>,
}

impl Ring {
    /// The newest offset known here: kept, or dropped.
    fn last(&self) -> u64 {
        self.entries
            .back()
            .map_or(self.dropped_through, |entry| entry.offset)
    }
}

/// What was fetched from a channel's shared history for a replay:
/// `messages`, consecutive offsets up to the epoch's newest (`last`), of
/// which everything after `after` is there if `complete`.
pub(crate) struct Fetched {
    pub(crate) epoch: Arc<str>,
    pub(crate) after: u64,
    pub(crate) last: u64,
    pub(crate) complete: bool,
    pub(crate) messages: Vec<(u64, Outbound)>,
}

/// Where a channel's shared history stands on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SharedPosition {
    pub(crate) epoch: Arc<str>,
    /// Offsets up to this one may be missing here.
    pub(crate) dropped_through: u64,
}

struct LogEntry {
    offset: u64,
    channel: ChannelName,
    at: Instant,
}

/// What a replay found.
#[derive(Debug)]
pub(crate) struct Replay {
    pub(crate) messages: Vec<Outbound>,
    /// `false` when messages after the requested offset may have been dropped
    /// (out of the window or the limits), or did not fit the client's queue.
    pub(crate) complete: bool,
}

pub(crate) struct History {
    config: HistoryConfig,
    /// The next offset to hand out; offsets start at 1 so that a client may
    /// ask for "everything after 0".
    next_offset: u64,
    rings: HashMap<ChannelName, Ring>,
    log: VecDeque<LogEntry>,
    bytes: usize,
    /// The highest offset dropped from any channel: what a replay must assume
    /// was lost on a channel whose ring is gone.
    dropped_through: u64,
}

impl History {
    pub(crate) fn new(config: HistoryConfig) -> Self {
        History {
            config,
            next_offset: 1,
            rings: HashMap::new(),
            log: VecDeque::new(),
            bytes: 0,
            dropped_through: 0,
        }
    }

    /// A fresh offset for a message to [`record`](Self::record).
    pub(crate) fn allocate_offset(&mut self) -> u64 {
        let offset = self.next_offset;
        self.next_offset += 1;
        offset
    }

    /// Keeps `message`, published on `channel` at `now` with `offset`.
    pub(crate) fn record(
        &mut self,
        now: Instant,
        channel: &ChannelName,
        offset: u64,
        message: Outbound,
    ) {
        if !self.config.enabled() {
            // Offsets are handed out but nothing is kept: a replay must not
            // claim to be complete.
            self.dropped_through = offset;
            return;
        }
        self.bytes += message.len() + ENTRY_OVERHEAD;
        let ring = self.rings.entry(channel.clone()).or_default();
        ring.entries.push_back(Entry { offset, message });
        if ring.entries.len() > self.config.per_channel {
            let dropped = ring.entries.pop_front().expect("longer than the limit");
            ring.dropped_through = dropped.offset;
            self.bytes -= dropped.message.len() + ENTRY_OVERHEAD;
            self.dropped_through = self.dropped_through.max(dropped.offset);
        }
        self.log.push_back(LogEntry {
            offset,
            channel: channel.clone(),
            at: now,
        });
        self.enforce_limits();
    }

    /// Drops the oldest messages while over the global count or bytes.
    fn enforce_limits(&mut self) {
        // A message fetched for a replay may be older than its log entry's
        // place says, so the log can run out before the bytes are under the
        // bound: what remains is bounded per channel.
        while !self.log.is_empty()
            && (self.log.len() > self.config.max_messages || self.bytes > self.config.max_bytes)
        {
            self.drop_oldest();
        }
    }

    /// Drops the oldest logged message (if its channel still holds it).
    fn drop_oldest(&mut self) {
        let Some(oldest) = self.log.pop_front() else {
            return;
        };
        let Some(ring) = self.rings.get_mut(&oldest.channel) else {
            return;
        };
        // The ring may already have dropped it for its own length limit.
        if ring.entries.front().map(|e| e.offset) == Some(oldest.offset) {
            let dropped = ring.entries.pop_front().expect("front checked");
            ring.dropped_through = dropped.offset;
            self.bytes -= dropped.message.len() + ENTRY_OVERHEAD;
            self.dropped_through = self.dropped_through.max(dropped.offset);
            if ring.entries.is_empty() {
                self.rings.remove(&oldest.channel);
            }
        }
    }

    /// Drops what is older than the window.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(oldest) = self.log.front() {
            if oldest.at + self.config.window > now {
                break;
            }
            self.drop_oldest();
        }
    }

    /// When [`expire`](Self::expire) next has something to do.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.log
            .front()
            .map(|oldest| oldest.at + self.config.window)
    }

    /// The kept messages after `after` on channels matching `pattern`, in
    /// offset order, at most `room` of them.
    pub(crate) fn replay(&self, pattern: &ChannelPattern, after: u64, room: usize) -> Replay {
        let mut found: Vec<(u64, Outbound)> = Vec::new();
        let mut complete;
        if let Some(name) = pattern.as_name() {
            match self.rings.get(&name) {
                Some(ring) => {
                    complete = ring.dropped_through <= after;
                    let start = ring.entries.partition_point(|e| e.offset <= after);
                    found.extend(
                        ring.entries
                            .range(start..)
                            .map(|e| (e.offset, e.message.clone())),
                    );
                }
                // Nothing kept: complete only if nothing after `after` was
                // ever dropped anywhere.
                None => complete = self.dropped_through <= after,
            }
        } else {
            // A wildcard may match channels whose rings are gone: only the
            // global mark can say nothing was lost.
            complete = self.dropped_through <= after;
            for (channel, ring) in &self.rings {
                if pattern.matches(channel) {
                    let start = ring.entries.partition_point(|e| e.offset <= after);
                    found.extend(
                        ring.entries
                            .range(start..)
                            .map(|e| (e.offset, e.message.clone())),
                    );
                }
            }
            found.sort_unstable_by_key(|(offset, _)| *offset);
        }
        if found.len() > room {
            // Keep the oldest: the client can ask again from the last offset
            // it received.
            found.truncate(room);
            complete = false;
        }
        Replay {
            messages: found.into_iter().map(|(_, message)| message).collect(),
            complete,
        }
    }

    /// Keeps `message`, received at `now` with `offset` of the shared
    /// history's `epoch`. Whether it is new here: a message at or below the
    /// channel's last offset (of the same epoch) is a duplicate and is
    /// neither kept nor to be delivered. A new epoch replaces what the
    /// channel kept (those offsets mean nothing any more); a gap (an offset
    /// beyond the next) restarts the ring at `offset`, so that a replay
    /// never claims what it does not have.
    pub(crate) fn record_shared(
        &mut self,
        now: Instant,
        channel: &ChannelName,
        epoch: &Arc<str>,
        offset: u64,
        message: Outbound,
    ) -> bool {
        let restart = match self.rings.get(channel) {
            Some(ring) if ring.epoch.as_ref() == Some(epoch) => {
                if offset <= ring.last() {
                    return false;
                }
                offset > ring.last() + 1
            }
            _ => true,
        };
        if restart {
            self.reset_ring(channel, epoch.clone(), offset - 1);
        }
        if !self.config.enabled() {
            if let Some(ring) = self.rings.get_mut(channel) {
                ring.dropped_through = offset;
            }
            return true;
        }
        self.bytes += message.len() + ENTRY_OVERHEAD;
        let ring = self.rings.get_mut(channel).expect("made above");
        ring.entries.push_back(Entry { offset, message });
        if ring.entries.len() > self.config.per_channel {
            let dropped = ring.entries.pop_front().expect("longer than the limit");
            ring.dropped_through = dropped.offset;
            self.bytes -= dropped.message.len() + ENTRY_OVERHEAD;
        }
        self.log.push_back(LogEntry {
            offset,
            channel: channel.clone(),
            at: now,
        });
        self.enforce_limits();
        true
    }

    /// Empties `channel`'s ring for `epoch`, with everything up to
    /// `dropped_through` unknown here.
    fn reset_ring(&mut self, channel: &ChannelName, epoch: Arc<str>, dropped_through: u64) {
        if let Some(old) = self.rings.remove(channel) {
            let freed: usize = old
                .entries
                .iter()
                .map(|entry| entry.message.len() + ENTRY_OVERHEAD)
                .sum();
            self.bytes -= freed;
            if !old.entries.is_empty() {
                // Rare (a new epoch, a gap): the log's entries of the old
                // ring must not drop the new ring's equal offsets.
                self.log.retain(|entry| &entry.channel != channel);
            }
        }
        self.rings.insert(
            channel.clone(),
            Ring {
                entries: VecDeque::new(),
                dropped_through,
                epoch: Some(epoch),
            },
        );
    }

    /// Adds what was fetched from the shared history for a replay. They join the ring
    /// where they touch it (older than what the ring has); a ring of
    /// another epoch, or one they do not touch, is replaced by them. The
    /// caller has already delivered (through
    /// [`record_shared`](Self::record_shared)) any of them newer than the
    /// ring: they are kept here for replay only.
    pub(crate) fn merge_fetched(&mut self, now: Instant, channel: &ChannelName, fetched: Fetched) {
        let Fetched {
            epoch,
            after,
            last,
            complete,
            messages,
        } = fetched;
        let epoch = &epoch;
        let Some(&(first, _)) = messages.first() else {
            // Nothing after `after`: if this node knew nothing of this
            // epoch, it now knows where it stands.
            if self
                .shared_position(channel)
                .is_none_or(|p| p.epoch != *epoch)
            {
                self.reset_ring(channel, epoch.clone(), last);
            }
            return;
        };
        let known_from = if complete { after } else { first - 1 };
        let (joins, ring_first) = match self.rings.get(channel) {
            Some(ring) if ring.epoch.as_ref() == Some(epoch) => {
                let ring_first = ring.dropped_through + 1;
                (first <= ring_first && ring.last() + 1 >= first, ring_first)
            }
            _ => (false, u64::MAX),
        };
        if !joins {
            self.reset_ring(channel, epoch.clone(), known_from);
        }
        if !self.config.enabled() {
            return;
        }
        let ring = self.rings.get_mut(channel).expect("present or made above");
        let older: Vec<Entry> = messages
            .into_iter()
            .filter(|(offset, _)| !joins || *offset < ring_first)
            .map(|(offset, message)| Entry { offset, message })
            .collect();
        if !older.is_empty() || !joins {
            ring.dropped_through = ring.dropped_through.min(known_from);
        }
        for entry in older.into_iter().rev() {
            self.bytes += entry.message.len() + ENTRY_OVERHEAD;
            self.log.push_back(LogEntry {
                offset: entry.offset,
                channel: channel.clone(),
                at: now,
            });
            ring.entries.push_front(entry);
        }
        while ring.entries.len() > self.config.per_channel {
            let dropped = ring.entries.pop_front().expect("longer than the limit");
            ring.dropped_through = dropped.offset;
            self.bytes -= dropped.message.len() + ENTRY_OVERHEAD;
        }
        self.enforce_limits();
    }

    /// Where `channel`'s shared history stands here, if this node has seen
    /// any of it.
    pub(crate) fn shared_position(&self, channel: &ChannelName) -> Option<SharedPosition> {
        let ring = self.rings.get(channel)?;
        Some(SharedPosition {
            epoch: ring.epoch.clone()?,
            dropped_through: ring.dropped_through,
        })
    }

    /// Messages kept, over all channels.
    pub(crate) fn len(&self) -> usize {
        self.rings.values().map(|r| r.entries.len()).sum()
    }

    /// Bytes charged for kept messages.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Channels with kept messages.
    pub(crate) fn channel_count(&self) -> usize {
        self.rings.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::message::Message;

    fn name(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap()
    }
    fn pattern(s: &str) -> ChannelPattern {
        ChannelPattern::parse(s).unwrap()
    }
    fn msg(text: &str) -> Outbound {
        let mut m = Message::on("/x");
        m.data = Some(text.into());
        Outbound::new(&m)
    }
    fn data(replay: &Replay) -> Vec<String> {
        replay
            .messages
            .iter()
            .map(|m| m.to_message().data.unwrap().as_str().unwrap().to_owned())
            .collect()
    }
    fn publish(h: &mut History, now: Instant, channel: &str, text: &str) -> u64 {
        let offset = h.allocate_offset();
        h.record(now, &name(channel), offset, msg(text));
        offset
    }

    #[test]
    fn replay_after_an_offset_per_channel_and_across_a_wildcard() {
        let now = Instant::now();
        let mut h = History::new(HistoryConfig::default());
        let a1 = publish(&mut h, now, "/chat/a", "a1");
        publish(&mut h, now, "/chat/b", "b1");
        publish(&mut h, now, "/chat/a", "a2");
        publish(&mut h, now, "/other", "o1");
        let r = h.replay(&pattern("/chat/a"), a1, 100);
        assert_eq!(data(&r), ["a2"]);
        assert!(r.complete);
        let r = h.replay(&pattern("/chat/*"), 0, 100);
        assert_eq!(data(&r), ["a1", "b1", "a2"]);
        assert!(r.complete);
        let r = h.replay(&pattern("/chat/*"), 0, 2);
        assert_eq!(data(&r), ["a1", "b1"]);
        assert!(!r.complete);
    }

    #[test]
    fn per_channel_limit_and_completeness() {
        let now = Instant::now();
        let config = HistoryConfig {
            per_channel: 2,
            ..HistoryConfig::default()
        };
        let mut h = History::new(config);
        for i in 1..=3 {
            publish(&mut h, now, "/busy", &format!("m{i}"));
        }
        publish(&mut h, now, "/quiet", "q1");
        let r = h.replay(&pattern("/busy"), 0, 100);
        assert_eq!(data(&r), ["m2", "m3"]);
        assert!(!r.complete, "m1 was dropped");
        let r = h.replay(&pattern("/busy"), 1, 100);
        assert!(r.complete);
        assert_eq!(data(&h.replay(&pattern("/quiet"), 0, 100)), ["q1"]);
    }

    #[test]
    fn window_and_global_limits() {
        let t0 = Instant::now();
        let config = HistoryConfig {
            window: Duration::from_secs(60),
            max_messages: 3,
            ..HistoryConfig::default()
        };
        let mut h = History::new(config);
        for (i, channel) in ["/a", "/b", "/c", "/d"].iter().enumerate() {
            publish(&mut h, t0 + Duration::from_secs(i as u64), channel, channel);
        }
        assert_eq!(
            h.len(),
            3,
            "the oldest message was dropped for the global count"
        );
        assert_eq!(h.channel_count(), 3);
        assert!(!h.replay(&pattern("/a"), 0, 10).complete);
        assert_eq!(h.next_expiry(), Some(t0 + Duration::from_secs(61)));
        h.expire(t0 + Duration::from_secs(62));
        assert_eq!(h.len(), 1);
        h.expire(t0 + Duration::from_secs(100));
        assert_eq!(h.len(), 0);
        assert_eq!(h.bytes(), 0);
        assert_eq!(h.next_expiry(), None);

        let small = HistoryConfig {
            max_bytes: 2 * (ENTRY_OVERHEAD + 40),
            ..HistoryConfig::default()
        };
        let mut h = History::new(small);
        for i in 0..10 {
            publish(&mut h, t0, "/a", &format!("{i}"));
        }
        assert!(h.bytes() <= small.max_bytes);
        assert!(h.len() <= 2);
    }

    #[test]
    fn disabled_history_keeps_nothing_and_says_so() {
        let now = Instant::now();
        let mut h = History::new(HistoryConfig::DISABLED);
        let first = publish(&mut h, now, "/a", "x");
        assert_eq!(h.len(), 0);
        assert!(!h.replay(&pattern("/a"), first - 1, 10).complete);
        assert!(h.replay(&pattern("/a"), first, 10).complete);
    }
}
