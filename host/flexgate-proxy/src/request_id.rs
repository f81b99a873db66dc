//! Request ids: kept when the client sends a sane one, generated otherwise.

use http::HeaderValue;

/// Longest client-supplied id we keep; longer ones are replaced so logs stay bounded.
const MAX_LEN: usize = 128;

/// A client id is kept only if short and made of visible ASCII (it is echoed into logs and headers).
pub fn accept(value: &HeaderValue) -> bool {
    let b = value.as_bytes();
    !b.is_empty() && b.len() <= MAX_LEN && b.iter().all(|c| c.is_ascii_graphic())
}

/// A random 128-bit id in UUID v4 text form. `fastrand` keeps a per-thread generator: no lock, no syscall.
pub fn generate() -> HeaderValue {
    let hi = fastrand::u64(..);
    let lo = fastrand::u64(..);
    let hi = (hi & 0xffff_ffff_ffff_0fff) | 0x4000; // version 4
    let lo = (lo & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000; // variant
    let mut out = [0u8; 36];
    let hex = b"0123456789abcdef";
    let mut pos = 0;
    for (i, byte) in hi
        .to_be_bytes()
        .iter()
        .chain(lo.to_be_bytes().iter())
        .enumerate()
    {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[pos] = b'-';
            pos += 1;
        }
        out[pos] = hex[(byte >> 4) as usize];
        out[pos + 1] = hex[(byte & 0xf) as usize];
        pos += 2;
    }
    // Only hex digits and dashes: always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_look_like_uuid_v4() {
        let id = generate();
        let s = id.to_str().expect("ascii");
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert_ne!(generate(), id);
    }

    #[test]
    fn rejects_long_or_odd_ids() {
        assert!(accept(&HeaderValue::from_static("abc-123")));
        assert!(!accept(&HeaderValue::from_static("has space")));
        assert!(!accept(
            &HeaderValue::from_str(&"x".repeat(200)).expect("valid")
        ));
    }
}
