//! `headers` plugin: add, set and remove request and response headers, with `${request_id}`,
//! `${client_ip}` and `${route}` substitutions in values. See README.md for the config.
//!
//! Built without `std` on wasm32 (`no_std_runtime!`): the component then imports no WASI, which
//! makes every instance cheaper to create and call (see the SDK).
#![cfg_attr(target_arch = "wasm32", no_std)]
extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use flexgate_sdk::{Action, Ctx, Error, Plugin, Request, Response};
use serde::Deserialize;

flexgate_sdk::no_std_runtime!();

/// Edits for one direction.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edits {
    /// Append a value (existing values kept).
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Replace all values.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Remove the header.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Plugin config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Applied to the request in `on_request`.
    #[serde(default)]
    pub request: Edits,
    /// Applied to the response in `on_response`.
    #[serde(default)]
    pub response: Edits,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    RequestId,
    ClientIp,
    Route,
}

/// A header value with substitutions, parsed once at init.
#[derive(Debug, Clone)]
struct Template(Vec<Part>);

impl Template {
    fn parse(s: &str) -> Result<Self, Error> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Lit(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| Error::new(format!("unclosed ${{ in {s:?}")))?;
            parts.push(match &after[..end] {
                "request_id" => Part::RequestId,
                "client_ip" => Part::ClientIp,
                "route" => Part::Route,
                other => return Err(Error::new(format!("unknown variable ${{{other}}}"))),
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Template(parts))
    }

    fn render(&self, ctx: &Ctx) -> String {
        if let [Part::Lit(s)] = self.0.as_slice() {
            return s.clone();
        }
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::RequestId => out.push_str(&ctx.request_id),
                Part::ClientIp => out.push_str(ctx.client_ip()),
                Part::Route => out.push_str(&ctx.route),
            }
        }
        out
    }
}

#[derive(Debug, Default)]
struct Compiled {
    add: Vec<(String, Template)>,
    set: Vec<(String, Template)>,
    remove: Vec<String>,
}

impl Compiled {
    fn new(e: Edits) -> Result<Self, Error> {
        let compile = |m: BTreeMap<String, String>| -> Result<Vec<(String, Template)>, Error> {
            m.into_iter()
                .map(|(k, v)| Ok((k, Template::parse(&v)?)))
                .collect()
        };
        for name in e.add.keys().chain(e.set.keys()).chain(e.remove.iter()) {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b))
            {
                return Err(Error::new(format!("invalid header name {name:?}")));
            }
        }
        Ok(Compiled {
            add: compile(e.add)?,
            set: compile(e.set)?,
            remove: e.remove,
        })
    }
}

/// The plugin.
#[derive(Debug)]
pub struct Headers {
    request: Compiled,
    response: Compiled,
}

impl Plugin for Headers {
    type Config = Config;

    fn new(config: Config) -> Result<Self, Error> {
        Ok(Headers {
            request: Compiled::new(config.request)?,
            response: Compiled::new(config.response)?,
        })
    }

    fn on_request(&self, ctx: &Ctx, req: &mut Request) -> Result<Action, Error> {
        let e = &self.request;
        for name in &e.remove {
            req.remove_header(name);
        }
        for (name, t) in &e.set {
            req.set_header(name, &t.render(ctx));
        }
        for (name, t) in &e.add {
            req.append_header(name, &t.render(ctx));
        }
        Ok(Action::Continue)
    }

    fn on_response(&self, ctx: &Ctx, resp: &mut Response) -> Result<(), Error> {
        let e = &self.response;
        for name in &e.remove {
            resp.remove_header(name);
        }
        for (name, t) in &e.set {
            resp.set_header(name, &t.render(ctx));
        }
        for (name, t) in &e.add {
            resp.append_header(name, &t.render(ctx));
        }
        Ok(())
    }
}

flexgate_sdk::export!(Headers);

#[cfg(test)]
mod tests {
    use super::*;
    use flexgate_sdk::instantiate;

    fn ctx() -> Ctx {
        Ctx::new("10.1.2.3:5555", "api", "req-1")
    }

    #[test]
    fn edits_request_with_substitutions() {
        let p: Headers = instantiate(
            r#"{"request":{"set":{"x-request-id":"${request_id}","x-real-ip":"${client_ip}"},
                "add":{"x-via":"gw-${route}"},"remove":["x-secret"]}}"#,
        )
        .expect("config");
        let mut req = Request::new("GET", "/")
            .with_header("x-secret", "s")
            .with_header("x-via", "edge")
            .with_header("x-request-id", "client-chosen");
        assert!(matches!(
            p.on_request(&ctx(), &mut req),
            Ok(Action::Continue)
        ));
        assert_eq!(req.header("x-secret"), None);
        assert_eq!(req.header("x-request-id").as_deref(), Some("req-1"));
        assert_eq!(req.header("x-real-ip").as_deref(), Some("10.1.2.3"));
        assert_eq!(req.header_all("x-via"), vec!["edge", "gw-api"]);
    }

    #[test]
    fn edits_response() {
        let p: Headers =
            instantiate(r#"{"response":{"set":{"server":"flexgate"},"remove":["x-powered-by"]}}"#)
                .expect("config");
        let mut resp = Response::new(200)
            .with_header("x-powered-by", "php")
            .with_header("server", "nginx");
        p.on_response(&ctx(), &mut resp).expect("ok");
        assert_eq!(resp.header("server").as_deref(), Some("flexgate"));
        assert_eq!(resp.header("x-powered-by"), None);
    }

    #[test]
    fn ipv6_client_ip() {
        let t = Template::parse("${client_ip}").expect("t");
        assert_eq!(t.render(&Ctx::new("[::1]:80", "r", "i")), "::1");
    }

    #[test]
    fn rejects_bad_config() {
        assert!(instantiate::<Headers>(r#"{"request":{"set":{"x":"${nope}"}}}"#).is_err());
        assert!(instantiate::<Headers>(r#"{"request":{"set":{"bad name":"v"}}}"#).is_err());
        assert!(instantiate::<Headers>(r#"{"bogus":1}"#).is_err());
        assert!(instantiate::<Headers>("null").is_ok());
    }
}
