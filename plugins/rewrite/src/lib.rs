//! `rewrite` plugin: redirects (301/302/307/308) and path rewrites by regex with capture
//! groups (`$1`, `${name}`), plus adding/removing query parameters. See README.md.
use flexgate_sdk::{Action, Ctx, Error, Plugin, Request, Response};
use regex::Regex;
use serde::Deserialize;
use std::collections::BTreeMap;

/// A path rewrite rule; the first matching rule applies.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Regex matched against the path (anchor it with `^...$` for whole-path matches).
    #[serde(rename = "match")]
    pub pattern: String,
    /// Replacement; `$1`/`${name}` expand capture groups.
    pub replace: String,
}

/// A redirect rule; checked before rewrites, the first matching one answers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    /// Regex matched against the path.
    #[serde(rename = "match")]
    pub pattern: String,
    /// `Location` template; `$1`/`${name}` expand capture groups.
    pub location: String,
    /// 301, 302 (default), 307 or 308.
    #[serde(default = "default_status")]
    pub status: u16,
    /// Append the original query string to the location (default true).
    #[serde(default = "yes")]
    pub keep_query: bool,
}

fn default_status() -> u16 {
    302
}
fn yes() -> bool {
    true
}

/// Query parameter edits, applied after the path rewrite.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// Parameters to set (existing ones with the same name are replaced).
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Parameter names to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Plugin config.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Redirect rules.
    #[serde(default)]
    pub redirects: Vec<RedirectConfig>,
    /// Path rewrite rules.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Query edits.
    #[serde(default)]
    pub query: QueryConfig,
}

/// The plugin.
#[derive(Debug)]
pub struct Rewrite {
    redirects: Vec<(Regex, String, u16, bool)>,
    rules: Vec<(Regex, String)>,
    add: Vec<(String, String)>,
    remove: Vec<String>,
}

fn compile(p: &str) -> Result<Regex, Error> {
    Regex::new(p).map_err(|e| Error::new(format!("invalid regex {p:?}: {e}")))
}

/// Percent-encode a query component (RFC 3986 unreserved characters kept).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn param_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(k, _)| k)
}

impl Plugin for Rewrite {
    type Config = Config;

    fn new(c: Config) -> Result<Self, Error> {
        let mut redirects = Vec::new();
        for r in c.redirects {
            if ![301, 302, 307, 308].contains(&r.status) {
                return Err(Error::new(format!(
                    "redirect status {} is not 301/302/307/308",
                    r.status
                )));
            }
            redirects.push((compile(&r.pattern)?, r.location, r.status, r.keep_query));
        }
        let mut rules = Vec::new();
        for r in c.rules {
            if !r.replace.starts_with('/') {
                return Err(Error::new(format!(
                    "rewrite target {:?} must start with '/'",
                    r.replace
                )));
            }
            rules.push((compile(&r.pattern)?, r.replace));
        }
        let add = c
            .query
            .add
            .into_iter()
            .map(|(k, v)| (encode(&k), encode(&v)))
            .collect();
        let remove = c.query.remove.iter().map(|k| encode(k)).collect();
        Ok(Rewrite {
            redirects,
            rules,
            add,
            remove,
        })
    }

    fn on_request(&self, _ctx: &Ctx, req: &mut Request) -> Result<Action, Error> {
        let path = req.path();
        for (re, location, status, keep_query) in &self.redirects {
            if let Some(caps) = re.captures(&path) {
                let mut loc = String::new();
                caps.expand(location, &mut loc);
                if *keep_query && let Some(q) = req.query() {
                    loc.push(if loc.contains('?') { '&' } else { '?' });
                    loc.push_str(&q);
                }
                return Ok(Action::Respond(
                    Response::new(*status).with_header("location", &loc),
                ));
            }
        }
        for (re, replace) in &self.rules {
            if re.is_match(&path) {
                let new = re.replace(&path, replace.as_str());
                req.set_path(&new);
                break;
            }
        }
        if !self.add.is_empty() || !self.remove.is_empty() {
            let query = req.query().unwrap_or_default();
            let mut pairs: Vec<&str> = query
                .split('&')
                .filter(|p| !p.is_empty())
                .filter(|p| {
                    let name = param_name(p);
                    !self.remove.iter().any(|r| r == name)
                        && !self.add.iter().any(|(k, _)| k == name)
                })
                .collect();
            let added: Vec<String> = self.add.iter().map(|(k, v)| format!("{k}={v}")).collect();
            pairs.extend(added.iter().map(String::as_str));
            let q = pairs.join("&");
            req.set_query(if q.is_empty() { None } else { Some(&q) });
        }
        Ok(Action::Continue)
    }
}

flexgate_sdk::export!(Rewrite);

#[cfg(test)]
mod tests {
    use super::*;
    use flexgate_sdk::instantiate;

    fn run(cfg: &str, req: &mut Request<'static>) -> Option<(u16, String)> {
        let p: Rewrite = instantiate(cfg).expect("config");
        match p.on_request(&Ctx::default(), req).expect("ok") {
            Action::Continue => None,
            Action::Respond(r) => {
                let (s, h, _) = r.into_parts();
                Some((s, h.get("location").unwrap_or_default().to_string()))
            }
        }
    }

    #[test]
    fn rewrites_with_capture_groups() {
        let cfg = r#"{"rules":[{"match":"^/api/v1/(?P<rest>.*)$","replace":"/v2/${rest}"},
                               {"match":"^/api/(.*)$","replace":"/never/$1"}]}"#;
        let mut req = Request::new("GET", "/api/v1/users/7").with_query("a=1");
        assert!(run(cfg, &mut req).is_none());
        assert_eq!(req.path(), "/v2/users/7");
        assert_eq!(req.query().as_deref(), Some("a=1"));
        let mut other = Request::new("GET", "/static/x");
        run(cfg, &mut other);
        assert_eq!(other.path(), "/static/x");
    }

    #[test]
    fn query_add_and_remove() {
        let cfg = r#"{"query":{"add":{"source":"gw","tag":"a b"},"remove":["debug","source"]}}"#;
        let mut req = Request::new("GET", "/").with_query("debug=1&x=2&source=client");
        run(cfg, &mut req);
        assert_eq!(req.query().as_deref(), Some("x=2&source=gw&tag=a%20b"));
        let mut req = Request::new("GET", "/").with_query("debug=1");
        run(r#"{"query":{"remove":["debug"]}}"#, &mut req);
        assert_eq!(req.query(), None);
    }

    #[test]
    fn redirects_all_statuses() {
        for status in [301, 302, 307, 308] {
            let cfg = format!(
                r#"{{"redirects":[{{"match":"^/old/(.*)$","location":"https://new.example.com/$1","status":{status}}}]}}"#
            );
            let mut req = Request::new("GET", "/old/page").with_query("q=1");
            assert_eq!(
                run(&cfg, &mut req),
                Some((status, "https://new.example.com/page?q=1".into()))
            );
        }
        let cfg = r#"{"redirects":[{"match":"^/x$","location":"/y","keep_query":false}]}"#;
        let mut req = Request::new("GET", "/x").with_query("q=1");
        assert_eq!(run(cfg, &mut req), Some((302, "/y".into())));
    }

    #[test]
    fn rejects_bad_config() {
        assert!(instantiate::<Rewrite>(r#"{"rules":[{"match":"(","replace":"/"}]}"#).is_err());
        assert!(
            instantiate::<Rewrite>(r#"{"redirects":[{"match":"x","location":"/","status":200}]}"#)
                .is_err()
        );
        assert!(instantiate::<Rewrite>(r#"{"rules":[{"match":"x","replace":"rel"}]}"#).is_err());
    }
}
