//! The bus against a hub engine that misbehaves the way a cluster engine
//! may: a send that takes its time, a send that calls back into the bus.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};
use wsbus_bayeux::BusConfig;
use wsbus_proto::{CloseCode, Message};

use super::Bus;
use super::sends::SendQueue;
use crate::hub::{GroupSend, Hub, HubEngine, LocalHub, Outbound, Outcome, SocketId};

type Hook = Box<dyn FnOnce() + Send>;

/// This node's hub, with `hook` run inside the first send before it
/// reaches the socket.
struct HookedEngine {
    local: Arc<LocalHub>,
    hook: Mutex<Option<Hook>>,
}

impl std::fmt::Debug for HookedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookedEngine").finish_non_exhaustive()
    }
}

impl HubEngine for HookedEngine {
    fn send(&self, id: SocketId, message: Message) -> Outcome {
        let hook = self.hook.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
        self.local.send(id, message)
    }
    fn send_to_group(&self, group: &str, message: Message) -> GroupSend {
        self.local.send_to_group(group, message)
    }
    fn add_to_group(&self, group: &str, id: SocketId) -> Outcome {
        self.local.add_to_group(group, id)
    }
    fn remove_from_group(&self, group: &str, id: SocketId) -> Outcome {
        self.local.remove_from_group(group, id)
    }
    fn group_size(&self, group: &str) -> usize {
        self.local.group_size(group)
    }
    fn close(&self, id: SocketId, code: CloseCode, reason: &str) -> Outcome {
        self.local.close(id, code, reason)
    }
}

fn hooked_hub(hook: impl FnOnce() + Send + 'static) -> Hub {
    let local = Arc::new(LocalHub::default());
    let engine = HookedEngine {
        local: local.clone(),
        hook: Mutex::new(Some(Box::new(hook))),
    };
    Hub::with_engine(local, Arc::new(engine))
}

/// The text messages queued on a socket, in order.
fn texts(queued: impl IntoIterator<Item = Outbound>) -> Vec<String> {
    queued
        .into_iter()
        .map(|item| match item {
            Outbound::Message(prepared) => {
                String::from_utf8(prepared.message().payload().to_vec()).unwrap()
            }
            Outbound::Close(..) | Outbound::Overflowed => panic!("a close"),
        })
        .collect()
}

/// The race a flush outside the lock opens, forced: one thread's flush is
/// inside the hub with batch 1 when another thread queues batch 2 and
/// flushes. Batch 2 must not overtake batch 1.
#[test]
fn a_flush_stalled_in_the_hub_keeps_later_batches_behind_its_own() {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let hub = hooked_hub(move || {
        entered_tx.send(()).unwrap();
        release_rx.recv().unwrap();
    });
    let socket = hub.register();
    let queue = SendQueue::default();
    queue.push(socket.id(), "1".into());
    std::thread::scope(|scope| {
        let first = scope.spawn(|| queue.flush(&hub, None));
        entered.recv().unwrap();
        queue.push(socket.id(), "2".into());
        // Returns at once: the stalled flusher owns the sending.
        queue.flush(&hub, None);
        let overtaking = texts(socket.drain());
        release.send(()).unwrap();
        first.join().unwrap();
        assert!(overtaking.is_empty(), "batch 2 overtook batch 1");
    });
    assert_eq!(texts(socket.drain()), ["1", "2"]);
}

/// The lock-order hazard itself: a hub engine that calls back into the bus
/// from its send (as a cluster engine relaying a message might). Under the
/// engine lock that would deadlock; outside it, the nested publish queues
/// its delivery behind the one being sent.
#[tokio::test]
async fn a_hub_engine_may_call_back_into_the_bus_from_a_send() {
    let bus_slot: Arc<OnceLock<Bus>> = Arc::default();
    let callback_bus = bus_slot.clone();
    let hub = hooked_hub(move || {
        callback_bus.get().unwrap().publish("/x", json!(2)).unwrap();
    });
    let bus = Bus::new(BusConfig::default(), hub.clone());
    bus_slot.set(bus.clone()).unwrap();
    let socket = hub.register();
    let batch = |body: Value| {
        bus.websocket_batch(socket.id(), body.to_string().as_bytes(), None, None)
            .map(|json: String| serde_json::from_str::<Value>(&json).unwrap())
            .unwrap()
    };
    let reply = batch(
        json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["websocket"]}]),
    );
    let client = reply[0]["clientId"].as_str().unwrap().to_owned();
    let reply = batch(
        json!([{"channel": "/meta/connect", "clientId": client, "connectionType": "websocket"}]),
    );
    assert_eq!(reply[0]["successful"], true, "{reply}");
    let reply =
        batch(json!([{"channel": "/meta/subscribe", "clientId": client, "subscription": "/x"}]));
    assert_eq!(reply[0]["successful"], true, "{reply}");

    bus.publish("/x", json!(1)).unwrap();
    let data: Vec<Value> = texts(socket.drain())
        .iter()
        .flat_map(|text| serde_json::from_str::<Vec<Value>>(text).unwrap())
        .map(|message| message["data"].clone())
        .collect();
    assert_eq!(data, [json!(1), json!(2)]);
}
