//! IP networks in CIDR notation: what `limits.trusted_proxies` lists.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

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
