//! Who the client is when tollgate sits behind reverse proxies: `X-Forwarded-For` is believed
//! only from a peer in `server.trusted_proxies`, and then only up to the first address that
//! is not itself a trusted proxy, read from the right. Every hop appends the address it saw,
//! so the entries to the left of that one are whatever the client chose to send
//! (docs/SECURITY.md).

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// One entry of `server.trusted_proxies`: an address (`10.0.0.7`, `::1`) or a network
/// (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustedProxy(IpNet);

impl TrustedProxy {
    fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

impl TryFrom<String> for TrustedProxy {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let text = text.trim();
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(TrustedProxy(net.trunc()));
        }
        text.parse::<IpAddr>()
            .map(|ip| TrustedProxy(IpNet::from(ip)))
            .map_err(|_| {
                format!("{text:?} is neither an IP address nor a network in CIDR notation")
            })
    }
}

impl From<TrustedProxy> for String {
    fn from(proxy: TrustedProxy) -> String {
        proxy.0.to_string()
    }
}

/// An IPv4 address mapped into IPv6 (`::ffff:10.0.0.1`, as a dual-stack socket reports an
/// IPv4 peer) is that IPv4 address, for matching as for the limiter.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn is_trusted(ip: IpAddr, trusted: &[TrustedProxy]) -> bool {
    trusted.iter().any(|proxy| proxy.contains(ip))
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`203.0.113.7:4711`,
/// `[2001:db8::1]:4711`), as some proxies write it. Bytes that are not visible ASCII are no
/// address.
fn forwarded_address(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry).ok()?.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|socket| socket.ip()))
        .ok()
        .map(canonical)
}

/// Who sent a request, as [`client_address`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The address failures are counted against.
    pub ip: IpAddr,
    /// Whether `ip` is an address no trusted proxy owns: the peer itself when it is not a
    /// trusted proxy, or the forwarded hop where the walk found one. When false, `ip` is a
    /// trusted proxy's (no forwarded address, or the walk stopped at an entry it could not
    /// read), which says nothing about where the request came from; `/metrics` does not
    /// count it as private.
    pub seen: bool,
}

/// The client's address: the peer's, unless the peer is a trusted proxy; then the right-most
/// `X-Forwarded-For` address that is not a trusted proxy. If every forwarded address is a
/// trusted proxy, the left-most is the client. An entry that is not an address (including
/// one that is not visible ASCII) ends the walk at the hop that forwarded it, since nothing
/// to its left can be believed.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[TrustedProxy]) -> Client {
    let peer = canonical(peer);
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return Client {
            ip: peer,
            seen: true,
        };
    }
    // Several headers are one list, in the order they arrived. Each entry is decoded alone,
    // so one unreadable entry cannot hide the others or the whole header.
    let mut client = peer;
    let values = headers.get_all("x-forwarded-for").collect::<Vec<_>>();
    for entry in values
        .iter()
        .rev()
        .flat_map(|value| value.as_bytes().rsplit(|&byte| byte == b','))
    {
        let Some(hop) = forwarded_address(entry) else {
            break;
        };
        client = hop;
        if !is_trusted(hop, trusted) {
            return Client {
                ip: hop,
                seen: true,
            };
        }
    }
    Client {
        ip: client,
        seen: false,
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn proxies(list: &[&str]) -> Vec<TrustedProxy> {
        list.iter()
            .map(|p| TrustedProxy::try_from(p.to_string()).unwrap())
            .collect()
    }

    fn client(peer: &str, forwarded: &[&str], trusted: &[&str]) -> String {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        client_address(peer.parse().unwrap(), &headers, &proxies(trusted))
            .ip
            .to_string()
    }

    #[test]
    fn forwarded_addresses_are_ignored_unless_the_peer_is_a_trusted_proxy() {
        assert_eq!(
            client("198.51.100.9", &["203.0.113.7"], &[]),
            "198.51.100.9"
        );
        assert_eq!(
            client("198.51.100.9", &["203.0.113.7"], &["10.0.0.0/8"]),
            "198.51.100.9"
        );
        assert_eq!(
            client("10.1.2.3", &["203.0.113.7"], &["10.0.0.0/8"]),
            "203.0.113.7"
        );
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client_whatever_the_client_prepended() {
        let trusted = ["10.0.0.0/8", "192.0.2.1"];
        // The client wrote "1.2.3.4"; the edge proxy appended the client's real address,
        // the inner proxy the edge's.
        assert_eq!(
            client("10.0.0.2", &["1.2.3.4, 203.0.113.7, 192.0.2.1"], &trusted),
            "203.0.113.7"
        );
        // Split over several headers, the same list.
        assert_eq!(
            client(
                "10.0.0.2",
                &["1.2.3.4", "203.0.113.7", "192.0.2.1"],
                &trusted
            ),
            "203.0.113.7"
        );
        // Only trusted hops: the left-most is where the request came from.
        assert_eq!(
            client("10.0.0.2", &["10.9.9.9, 192.0.2.1"], &trusted),
            "10.9.9.9"
        );
        // No header: the proxy itself.
        assert_eq!(client("10.0.0.2", &[], &trusted), "10.0.0.2");
        // Garbage forwarded by a trusted hop: nothing to its left is believed.
        assert_eq!(
            client(
                "10.0.0.2",
                &["203.0.113.7, not-an-address, 10.0.0.3"],
                &trusted
            ),
            "10.0.0.3"
        );
        // Ports and IPv4 mapped into IPv6.
        assert_eq!(
            client("::ffff:10.0.0.2", &["[2001:db8::7]:4711"], &trusted),
            "2001:db8::7"
        );
        assert_eq!(
            client("10.0.0.2", &["203.0.113.7:80"], &trusted),
            "203.0.113.7"
        );
    }

    #[test]
    fn an_unreadable_entry_ends_the_walk_without_hiding_the_entries_to_its_right() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let walk = |value: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.append(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_bytes(value).unwrap(),
            );
            let found = client_address("10.0.0.2".parse().unwrap(), &headers, &trusted);
            (found.ip.to_string(), found.seen)
        };
        // The client wrote a byte that is not visible ASCII; the proxy appended its address.
        assert_eq!(walk(b"\x80, 203.0.113.7"), ("203.0.113.7".into(), true));
        assert_eq!(walk(b"\x80\xff,203.0.113.7"), ("203.0.113.7".into(), true));
        // Nothing readable, or garbage before any untrusted hop: a trusted proxy's address,
        // not one anybody vouched for.
        assert_eq!(walk(b"\x80"), ("10.0.0.2".into(), false));
        assert_eq!(
            walk(b"203.0.113.7, \x80, 10.0.0.3"),
            ("10.0.0.3".into(), false)
        );
        assert_eq!(walk(b"10.0.0.3"), ("10.0.0.3".into(), false));
        // A peer that is not a trusted proxy is seen as itself.
        let direct = client_address("10.0.0.2".parse().unwrap(), &HeaderMap::new(), &[]);
        assert!(direct.seen);
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        assert_eq!(
            proxies(&["10.0.0.7", "10.1.2.3/8", "::1", "fd00::/8"])
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>(),
            ["10.0.0.7/32", "10.0.0.0/8", "::1/128", "fd00::/8"]
        );
        assert!(TrustedProxy::try_from("10.0.0.0/33".to_string()).is_err());
        assert!(TrustedProxy::try_from("proxy.internal".to_string()).is_err());
    }
}
