//! The process-wide budget of connections with permessage-deflate context
//! takeover (`DeflateConfig::context_takeover_max_connections`). Its own test
//! binary with one test: the count is process-wide, so no other test may
//! open connections while this one counts.

use wsbus_proto::{Connection, DeflateConfig, Limits};

/// What Chromium, Firefox, Python `websockets` and Node `ws` offer.
const BROWSER_OFFER: &str = "permessage-deflate; client_max_window_bits";

#[test]
fn context_takeover_connections_are_counted_and_capped() {
    let config = DeflateConfig {
        context_takeover_max_connections: 2,
        ..DeflateConfig::with_context_takeover()
    };
    let connect = |config: &DeflateConfig| {
        let params = config.negotiate_server([BROWSER_OFFER]).unwrap();
        let conn = Connection::server(Limits::default()).with_deflate(&params, config);
        (params.to_header_value(), conn)
    };
    assert_eq!(DeflateConfig::context_takeover_connections(), 0);

    let (first, a) = connect(&config);
    let (second, b) = connect(&config);
    assert_eq!(first, "permessage-deflate");
    assert_eq!(second, "permessage-deflate");
    assert_eq!(DeflateConfig::context_takeover_connections(), 2);

    // The cap reached: still compressed, without takeover (RFC 7692
    // §7.1.1.1, §7.1.1.2), and not counted.
    let (third, c) = connect(&config);
    assert_eq!(
        third,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    assert_eq!(DeflateConfig::context_takeover_connections(), 2);

    // The default configuration never takes from the budget.
    let (default, d) = connect(&DeflateConfig::default());
    assert_eq!(default, third);
    assert_eq!(DeflateConfig::context_takeover_connections(), 2);

    // A closed connection gives its place back.
    drop(a);
    assert_eq!(DeflateConfig::context_takeover_connections(), 1);
    let (again, e) = connect(&config);
    assert_eq!(again, "permessage-deflate");
    assert_eq!(DeflateConfig::context_takeover_connections(), 2);
    drop((b, c, d, e));
    assert_eq!(DeflateConfig::context_takeover_connections(), 0);
}
