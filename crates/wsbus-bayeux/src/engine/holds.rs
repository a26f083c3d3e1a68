//! The bookkeeping of held `/meta/connect`s: which client holds which, when
//! each is due, and the responses answered while their driver was not asking.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::id::{ClientId, IdMap};
use crate::message::Outbound;

/// Identifies one held `/meta/connect`, so that its reply reaches the request
/// (or socket) that sent it even after the client has sent another.
///
/// Ids are drawn from a counter and never reused, so an id kept by a driver
/// after its connect was answered finds nothing rather than a newer connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HoldId(u64);

/// A `/meta/connect` waiting for something to deliver or for its deadline.
#[derive(Debug)]
pub(crate) struct Held {
    /// The id the driver knows this connect by.
    pub(crate) hold_id: HoldId,
    /// The connect's `id`, echoed in its reply.
    pub(crate) message_id: Option<Value>,
    /// When the connect is answered at the latest, with nothing to deliver.
    pub(crate) deadline: Instant,
    /// Long-polling: replies to the other messages of the connect's request,
    /// which share its response.
    pub(crate) pending_replies: Vec<Outbound>,
}

/// A held connect's response, answered while its driver was not asking
/// (superseded by a newer connect, deadline passed, session ended), kept
/// until the driver polls for it.
#[derive(Debug)]
struct Released {
    client: ClientId,
    replies: Vec<Outbound>,
}

/// Every held `/meta/connect` of the engine, and the responses of those
/// answered but not yet collected.
///
/// # Invariants
///
/// The fields are private; every method keeps these true:
///
/// * A client holds at most one connect: `by_client[c].hold_id == h`
///   exactly when `owners[h] == c`. [`hold`](Self::hold) refuses a second
///   one; the engine [`release`](Self::release)s the first (answering it).
/// * `deadlines` holds `(deadline, h)` for exactly the held connects, so its
///   first entry is the next one due.
/// * A hold id is held, or released (its response waiting in `released`),
///   or finished: never two of these. Ids are never reused.
/// * `released_order` lists released responses oldest first, so that those
///   nobody collects are dropped after [`uncollected_lifetime`]; it may still
///   name ids collected since (they are skipped).
///
/// [`uncollected_lifetime`]: Self::new
#[derive(Debug)]
pub(crate) struct Holds {
    by_client: IdMap<ClientId, Held>,
    owners: IdMap<HoldId, ClientId>,
    deadlines: BTreeSet<(Instant, HoldId)>,
    next_id: u64,
    released: IdMap<HoldId, Released>,
    released_order: VecDeque<(Instant, HoldId)>,
    uncollected_lifetime: Duration,
}

impl Holds {
    /// No held connect. Released responses nobody collects are dropped
    /// `uncollected_lifetime` after their release (the engine passes
    /// `maxInterval`: by then the session expired or connected again).
    pub(crate) fn new(uncollected_lifetime: Duration) -> Self {
        Holds {
            by_client: IdMap::default(),
            owners: IdMap::default(),
            deadlines: BTreeSet::new(),
            next_id: 0,
            released: IdMap::default(),
            released_order: VecDeque::new(),
            uncollected_lifetime,
        }
    }

    /// Holds a connect of `client` until `deadline`; returns its new id.
    ///
    /// # Panics
    ///
    /// If `client` already holds one: [`release`](Self::release) it first.
    pub(crate) fn hold(
        &mut self,
        client: &ClientId,
        message_id: Option<Value>,
        deadline: Instant,
    ) -> HoldId {
        assert!(
            !self.by_client.contains_key(client),
            "a client holds one connect at a time: release the previous one first"
        );
        let hold_id = HoldId(self.next_id);
        self.next_id += 1;
        self.by_client.insert(
            client.clone(),
            Held {
                hold_id,
                message_id,
                deadline,
                pending_replies: Vec::new(),
            },
        );
        self.owners.insert(hold_id, client.clone());
        self.deadlines.insert((deadline, hold_id));
        hold_id
    }

    /// Whether `client` holds a connect.
    pub(crate) fn is_held(&self, client: &ClientId) -> bool {
        self.by_client.contains_key(client)
    }

    /// The connect `client` holds.
    pub(crate) fn get(&self, client: &ClientId) -> Option<&Held> {
        self.by_client.get(client)
    }

    /// The client holding `hold_id`, while it is held.
    pub(crate) fn client_of(&self, hold_id: HoldId) -> Option<&ClientId> {
        self.owners.get(&hold_id)
    }

    /// Appends `replies` (emptying it) to those answered with `hold_id`'s
    /// response; nothing happens if it is no longer held.
    pub(crate) fn add_pending_replies(&mut self, hold_id: HoldId, replies: &mut Vec<Outbound>) {
        if let Some(held) = self
            .owners
            .get(&hold_id)
            .and_then(|client| self.by_client.get_mut(client))
        {
            held.pending_replies.append(replies);
        }
    }

    /// Stops holding `client`'s connect and returns it, for the caller to
    /// answer.
    pub(crate) fn release(&mut self, client: &ClientId) -> Option<Held> {
        let held = self.by_client.remove(client)?;
        self.owners.remove(&held.hold_id);
        self.deadlines.remove(&(held.deadline, held.hold_id));
        Some(held)
    }

    /// The driver lost `hold_id`'s request or socket: forgets it, held or
    /// released. Returns the client if it was still held.
    pub(crate) fn cancel(&mut self, hold_id: HoldId) -> Option<ClientId> {
        self.released.remove(&hold_id);
        let client = self.owners.get(&hold_id)?.clone();
        self.release(&client);
        Some(client)
    }

    /// A client whose held connect's deadline is `now` or earlier.
    pub(crate) fn first_due(&self, now: Instant) -> Option<&ClientId> {
        let &(deadline, hold_id) = self.deadlines.first()?;
        if deadline > now {
            return None;
        }
        self.owners.get(&hold_id)
    }

    /// The earliest deadline of a held connect.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// How many connects are held.
    pub(crate) fn len(&self) -> usize {
        self.by_client.len()
    }

    /// Keeps `replies`, the response of `hold_id` (held by `client` until
    /// just now), for the driver's next [`take_released`](Self::take_released).
    pub(crate) fn stash_released(
        &mut self,
        now: Instant,
        client: &ClientId,
        hold_id: HoldId,
        replies: Vec<Outbound>,
    ) {
        debug_assert!(!self.owners.contains_key(&hold_id), "release it first");
        self.released.insert(
            hold_id,
            Released {
                client: client.clone(),
                replies,
            },
        );
        self.released_order.push_back((now, hold_id));
    }

    /// The response kept for `hold_id`, and whose it is; it is then finished.
    pub(crate) fn take_released(&mut self, hold_id: HoldId) -> Option<(ClientId, Vec<Outbound>)> {
        self.released
            .remove(&hold_id)
            .map(|released| (released.client, released.replies))
    }

    /// Drops the responses released `uncollected_lifetime` ago or earlier.
    pub(crate) fn drop_uncollected(&mut self, now: Instant) {
        while let Some(&(released_at, hold_id)) = self.released_order.front() {
            if released_at + self.uncollected_lifetime > now {
                break;
            }
            self.released_order.pop_front();
            self.released.remove(&hold_id);
        }
    }

    /// When [`drop_uncollected`](Self::drop_uncollected) next has work.
    pub(crate) fn next_uncollected_drop(&self) -> Option<Instant> {
        self.released_order
            .front()
            .map(|&(released_at, _)| released_at + self.uncollected_lifetime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn client(n: u8) -> ClientId {
        ClientId::from_random([n; 16])
    }

    #[test]
    fn ids_both_ways_and_deadlines_in_order() {
        let t0 = Instant::now();
        let mut holds = Holds::new(Duration::from_secs(10));
        let (a, b) = (client(1), client(2));
        let late = holds.hold(&a, None, t0 + Duration::from_secs(30));
        let early = holds.hold(&b, None, t0 + Duration::from_secs(5));
        assert_ne!(late, early);
        assert_eq!(holds.client_of(late), Some(&a));
        assert_eq!(holds.get(&b).map(|h| h.hold_id), Some(early));
        assert_eq!(holds.next_deadline(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(holds.first_due(t0), None);
        assert_eq!(holds.first_due(t0 + Duration::from_secs(5)), Some(&b));

        let released = holds.release(&b).expect("held");
        assert_eq!(released.hold_id, early);
        assert_eq!(holds.client_of(early), None);
        assert_eq!(holds.next_deadline(), Some(t0 + Duration::from_secs(30)));
        assert_eq!(holds.len(), 1);
        // Ids are not reused.
        let again = holds.hold(&b, None, t0);
        assert!(again != early && again != late);
    }

    #[test]
    #[should_panic(expected = "one connect at a time")]
    fn a_second_hold_of_one_client_is_refused() {
        let t0 = Instant::now();
        let mut holds = Holds::new(Duration::from_secs(10));
        holds.hold(&client(1), None, t0);
        holds.hold(&client(1), None, t0);
    }

    #[test]
    fn released_responses_wait_for_their_driver_then_expire() {
        let t0 = Instant::now();
        let lifetime = Duration::from_secs(10);
        let mut holds = Holds::new(lifetime);
        let (a, b) = (client(1), client(2));
        let reply = Outbound::new(&Message::on("/meta/connect"));
        for c in [&a, &b] {
            let id = holds.hold(c, None, t0);
            holds.release(c);
            holds.stash_released(t0, c, id, vec![reply.clone()]);
        }
        let a_id = HoldId(0);
        assert_eq!(holds.take_released(a_id), Some((a, vec![reply])));
        assert_eq!(holds.take_released(a_id), None);
        assert_eq!(holds.next_uncollected_drop(), Some(t0 + lifetime));
        holds.drop_uncollected(t0 + lifetime);
        assert_eq!(holds.take_released(HoldId(1)), None);
        assert_eq!(holds.next_uncollected_drop(), None);
    }

    #[test]
    fn cancel_forgets_held_and_released_alike() {
        let t0 = Instant::now();
        let mut holds = Holds::new(Duration::from_secs(10));
        let a = client(1);
        let held = holds.hold(&a, None, t0);
        assert_eq!(holds.cancel(held), Some(a.clone()));
        assert!(!holds.is_held(&a));
        assert_eq!(holds.next_deadline(), None);
        let released = holds.hold(&a, None, t0);
        holds.release(&a);
        holds.stash_released(t0, &a, released, Vec::new());
        assert_eq!(holds.cancel(released), None);
        assert_eq!(holds.take_released(released), None);
    }
}
