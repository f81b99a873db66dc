//! `jwt-auth` plugin: verify a bearer JWT (HS256 secret, RS256/ES256 PEM key, or inline JWKS),
//! check exp/nbf (with leeway), iss and aud, forward chosen claims as request headers, and
//! answer 401 with `WWW-Authenticate` otherwise. Pure Rust crypto (RustCrypto backend).
use flexgate_sdk::{Action, Ctx, Error, Plugin, Request, Response, serde_json};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use std::collections::BTreeMap;

/// One string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// Several accepted values.
    Many(Vec<String>),
}

/// Plugin config (see README.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HS256 shared secret (UTF-8).
    #[serde(default)]
    pub secret: Option<String>,
    /// RS256 or ES256 public key in PEM (SPKI or PKCS#1 for RSA).
    #[serde(default)]
    pub public_key_pem: Option<String>,
    /// Algorithm of `public_key_pem`: `RS256` (default) or `ES256`.
    #[serde(default)]
    pub algorithm: Option<String>,
    /// Inline JWKS (`{"keys": [...]}`); the token's `kid` selects the key.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// Accepted issuer(s).
    #[serde(default)]
    pub issuer: Option<OneOrMany>,
    /// Accepted audience(s).
    #[serde(default)]
    pub audience: Option<OneOrMany>,
    /// Clock skew tolerated for exp/nbf, seconds (default 30).
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Require an `exp` claim (default true).
    #[serde(default = "yes")]
    pub require_exp: bool,
    /// Header carrying the token (default `authorization`, scheme `Bearer`).
    #[serde(default = "default_header")]
    pub header: String,
    /// Claim name → request header to forward it in (strings as-is, others as JSON).
    #[serde(default)]
    pub forward_claims: BTreeMap<String, String>,
    /// Realm in `WWW-Authenticate` (default `flexgate`).
    #[serde(default = "default_realm")]
    pub realm: String,
}

fn default_leeway() -> u64 {
    30
}
fn yes() -> bool {
    true
}
fn default_header() -> String {
    "authorization".into()
}
fn default_realm() -> String {
    "flexgate".into()
}

enum Keys {
    Single(Algorithm, DecodingKey),
    Set(Vec<(Option<String>, Algorithm, DecodingKey)>),
}

/// The plugin.
pub struct JwtAuth {
    keys: Keys,
    validation: Vec<Validation>,
    header: String,
    forward: BTreeMap<String, String>,
    realm: String,
}

fn validation(alg: Algorithm, c: &Config, iss: &[String], aud: &[String]) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = c.leeway_seconds;
    v.validate_nbf = true;
    v.validate_exp = true;
    if c.require_exp {
        v.set_required_spec_claims(&["exp"]);
    } else {
        v.set_required_spec_claims::<&str>(&[]);
    }
    if !iss.is_empty() {
        v.set_issuer(iss);
    }
    if aud.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(aud);
    }
    v
}

fn parse_alg(s: &str) -> Result<Algorithm, Error> {
    match s {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        other => Err(Error::new(format!(
            "unsupported algorithm {other} (HS256, RS256, ES256)"
        ))),
    }
}

impl Plugin for JwtAuth {
    type Config = Config;

    fn new(c: Config) -> Result<Self, Error> {
        let sources = [
            c.secret.is_some(),
            c.public_key_pem.is_some(),
            c.jwks.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(Error::new(
                "set exactly one of secret, public_key_pem, jwks",
            ));
        }
        let keys = if let Some(secret) = &c.secret {
            if secret.len() < 16 {
                return Err(Error::new("secret must be at least 16 bytes"));
            }
            Keys::Single(
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
            )
        } else if let Some(pem) = &c.public_key_pem {
            let alg = parse_alg(c.algorithm.as_deref().unwrap_or("RS256"))?;
            let key = match alg {
                Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
                _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
            }
            .map_err(|e| Error::new(format!("public_key_pem: {e}")))?;
            Keys::Single(alg, key)
        } else {
            let set: JwkSet = serde_json::from_value(c.jwks.clone().unwrap_or_default())
                .map_err(|e| Error::new(format!("jwks: {e}")))?;
            let mut keys = Vec::new();
            for jwk in &set.keys {
                let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                    (Some(a), _) => parse_alg(&format!("{a:?}"))?,
                    (None, jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_)) => {
                        Algorithm::ES256
                    }
                    (None, _) => Algorithm::RS256,
                };
                let key =
                    DecodingKey::from_jwk(jwk).map_err(|e| Error::new(format!("jwks: {e}")))?;
                keys.push((jwk.common.key_id.clone(), alg, key));
            }
            if keys.is_empty() {
                return Err(Error::new("jwks has no keys"));
            }
            Keys::Set(keys)
        };
        let iss = c.issuer.take_vec();
        let aud = c.audience.take_vec();
        let validation = [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256]
            .into_iter()
            .map(|a| validation(a, &c, &iss, &aud))
            .collect();
        Ok(JwtAuth {
            keys,
            validation,
            header: c.header.clone(),
            forward: c.forward_claims.clone(),
            realm: c.realm.clone(),
        })
    }

    fn on_request(&self, _ctx: &Ctx, req: &mut Request) -> Result<Action, Error> {
        let Some(value) = req.header(&self.header) else {
            return Ok(self.deny(None));
        };
        let token = if self.header.eq_ignore_ascii_case("authorization") {
            match value.split_once(' ') {
                Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
                _ => return Ok(self.deny(Some("expected a Bearer token"))),
            }
        } else {
            value.trim()
        };
        match self.verify(token) {
            Ok(claims) => {
                for (claim, header) in &self.forward {
                    match claims.get(claim) {
                        Some(serde_json::Value::String(s)) => req.set_header(header, s),
                        Some(v) => req.set_header(header, &v.to_string()),
                        None => req.remove_header(header),
                    }
                }
                Ok(Action::Continue)
            }
            Err(why) => Ok(self.deny(Some(&why))),
        }
    }
}

trait TakeVec {
    fn take_vec(&self) -> Vec<String>;
}

impl TakeVec for Option<OneOrMany> {
    fn take_vec(&self) -> Vec<String> {
        match self {
            Some(OneOrMany::One(s)) => vec![s.clone()],
            Some(OneOrMany::Many(v)) => v.clone(),
            None => Vec::new(),
        }
    }
}

impl JwtAuth {
    fn validation_for(&self, alg: Algorithm) -> &Validation {
        let i = match alg {
            Algorithm::HS256 => 0,
            Algorithm::RS256 => 1,
            _ => 2,
        };
        &self.validation[i]
    }

    fn verify(&self, token: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        let header = decode_header(token).map_err(|_| "malformed token".to_string())?;
        let (alg, key) = match &self.keys {
            Keys::Single(alg, key) => (*alg, key),
            Keys::Set(keys) => {
                let found = keys.iter().find(|(kid, alg, _)| match (&header.kid, kid) {
                    (Some(want), Some(have)) => want == have,
                    (None, _) => *alg == header.alg,
                    (Some(_), None) => false,
                });
                let (_, alg, key) = found.ok_or_else(|| "unknown signing key".to_string())?;
                (*alg, key)
            }
        };
        if header.alg != alg {
            return Err("unexpected algorithm".into());
        }
        let data = decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            key,
            self.validation_for(alg),
        )
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => "token expired".to_string(),
                K::ImmatureSignature => "token not yet valid".to_string(),
                K::InvalidIssuer => "invalid issuer".to_string(),
                K::InvalidAudience => "invalid audience".to_string(),
                K::InvalidSignature => "invalid signature".to_string(),
                K::MissingRequiredClaim(c) => format!("missing claim {c}"),
                _ => "invalid token".to_string(),
            }
        })?;
        Ok(data.claims)
    }

    fn deny(&self, error: Option<&str>) -> Action {
        let realm = self.realm.replace('"', "");
        let challenge = match error {
            None => format!("Bearer realm=\"{realm}\""),
            Some(e) => format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                e.replace('"', "")
            ),
        };
        let body = serde_json::json!({
            "error": "unauthorized",
            "message": error.unwrap_or("missing bearer token"),
        });
        Action::Respond(Response::json(401, &body).with_header("www-authenticate", &challenge))
    }
}

flexgate_sdk::export!(JwtAuth);
