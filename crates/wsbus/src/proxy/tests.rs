use super::*;
use http::HeaderValue;

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn trusted(list: &[&str]) -> TrustedProxies {
    TrustedProxies::parse(list).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

/// The view of a plain-HTTP request from `peer` through the proxies
/// `10.0.0.0/8` and `::1`.
fn view(peer: &str, pairs: &[(&str, &str)]) -> ClientView {
    let peer = SocketAddr::new(ip(peer), 40000);
    client_view(
        peer,
        false,
        &headers(pairs),
        &trusted(&["10.0.0.0/8", "::1"]),
    )
}

fn client(addr: &str, tls: bool, host: Option<&str>) -> ClientView {
    ClientView {
        addr: ip(addr),
        tls,
        host: host.map(str::to_owned),
    }
}

#[test]
fn cidr_parse_and_display() {
    for (input, shown) in [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("127.0.0.1", "127.0.0.1/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("::1/128", "::1/128"),
        ("::1", "::1/128"),
        ("2001:db8::1/32", "2001:db8::/32"),
        ("::/0", "::/0"),
        ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ("::ffff:192.0.2.1", "192.0.2.1/32"),
    ] {
        assert_eq!(cidr(input).to_string(), shown, "{input}");
    }
    assert_eq!(cidr("10.0.0.0/8").network(), ip("10.0.0.0"));
    assert_eq!(cidr("10.0.0.0/8").prefix_len(), 8);
    assert_eq!(Cidr::new(ip("10.9.9.9"), 16).unwrap(), cidr("10.9.0.0/16"));
    assert!(Cidr::new(ip("::1"), 129).is_err());
}

#[test]
fn cidr_errors_are_clear() {
    for (input, reason) in [
        ("", "expected an IPv4 or IPv6 address"),
        ("10.0.0/8", "expected an IPv4 or IPv6 address"),
        ("localhost", "expected an IPv4 or IPv6 address"),
        ("[::1]/128", "expected an IPv4 or IPv6 address"),
        ("10.0.0.0/", "must be a decimal number"),
        ("10.0.0.0/+8", "must be a decimal number"),
        ("10.0.0.0/8/8", "must be a decimal number"),
        ("10.0.0.0/ 8", "must be a decimal number"),
        ("10.0.0.0/33", "IPv4 prefix length is at most 32"),
        ("10.0.0.0/999", "IPv4 prefix length is at most 32"),
        ("::/129", "IPv6 prefix length is at most 128"),
    ] {
        let error = input.parse::<Cidr>().unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("invalid CIDR `{input}`: ")),
            "{error}"
        );
        assert!(error.contains(reason), "{input}: {error}");
    }
}

#[test]
fn cidr_contains() {
    let net = cidr("10.0.0.0/8");
    assert!(net.contains(ip("10.0.0.0")));
    assert!(net.contains(ip("10.255.255.255")));
    assert!(!net.contains(ip("11.0.0.0")));
    assert!(!net.contains(ip("::a00:1")));
    // Dual-stack sockets report IPv4 peers as IPv4-mapped IPv6.
    assert!(net.contains(ip("::ffff:10.1.2.3")));
    assert!(!net.contains(ip("::ffff:11.1.2.3")));
    assert!(cidr("::ffff:10.0.0.0/104").contains(ip("10.3.3.3")));
    assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
    assert!(!cidr("0.0.0.0/0").contains(ip("2001:db8::1")));
    let v6 = cidr("2001:db8::/32");
    assert!(v6.contains(ip("2001:db8:ffff::1")));
    assert!(!v6.contains(ip("2001:db9::1")));
    assert!(!v6.contains(ip("10.0.0.1")));
    assert!(cidr("::/0").contains(ip("2001:db8::1")));
    assert!(cidr("::1").contains(ip("::1")));
    assert!(!cidr("::1").contains(ip("::2")));
    assert!(cidr("127.0.0.1").contains(ip("127.0.0.1")));
    assert!(!cidr("127.0.0.1").contains(ip("127.0.0.2")));
}

#[test]
fn trusted_proxies_default_trusts_nobody() {
    let nobody = TrustedProxies::default();
    assert!(nobody.is_empty());
    assert!(!nobody.contains(ip("127.0.0.1")));
    let peer = SocketAddr::new(ip("127.0.0.1"), 1);
    let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=1.2.3.4")]);
    assert_eq!(
        client_view(peer, false, &h, &nobody),
        client("127.0.0.1", false, None)
    );
}

#[test]
fn trusted_proxies_build_and_deserialize() {
    let list = trusted(&["10.0.0.0/8", "::1"]);
    assert_eq!(list.networks(), &[cidr("10.0.0.0/8"), cidr("::1/128")]);
    assert_eq!(
        list,
        [cidr("10.0.0.0/8"), cidr("::1")].into_iter().collect()
    );
    assert_eq!(
        list,
        TrustedProxies::new(vec![cidr("10.0.0.0/8"), cidr("::1")])
    );
    let parsed: TrustedProxies = serde_json::from_str(r#"["10.0.0.0/8", "::1"]"#).unwrap();
    assert_eq!(parsed, list);
    let error = serde_json::from_str::<TrustedProxies>(r#"["10.0.0.0/40"]"#).unwrap_err();
    assert!(
        error.to_string().contains("invalid CIDR `10.0.0.0/40`"),
        "{error}"
    );
    assert!(TrustedProxies::parse(["10.0.0.0/8", "nope"]).is_err());
}

#[test]
fn untrusted_peer_headers_are_ignored() {
    let spoof = [
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
    ];
    assert_eq!(
        view("203.0.113.7", &spoof),
        client("203.0.113.7", false, None)
    );
    let spoof = [("forwarded", "for=1.2.3.4;proto=https;host=evil.example")];
    assert_eq!(
        view("203.0.113.7", &spoof),
        client("203.0.113.7", false, None)
    );
    // The connection's own TLS is kept.
    let peer = SocketAddr::new(ip("203.0.113.7"), 1);
    let h = headers(&[("x-forwarded-proto", "http")]);
    assert!(client_view(peer, true, &h, &trusted(&["10.0.0.0/8"])).tls);
}

#[test]
fn trusted_peer_without_headers_is_the_client() {
    assert_eq!(view("10.0.0.1", &[]), client("10.0.0.1", false, None));
    assert_eq!(
        view("::ffff:10.0.0.1", &[]),
        client("10.0.0.1", false, None)
    );
    assert_eq!(view("::1", &[]), client("::1", false, None));
}

#[test]
fn x_forwarded_for() {
    let v = view("10.0.0.1", &[("x-forwarded-for", "203.0.113.7")]);
    assert_eq!(v, client("203.0.113.7", false, None));
    // A chain through our own proxies.
    let v = view(
        "10.0.0.1",
        &[("x-forwarded-for", "203.0.113.7, 10.0.0.2, 10.0.0.3")],
    );
    assert_eq!(v.addr, ip("203.0.113.7"));
    // Several lines are one list.
    let v = view(
        "10.0.0.1",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "10.0.0.2"),
        ],
    );
    assert_eq!(v.addr, ip("203.0.113.7"));
    // Ports and brackets, as some load balancers write them.
    for (entry, addr) in [
        ("203.0.113.7:5555", "203.0.113.7"),
        ("[2001:db8::7]:443", "2001:db8::7"),
        ("[2001:db8::7]", "2001:db8::7"),
        ("2001:db8::7", "2001:db8::7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("\t203.0.113.7 ", "203.0.113.7"),
    ] {
        assert_eq!(
            view("::1", &[("x-forwarded-for", entry)]).addr,
            ip(addr),
            "{entry}"
        );
    }
}

#[test]
fn prepended_entries_do_not_spoof() {
    // The client sent `X-Forwarded-For: 1.1.1.1, 10.0.0.9` hoping to
    // look like it came through our proxy; our proxy appended its
    // real address.
    let v = view(
        "10.0.0.1",
        &[("x-forwarded-for", "1.1.1.1, 10.0.0.9, 203.0.113.7")],
    );
    assert_eq!(v.addr, ip("203.0.113.7"));
    let v = view("10.0.0.1", &[("forwarded", "for=1.1.1.1, for=203.0.113.7")]);
    assert_eq!(v.addr, ip("203.0.113.7"));
    // The client's garbage, an unbalanced quote included, is never read.
    let v = view("10.0.0.1", &[("x-forwarded-for", "%%%, 203.0.113.7")]);
    assert_eq!(v.addr, ip("203.0.113.7"));
    let v = view(
        "10.0.0.1",
        &[("forwarded", "for=\"oops, for=203.0.113.7;proto=https")],
    );
    assert_eq!(v, client("203.0.113.7", true, None));
    let v = view(
        "10.0.0.1",
        &[
            ("forwarded", "for=\"1.1.1.1"),
            ("forwarded", "for=203.0.113.7"),
        ],
    );
    assert_eq!(v.addr, ip("203.0.113.7"));
}

#[test]
fn all_trusted_gives_the_leftmost() {
    let v = view("10.0.0.1", &[("x-forwarded-for", "10.0.0.3, 10.0.0.2")]);
    assert_eq!(v.addr, ip("10.0.0.3"));
    let v = view(
        "10.0.0.1",
        &[("forwarded", "for=10.0.0.3;proto=https, for=10.0.0.2")],
    );
    assert_eq!(v, client("10.0.0.3", true, None));
}

#[test]
fn malformed_entries_end_the_walk_at_the_nearest_known_hop() {
    for value in [
        "garbage",
        "1.2.3",
        "1.2.3.4:99999",
        "[::1",
        "fe80::1%eth0",
        "",
    ] {
        let v = view("10.0.0.1", &[("x-forwarded-for", value)]);
        assert_eq!(v, client("10.0.0.1", false, None), "{value:?}");
    }
    let v = view(
        "10.0.0.1",
        &[("x-forwarded-for", "203.0.113.7, junk, 10.0.0.2")],
    );
    assert_eq!(v.addr, ip("10.0.0.2"));
    for value in [
        "for",
        "for=",
        "=1.2.3.4",
        "for=1.2.3.4;",
        "for=1.2.3.4;;proto=https",
        "for =1.2.3.4",
        "for=1.2.3.4 proto=https",
        "for=\"1.2.3.4",
        "for=\"1.2.3.4\"x",
        "for=1.2.3.4;for=5.6.7.8",
        "for=1.2.3.4;proto=https;proto=http",
        "for=1.2.3.4;host=a;host=b",
        "for=nodename",
        "for=\"[2001:db8::1\"",
        "for=\"[2001:db8::1]x\"",
        "for=\"1.2.3.4:x\"",
        "for=\"_bad!\"",
        "for=\"_\"",
        "proto=https;for=1.2.3.4.5",
    ] {
        let Ok(value) = HeaderValue::from_str(value) else {
            continue;
        };
        let mut h = HeaderMap::new();
        h.insert(FORWARDED, value.clone());
        let peer = SocketAddr::new(ip("10.0.0.1"), 1);
        let v = client_view(peer, false, &h, &trusted(&["10.0.0.0/8"]));
        assert_eq!(v, client("10.0.0.1", false, None), "{value:?}");
    }
}

#[test]
fn x_forwarded_proto_and_host_take_the_last_value() {
    let v = view(
        "10.0.0.1",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "HTTPS"),
            ("x-forwarded-host", "chat.example:8443"),
        ],
    );
    assert_eq!(v, client("203.0.113.7", true, Some("chat.example:8443")));
    // Without X-Forwarded-For (a local TLS terminator).
    let v = view("10.0.0.1", &[("x-forwarded-proto", "wss")]);
    assert_eq!(v, client("10.0.0.1", true, None));
    // Lists and lines: the last value, set by our proxy.
    let v = view(
        "10.0.0.1",
        &[
            ("x-forwarded-proto", "http, https"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-host", "a.example, b.example"),
        ],
    );
    assert_eq!(v, client("10.0.0.1", true, Some("b.example")));
    // Unknown schemes and invalid hosts are ignored.
    for (proto, host) in [
        ("ftp", "a b"),
        ("", "user@evil.example"),
        ("h t t p", "/path"),
    ] {
        let v = view(
            "10.0.0.1",
            &[("x-forwarded-proto", proto), ("x-forwarded-host", host)],
        );
        assert_eq!(v, client("10.0.0.1", false, None), "{proto:?} {host:?}");
    }
    let v = view("10.0.0.1", &[("x-forwarded-host", "[2001:db8::1]:443")]);
    assert_eq!(v.host.as_deref(), Some("[2001:db8::1]:443"));
}

#[test]
fn forwarded_basic_and_quoted() {
    let v = view(
        "10.0.0.1",
        &[("forwarded", "for=203.0.113.7;proto=https;host=chat.example")],
    );
    assert_eq!(v, client("203.0.113.7", true, Some("chat.example")));
    // RFC 7239 §4 examples.
    let v = view("10.0.0.1", &[("forwarded", "for=\"_gazonk\"")]);
    assert_eq!(v, client("10.0.0.1", false, None));
    let v = view(
        "10.0.0.1",
        &[("forwarded", "For=\"[2001:db8:cafe::17]:4711\"")],
    );
    assert_eq!(v.addr, ip("2001:db8:cafe::17"));
    let v = view(
        "10.0.0.1",
        &[("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43")],
    );
    assert_eq!(v, client("192.0.2.60", false, None));
    let v = view(
        "10.0.0.1",
        &[("forwarded", "for=192.0.2.43, for=198.51.100.17")],
    );
    assert_eq!(v.addr, ip("198.51.100.17"));
    // Quoted values, escapes, a port, a quoted comma and semicolon, OWS.
    let v = view(
        "10.0.0.1",
        &[(
            "forwarded",
            r#" for="203.0.113.7:5555" ; host="chat.example:8443";ext="a,b;\"c\"";PROTO="wss" "#,
        )],
    );
    assert_eq!(v, client("203.0.113.7", true, Some("chat.example:8443")));
    let v = view("10.0.0.1", &[("forwarded", r#"for="\2\0\3.0.113.7""#)]);
    assert_eq!(v.addr, ip("203.0.113.7"));
    // Lenient: unquoted port and bracketed or bare IPv6.
    for (value, addr) in [
        ("for=203.0.113.7:80", "203.0.113.7"),
        ("for=[2001:db8::7]", "2001:db8::7"),
        ("for=\"2001:db8::7\"", "2001:db8::7"),
        ("for=\"[2001:db8::7]:_port\"", "2001:db8::7"),
        ("for=\"[::ffff:203.0.113.7]\"", "203.0.113.7"),
    ] {
        assert_eq!(
            view("10.0.0.1", &[("forwarded", value)]).addr,
            ip(addr),
            "{value}"
        );
    }
}

#[test]
fn forwarded_hidden_and_unknown_nodes() {
    // The client is hidden behind our proxy: the proxy is the nearest
    // address we know, and its description of the request still holds.
    for node in [
        "unknown",
        "UNKNOWN",
        "\"_hidden\"",
        "\"_hidden:_port\"",
        "\"unknown:80\"",
    ] {
        let value = format!("for=203.0.113.7, for={node};proto=https, for=10.0.0.2");
        let v = view("10.0.0.1", &[("forwarded", value.as_str())]);
        assert_eq!(v, client("10.0.0.2", true, None), "{node}");
    }
    // An element without `for=` describes the request only.
    let v = view(
        "10.0.0.1",
        &[("forwarded", "proto=https;host=chat.example")],
    );
    assert_eq!(v, client("10.0.0.1", true, Some("chat.example")));
}

#[test]
fn forwarded_scheme_and_host_nearest_the_client_win() {
    // The edge (10.0.0.2) saw https from the client; the inner proxy
    // (our peer) saw http from the edge.
    let v = view(
        "10.0.0.1",
        &[(
            "forwarded",
            "for=203.0.113.7;proto=https;host=chat.example, for=10.0.0.2;proto=http;host=internal",
        )],
    );
    assert_eq!(v, client("203.0.113.7", true, Some("chat.example")));
    // Values the client wrote are not read.
    let v = view(
        "10.0.0.1",
        &[(
            "forwarded",
            "for=1.1.1.1;proto=https;host=evil.example, for=203.0.113.7",
        )],
    );
    assert_eq!(v, client("203.0.113.7", false, None));
    // An edge that did not say keeps what the inner proxy said.
    let v = view(
        "10.0.0.1",
        &[(
            "forwarded",
            "for=203.0.113.7, for=10.0.0.2;proto=https;host=chat.example",
        )],
    );
    assert_eq!(v, client("203.0.113.7", true, Some("chat.example")));
    // Unknown schemes and invalid hosts are ignored.
    let v = view(
        "10.0.0.1",
        &[("forwarded", "for=203.0.113.7;proto=gopher;host=\"a b\"")],
    );
    assert_eq!(v, client("203.0.113.7", false, None));
}

#[test]
fn forwarded_is_preferred_and_never_mixed() {
    let v = view(
        "10.0.0.1",
        &[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "xf.example"),
            ("forwarded", "for=203.0.113.7"),
        ],
    );
    assert_eq!(v, client("203.0.113.7", false, None));
    // A `Forwarded` with no element does not count.
    let v = view(
        "10.0.0.1",
        &[("forwarded", " , "), ("x-forwarded-for", "198.51.100.1")],
    );
    assert_eq!(v.addr, ip("198.51.100.1"));
    // Several lines are one list, the last line nearest.
    let v = view(
        "10.0.0.1",
        &[
            ("forwarded", "for=203.0.113.7"),
            ("forwarded", "for=10.0.0.2, for=10.0.0.3"),
        ],
    );
    assert_eq!(v.addr, ip("203.0.113.7"));
}

#[test]
fn the_walk_is_bounded() {
    // 40 trusted hops: the client (leftmost) is beyond the bound, so the
    // 32nd entry from the right is taken as the leftmost.
    let mut hops: Vec<String> = vec!["203.0.113.7".into()];
    hops.extend((1..=40).map(|i| format!("10.0.0.{i}")));
    let xff = hops.join(", ");
    assert_eq!(
        view("10.0.0.1", &[("x-forwarded-for", xff.as_str())]).addr,
        ip("10.0.0.9")
    );
    let fwd = hops
        .iter()
        .map(|h| format!("for={h}"))
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        view("10.0.0.1", &[("forwarded", fwd.as_str())]).addr,
        ip("10.0.0.9")
    );
    // Within the bound the client is found.
    let xff = hops[..=31].join(", ");
    assert_eq!(
        view("10.0.0.1", &[("x-forwarded-for", xff.as_str())]).addr,
        ip("203.0.113.7")
    );
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A fixed-seed generator over the bytes that matter to the parsers.
    const ALPHABET: &[u8] = b"\"\\,;=:[]_ .0123456789abcdefABCDEFforprotohstunkw\t\x80\xff";
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let peer = SocketAddr::new(ip("10.0.0.1"), 1);
    let trust = trusted(&["10.0.0.0/8", "::/0"]);
    for _ in 0..5_000 {
        let mut value = Vec::new();
        for _ in 0..(seed % 40) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            value.push(ALPHABET[(seed % ALPHABET.len() as u64) as usize]);
        }
        let Ok(value) = HeaderValue::from_bytes(&value) else {
            continue;
        };
        for name in [
            FORWARDED,
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, value.clone());
            let _ = client_view(peer, false, &h, &trust);
        }
    }
}

#[test]
fn element_splitting_respects_quotes() {
    let split = |s: &'static str| {
        RevElements {
            rest: Some(s.as_bytes()),
        }
        .collect::<Vec<_>>()
    };
    assert_eq!(split("a, b"), [Ok(&b" b"[..]), Ok(&b"a"[..])]);
    assert_eq!(
        split(r#"a="x,y",b"#),
        [Ok(&b"b"[..]), Ok(&br#"a="x,y""#[..])]
    );
    assert_eq!(
        split(r#"a="x\",y",b"#),
        [Ok(&b"b"[..]), Ok(&br#"a="x\",y""#[..])]
    );
    assert_eq!(
        split(r#"a="x\\",y"#),
        [Ok(&b"y"[..]), Ok(&br#"a="x\\""#[..])]
    );
    assert_eq!(split(r#"a="x,y"#), [Ok(&b"y"[..]), Err(())]);
}
