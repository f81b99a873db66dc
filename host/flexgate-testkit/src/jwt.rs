//! Signed JWTs for gateway tests of the `jwt-auth` plugin (HS256 with a secret, RS256/ES256 with
//! a PEM private key), and the current time in seconds for `exp`/`nbf`.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// An HS256 token over `claims` signed with `secret`.
pub fn hs256(secret: &str, claims: &serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign HS256")
}

/// An RS256 token over `claims` signed with the PEM (PKCS#1 or PKCS#8) RSA `private_pem`.
pub fn rs256(private_pem: &str, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("RSA private key PEM");
    encode(&header, claims, &key).expect("sign RS256")
}

/// An ES256 token over `claims` signed with the PEM (PKCS#8) P-256 `private_pem`.
pub fn es256(private_pem: &str, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    let key = EncodingKey::from_ec_pem(private_pem.as_bytes()).expect("EC private key PEM");
    encode(&header, claims, &key).expect("sign ES256")
}
