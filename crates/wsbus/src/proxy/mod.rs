//! Trusted proxies (SPEC §5): who the client is, and which scheme and host it
//! used, when we sit behind load balancers or TLS-terminating proxies.
//!
//! Forwarding headers are written by whoever sends them, so they are only
//! believed when the TCP peer is in [`TrustedProxies`] (by default: nobody).
//! For an untrusted peer [`client_view`] ignores them entirely: the client is
//! the peer, the scheme is that of our own connection, and the host is the
//! request's `Host`.
//!
//! For a trusted peer the chain is read from RFC 7239 `Forwarded` if the
//! request has one, otherwise from `X-Forwarded-For` (with
//! `X-Forwarded-Proto` and `X-Forwarded-Host`); the two families are never
//! mixed. Each proxy *appends* the address it received the connection from,
//! so the chain is walked from the right (nearest first): entries that are
//! themselves trusted proxies are skipped, and the first untrusted one is the
//! client. Everything to its left was written by the client and is ignored,
//! so prepending fake entries spoofs nothing; if every entry is trusted, the
//! leftmost one read is the client.
//!
//! An entry the walk cannot use — malformed, or an RFC 7239 obfuscated or
//! `unknown` node — ends it: the client address is then the nearest address
//! we did identify (ultimately the peer). Garbage never panics, never falls
//! back to a client-chosen value, and garbage the client put to the left of
//! genuine entries is never reached, because the walk stops first.
//!
//! Scheme and host: with `Forwarded`, the `proto=` and `host=` of the
//! entries walked (all written by trusted proxies), the one nearest the
//! client winning, since each proxy describes the request it received. With
//! `X-Forwarded-Proto` / `X-Forwarded-Host`, whose entries do not line up
//! with `X-Forwarded-For` hops, the last value: the one our trusted peer
//! set. A chain of proxies must therefore pass the edge's values on
//! unchanged rather than overwrite them with its own scheme.
//!
//! Deployment note: because `Forwarded` is preferred, a trusted proxy that
//! writes only `X-Forwarded-For` must remove any `Forwarded` header the
//! client sent (and the other way round), or the client chooses its
//! address. Likewise a client-sent `X-Forwarded-Proto` or `X-Forwarded-Host`
//! that the proxy passes through is believed: the proxy must set or strip
//! them. Every trusted proxy must append to (or overwrite) the headers it
//! writes.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::header::{FORWARDED, HeaderMap, HeaderName};

/// At most this many chain entries are read per request, nearest first. Real
/// chains have one to three proxies (CDN, load balancer, ingress); 32 leaves
/// room for any of them while bounding the addresses parsed per handshake,
/// whatever a client packs into the header.
pub const MAX_FORWARDED_HOPS: usize = 32;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

mod cidr;
pub use cidr::{Cidr, ParseCidrError};

/// The proxies whose forwarding headers are believed (`limits.trusted_proxies`).
///
/// Empty, the default, trusts nobody: the TCP peer is always the client.
/// Deserializes from a list of CIDR strings.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Trusts the given networks.
    pub fn new(networks: Vec<Cidr>) -> Self {
        TrustedProxies(networks)
    }

    /// Parses a list of CIDR strings, failing on the first invalid one.
    pub fn parse<I>(networks: I) -> Result<Self, ParseCidrError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        networks.into_iter().map(|s| s.as_ref().parse()).collect()
    }

    /// Whether `ip` (or the IPv4 address it maps) is a trusted proxy. A
    /// linear scan: the list is a handful of networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(ip))
    }

    /// Whether nobody is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The trusted networks.
    pub fn networks(&self) -> &[Cidr] {
        &self.0
    }
}

impl FromIterator<Cidr> for TrustedProxies {
    fn from_iter<I: IntoIterator<Item = Cidr>>(iter: I) -> Self {
        TrustedProxies(iter.into_iter().collect())
    }
}

/// The request as the client made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientView {
    /// The client's address (IPv4-mapped IPv6 addresses as IPv4, so a
    /// client has one key whether it arrived over IPv4 or a dual-stack
    /// socket).
    pub addr: IpAddr,
    /// Whether the client used `https` / `wss`.
    pub tls: bool,
    /// The host (`host[:port]`) the client addressed, as a trusted proxy
    /// reported it; `None`: use the request's `Host` header.
    pub host: Option<String>,
}

/// Who the client is and how it addressed us, from the TCP `peer`, whether
/// our own connection is `tls`, and — only if the peer is `trusted` — the
/// forwarding headers. See the [module documentation](self) for the rules.
pub fn client_view(
    peer: SocketAddr,
    tls: bool,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> ClientView {
    let peer_ip = peer.ip().to_canonical();
    let direct = ClientView {
        addr: peer_ip,
        tls,
        host: None,
    };
    if !trusted.contains(peer_ip) {
        return direct;
    }
    let mut forwarded = forwarded_elements(headers).peekable();
    if forwarded.peek().is_some() {
        let (addr, meta) = walk(peer_ip, trusted, forwarded.map(parse_element));
        ClientView {
            addr,
            tls: meta.tls.unwrap_or(tls),
            host: meta.host,
        }
    } else {
        let hops = list_rev(headers, &X_FORWARDED_FOR).map(|entry| match parse_xff_node(entry) {
            Some(ip) => Hop::Addr(ip, Meta::default()),
            None => Hop::Malformed,
        });
        let (addr, _) = walk(peer_ip, trusted, hops);
        let last = |name| list_rev(headers, name).next();
        ClientView {
            addr,
            tls: last(&X_FORWARDED_PROTO)
                .and_then(parse_proto)
                .unwrap_or(tls),
            host: last(&X_FORWARDED_HOST).and_then(parse_host),
        }
    }
}

/// What one chain entry says about the request its proxy received.
#[derive(Debug, Default, PartialEq, Eq)]
struct Meta {
    tls: Option<bool>,
    host: Option<String>,
}

/// One chain entry.
#[derive(Debug, PartialEq, Eq)]
enum Hop {
    /// A node with an address.
    Addr(IpAddr, Meta),
    /// An obfuscated or `unknown` node, or no `for=` (RFC 7239 §6.2, §6.3).
    Opaque(Meta),
    /// Anything we cannot read.
    Malformed,
}

/// Walks `hops` (nearest first) from the trusted peer: the client address
/// and the scheme and host nearest the client.
fn walk(peer: IpAddr, trusted: &TrustedProxies, hops: impl Iterator<Item = Hop>) -> (IpAddr, Meta) {
    let mut addr = peer;
    let mut meta = Meta::default();
    for hop in hops.take(MAX_FORWARDED_HOPS) {
        // Every entry reached was written by a trusted proxy (the peer, or
        // one the previous entry named), so its scheme and host are believed.
        let (next, hop_meta) = match hop {
            Hop::Malformed => break,
            Hop::Opaque(hop_meta) => (None, hop_meta),
            Hop::Addr(ip, hop_meta) => (Some(ip.to_canonical()), hop_meta),
        };
        meta.tls = hop_meta.tls.or(meta.tls);
        meta.host = hop_meta.host.or(meta.host);
        match next {
            Some(ip) => {
                addr = ip;
                if !trusted.contains(ip) {
                    break;
                }
            }
            // The client hid behind this proxy: the proxy is the nearest
            // address we know.
            None => break,
        }
    }
    (addr, meta)
}

/// The entries of a comma-separated list header over all its lines, last
/// first, trimmed, empty ones skipped (RFC 9110 §5.6.1).
fn list_rev<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = &'a [u8]> + use<'a> {
    headers
        .get_all(name)
        .iter()
        .rev()
        .flat_map(|line| line.as_bytes().rsplit(|&b| b == b','))
        .map(trim_ows)
        .filter(|entry| !entry.is_empty())
}

/// The `Forwarded` elements over all its lines, last first, trimmed, empty
/// ones skipped; `Err` for an element with an unterminated quoted string.
fn forwarded_elements(headers: &HeaderMap) -> impl Iterator<Item = Result<&[u8], ()>> {
    headers
        .get_all(FORWARDED)
        .iter()
        .rev()
        .flat_map(|line| RevElements {
            rest: Some(line.as_bytes()),
        })
        .map(|element| element.map(trim_ows))
        .filter(|element| element != &Ok(&[][..]))
}

/// Splits a `Forwarded` line at the commas outside quoted strings, from the
/// right, so entries appended by our proxies are read before anything the
/// client wrote, and a client's unbalanced quote cannot swallow them.
struct RevElements<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for RevElements<'a> {
    type Item = Result<&'a [u8], ()>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest?;
        let mut quoted = false;
        for i in (0..rest.len()).rev() {
            match rest[i] {
                // A quote after an odd run of backslashes is a quoted-pair
                // (RFC 9110 §5.6.4), inside a string.
                b'"' if rest[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0 => {
                    quoted = !quoted;
                }
                b',' if !quoted => {
                    self.rest = Some(&rest[..i]);
                    return Some(Ok(&rest[i + 1..]));
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(if quoted { Err(()) } else { Ok(rest) })
    }
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// One `Forwarded` element: `pair *( ";" pair )`, `pair = token "=" value`
/// (RFC 7239 §4), names case-insensitive, each at most once.
fn parse_element(element: Result<&[u8], ()>) -> Hop {
    let Ok(mut s) = element else {
        return Hop::Malformed;
    };
    let mut node = None;
    let mut meta = Meta::default();
    let (mut seen_proto, mut seen_host) = (false, false);
    // Each parameter at most once per element (RFC 7239 §4).
    loop {
        let Some(name_len) = s.iter().position(|&b| !is_tchar(b)).filter(|&n| n > 0) else {
            return Hop::Malformed;
        };
        let (name, after) = s.split_at(name_len);
        let Some((value, after)) = after.strip_prefix(b"=").and_then(split_value) else {
            return Hop::Malformed;
        };
        let duplicate = if name.eq_ignore_ascii_case(b"for") {
            let Some(parsed) = parse_forwarded_node(&value) else {
                return Hop::Malformed;
            };
            node.replace(parsed).is_some()
        } else if name.eq_ignore_ascii_case(b"proto") {
            meta.tls = parse_proto(&value);
            std::mem::replace(&mut seen_proto, true)
        } else if name.eq_ignore_ascii_case(b"host") {
            meta.host = parse_host(&value);
            std::mem::replace(&mut seen_host, true)
        } else {
            // `by=` and extensions: checked for syntax only. Duplicates of
            // them are not tracked; they change nothing we read.
            false
        };
        if duplicate {
            return Hop::Malformed;
        }
        s = trim_ows(after);
        match s {
            [] => break,
            [b';', rest @ ..] => s = trim_ows(rest),
            _ => return Hop::Malformed,
        }
    }
    match node {
        Some(Node::Addr(ip)) => Hop::Addr(ip, meta),
        Some(Node::Hidden) | None => Hop::Opaque(meta),
    }
}

/// A value, `token / quoted-string`, and what follows it. Unquoted values
/// may also hold `:`, `[` and `]`: strictly they must be quoted, but a
/// trusted proxy that forgets is no threat and common enough.
fn split_value(s: &[u8]) -> Option<(Cow<'_, [u8]>, &[u8])> {
    if let Some(body) = s.strip_prefix(b"\"") {
        let mut value = Vec::new();
        let mut bytes = body.iter().enumerate();
        while let Some((i, &b)) = bytes.next() {
            match b {
                b'"' => return Some((Cow::Owned(value), &body[i + 1..])),
                b'\\' => value.push(*bytes.next()?.1),
                _ => value.push(b),
            }
        }
        None
    } else {
        let len = s
            .iter()
            .position(|&b| !(is_tchar(b) || matches!(b, b':' | b'[' | b']')))
            .unwrap_or(s.len());
        (len > 0).then(|| (Cow::Borrowed(&s[..len]), &s[len..]))
    }
}

/// `tchar` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A `for=` node (RFC 7239 §6).
enum Node {
    Addr(IpAddr),
    /// Obfuscated (`_hidden`) or `unknown`.
    Hidden,
}

/// `node = nodename [ ":" node-port ]`, or `None` if malformed.
fn parse_forwarded_node(value: &[u8]) -> Option<Node> {
    let value = std::str::from_utf8(value).ok()?;
    // Lenient: a bare IPv6 address without brackets.
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Some(Node::Addr(ip));
    }
    // `port` is empty or starts with `:`.
    let (node, port) = if let Some(rest) = value.strip_prefix('[') {
        let (v6, port) = rest.split_once(']')?;
        (Node::Addr(IpAddr::V6(v6.parse::<Ipv6Addr>().ok()?)), port)
    } else {
        let (name, port) = value.split_at(value.find(':').unwrap_or(value.len()));
        let node = match name.parse::<IpAddr>() {
            Ok(ip) => Node::Addr(ip),
            Err(_) if name.eq_ignore_ascii_case("unknown") || is_obfuscated(name) => Node::Hidden,
            Err(_) => return None,
        };
        (node, port)
    };
    match port.strip_prefix(':') {
        None if port.is_empty() => Some(node),
        Some(p) if p.parse::<u16>().is_ok() || is_obfuscated(p) => Some(node),
        _ => None,
    }
}

/// `obfnode` / `obfport`: `"_" 1*( ALPHA / DIGIT / "." / "_" / "-" )`.
fn is_obfuscated(s: &str) -> bool {
    s.strip_prefix('_').is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    })
}

/// An `X-Forwarded-For` entry: an address, optionally with a port
/// (`1.2.3.4:5678`, `[2001:db8::1]:443`) or in brackets, as some load
/// balancers write it.
fn parse_xff_node(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?;
    s.parse::<IpAddr>()
        .or_else(|_| s.parse::<SocketAddr>().map(|sa| sa.ip()))
        .ok()
        .or_else(|| {
            let v6 = s.strip_prefix('[')?.strip_suffix(']')?;
            v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        })
}

/// `https`/`wss` → TLS, `http`/`ws` → not; other schemes are ignored.
fn parse_proto(value: &[u8]) -> Option<bool> {
    let secure = |s: &[u8]| s.eq_ignore_ascii_case(b"https") || s.eq_ignore_ascii_case(b"wss");
    let plain = |s: &[u8]| s.eq_ignore_ascii_case(b"http") || s.eq_ignore_ascii_case(b"ws");
    let value = trim_ows(value);
    if secure(value) {
        Some(true)
    } else if plain(value) {
        Some(false)
    } else {
        None
    }
}

/// A `Host` value (RFC 9110 §7.2: `uri-host [":" port]`), or `None`.
fn parse_host(value: &[u8]) -> Option<String> {
    let value = trim_ows(value);
    let authority = http::uri::Authority::try_from(value).ok()?;
    let s = authority.as_str();
    (!s.is_empty() && !s.contains('@')).then(|| s.to_owned())
}

#[cfg(test)]
mod tests;
