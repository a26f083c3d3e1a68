//! Negotiating permessage-deflate: the offers, their parameters and the
//! agreed [`DeflateParams`] (§5, §7.1).

use std::fmt::Write as _;

/// The name of the extension in `Sec-WebSocket-Extensions`.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// Default of [`DeflateConfig::context_takeover_max_connections`]: 1,000
/// connections with context takeover hold about 440 MiB of zlib state at 15
/// window bits (see [`DeflateConfig`], "Memory"), a budget a server with a
/// few GiB can spare; beyond it connections still compress, without takeover.
pub const DEFAULT_CONTEXT_TAKEOVER_MAX_CONNECTIONS: usize = 1_000;

/// What this endpoint is willing to negotiate.
///
/// # Memory
///
/// The default answers every offer with `server_no_context_takeover` and
/// `client_no_context_takeover` (RFC 7692 §7.1.1.1, §7.1.1.2), which a
/// server may do even when the offer did not include them: then neither
/// direction keeps a zlib stream between messages (each message borrows a
/// stream shared by the thread), and an idle connection holds no
/// compression state. Browsers offer context takeover; accepting it
/// ([`DeflateConfig::with_context_takeover`]) gives a better ratio on
/// similar consecutive messages but makes each connection that has
/// exchanged a compressed message keep, until it closes, about:
///
/// * 256 KiB and more to compress at 15 window bits (zlib's `2^(bits+2)`
///   window and hash chains plus `2^(memLevel+9)` = 128 KiB of buffers,
///   and more measured with flate2's zlib-rs backend; ~130 KiB at 9 bits);
/// * 40 KiB to inflate at 15 bits (the 32 KiB window and ~7 KiB of state).
///
/// Measured: 430–455 KiB of RSS per idle `wsbus echo` connection after one
/// ~200-byte JSON message each way with Python `websockets` (README
/// "Limits"; without context takeover: under 1 KiB in all). [`Self::context_takeover_max_connections`] bounds
/// how many connections may hold it at once.
///
/// # Client role
///
/// The two `*_no_context_takeover` flags then say what to request and
/// declare; a client that wants the ratio of context takeover (what wsbus's
/// client did before these defaults) uses [`Self::with_context_takeover`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Server role: declare that the server resets its compressor after each
    /// message even when the client did not ask. Client role: request it.
    /// Default `true` (see "Memory").
    pub server_no_context_takeover: bool,
    /// Server role: require the client to reset its compressor after each
    /// message. Client role: declare it. Default `true` (see "Memory").
    pub client_no_context_takeover: bool,
    /// Server role: at most this many connections, process-wide, may hold
    /// context takeover state at once (when the two flags above allow it);
    /// a handshake beyond it is answered with both `*_no_context_takeover`
    /// parameters. A bound on memory, not an exact admission count:
    /// handshakes negotiating at the same instant on different threads may
    /// pass it by one each. Default
    /// [`DEFAULT_CONTEXT_TAKEOVER_MAX_CONNECTIONS`]. Unused in the client role.
    pub context_takeover_max_connections: usize,
    /// The largest window (8–15 bits) the server compresses with. Server role:
    /// our cap; client role: requested when below 15.
    pub server_max_window_bits: u8,
    /// The largest window (8–15 bits) the client compresses with. Server role:
    /// requested when below 15 and the client allows it; client role: our cap.
    pub client_max_window_bits: u8,
    /// zlib compression level, 0 (store) to 9 (smallest); above 9 counts as
    /// 9. Default 1: on a server that compresses
    /// every message, CPU is the scarce resource and level 1 already gets most
    /// of the ratio on chatty JSON.
    pub level: u32,
    /// Messages shorter than this many bytes are sent uncompressed: for tiny
    /// messages deflate's framing costs more bytes than it saves. Default 32.
    pub threshold: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            context_takeover_max_connections: DEFAULT_CONTEXT_TAKEOVER_MAX_CONNECTIONS,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            level: 1,
            threshold: 32,
        }
    }
}

/// The parameters agreed for a connection: those of the server's response
/// (RFC 7692 §7.1), which bind both sides.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DeflateParams {
    /// The server resets its compressor after each message, so the client
    /// may reset its decompressor too (§7.1.1.1).
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message (§7.1.1.2).
    pub client_no_context_takeover: bool,
    /// The largest LZ77 window the server compresses with, as a base-2
    /// logarithm (8–15 bits: 256 bytes to 32 KiB); `None` means 15
    /// (§7.1.2.1).
    pub server_max_window_bits: Option<u8>,
    /// The largest LZ77 window the client compresses with, as a base-2
    /// logarithm (8–15); `None` means 15 (§7.1.2.2).
    pub client_max_window_bits: Option<u8>,
}

impl DeflateParams {
    /// The `Sec-WebSocket-Extensions` value that states these parameters,
    /// e.g. `permessage-deflate; client_max_window_bits=10`; parameters at
    /// their default are left out.
    pub fn to_header_value(&self) -> String {
        let mut out = String::from(EXTENSION_NAME);
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            let _ = write!(out, "; server_max_window_bits={bits}");
        }
        if let Some(bits) = self.client_max_window_bits {
            let _ = write!(out, "; client_max_window_bits={bits}");
        }
        out
    }
}

/// One offer (or response) of permessage-deflate, its parameters parsed and
/// validated per RFC 7692 §7.1. Each field is the parameter of the same name
/// ([`DeflateParams`] says what it means); `None` or `false` when absent.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DeflateOffer {
    /// `server_no_context_takeover` was present.
    pub server_no_context_takeover: bool,
    /// `client_no_context_takeover` was present.
    pub client_no_context_takeover: bool,
    /// `server_max_window_bits=N`, 8–15.
    pub server_max_window_bits: Option<u8>,
    /// `client_max_window_bits`: `Some(Some(n))` with a value (8–15),
    /// `Some(None)` without one — in an offer that only says the client
    /// supports a limit (§7.1.2.2) — and `None` when absent.
    pub client_max_window_bits: Option<Option<u8>>,
}

/// Why an offer or response was not acceptable: a description for people
/// that names the parameter (`"server_max_window_bits=16 is not 8-15"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidParams(pub String);

impl std::fmt::Display for InvalidParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidParams {}

impl DeflateOffer {
    /// Parse the parameters of one `permessage-deflate` element. Unknown or
    /// duplicated parameters and bad values make the element invalid (§7.1).
    pub fn parse(params: &[(String, Option<String>)]) -> Result<Self, InvalidParams> {
        let mut offer = DeflateOffer::default();
        let mut seen = [false; 4];
        for (name, value) in params {
            let slot = match name.as_str() {
                "server_no_context_takeover" => 0,
                "client_no_context_takeover" => 1,
                "server_max_window_bits" => 2,
                "client_max_window_bits" => 3,
                other => return Err(InvalidParams(format!("unknown parameter {other}"))),
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(InvalidParams(format!("duplicate parameter {name}")));
            }
            match slot {
                0 | 1 => {
                    if value.is_some() {
                        return Err(InvalidParams(format!("{name} takes no value")));
                    }
                    if slot == 0 {
                        offer.server_no_context_takeover = true;
                    } else {
                        offer.client_no_context_takeover = true;
                    }
                }
                2 => {
                    let bits = value
                        .as_deref()
                        .ok_or_else(|| InvalidParams(format!("{name} needs a value")))?;
                    offer.server_max_window_bits = Some(parse_window_bits(name, bits)?);
                }
                _ => {
                    offer.client_max_window_bits = Some(match value {
                        Some(bits) => Some(parse_window_bits(name, bits)?),
                        None => None,
                    });
                }
            }
        }
        Ok(offer)
    }
}

/// §7.1.2: a decimal integer 8–15 with no leading zeros.
fn parse_window_bits(name: &str, value: &str) -> Result<u8, InvalidParams> {
    let valid =
        !value.is_empty() && !value.starts_with('0') && value.bytes().all(|b| b.is_ascii_digit());
    match value.parse::<u8>() {
        Ok(bits @ 8..=15) if valid => Ok(bits),
        _ => Err(InvalidParams(format!("{name}={value} is not 8-15"))),
    }
}

/// One element of a `Sec-WebSocket-Extensions` list: a name and its parameters.
pub type ExtensionElement = (String, Vec<(String, Option<String>)>);

/// Parse `Sec-WebSocket-Extensions` values (RFC 6455 §9.1 grammar): a comma
/// list of `name; param[=value]` with optional quoted values. Elements that do
/// not parse are returned as errors so the caller can decline them.
pub fn parse_extensions<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Vec<Result<ExtensionElement, InvalidParams>> {
    let mut out = Vec::new();
    for value in values {
        for element in value.split(',') {
            let element = element.trim();
            if element.is_empty() {
                continue;
            }
            out.push(parse_element(element));
        }
    }
    out
}

fn parse_element(element: &str) -> Result<ExtensionElement, InvalidParams> {
    let mut parts = element.split(';').map(str::trim);
    let name = parts.next().unwrap_or_default();
    if !is_token(name) {
        return Err(InvalidParams(format!("bad extension name {name:?}")));
    }
    let mut params = Vec::new();
    for part in parts {
        let (key, value) = match part.split_once('=') {
            Some((k, v)) => {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                (k.trim(), Some(v.to_owned()))
            }
            None => (part, None),
        };
        if !is_token(key) {
            return Err(InvalidParams(format!("bad parameter {key:?}")));
        }
        params.push((key.to_ascii_lowercase(), value));
    }
    Ok((name.to_ascii_lowercase(), params))
}

/// RFC 7230 token characters.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl DeflateConfig {
    /// The defaults with context takeover allowed in both directions (both
    /// `*_no_context_takeover` flags `false`). Server role: accept what the
    /// client offers, within [`Self::context_takeover_max_connections`].
    /// Client role: offer context takeover first, then an offer declaring
    /// `client_no_context_takeover` for servers that want to save memory.
    pub fn with_context_takeover() -> Self {
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            ..DeflateConfig::default()
        }
    }

    /// How many server-side connections hold context takeover state now,
    /// process-wide (what [`Self::context_takeover_max_connections`] caps).
    pub fn context_takeover_connections() -> usize {
        super::context::takeover_connections()
    }

    /// Server role: choose the first acceptable offer among the client's
    /// `Sec-WebSocket-Extensions` values and return the parameters to answer
    /// with; `None` when no offer is acceptable and the connection runs
    /// uncompressed. §5: "The order of elements is important as it specifies
    /// the client's preference." Offers that do not parse are skipped.
    pub fn negotiate_server<'a>(
        &self,
        extension_headers: impl IntoIterator<Item = &'a str>,
    ) -> Option<DeflateParams> {
        parse_extensions(extension_headers)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|(name, _)| name == EXTENSION_NAME)
            .find_map(|(_, params)| self.accept_offer(&DeflateOffer::parse(&params).ok()?))
            .map(|params| self.within_budget(params, Self::context_takeover_connections()))
    }

    /// Over the budget of connections with context takeover (`in_use` of
    /// [`Self::context_takeover_max_connections`]), answer without it in
    /// both directions: §7.1.1.1 and §7.1.1.2 let a server add both
    /// parameters to any response.
    fn within_budget(&self, mut params: DeflateParams, in_use: usize) -> DeflateParams {
        let takeover = !(params.server_no_context_takeover && params.client_no_context_takeover);
        if takeover && in_use >= self.context_takeover_max_connections {
            params.server_no_context_takeover = true;
            params.client_no_context_takeover = true;
        }
        params
    }

    fn accept_offer(&self, offer: &DeflateOffer) -> Option<DeflateParams> {
        let server_bits = match offer.server_max_window_bits {
            Some(requested) => Some(requested.min(self.server_max_window_bits)),
            None if self.server_max_window_bits < 15 => Some(self.server_max_window_bits),
            None => None,
        };
        // §7.1.2.2: client_max_window_bits may be answered only if offered.
        let client_bits = match offer.client_max_window_bits {
            Some(Some(limit)) => Some(limit.min(self.client_max_window_bits)),
            Some(None) if self.client_max_window_bits < 15 => Some(self.client_max_window_bits),
            Some(None) | None => None,
        };
        Some(DeflateParams {
            server_no_context_takeover: offer.server_no_context_takeover
                || self.server_no_context_takeover,
            client_no_context_takeover: offer.client_no_context_takeover
                || self.client_no_context_takeover,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
        })
    }

    /// Client role: the `Sec-WebSocket-Extensions` offer to send.
    ///
    /// Unless we already declare `client_no_context_takeover`, a second offer
    /// follows the first that adds it: a server that wants to spare its
    /// memory (or that only accepts clients willing to reset their context)
    /// can pick that one, while a server that accepts the first keeps our
    /// compression ratio. The server takes the first offer it accepts (§5:
    /// the order of the offers is the client's preference).
    pub fn client_offer(&self) -> String {
        let mut out = self.client_offer_element(self.client_no_context_takeover);
        if !self.client_no_context_takeover {
            out.push_str(", ");
            out.push_str(&self.client_offer_element(true));
        }
        out
    }

    fn client_offer_element(&self, client_no_context_takeover: bool) -> String {
        let mut out = String::from(EXTENSION_NAME);
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if self.server_max_window_bits < 15 {
            let _ = write!(
                out,
                "; server_max_window_bits={}",
                self.server_max_window_bits
            );
        }
        if self.client_max_window_bits < 15 {
            let _ = write!(
                out,
                "; client_max_window_bits={}",
                self.client_max_window_bits
            );
        } else {
            out.push_str("; client_max_window_bits");
        }
        out
    }

    /// Client role: check the server's response to [`Self::client_offer`]
    /// (§7.1: the response must stay within what was offered). `params` are
    /// the response element's parameters, as [`parse_extensions`] returns
    /// them.
    pub fn accept_response(
        &self,
        params: &[(String, Option<String>)],
    ) -> Result<DeflateParams, InvalidParams> {
        let response = DeflateOffer::parse(params)?;
        if let Some(bits) = response.server_max_window_bits
            && bits > self.server_max_window_bits
        {
            return Err(InvalidParams(format!(
                "server_max_window_bits={bits} exceeds the {} offered",
                self.server_max_window_bits
            )));
        }
        if self.server_no_context_takeover && !response.server_no_context_takeover {
            return Err(InvalidParams(
                "server_no_context_takeover was required".into(),
            ));
        }
        let client_bits = match response.client_max_window_bits {
            Some(None) => {
                return Err(InvalidParams(
                    "client_max_window_bits needs a value in a response".into(),
                ));
            }
            Some(Some(bits)) if bits > self.client_max_window_bits => {
                return Err(InvalidParams(format!(
                    "client_max_window_bits={bits} exceeds the {} offered",
                    self.client_max_window_bits
                )));
            }
            Some(bits) => bits,
            None => None,
        };
        Ok(DeflateParams {
            server_no_context_takeover: response.server_no_context_takeover,
            client_no_context_takeover: response.client_no_context_takeover
                || self.client_no_context_takeover,
            server_max_window_bits: response.server_max_window_bits,
            client_max_window_bits: client_bits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate(cfg: &DeflateConfig, header: &str) -> Option<String> {
        cfg.negotiate_server([header]).map(|p| p.to_header_value())
    }

    #[test]
    fn server_negotiation() {
        let cfg = DeflateConfig::with_context_takeover();
        assert_eq!(
            negotiate(&cfg, "permessage-deflate").as_deref(),
            Some("permessage-deflate")
        );
        assert_eq!(
            negotiate(&cfg, "permessage-deflate; client_max_window_bits").as_deref(),
            Some("permessage-deflate")
        );
        assert_eq!(
            negotiate(
                &cfg,
                "permessage-deflate; server_no_context_takeover; client_max_window_bits=10"
            )
            .as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_max_window_bits=10")
        );
        assert_eq!(
            negotiate(&cfg, "permessage-deflate; server_max_window_bits=\"9\"").as_deref(),
            Some("permessage-deflate; server_max_window_bits=9")
        );
        // Invalid first offer is declined, the second accepted.
        assert_eq!(
            negotiate(&cfg, "permessage-deflate; server_max_window_bits=16, permessage-deflate; client_no_context_takeover")
                .as_deref(),
            Some("permessage-deflate; client_no_context_takeover")
        );
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(negotiate(&cfg, bad), None, "{bad}");
        }
    }

    #[test]
    fn server_caps_windows() {
        let cfg = DeflateConfig {
            server_max_window_bits: 10,
            client_max_window_bits: 11,
            ..DeflateConfig::with_context_takeover()
        };
        assert_eq!(
            negotiate(&cfg, "permessage-deflate; client_max_window_bits").as_deref(),
            Some("permessage-deflate; server_max_window_bits=10; client_max_window_bits=11")
        );
        assert_eq!(
            negotiate(
                &cfg,
                "permessage-deflate; server_max_window_bits=12; client_max_window_bits=9"
            )
            .as_deref(),
            Some("permessage-deflate; server_max_window_bits=10; client_max_window_bits=9")
        );
    }

    #[test]
    fn client_checks_response() {
        let cfg = DeflateConfig {
            server_max_window_bits: 10,
            ..DeflateConfig::with_context_takeover()
        };
        assert_eq!(
            cfg.client_offer(),
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits, \
             permessage-deflate; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits"
        );
        let parse = |s: &str| parse_extensions([s]).pop().unwrap().unwrap().1;
        assert!(
            cfg.accept_response(&parse("permessage-deflate; server_max_window_bits=9"))
                .is_ok()
        );
        assert!(
            cfg.accept_response(&parse("permessage-deflate; server_max_window_bits=12"))
                .is_err()
        );
        assert!(
            cfg.accept_response(&parse("permessage-deflate; client_max_window_bits"))
                .is_err()
        );
        assert!(
            cfg.accept_response(&parse("permessage-deflate; bogus"))
                .is_err()
        );
    }

    /// What Chromium, Firefox, Python `websockets` and Node `ws` offer.
    const BROWSER_OFFER: &str = "permessage-deflate; client_max_window_bits";

    #[test]
    fn by_default_the_server_answers_without_context_takeover() {
        let cfg = DeflateConfig::default();
        // §7.1.1.1 / §7.1.1.2: both parameters may be in a response whose
        // offer did not include them.
        for offer in [
            BROWSER_OFFER,
            "permessage-deflate",
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover; client_max_window_bits=12",
        ] {
            let params = cfg.negotiate_server([offer]).unwrap();
            assert!(
                params.server_no_context_takeover && params.client_no_context_takeover,
                "{offer}"
            );
        }
        assert_eq!(
            negotiate(&cfg, BROWSER_OFFER).as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        assert_eq!(
            negotiate(&cfg, "permessage-deflate; client_max_window_bits=10").as_deref(),
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 client_max_window_bits=10"
            )
        );
    }

    #[test]
    fn context_takeover_is_an_opt_in_within_a_budget() {
        let cfg = DeflateConfig {
            context_takeover_max_connections: 2,
            ..DeflateConfig::with_context_takeover()
        };
        let offer = parse_extensions([BROWSER_OFFER]).pop().unwrap().unwrap().1;
        let accepted = cfg
            .accept_offer(&DeflateOffer::parse(&offer).unwrap())
            .unwrap();
        assert_eq!(accepted.to_header_value(), "permessage-deflate");
        for in_use in [0, 1] {
            assert_eq!(cfg.within_budget(accepted.clone(), in_use), accepted);
        }
        // The cap reached: the connection still compresses, without takeover.
        for in_use in [2, 3, 1_000] {
            assert_eq!(
                cfg.within_budget(accepted.clone(), in_use)
                    .to_header_value(),
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            );
        }
        // A client that declares no context takeover for itself keeps the
        // server's takeover only while the budget lasts.
        let half = DeflateParams {
            client_no_context_takeover: true,
            ..DeflateParams::default()
        };
        assert_eq!(cfg.within_budget(half.clone(), 1), half);
        assert!(cfg.within_budget(half, 2).server_no_context_takeover);
        // Without takeover in either direction the budget is not consulted.
        let none = DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateParams::default()
        };
        assert_eq!(cfg.within_budget(none.clone(), usize::MAX), none);
    }

    #[test]
    fn the_default_client_declares_and_requests_no_context_takeover() {
        let cfg = DeflateConfig::default();
        assert_eq!(
            cfg.client_offer(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             client_max_window_bits"
        );
        let parse = |s: &str| parse_extensions([s]).pop().unwrap().unwrap().1;
        // §7.1.1.1: a server accepting our request must echo it.
        assert!(
            cfg.accept_response(&parse("permessage-deflate; client_no_context_takeover"))
                .is_err()
        );
        let agreed = cfg
            .accept_response(&parse("permessage-deflate; server_no_context_takeover"))
            .unwrap();
        assert!(agreed.server_no_context_takeover && agreed.client_no_context_takeover);
        // The opt-in keeps the client's earlier offer: takeover first.
        assert_eq!(
            DeflateConfig::with_context_takeover().client_offer(),
            "permessage-deflate; client_max_window_bits, \
             permessage-deflate; client_no_context_takeover; client_max_window_bits"
        );
    }
}
