//! `json-redact` plugin: remove or mask JSON fields by path in request and/or response bodies.
//! Needs `body: buffer` on the route binding; non-JSON bodies pass through. See README.md.
use flexgate_sdk::{Action, Ctx, Error, Plugin, Request, Response, serde_json::Value};
use serde::Deserialize;

/// Field paths for one direction: `a.b.c`, `*` matches any key or array element, and arrays
/// on the way are searched element by element (`items.card` hits every `items[i].card`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Paths whose fields are deleted.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Paths whose values are replaced by `mask_with`.
    #[serde(default)]
    pub mask: Vec<String>,
}

/// Plugin config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Applied to request bodies.
    #[serde(default)]
    pub request: Rules,
    /// Applied to response bodies.
    #[serde(default)]
    pub response: Rules,
    /// Replacement for masked values (default `"***"`).
    #[serde(default = "default_mask")]
    pub mask_with: Value,
}

fn default_mask() -> Value {
    Value::String("***".into())
}

type Path = Vec<String>;

#[derive(Debug, Default)]
struct Compiled {
    remove: Vec<Path>,
    mask: Vec<Path>,
}

impl Compiled {
    fn new(r: Rules) -> Result<Self, Error> {
        let parse = |p: &String| -> Result<Path, Error> {
            let segs: Path = p.split('.').map(str::to_string).collect();
            if segs.iter().any(String::is_empty) {
                return Err(Error::new(format!("invalid path {p:?}")));
            }
            Ok(segs)
        };
        Ok(Compiled {
            remove: r.remove.iter().map(parse).collect::<Result<_, _>>()?,
            mask: r.mask.iter().map(parse).collect::<Result<_, _>>()?,
        })
    }

    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.mask.is_empty()
    }

    /// Returns the new body when something changed.
    fn apply(&self, body: &[u8], mask_with: &Value) -> Option<Vec<u8>> {
        let mut doc: Value = flexgate_sdk::serde_json::from_slice(body).ok()?;
        let mut changed = false;
        for p in &self.remove {
            changed |= edit(&mut doc, p, &mut |_| Edit::Remove);
        }
        for p in &self.mask {
            changed |= edit(&mut doc, p, &mut |v| {
                *v = mask_with.clone();
                Edit::Changed
            });
        }
        if changed {
            flexgate_sdk::serde_json::to_vec(&doc).ok()
        } else {
            None
        }
    }
}

enum Edit {
    Remove,
    Changed,
}

/// Apply `f` to every value at `path`; true when anything changed.
fn edit(v: &mut Value, path: &[String], f: &mut dyn FnMut(&mut Value) -> Edit) -> bool {
    let Some((head, rest)) = path.split_first() else {
        return false;
    };
    match v {
        Value::Array(items) => {
            if head == "*" {
                if rest.is_empty() {
                    // `*` as the last segment over an array: mask every element, or remove them all.
                    let had = !items.is_empty();
                    items.retain_mut(|i| !matches!(f(i), Edit::Remove));
                    return had;
                }
                return items.iter_mut().fold(false, |c, i| edit(i, rest, f) | c);
            }
            items.iter_mut().fold(false, |c, i| edit(i, path, f) | c)
        }
        Value::Object(map) => {
            let keys: Vec<String> = if head == "*" {
                map.keys().cloned().collect()
            } else if map.contains_key(head) {
                vec![head.clone()]
            } else {
                Vec::new()
            };
            let mut changed = false;
            for k in keys {
                if rest.is_empty() {
                    if let Some(val) = map.get_mut(&k) {
                        if let Edit::Remove = f(val) {
                            map.remove(&k);
                        }
                        changed = true;
                    }
                } else if let Some(child) = map.get_mut(&k) {
                    changed |= edit(child, rest, f);
                }
            }
            changed
        }
        _ => false,
    }
}

/// The plugin.
#[derive(Debug)]
pub struct JsonRedact {
    request: Compiled,
    response: Compiled,
    mask_with: Value,
}

fn is_json(content_type: Option<String>) -> bool {
    content_type.is_none_or(|ct| {
        let ct = ct.to_ascii_lowercase();
        ct.starts_with("application/json")
            || (ct.starts_with("application/") && ct.contains("+json"))
    })
}

impl Plugin for JsonRedact {
    type Config = Config;

    fn new(c: Config) -> Result<Self, Error> {
        let p = JsonRedact {
            request: Compiled::new(c.request)?,
            response: Compiled::new(c.response)?,
            mask_with: c.mask_with,
        };
        if p.request.is_empty() && p.response.is_empty() {
            return Err(Error::new(
                "nothing to redact: set request and/or response paths",
            ));
        }
        Ok(p)
    }

    fn on_request(&self, _ctx: &Ctx, req: &mut Request) -> Result<Action, Error> {
        if self.request.is_empty() || !is_json(req.header("content-type")) {
            return Ok(Action::Continue);
        }
        if let Some(new) = req
            .body()
            .and_then(|b| self.request.apply(&b, &self.mask_with))
        {
            req.set_body(new);
        }
        Ok(Action::Continue)
    }

    fn on_response(&self, _ctx: &Ctx, resp: &mut Response) -> Result<(), Error> {
        if self.response.is_empty() || !is_json(resp.header("content-type")) {
            return Ok(());
        }
        if let Some(new) = resp
            .body()
            .and_then(|b| self.response.apply(&b, &self.mask_with))
        {
            resp.set_body(new);
        }
        Ok(())
    }
}

flexgate_sdk::export!(JsonRedact);

#[cfg(test)]
mod tests {
    use super::*;
    use flexgate_sdk::{instantiate, serde_json::json};

    fn body(v: Option<Vec<u8>>) -> Value {
        flexgate_sdk::serde_json::from_slice(&v.expect("body")).expect("json")
    }

    #[test]
    fn redacts_request_and_response() {
        let p: JsonRedact = instantiate(
            r#"{"request":{"remove":["password"],"mask":["card.number"]},
                "response":{"remove":["users.ssn","*.internal"],"mask":["users.email"]}}"#,
        )
        .expect("config");
        let mut req = Request::new("POST", "/")
            .with_header("content-type", "application/json")
            .with_body(
                json!({"user":"a","password":"p","card":{"number":"4111","exp":"12/30"}})
                    .to_string(),
            );
        p.on_request(&Ctx::default(), &mut req).expect("ok");
        assert_eq!(
            body(req.body()),
            json!({"user":"a","card":{"number":"***","exp":"12/30"}})
        );

        let mut resp = Response::new(200).with_header("content-type", "application/json; charset=utf-8").with_body(
            json!({"users":[{"id":1,"ssn":"x","email":"a@b"},{"id":2,"email":"c@d"}],"meta":{"internal":1,"n":2}}).to_string(),
        );
        p.on_response(&Ctx::default(), &mut resp).expect("ok");
        assert_eq!(
            body(resp.body()),
            json!({"users":[{"id":1,"email":"***"},{"id":2,"email":"***"}],"meta":{"n":2}})
        );
    }

    #[test]
    fn non_json_and_untouched_bodies_pass_through() {
        let p: JsonRedact = instantiate(r#"{"response":{"remove":["secret"]}}"#).expect("config");
        let mut resp = Response::new(200)
            .with_header("content-type", "text/plain")
            .with_body("secret=1");
        p.on_response(&Ctx::default(), &mut resp).expect("ok");
        assert_eq!(resp.body().as_deref(), Some(&b"secret=1"[..]));
        let mut resp = Response::new(200)
            .with_header("content-type", "application/json")
            .with_body("{not json");
        p.on_response(&Ctx::default(), &mut resp).expect("ok");
        assert_eq!(resp.body().as_deref(), Some(&b"{not json"[..]));
        // No body (binding without `body: buffer`): nothing to do, no error.
        let mut resp = Response::new(200);
        p.on_response(&Ctx::default(), &mut resp).expect("ok");
    }

    #[test]
    fn custom_mask_and_bad_config() {
        let p: JsonRedact =
            instantiate(r#"{"response":{"mask":["token"]},"mask_with":null}"#).expect("config");
        let mut resp = Response::new(200).with_body(r#"{"token":"abc"}"#);
        p.on_response(&Ctx::default(), &mut resp).expect("ok");
        assert_eq!(body(resp.body()), json!({"token":null}));
        assert!(instantiate::<JsonRedact>("{}").is_err());
        assert!(instantiate::<JsonRedact>(r#"{"request":{"remove":["a..b"]}}"#).is_err());
    }
}
