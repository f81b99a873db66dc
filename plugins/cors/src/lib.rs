//! `cors` plugin: answers CORS preflights itself and decorates actual responses.
//! Origins match exactly or by one `*` wildcard (`https://*.example.com`, or `*` for any).
//! See README.md for the config.
//!
//! Built without `std` on wasm32 (`no_std_runtime!`): the component then imports no WASI, which
//! makes every instance cheaper to create and call (see the SDK).
#![cfg_attr(target_arch = "wasm32", no_std)]
extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use flexgate_sdk::{Action, Ctx, Error, Plugin, Request, Response};
use serde::Deserialize;

flexgate_sdk::no_std_runtime!();

/// Plugin config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Allowed origins: exact (`https://app.example.com`), wildcard (`https://*.example.com`)
    /// or `*` (any).
    pub allowed_origins: Vec<String>,
    /// Allowed methods (default GET, HEAD, POST).
    #[serde(default = "default_methods")]
    pub allowed_methods: Vec<String>,
    /// Allowed request headers; empty (default) reflects what the preflight asks for.
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    /// Response headers exposed to scripts.
    #[serde(default)]
    pub exposed_headers: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true` (origins are then always echoed, never `*`).
    #[serde(default)]
    pub allow_credentials: bool,
    /// Preflight cache lifetime, seconds (default 600).
    #[serde(default = "default_max_age")]
    pub max_age: u32,
}

fn default_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into(), "POST".into()]
}
fn default_max_age() -> u32 {
    600
}

#[derive(Debug)]
enum OriginRule {
    Any,
    Exact(String),
    Wildcard(String, String),
}

impl OriginRule {
    fn matches(&self, origin: &str) -> bool {
        match self {
            OriginRule::Any => true,
            OriginRule::Exact(o) => o.eq_ignore_ascii_case(origin),
            OriginRule::Wildcard(pre, suf) => {
                origin.len() > pre.len() + suf.len()
                    && origin
                        .get(..pre.len())
                        .is_some_and(|p| p.eq_ignore_ascii_case(pre))
                    && origin
                        .get(origin.len() - suf.len()..)
                        .is_some_and(|s| s.eq_ignore_ascii_case(suf))
                    && !origin[pre.len()..origin.len() - suf.len()].contains(['/', ':'])
            }
        }
    }
}

/// The plugin.
#[derive(Debug)]
pub struct Cors {
    origins: Vec<OriginRule>,
    any_origin: bool,
    methods: Vec<String>,
    methods_joined: String,
    headers: Option<String>,
    exposed: Option<String>,
    credentials: bool,
    max_age: String,
}

/// Stash marker: the request had an Origin we do not allow.
const DENIED: &str = "\0";

impl Cors {
    fn allowed(&self, origin: &str) -> bool {
        self.origins.iter().any(|r| r.matches(origin))
    }

    /// `*` only for anonymous requests allowed from anywhere; otherwise echo the origin.
    fn allow_origin_value<'a>(&self, origin: &'a str) -> &'a str {
        if self.any_origin && !self.credentials {
            "*"
        } else {
            origin
        }
    }

    fn preflight(&self, req: &Request, origin: &str, method: &str) -> Response<'static> {
        let method_ok = self.methods.iter().any(|m| m.eq_ignore_ascii_case(method));
        if !self.allowed(origin) || !method_ok {
            return Response::new(403).with_header("vary", "Origin");
        }
        let mut r = Response::new(204)
            .with_header(
                "access-control-allow-origin",
                self.allow_origin_value(origin),
            )
            .with_header("access-control-allow-methods", &self.methods_joined)
            .with_header("access-control-max-age", &self.max_age)
            .with_header(
                "vary",
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            );
        let requested = req.header("access-control-request-headers");
        if let Some(h) = self.headers.as_deref().or(requested.as_deref())
            && !h.is_empty()
        {
            r = r.with_header("access-control-allow-headers", h);
        }
        if self.credentials {
            r = r.with_header("access-control-allow-credentials", "true");
        }
        r
    }
}

fn join(v: &[String]) -> Option<String> {
    if v.is_empty() {
        None
    } else {
        Some(v.join(", "))
    }
}

impl Plugin for Cors {
    type Config = Config;

    fn new(c: Config) -> Result<Self, Error> {
        if c.allowed_origins.is_empty() {
            return Err(Error::new("allowed_origins must not be empty"));
        }
        let mut origins = Vec::new();
        for o in &c.allowed_origins {
            origins.push(match o.matches('*').count() {
                0 => OriginRule::Exact(o.trim_end_matches('/').to_string()),
                1 if o == "*" => OriginRule::Any,
                1 => {
                    let (pre, suf) = o.split_once('*').unwrap_or_default();
                    OriginRule::Wildcard(pre.to_string(), suf.to_string())
                }
                _ => return Err(Error::new(format!("origin {o:?}: at most one '*'"))),
            });
        }
        let methods: Vec<String> = c
            .allowed_methods
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        Ok(Cors {
            any_origin: origins.iter().any(|o| matches!(o, OriginRule::Any)),
            origins,
            methods_joined: methods.join(", "),
            methods,
            headers: join(&c.allowed_headers),
            exposed: join(&c.exposed_headers),
            credentials: c.allow_credentials,
            max_age: c.max_age.to_string(),
        })
    }

    fn on_request(&self, _ctx: &Ctx, req: &mut Request) -> Result<Action, Error> {
        let Some(origin) = req.header("origin") else {
            return Ok(Action::Continue);
        };
        if req.method() == "OPTIONS"
            && let Some(method) = req.header("access-control-request-method")
        {
            return Ok(Action::Respond(self.preflight(req, &origin, &method)));
        }
        req.stash(if self.allowed(&origin) {
            &origin
        } else {
            DENIED
        });
        Ok(Action::Continue)
    }

    fn on_response(&self, ctx: &Ctx, resp: &mut Response) -> Result<(), Error> {
        let Some(origin) = ctx.stash.as_deref() else {
            return Ok(());
        };
        if !self.any_origin || self.credentials {
            let has_vary = resp.header_all("vary").iter().any(|v| {
                v.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("origin") || p.trim() == "*")
            });
            if !has_vary {
                resp.append_header("vary", "Origin");
            }
        }
        if origin == DENIED {
            return Ok(());
        }
        resp.set_header(
            "access-control-allow-origin",
            self.allow_origin_value(origin),
        );
        if self.credentials {
            resp.set_header("access-control-allow-credentials", "true");
        }
        if let Some(e) = &self.exposed {
            resp.set_header("access-control-expose-headers", e);
        }
        Ok(())
    }
}

flexgate_sdk::export!(Cors);

#[cfg(test)]
mod tests {
    use super::*;
    use flexgate_sdk::instantiate;

    const CFG: &str = r#"{"allowed_origins":["https://app.example.com","https://*.example.org"],
        "allowed_methods":["GET","PUT"],"allowed_headers":["content-type","authorization"],
        "exposed_headers":["x-total"],"allow_credentials":true,"max_age":60}"#;

    fn preflight(p: &Cors, origin: &str, method: &str) -> (u16, flexgate_sdk::Headers) {
        let mut req = Request::new("OPTIONS", "/x")
            .with_header("origin", origin)
            .with_header("access-control-request-method", method);
        match p.on_request(&Ctx::default(), &mut req).expect("ok") {
            Action::Respond(r) => {
                let (s, h, _) = r.into_parts();
                (s, h)
            }
            Action::Continue => panic!("preflight not answered"),
        }
    }

    #[test]
    fn preflight_answered() {
        let p: Cors = instantiate(CFG).expect("config");
        let (s, h) = preflight(&p, "https://app.example.com", "PUT");
        assert_eq!(s, 204);
        assert_eq!(
            h.get("access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(h.get("access-control-allow-methods"), Some("GET, PUT"));
        assert_eq!(
            h.get("access-control-allow-headers"),
            Some("content-type, authorization")
        );
        assert_eq!(h.get("access-control-allow-credentials"), Some("true"));
        assert_eq!(h.get("access-control-max-age"), Some("60"));
        assert!(h.get("vary").unwrap_or_default().contains("Origin"));
        assert_eq!(preflight(&p, "https://api.example.org", "GET").0, 204);
        assert_eq!(preflight(&p, "https://evil.com", "GET").0, 403);
        assert_eq!(preflight(&p, "https://app.example.com", "DELETE").0, 403);
        // The wildcard covers one label, not the apex or another scheme.
        assert_eq!(preflight(&p, "https://example.org", "GET").0, 403);
        assert_eq!(preflight(&p, "http://a.example.org", "GET").0, 403);
    }

    #[test]
    fn actual_request_gets_headers_and_vary() {
        let p: Cors = instantiate(CFG).expect("config");
        let mut req = Request::new("GET", "/").with_header("origin", "https://app.example.com");
        assert!(matches!(
            p.on_request(&Ctx::default(), &mut req),
            Ok(Action::Continue)
        ));
        let ctx = Ctx::default().with_stash(req.stashed());
        let mut resp = Response::new(200).with_header("vary", "Accept-Encoding");
        p.on_response(&ctx, &mut resp).expect("ok");
        assert_eq!(
            resp.header("access-control-allow-origin").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            resp.header("access-control-expose-headers").as_deref(),
            Some("x-total")
        );
        assert_eq!(resp.header_all("vary"), vec!["Accept-Encoding", "Origin"]);

        let mut req = Request::new("GET", "/").with_header("origin", "https://evil.com");
        p.on_request(&Ctx::default(), &mut req).expect("ok");
        let mut resp = Response::new(200);
        p.on_response(&Ctx::default().with_stash(req.stashed()), &mut resp)
            .expect("ok");
        assert_eq!(resp.header("access-control-allow-origin"), None);
        assert_eq!(resp.header("vary").as_deref(), Some("Origin"));
    }

    #[test]
    fn any_origin_without_credentials_uses_star() {
        let p: Cors = instantiate(r#"{"allowed_origins":["*"]}"#).expect("config");
        let mut req = Request::new("GET", "/").with_header("origin", "https://x.io");
        p.on_request(&Ctx::default(), &mut req).expect("ok");
        let mut resp = Response::new(200);
        p.on_response(&Ctx::default().with_stash(req.stashed()), &mut resp)
            .expect("ok");
        assert_eq!(
            resp.header("access-control-allow-origin").as_deref(),
            Some("*")
        );
        let (s, h) = preflight(&p, "https://x.io", "POST");
        assert_eq!((s, h.get("access-control-allow-origin")), (204, Some("*")));
    }

    #[test]
    fn no_origin_is_untouched() {
        let p: Cors = instantiate(CFG).expect("config");
        let mut req = Request::new("OPTIONS", "/");
        assert!(matches!(
            p.on_request(&Ctx::default(), &mut req),
            Ok(Action::Continue)
        ));
        let mut resp = Response::new(200);
        p.on_response(&Ctx::default(), &mut resp).expect("ok");
        assert!(resp.headers().is_empty());
    }
}
