//! Header rules shared by the resource implementations and reply conversion.

use http::header::{HeaderName, HeaderValue};

/// Headers a plugin may not set, change or remove: hop-by-hop headers (RFC 9110 §7.6.1) are
/// the proxy's business, and `content-length` is recomputed by the host from the real body.
const PROTECTED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Whether a plugin change to `name` must be dropped.
pub(crate) fn is_protected(name: &str) -> bool {
    PROTECTED.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// Parse a name/value pair a plugin wants to set; `None` for protected or invalid ones.
pub(crate) fn parse_settable(name: &str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    if is_protected(name) {
        tracing::debug!(header = name, "plugin change to protected header ignored");
        return None;
    }
    match (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        (Ok(n), Ok(v)) => Some((n, v)),
        _ => {
            tracing::debug!(header = name, "plugin set an invalid header; ignored");
            None
        }
    }
}

/// Parse a header name a plugin wants to remove; `None` for protected or invalid ones.
pub(crate) fn parse_removable(name: &str) -> Option<HeaderName> {
    if is_protected(name) {
        return None;
    }
    HeaderName::from_bytes(name.as_bytes()).ok()
}

/// First value of `name`, lossy UTF-8.
pub(crate) fn get(map: &http::HeaderMap, name: &str) -> Option<String> {
    map.get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// All values of `name`, lossy UTF-8.
pub(crate) fn get_all(map: &http::HeaderMap, name: &str) -> Vec<String> {
    map.get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// Every header as pairs (the explicit "copy everything" call).
pub(crate) fn all(map: &http::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Apply `set` (replace all values).
pub(crate) fn set(map: &mut http::HeaderMap, name: &str, value: &str) {
    if let Some((n, v)) = parse_settable(name, value) {
        map.insert(n, v);
    }
}

/// Apply `append`.
pub(crate) fn append(map: &mut http::HeaderMap, name: &str, value: &str) {
    if let Some((n, v)) = parse_settable(name, value) {
        map.append(n, v);
    }
}

/// Apply `remove`.
pub(crate) fn remove(map: &mut http::HeaderMap, name: &str) {
    if let Some(n) = parse_removable(name) {
        map.remove(n);
    }
}

/// After a body replacement: the framing headers must describe the new body.
pub(crate) fn fix_length(map: &mut http::HeaderMap, len: usize) {
    map.remove(http::header::TRANSFER_ENCODING);
    map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
}

/// Convert plugin-provided pairs (e.g. a reply's headers) into a map, dropping protected and
/// invalid entries.
pub(crate) fn from_pairs(pairs: &[(String, String)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::with_capacity(pairs.len());
    for (n, v) in pairs {
        if let Some((n, v)) = parse_settable(n, v) {
            map.append(n, v);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_headers_are_dropped() {
        let mut m = http::HeaderMap::new();
        set(&mut m, "Connection", "close");
        set(&mut m, "content-length", "5");
        set(&mut m, "x-ok", "1");
        set(&mut m, "bad name", "1");
        set(&mut m, "x-bad-value", "a\nb");
        assert_eq!(m.len(), 1);
        assert_eq!(get(&m, "X-OK").as_deref(), Some("1"));
        let m = from_pairs(&[("upgrade".into(), "h2c".into()), ("x-a".into(), "b".into())]);
        assert_eq!(all(&m), vec![("x-a".to_string(), "b".to_string())]);
    }
}
