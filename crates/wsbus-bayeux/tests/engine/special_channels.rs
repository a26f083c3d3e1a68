//! `/service` channels (server-side handlers only) and `/meta` channels
//! (never subscribed to, never relayed).

use serde_json::json;
use wsbus_bayeux::*;

use crate::support::*;

#[test]
fn service_channels_go_to_server_side_handlers_only() {
    let mut bus = Bus::new();
    let client = bus.session(&ws());
    let spy = bus.session(&ws());
    bus.subscribe(&ws(), &spy, "/**");
    assert_eq!(
        bus.subscribe(&ws(), &spy, "/service/echo")["error"],
        "403::Cannot subscribe to a service channel"
    );
    assert_eq!(
        bus.publish(&ws(), &client, "/service/echo", json!("ping"))["error"],
        "404::No handler for this service channel"
    );
    bus.engine.add_service(&pattern("/service/**"));
    bus.events();
    let ack = bus.publish(&ws(), &client, "/service/echo", json!("ping"));
    assert_eq!(
        ack,
        json!({"channel": "/service/echo", "id": "p", "successful": true})
    );
    let events = bus.events();
    let request = events
        .iter()
        .find_map(|e| match e {
            Event::Service(request) => Some(request.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(request.channel.as_str(), "/service/echo");
    assert_eq!(request.data, json!("ping"));
    assert_eq!(request.client_id, client);
    assert_eq!(request.id, Some(json!("p")));
    assert!(
        bus.deliveries(&spy).is_empty(),
        "service messages are never relayed"
    );

    // The handler answers the one client.
    bus.engine
        .deliver(
            bus.now,
            &request.client_id,
            &name("/service/echo"),
            json!("pong"),
        )
        .unwrap();
    assert_eq!(data_of(&bus.deliveries(&client)), [json!("pong")]);
    assert!(bus.deliveries(&spy).is_empty());
}

#[test]
fn meta_channels_are_never_subscribed_nor_relayed() {
    let mut bus = Bus::new();
    let spy = bus.session(&ws());
    for meta in ["/meta/connect", "/meta/*", "/meta/**", "/meta"] {
        assert_eq!(
            bus.subscribe(&ws(), &spy, meta)["error"],
            "403::Cannot subscribe to a meta channel",
            "{meta}"
        );
    }
    bus.subscribe(&ws(), &spy, "/**");
    bus.subscribe(&ws(), &spy, "/*");
    // Another client's whole life cycle relays nothing.
    let other = bus.session(&ws());
    bus.subscribe(&ws(), &other, "/x/*");
    bus.call(
        &ws(),
        json!({"channel": "/meta/disconnect", "clientId": other.as_str()}),
    );
    assert!(bus.deliveries(&spy).is_empty());
    // Publishing on a made-up meta channel is an error.
    assert_eq!(
        bus.publish(&ws(), &spy, "/meta/custom", json!(1))["error"],
        "400::Unknown meta channel"
    );
    assert_eq!(
        bus.engine
            .publish(bus.now, &name("/meta/connect"), json!(1)),
        Err(BayeuxError::fixed(400, "Cannot publish to a meta channel"))
    );
}
