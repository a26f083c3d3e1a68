//! The server-side API, the `Authorizer` hook, sessions limits, stats.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use wsbus_bayeux::*;

use crate::support::*;

#[test]
fn server_side_publish_deliver_and_disconnect() {
    let mut bus = Bus::new();
    let client = bus.session(&lp());
    bus.subscribe(&lp(), &client, "/news");
    let hold = bus.hold(&lp(), &client);
    bus.events();
    let published = bus.server_publish("/news", json!({"headline": "x"}));
    assert_eq!(published.recipients, 1);
    assert_eq!(bus.wakes(), vec![client.clone()]);
    let response = bus.poll(hold).unwrap();
    assert_eq!(response[0]["ext"]["offset"], published.offset.unwrap());

    assert_eq!(
        bus.engine.publish(bus.now, &name("/service/x"), json!(1)),
        Err(BayeuxError::fixed(
            400,
            "Cannot broadcast on a service channel"
        ))
    );
    let stranger = ClientId::from_random([7; 16]);
    assert_eq!(
        bus.engine
            .deliver(bus.now, &stranger, &name("/x"), json!(1)),
        Err(BayeuxError::UNKNOWN_CLIENT)
    );

    let hold = bus.hold(&lp(), &client);
    assert!(bus.engine.disconnect(&client, bus.now));
    let response = bus.poll(hold).unwrap();
    assert_eq!(response[0]["advice"]["reconnect"], "none");
    assert!(!bus.engine.disconnect(&client, bus.now));
}

struct TokenAuthorizer;

impl Authorizer for TokenAuthorizer {
    fn handshake(
        &mut self,
        request: &HandshakeRequest<'_>,
    ) -> Result<Option<Arc<str>>, BayeuxError> {
        match request.message.ext_field("token").and_then(Value::as_str) {
            Some("good") => Ok(Some(Arc::from("token-user"))),
            _ => Err(BayeuxError::HANDSHAKE_DENIED),
        }
    }

    fn publish(
        &mut self,
        _: &SessionInfo<'_>,
        _: &ChannelName,
        data: &Value,
    ) -> Result<(), BayeuxError> {
        if data.is_string() {
            Ok(())
        } else {
            Err(BayeuxError::new(400, "Invalid data: expected a string"))
        }
    }
}

#[test]
fn an_authorizer_checks_handshake_tokens_and_validates_data() {
    let mut bus = Bus::new();
    bus.engine.set_authorizer(TokenAuthorizer);
    let replies = bus.call(
        &ws(),
        json!({"channel": "/meta/handshake", "version": "1.0", "ext": {"token": "bad"}}),
    );
    assert_eq!(replies[0]["error"], "403::Handshake denied");
    assert_eq!(replies[0]["advice"]["reconnect"], "none");
    let (client, _) = bus.handshake_with(
        &ws(),
        json!({"channel": "/meta/handshake", "version": "1.0", "ext": {"token": "good"}}),
    );
    assert_eq!(
        bus.engine.session_info(&client).unwrap().user,
        Some("token-user")
    );
    bus.subscribe(&ws(), &client, "/a");
    assert_eq!(
        bus.publish(&ws(), &client, "/a", json!(1))["error"],
        "400::Invalid data: expected a string"
    );
    assert_eq!(
        bus.publish(&ws(), &client, "/a", json!("ok"))["successful"],
        true
    );
}

#[test]
fn session_limit() {
    let mut config = BusConfig::default();
    config.limits.max_sessions = 2;
    let mut bus = Bus::with(config);
    bus.handshake(&lp());
    bus.handshake(&lp());
    let replies = bus.call(
        &lp(),
        json!({"channel": "/meta/handshake", "version": "1.0"}),
    );
    assert_eq!(replies[0]["error"], "503::Too many sessions");
}

#[test]
fn a_repeating_random_source_is_an_error_not_a_hang() {
    let mut bus = Bus {
        engine: Engine::new(BusConfig::default(), || [9u8; 16]),
        now: Instant::now(),
    };
    bus.handshake(&lp());
    let replies = bus.call(&lp(), json!({"channel": "/meta/handshake"}));
    assert_eq!(replies[0]["error"], "500::Could not allocate a client id");
}

#[test]
fn the_engine_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<Engine>();
    assert_send::<Event>();
    assert_send::<Outbound>();
}

#[test]
fn stats_count_what_is_held() {
    let mut bus = Bus::new();
    let a = bus.session(&ws());
    let b = bus.session(&lp());
    bus.subscribe(&ws(), &a, "/x");
    bus.subscribe(&lp(), &b, "/x");
    bus.hold(&lp(), &b);
    bus.server_publish("/x", json!(1));
    let stats = bus.engine.stats();
    assert_eq!(stats.sessions, 2);
    assert_eq!(stats.websocket_sessions, 1);
    assert_eq!(stats.long_polling_sessions, 1);
    assert_eq!(stats.held_connects, 1);
    assert_eq!(stats.subscription_patterns, 1);
    assert_eq!(stats.history_messages, 1, "presence joins are not kept");
    assert_eq!(stats.queued_messages, 2);
    assert_eq!(stats.publishes, 1);
    assert_eq!(stats.deliveries, 2);
    assert_eq!(stats.replayed, 0);
}
