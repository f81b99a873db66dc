//! Native tests of the plugin logic with real tokens (test-only keys in tests/keys/).
#![allow(clippy::unwrap_used)]

use flexgate_sdk::{Action, Ctx, Plugin, Request, instantiate, serde_json::json};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use jwt_auth::JwtAuth;

const SECRET: &str = "0123456789abcdef-secret";
const RSA_PRIV: &str = include_str!("keys/rsa_private.pem");
const RSA_PUB: &str = include_str!("keys/rsa_public.pem");
const EC_PRIV: &str = include_str!("keys/ec_private.pem");
const EC_PUB: &str = include_str!("keys/ec_public.pem");
const JWKS: &str = include_str!("keys/jwks.json");

fn now() -> u64 {
    get_current_timestamp()
}

fn hs(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn run(p: &JwtAuth, auth: Option<&str>) -> (Option<(u16, String)>, Request<'static>) {
    let mut req = Request::new("GET", "/");
    if let Some(a) = auth {
        req = req.with_header("authorization", a);
    }
    match p.on_request(&Ctx::default(), &mut req).unwrap() {
        Action::Continue => (None, req),
        Action::Respond(r) => {
            let (status, headers, _) = r.into_parts();
            (
                Some((status, headers.get("www-authenticate").unwrap().to_string())),
                req,
            )
        }
    }
}

fn hs_plugin() -> JwtAuth {
    instantiate(
        &json!({"secret": SECRET, "issuer": "https://issuer", "audience": ["api"],
                "forward_claims": {"sub": "x-user-id", "roles": "x-roles"}})
        .to_string(),
    )
    .unwrap()
}

#[test]
fn hs256_valid_token_forwards_claims() {
    let t = hs(
        json!({"sub": "u1", "roles": ["a"], "iss": "https://issuer", "aud": "api", "exp": now() + 60}),
    );
    let (denied, req) = run(&hs_plugin(), Some(&format!("Bearer {t}")));
    assert!(denied.is_none(), "{denied:?}");
    assert_eq!(req.header("x-user-id").as_deref(), Some("u1"));
    assert_eq!(req.header("x-roles").as_deref(), Some(r#"["a"]"#));
}

#[test]
fn missing_and_bad_tokens_get_401() {
    let p = hs_plugin();
    let (d, _) = run(&p, None);
    assert_eq!(d.unwrap(), (401, r#"Bearer realm="flexgate""#.to_string()));
    let (d, _) = run(&p, Some("Basic abc"));
    assert!(d.unwrap().1.contains("invalid_token"));
    let (d, _) = run(&p, Some("Bearer not.a.jwt"));
    assert!(d.unwrap().1.contains("malformed"));
}

#[test]
fn exp_nbf_iss_aud_with_leeway() {
    let p = hs_plugin();
    let base = json!({"sub": "u", "iss": "https://issuer", "aud": "api"});
    let with = |extra: serde_json::Value| {
        let mut c = base.clone();
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        format!("Bearer {}", hs(c))
    };
    // Expired 10 s ago: inside the 30 s leeway.
    assert!(run(&p, Some(&with(json!({"exp": now() - 10})))).0.is_none());
    let (d, _) = run(&p, Some(&with(json!({"exp": now() - 120}))));
    assert!(d.unwrap().1.contains("expired"));
    let (d, _) = run(
        &p,
        Some(&with(json!({"exp": now() + 600, "nbf": now() + 300}))),
    );
    assert!(d.unwrap().1.contains("not yet valid"));
    let (d, _) = run(
        &p,
        Some(&with(json!({"exp": now() + 60, "iss": "https://evil"}))),
    );
    assert!(d.unwrap().1.contains("issuer"));
    let (d, _) = run(&p, Some(&with(json!({"exp": now() + 60, "aud": "other"}))));
    assert!(d.unwrap().1.contains("audience"));
    let (d, _) = run(
        &p,
        Some(&format!(
            "Bearer {}",
            hs(json!({"sub": "u", "iss": "https://issuer", "aud": "api"}))
        )),
    );
    assert!(d.unwrap().1.contains("missing claim exp"));
}

#[test]
fn rs256_and_es256_pem() {
    let claims = json!({"sub": "k", "exp": now() + 60});
    let rs = encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(RSA_PRIV.as_bytes()).unwrap(),
    )
    .unwrap();
    let es = encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(EC_PRIV.as_bytes()).unwrap(),
    )
    .unwrap();
    let rsp: JwtAuth = instantiate(&json!({"public_key_pem": RSA_PUB}).to_string()).unwrap();
    let esp: JwtAuth =
        instantiate(&json!({"public_key_pem": EC_PUB, "algorithm": "ES256"}).to_string()).unwrap();
    assert!(run(&rsp, Some(&format!("Bearer {rs}"))).0.is_none());
    assert!(run(&esp, Some(&format!("Bearer {es}"))).0.is_none());
    // Algorithm confusion: an ES256 token against the RSA key, an HS256 token against either.
    assert!(run(&rsp, Some(&format!("Bearer {es}"))).0.is_some());
    assert!(
        run(&esp, Some(&format!("Bearer {}", hs(claims.clone()))))
            .0
            .is_some()
    );
}

#[test]
fn inline_jwks_selects_by_kid() {
    let p: JwtAuth = instantiate(
        &json!({"jwks": serde_json::from_str::<serde_json::Value>(JWKS).unwrap()}).to_string(),
    )
    .unwrap();
    let claims = json!({"sub": "k", "exp": now() + 60});
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa-1".into());
    let rs = encode(
        &h,
        &claims,
        &EncodingKey::from_rsa_pem(RSA_PRIV.as_bytes()).unwrap(),
    )
    .unwrap();
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("ec-1".into());
    let es = encode(
        &h,
        &claims,
        &EncodingKey::from_ec_pem(EC_PRIV.as_bytes()).unwrap(),
    )
    .unwrap();
    assert!(run(&p, Some(&format!("Bearer {rs}"))).0.is_none());
    assert!(run(&p, Some(&format!("Bearer {es}"))).0.is_none());
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("nope".into());
    let bad = encode(
        &h,
        &claims,
        &EncodingKey::from_rsa_pem(RSA_PRIV.as_bytes()).unwrap(),
    )
    .unwrap();
    assert!(
        run(&p, Some(&format!("Bearer {bad}")))
            .0
            .unwrap()
            .1
            .contains("unknown signing key")
    );
}

#[test]
fn config_errors() {
    assert!(instantiate::<JwtAuth>("{}").is_err());
    assert!(instantiate::<JwtAuth>(r#"{"secret":"short"}"#).is_err());
    assert!(
        instantiate::<JwtAuth>(&json!({"secret": SECRET, "public_key_pem": RSA_PUB}).to_string())
            .is_err()
    );
    assert!(instantiate::<JwtAuth>(r#"{"public_key_pem":"garbage"}"#).is_err());
}
