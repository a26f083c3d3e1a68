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
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use http::header::{FORWARDED, HeaderMap, HeaderName};

/// At most this many chain entries are read per request, nearest first. Real
/// chains have one to three proxies (CDN, load balancer, ingress); 32 leaves
/// room for any of them while bounding the addresses parsed per handshake,
/// whatever a client packs into the header.
pub const MAX_FORWARDED_HOPS: usize = 32;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// An IP network: `10.0.0.0/8`, `::1/128`; a bare address is a host
/// (`/32` or `/128`).
///
/// Host bits are cleared when parsing (`10.1.2.3/8` is `10.0.0.0/8`, as
/// nginx's `set_real_ip_from` reads it), and [`Display`](fmt::Display)
/// shows the network. IPv4-mapped IPv6 networks (`::ffff:10.0.0.0/104`)
/// become the IPv4 network they denote, and an IPv4-mapped IPv6 address
/// (`::ffff:10.1.2.3`, how a dual-stack socket reports IPv4 clients)
/// matches IPv4 networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `addr` with a `prefix`-bit mask, or an error if the
    /// prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, ParseCidrError> {
        Self::build(addr, prefix).ok_or_else(|| ParseCidrError {
            input: format!("{addr}/{prefix}"),
            kind: ErrorKind::PrefixLength(addr.is_ipv4()),
        })
    }

    fn build(addr: IpAddr, prefix: u8) -> Option<Self> {
        match addr {
            IpAddr::V4(v4) => (prefix <= 32).then(|| Cidr {
                network: IpAddr::V4((u32::from(v4) & mask32(prefix)).into()),
                prefix,
            }),
            IpAddr::V6(_) if prefix > 128 => None,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => Self::build(IpAddr::V4(v4), prefix - 96),
                _ => Some(Cidr {
                    network: IpAddr::V6((u128::from(v6) & mask128(prefix)).into()),
                    prefix,
                }),
            },
        }
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network; IPv4-mapped IPv6 addresses are
    /// compared as the IPv4 address they carry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(net)
            }
            // An IPv6 network shorter than /96 may hold the mapped range.
            (IpAddr::V6(net), IpAddr::V4(ip)) => {
                u128::from(ip.to_ipv6_mapped()) & mask128(self.prefix) == u128::from(net)
            }
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = ParseCidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |kind| ParseCidrError {
            input: s.to_owned(),
            kind,
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| error(ErrorKind::Address))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Digits only: `u8::from_str` would also take `+8`.
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse()
                .map_err(|_| error(ErrorKind::PrefixLength(addr.is_ipv4())))?,
            Some(_) => return Err(error(ErrorKind::PrefixSyntax)),
        };
        Self::build(addr, prefix).ok_or_else(|| error(ErrorKind::PrefixLength(addr.is_ipv4())))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a string is not a [`Cidr`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseCidrError {
    input: String,
    kind: ErrorKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrorKind {
    Address,
    PrefixSyntax,
    /// `true` for IPv4.
    PrefixLength(bool),
}

impl fmt::Display for ParseCidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid CIDR `{}`: ", self.input.escape_debug())?;
        f.write_str(match self.kind {
            ErrorKind::Address => {
                "expected an IPv4 or IPv6 address, optionally followed by /prefix"
            }
            ErrorKind::PrefixSyntax => "the prefix length after `/` must be a decimal number",
            ErrorKind::PrefixLength(true) => "an IPv4 prefix length is at most 32",
            ErrorKind::PrefixLength(false) => "an IPv6 prefix length is at most 128",
        })
    }
}

impl std::error::Error for ParseCidrError {}

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
mod tests {
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
}
