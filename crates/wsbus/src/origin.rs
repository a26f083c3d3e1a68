//! The default origin rule, after RFC 6454.
//!
//! Browsers do not apply the same-origin policy to WebSockets, so a page on
//! any site can open a socket to us with the user's cookies (cross-site
//! WebSocket hijacking). The default rule accepts:
//!
//! * no `Origin` header: non-browser clients, not the threat;
//! * an `Origin` equal to the request's own scheme, host and port, after
//!   RFC 6454 normalisation (scheme and host compared case-insensitively, the
//!   default port made explicit: 80 for http/ws, 443 for https/wss);
//!
//! and rejects everything else, including the opaque origin `null`.

/// A serialised origin's parts, normalised.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    secure: bool,
    host: String,
    port: u16,
}

fn parse_origin(value: &str) -> Option<Origin> {
    let (scheme, rest) = value.split_once("://")?;
    let secure = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => false,
        "https" | "wss" => true,
        _ => return None,
    };
    // An origin has no path; tolerate a lone trailing slash.
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) || authority.is_empty() {
        return None;
    }
    let (host, port) = split_host_port(authority)?;
    Some(Origin {
        secure,
        host,
        port: port.unwrap_or(if secure { 443 } else { 80 }),
    })
}

/// `host[:port]`, with IPv6 literals in brackets; the host lowercased.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{host}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (authority.to_owned(), None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    if host.is_empty() {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

/// Whether the default rule admits `origin` for a request that arrived with
/// `Host: host` over TLS or not.
pub(crate) fn default_rule(origin: Option<&str>, host: &str, tls: bool) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let Some(origin) = parse_origin(origin.trim()) else {
        return false; // `null`, or not an origin at all
    };
    let Some((host, port)) = split_host_port(host.trim()) else {
        return false;
    };
    let own = Origin {
        secure: tls,
        host,
        port: port.unwrap_or(if tls { 443 } else { 80 }),
    };
    origin == own
}

#[cfg(test)]
mod tests {
    use super::default_rule;

    #[test]
    fn origin_matrix() {
        let plain = |origin: Option<&str>, host: &str| default_rule(origin, host, false);
        assert!(plain(None, "example.com"));
        assert!(plain(Some("http://example.com"), "example.com"));
        assert!(plain(Some("http://EXAMPLE.com:80"), "example.com"));
        assert!(plain(Some("http://example.com"), "Example.COM:80"));
        assert!(plain(Some("http://127.0.0.1:8080"), "127.0.0.1:8080"));
        assert!(plain(Some("http://[::1]:8080"), "[::1]:8080"));
        assert!(plain(Some("HTTP://example.com/"), "example.com"));
        assert!(!plain(Some("null"), "example.com"));
        assert!(!plain(Some("http://evil.com"), "example.com"));
        assert!(!plain(Some("http://example.com:8080"), "example.com"));
        assert!(!plain(Some("https://example.com"), "example.com"));
        assert!(!plain(Some("http://example.com.evil.com"), "example.com"));
        assert!(!plain(Some("file://"), "example.com"));
        assert!(!plain(Some(""), "example.com"));
        assert!(!plain(Some("http://user@example.com"), "example.com"));
        let tls = |origin: Option<&str>, host: &str| default_rule(origin, host, true);
        assert!(tls(Some("https://example.com"), "example.com:443"));
        assert!(tls(Some("https://example.com:443"), "example.com"));
        assert!(!tls(Some("http://example.com"), "example.com"));
    }
}
