//! Access tokens: refused handshakes, `claim` policies, expiry (nothing
//! delivered after it), refresh on `/meta/connect`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wsbus_bayeux::*;

use crate::support::*;

fn grant(bus: &Bus, user: &str, channels: &[&str], lifetime: Duration) -> Credential {
    Credential::Verified(Grant {
        user: Arc::from(user),
        channels: Some(channels.iter().map(|c| pattern(c)).collect()),
        expires_at: Some(bus.now + lifetime),
        claims: None,
    })
}

fn handshake_reply(bus: &mut Bus, context: &RequestContext) -> serde_json::Value {
    bus.call(
        context,
        json!({"channel": "/meta/handshake", "version": "1.0", "id": "h"}),
    )
    .remove(0)
}

#[test]
fn a_refused_or_missing_token_fails_the_handshake_with_reconnect_none() {
    let mut bus = Bus::with(BusConfig {
        require_token: true,
        ..BusConfig::default()
    });
    let reply = handshake_reply(&mut bus, &lp());
    assert_eq!(reply["successful"], false);
    assert_eq!(reply["error"], "401::Missing token");
    assert_eq!(reply["advice"]["reconnect"], "none");

    let refused = lp().with_credential(Credential::Refused("Bad signature"));
    let reply = handshake_reply(&mut bus, &refused);
    assert_eq!(reply["error"], "401::Bad signature");
    assert_eq!(reply["advice"]["reconnect"], "none");
    assert_eq!(bus.engine.stats().sessions, 0);

    // A cookie user is not a token.
    let reply = handshake_reply(&mut bus, &lp().with_user("ana"));
    assert_eq!(reply["error"], "401::Missing token");

    let ok = lp().with_credential(grant(&bus, "ana", &[], Duration::from_secs(60)));
    let (client, _) = bus.handshake_with(&ok, json!({"channel": "/meta/handshake"}));
    assert_eq!(
        bus.engine.session_info(&client).unwrap().user,
        Some("ana"),
        "the token's sub is the session's user"
    );
}

#[test]
fn claim_policies_follow_the_tokens_channels_claim_and_presence_follows_its_channel() {
    let mut bus = Bus::with(BusConfig {
        policies: vec![(
            pattern("/rooms/**"),
            ChannelPolicy {
                subscribe: SubscribePolicy::Claim,
                publish: PublishPolicy::Claim,
                ..ChannelPolicy::DEFAULT
            },
        )],
        ..BusConfig::default()
    });
    let ana = lp().with_credential(grant(
        &bus,
        "ana",
        &["/rooms/blue/*"],
        Duration::from_secs(600),
    ));
    let client = bus.session(&ana);
    let anonymous = bus.session(&lp());

    assert_eq!(
        bus.subscribe(&ana, &client, "/rooms/blue/a")["successful"],
        true
    );
    assert_eq!(
        bus.subscribe(&ana, &client, "/rooms/blue/*")["successful"],
        true
    );
    for denied in ["/rooms/red/a", "/rooms/**", "/rooms/blue/**"] {
        assert_eq!(
            bus.subscribe(&ana, &client, denied)["error"],
            "403::Subscribe denied",
            "{denied}"
        );
    }
    assert_eq!(
        bus.subscribe(&lp(), &anonymous, "/rooms/blue/a")["error"],
        "403::Subscribe denied"
    );
    // Presence of a room: the room's rule.
    assert_eq!(
        bus.subscribe(&ana, &client, "/presence/rooms/blue/a")["successful"],
        true
    );
    assert_eq!(
        bus.subscribe(&lp(), &anonymous, "/presence/rooms/blue/a")["error"],
        "403::Subscribe denied"
    );
    // A wildcard on presence is a wildcard: each delivery is checked
    // against the room's rule, so the anonymous watcher sees no room.
    assert_eq!(
        bus.subscribe(&lp(), &anonymous, "/presence/**")["successful"],
        true
    );
    let watcher = bus.session(&lp().with_credential(grant(
        &bus,
        "eve",
        &["/rooms/blue/*"],
        Duration::from_secs(600),
    )));
    bus.subscribe(&lp(), &watcher, "/presence/**");
    bus.subscribe(&ana, &client, "/rooms/blue/b");
    // What a connect brings (the first answered at once was taken by
    // `session`; this one is answered with deliveries, or held).
    let seen = |bus: &mut Bus, who: &ClientId| {
        let outcome = bus.connect(&lp(), who);
        match outcome.held {
            None => data_of(&values(&outcome.replies)),
            Some(held) => {
                bus.now += Duration::from_secs(30);
                data_of(&bus.poll(held.hold_id).unwrap())
            }
        }
    };
    assert_eq!(seen(&mut bus, &anonymous), Vec::<serde_json::Value>::new());
    let joins = seen(&mut bus, &watcher);
    assert_eq!(joins.len(), 1, "{joins:?}");
    assert_eq!(joins[0]["channel"], "/rooms/blue/b");

    assert_eq!(
        bus.publish(&ana, &client, "/rooms/blue/a", json!("hi"))["successful"],
        true
    );
    assert_eq!(
        bus.publish(&ana, &client, "/rooms/red/a", json!("hi"))["error"],
        "403::Publish denied"
    );
}

#[test]
fn an_expired_token_gets_nothing_and_its_held_connect_is_answered_401() {
    let mut bus = Bus::new();
    let ana = ws().with_credential(grant(&bus, "ana", &[], Duration::from_secs(5)));
    let client = bus.session(&ana);
    bus.subscribe(&ana, &client, "/chat");
    let hold = bus.hold(&ws(), &client);
    bus.events();

    // The hold's deadline is the token's expiry, not the 30 s timeout.
    assert_eq!(
        bus.engine.next_timeout(),
        Some(bus.now + Duration::from_secs(5))
    );
    bus.server_publish("/chat", json!("before"));
    assert_eq!(data_of(&bus.deliveries(&client)), vec![json!("before")]);

    bus.advance(Duration::from_secs(5));
    let reply = bus.poll(hold).expect("answered at expiry");
    let connect = reply.last().unwrap();
    assert_eq!(connect["error"], "401::Token expired");
    assert_eq!(connect["advice"]["reconnect"], "handshake");
    assert!(!bus.engine.has_session(&client));
    let published = bus.server_publish("/chat", json!("after"));
    assert_eq!(published.recipients, 0);
    assert!(bus.events().iter().any(|e| matches!(
        e,
        Event::SessionClosed {
            reason: CloseReason::TokenExpired,
            ..
        }
    )));
}

#[test]
fn a_session_without_a_held_connect_is_refused_on_its_next_request_and_gets_no_delivery() {
    let mut bus = Bus::new();
    let ana = lp().with_credential(grant(&bus, "ana", &[], Duration::from_secs(5)));
    let client = bus.session(&ana);
    bus.subscribe(&lp(), &client, "/chat");
    bus.now += Duration::from_secs(5);
    // Published after expiry: not queued.
    assert_eq!(bus.server_publish("/chat", json!("late")).recipients, 0);
    let replies = values(&bus.connect(&lp(), &client).replies);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["error"], "401::Token expired");
    assert_eq!(replies[0]["advice"]["reconnect"], "handshake");
}

#[test]
fn a_connect_with_a_new_token_of_the_same_user_refreshes_the_session() {
    let mut bus = Bus::new();
    let first = lp().with_credential(grant(&bus, "ana", &[], Duration::from_secs(5)));
    let client = bus.session(&first);
    bus.subscribe(&lp(), &client, "/chat");

    bus.now += Duration::from_secs(4);
    let refreshed = lp().with_credential(grant(&bus, "ana", &[], Duration::from_secs(60)));
    let hold = bus.hold(&refreshed, &client);
    bus.now += Duration::from_secs(10);
    bus.server_publish("/chat", json!("still here"));
    assert_eq!(data_of(&bus.poll(hold).unwrap()), vec![json!("still here")]);

    // A token of someone else, or a refused one, ends the session.
    let bob = lp().with_credential(grant(&bus, "bob", &[], Duration::from_secs(60)));
    let replies = values(&bus.connect(&bob, &client).replies);
    assert_eq!(replies[0]["error"], "401::Token of another user");
    assert!(!bus.engine.has_session(&client));

    let other =
        bus.session(&lp().with_credential(grant(&bus, "ana", &[], Duration::from_secs(60))));
    let replies = values(
        &bus.connect(
            &lp().with_credential(Credential::Refused("Bad signature")),
            &other,
        )
        .replies,
    );
    assert_eq!(replies[0]["error"], "401::Bad signature");
    assert_eq!(replies[0]["advice"]["reconnect"], "handshake");
    assert!(!bus.engine.has_session(&other));
}

#[test]
fn a_session_over_its_message_rate_gets_429_and_others_are_unaffected() {
    let mut bus = Bus::with(BusConfig {
        limits: Limits {
            messages_per_second: Some(RateLimit::new(10)),
            ..Limits::default()
        },
        policies: vec![(
            pattern("/chat"),
            ChannelPolicy {
                publish: PublishPolicy::Anyone,
                ..ChannelPolicy::DEFAULT
            },
        )],
        ..BusConfig::default()
    });
    let flooder = bus.session(&lp());
    let calm = bus.session(&lp());
    bus.subscribe(&lp(), &calm, "/chat");
    let mut refused = 0;
    for i in 0..100 {
        let reply = bus.publish(&lp(), &flooder, "/chat", json!(i));
        if reply["successful"] == false {
            assert_eq!(reply["error"], "429::Too many messages");
            refused += 1;
        }
    }
    // The burst is one second's worth (10); the subscribe above was the
    // calm client's own.
    assert_eq!(refused, 90);
    assert_eq!(bus.engine.rate_limited(), 90, "counted for the metrics");
    assert_eq!(bus.engine.stats().rate_limited, 90);
    // Connects are the transport's heartbeat: never counted.
    assert!(bus.connect(&lp(), &flooder).replies.is_empty());
    bus.now += Duration::from_millis(100);
    assert_eq!(
        bus.publish(&lp(), &flooder, "/chat", json!("later"))["successful"],
        true
    );
    assert_eq!(
        bus.publish(&lp(), &calm, "/chat", json!("mine"))["successful"],
        true
    );
}
