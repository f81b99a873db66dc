//! Support for the `flexgate plugin new|test` CLI commands (the binary wires clap to these).

use crate::{
    Binding, BodyMode, CallCtx, Chain, Isolation, OnError, PluginError, PluginRuntime, PluginSpec,
    RequestOutcome, RuntimeOptions,
};
use bytes::Bytes;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The guest SDK this gateway build was compiled next to; scaffolds depend on it by path.
const SDK_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk/flexgate-sdk");

/// Create `dir/NAME/`: a plugin crate (SDK dependency, example hook, unit test, README and
/// sample `config.json`/`request.json`) that builds with
/// `cargo build --release --target wasm32-wasip2`.
pub fn scaffold(name: &str, dir: &Path) -> Result<(), PluginError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_lowercase();
    if !valid {
        return Err(PluginError::Input(format!(
            "plugin name {name:?}: use lowercase letters, digits, '-' or '_', starting with a letter"
        )));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(PluginError::Input(format!(
            "{} already exists",
            root.display()
        )));
    }
    let sdk = std::fs::canonicalize(SDK_PATH).unwrap_or_else(|_| SDK_PATH.into());
    let crate_ident = name.replace('-', "_");
    let files: [(&str, String); 5] = [
        ("Cargo.toml", format!(
r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
flexgate-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}

[profile.release]
lto = true
codegen-units = 1
strip = true

# A standalone crate, even when created inside another workspace.
[workspace]
"#, sdk = sdk.display())),
        ("src/lib.rs", format!(
r#"//! {name}: a FlexGate plugin.
use flexgate_sdk::{{Action, Ctx, Error, Plugin, Request, Response}};

/// Route binding `config`.
#[derive(serde::Deserialize)]
pub struct Config {{
    /// Header added to every request.
    #[serde(default = "default_header")]
    pub header: String,
}}

fn default_header() -> String {{
    "x-{name}".into()
}}

/// The plugin: one value per instance, built from the config by `init`.
pub struct {ty}(Config);

impl Plugin for {ty} {{
    type Config = Config;

    fn new(config: Config) -> Result<Self, Error> {{
        Ok({ty}(config))
    }}

    fn on_request(&self, ctx: &Ctx, req: &mut Request) -> Result<Action, Error> {{
        req.set_header(&self.0.header, &ctx.request_id);
        Ok(Action::Continue)
    }}

    fn on_response(&self, _ctx: &Ctx, resp: &mut Response) -> Result<(), Error> {{
        resp.set_header("x-{name}-seen", "1");
        Ok(())
    }}
}}

flexgate_sdk::export!({ty});

#[cfg(test)]
mod tests {{
    use super::*;

    #[test]
    fn tags_requests() {{
        let p: {ty} = flexgate_sdk::instantiate("{{}}").expect("config");
        let mut req = Request::new("GET", "/");
        p.on_request(&Ctx::new("127.0.0.1:1", "r", "id-1"), &mut req).expect("ok");
        assert_eq!(req.header("x-{name}").as_deref(), Some("id-1"));
    }}
}}
"#, ty = type_name(&crate_ident))),
        ("config.json", "{}\n".to_string()),
        ("request.json", "{\n  \"method\": \"GET\",\n  \"path\": \"/hello\",\n  \"headers\": {\"accept\": \"application/json\"}\n}\n".to_string()),
        ("README.md", format!(
"# {name}\n\nA FlexGate plugin. Test natively, build the component, try it:\n\n```sh\ncargo test\ncargo build --release --target wasm32-wasip2\nflexgate plugin test target/wasm32-wasip2/release/{crate_ident}.wasm --config config.json --request request.json\n```\n\nSee the SDK guide (sdk/README.md in the FlexGate repository) for the route configuration.\n")),
    ];
    for (rel, text) in files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| PluginError::io(format!("creating {}", parent.display()), e))?;
        }
        std::fs::write(&path, text)
            .map_err(|e| PluginError::io(format!("writing {}", path.display()), e))?;
    }
    Ok(())
}

fn type_name(ident: &str) -> String {
    ident
        .split('_')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Header values in request/response files: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum HeaderValues {
    One(String),
    Many(Vec<String>),
}

/// `--request` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestFile {
    #[serde(default = "default_method")]
    method: String,
    #[serde(default = "default_path")]
    path: String,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, HeaderValues>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default = "default_client")]
    client_addr: String,
    #[serde(default = "default_route")]
    route: String,
    #[serde(default = "default_request_id")]
    request_id: String,
}

/// `--response` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseFile {
    #[serde(default = "default_status")]
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, HeaderValues>,
    #[serde(default)]
    body: Option<String>,
}

fn default_method() -> String {
    "GET".into()
}
fn default_path() -> String {
    "/".into()
}
fn default_client() -> String {
    "127.0.0.1:50000".into()
}
fn default_route() -> String {
    "plugin-test".into()
}
fn default_request_id() -> String {
    "plugin-test-1".into()
}
fn default_status() -> u16 {
    200
}

fn header_map(h: &BTreeMap<String, HeaderValues>) -> Result<http::HeaderMap, PluginError> {
    let mut map = http::HeaderMap::new();
    for (name, values) in h {
        let values = match values {
            HeaderValues::One(v) => vec![v.clone()],
            HeaderValues::Many(v) => v.clone(),
        };
        let n = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| PluginError::Input(format!("invalid header name {name:?}")))?;
        for v in values {
            let v = http::HeaderValue::from_str(&v)
                .map_err(|_| PluginError::Input(format!("invalid value for header {name:?}")))?;
            map.append(n.clone(), v);
        }
    }
    Ok(map)
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> Result<T, PluginError> {
    serde_json::from_str(json).map_err(|e| PluginError::Input(format!("{what}: {e}")))
}

fn diff_headers(out: &mut String, before: &http::HeaderMap, after: &http::HeaderMap) {
    let show = |m: &http::HeaderMap, n: &http::HeaderName| -> String {
        m.get_all(n)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for name in before.keys() {
        if !after.contains_key(name) {
            let _ = writeln!(out, "  - {name}");
        }
    }
    for name in after.keys() {
        let new = show(after, name);
        if !before.contains_key(name) {
            let _ = writeln!(out, "  + {name}: {new}");
        } else {
            let old = show(before, name);
            if old != new {
                let _ = writeln!(out, "  ~ {name}: {old} -> {new}");
            }
        }
    }
}

fn show_body(out: &mut String, label: &str, b: &[u8]) {
    let text = String::from_utf8_lossy(b);
    let cut: String = text.chars().take(2000).collect();
    let _ = writeln!(out, "  {label} ({} bytes): {cut}", b.len());
}

/// Run a component once, as a route would (`init`, `on_request`, then `on_response` unless
/// the plugin answered), and describe what it changed. JSON shapes are in sdk/README.md.
pub async fn test_plugin(
    wasm: &Path,
    config_json: &str,
    request_json: &str,
    response_json: Option<&str>,
) -> Result<String, PluginError> {
    let bytes = std::fs::read(wasm)
        .map_err(|e| PluginError::io(format!("reading {}", wasm.display()), e))?;
    let req: RequestFile = parse("request file", request_json)?;
    let resp: Option<ResponseFile> = response_json
        .map(|j| parse("response file", j))
        .transpose()?;
    let _: serde_json::Value = parse("config file", config_json)?;
    let name = wasm
        .file_stem()
        .map_or("plugin".into(), |s| s.to_string_lossy().into_owned());

    let registry = prometheus::Registry::new();
    let opts = RuntimeOptions {
        max_instances: 4,
        ..RuntimeOptions::default()
    };
    let rt = PluginRuntime::new(opts, &registry)?;
    let mut spec = PluginSpec::new(name.clone(), "test", bytes);
    spec.isolation = Isolation::Pooled;
    let plugin = rt.load(spec)?;
    let body_mode = if req.body.is_some() || resp.as_ref().is_some_and(|r| r.body.is_some()) {
        BodyMode::Buffer
    } else {
        BodyMode::None
    };
    let mut out = String::new();
    let binding = Binding::new(
        plugin,
        &req.route,
        config_json.to_string(),
        OnError::FailClosed,
        body_mode,
    )
    .await?;
    let _ = writeln!(out, "plugin {name}: init ok (body: {body_mode:?})");
    let chain = Chain::new(vec![std::sync::Arc::new(binding)]);

    let addr = req.client_addr.parse().map_err(|_| {
        PluginError::Input(format!(
            "client_addr {:?}: expected ip:port",
            req.client_addr
        ))
    })?;
    let ctx = CallCtx::new(addr, &req.route, &req.request_id);
    let uri = match &req.query {
        Some(q) => format!("{}?{q}", req.path),
        None => req.path.clone(),
    };
    let mut builder = http::Request::builder()
        .method(req.method.as_str())
        .uri(uri);
    if let Some(h) = builder.headers_mut() {
        *h = header_map(&req.headers)?;
    }
    let (mut parts, ()) = builder
        .body(())
        .map_err(|e| PluginError::Input(format!("request: {e}")))?
        .into_parts();
    let before = parts.clone();
    let mut body = req.body.as_ref().map(|b| Bytes::from(b.clone()));
    let before_body = body.clone();
    let outcome = chain.on_request(&ctx, &mut parts, body.as_mut()).await;
    match outcome {
        Err(e) => {
            let _ = writeln!(
                out,
                "on_request: ERROR ({}) {}\n  the gateway answers 500 (fail_closed) or skips the plugin (fail_open)",
                e.kind.as_str(),
                e.reason
            );
            return Ok(out);
        }
        Ok(RequestOutcome::Respond(r)) => {
            let _ = writeln!(out, "on_request: RESPOND {}", r.status());
            for (n, v) in r.headers() {
                let _ = writeln!(out, "  {n}: {}", String::from_utf8_lossy(v.as_bytes()));
            }
            show_body(&mut out, "body", r.body());
            return Ok(out);
        }
        Ok(RequestOutcome::Continue) => {
            let _ = writeln!(out, "on_request: CONTINUE");
            if before.method != parts.method {
                let _ = writeln!(out, "  method: {} -> {}", before.method, parts.method);
            }
            if before.uri != parts.uri {
                let _ = writeln!(out, "  uri: {} -> {}", before.uri, parts.uri);
            }
            diff_headers(&mut out, &before.headers, &parts.headers);
            if body != before_body {
                show_body(&mut out, "new body", body.as_deref().unwrap_or_default());
            }
        }
    }
    let Some(resp) = resp else { return Ok(out) };
    let mut builder = http::Response::builder().status(resp.status);
    if let Some(h) = builder.headers_mut() {
        *h = header_map(&resp.headers)?;
    }
    let (mut rparts, ()) = builder
        .body(())
        .map_err(|e| PluginError::Input(format!("response: {e}")))?
        .into_parts();
    let rbefore = rparts.clone();
    let mut rbody = resp.body.map(Bytes::from);
    let rbefore_body = rbody.clone();
    match chain.on_response(&ctx, &mut rparts, rbody.as_mut()).await {
        Err(e) => {
            let _ = writeln!(out, "on_response: ERROR ({}) {}", e.kind.as_str(), e.reason);
        }
        Ok(()) => {
            let _ = writeln!(out, "on_response: OK");
            if rbefore.status != rparts.status {
                let _ = writeln!(out, "  status: {} -> {}", rbefore.status, rparts.status);
            }
            diff_headers(&mut out, &rbefore.headers, &rparts.headers);
            if rbody != rbefore_body {
                show_body(&mut out, "new body", rbody.as_deref().unwrap_or_default());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaffold_writes_a_crate() {
        let dir = std::env::temp_dir().join(format!("fg-scaffold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        scaffold("my-plugin", &dir).expect("scaffold");
        let lib = std::fs::read_to_string(dir.join("my-plugin/src/lib.rs")).expect("lib.rs");
        assert!(lib.contains("pub struct MyPlugin"));
        assert!(lib.contains("flexgate_sdk::export!(MyPlugin)"));
        assert!(
            std::fs::read_to_string(dir.join("my-plugin/Cargo.toml"))
                .expect("toml")
                .contains("flexgate-sdk")
        );
        assert!(scaffold("my-plugin", &dir).is_err(), "no overwrite");
        assert!(scaffold("Bad Name", &dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
