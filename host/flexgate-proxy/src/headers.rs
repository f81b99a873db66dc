//! Header rules of a proxy (RFC 9110 §7.6): hop-by-hop headers never cross the gateway, and the
//! forwarding headers tell the upstream who asked.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1, plus the legacy ones
/// proxies still see in the wild).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Removes hop-by-hop headers, including every header the `Connection` header names.
/// With `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive (WebSocket handshakes).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        // Every `Connection` line counts; allocate only when one is present.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .filter(|n| !(keep_upgrade && n.eq_ignore_ascii_case("upgrade")))
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        if keep_upgrade && (name == header::UPGRADE || name == header::CONNECTION) {
            continue;
        }
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// True for a request asking to switch protocols (WebSocket and friends), HTTP/1.1 only.
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// `Via` value for the protocol version the message arrived with.
pub fn via_value(version: http::Version) -> HeaderValue {
    match version {
        http::Version::HTTP_2 => HeaderValue::from_static("2 flexgate"),
        http::Version::HTTP_10 => HeaderValue::from_static("1.0 flexgate"),
        _ => HeaderValue::from_static("1.1 flexgate"),
    }
}

/// Appends `value` to a comma-separated list header, creating it if absent.
pub fn append_list(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    let mut combined = String::new();
    for existing in headers.get_all(name).iter().filter_map(|v| v.to_str().ok()) {
        if !existing.trim().is_empty() {
            combined.push_str(existing);
            combined.push_str(", ");
        }
    }
    combined.push_str(value);
    if let Ok(v) = HeaderValue::from_str(&combined) {
        headers.insert(name.clone(), v);
    }
}

/// Sets `X-Forwarded-For` (appended), `-Proto`, `-Host` and appends `Via`.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client_ip: IpAddr,
    tls: bool,
    host: Option<&HeaderValue>,
    version: http::Version,
) {
    let mut ip_buf = [0u8; 64];
    let ip = format_ip(client_ip, &mut ip_buf);
    append_list(headers, &X_FORWARDED_FOR, ip);
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    }
    let via = via_value(version);
    if headers.contains_key(header::VIA) {
        append_list(
            headers,
            &header::VIA,
            via.to_str().unwrap_or("1.1 flexgate"),
        );
    } else {
        headers.insert(header::VIA, via);
    }
}

fn format_ip(ip: IpAddr, buf: &mut [u8; 64]) -> &str {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{ip}");
    let len = cursor.position() as usize;
    std::str::from_utf8(&buf[..len]).unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_listed_and_standard_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-custom, close"),
        );
        h.insert("x-custom", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn keeps_upgrade_when_asked() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade_request(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get(header::UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            h.get(header::CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        let host = HeaderValue::from_static("api.example.com");
        set_forwarded(
            &mut h,
            "127.0.0.1".parse().expect("ip"),
            false,
            Some(&host),
            http::Version::HTTP_11,
        );
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["via"], "1.1 flexgate");
    }
}
