//! Sandbox fixture, built without `std` (`no_std_runtime!`: no WASI imports, so the host runs it on
//! the direct, fiber-less path): traps (panics → `unreachable`) on every request whose path
//! contains `/trap`, or on every request with `{"always": true}`; loops forever in `on_request`
//! with `{"loop": true}`, to exercise the per-call deadline on that path. Passes other requests.
#![cfg_attr(target_arch = "wasm32", no_std)]
use flexgate_sdk::{Action, Ctx, Error, Plugin, Request};

flexgate_sdk::no_std_runtime!();

/// `{"always": bool, "loop": bool}`.
#[derive(serde::Deserialize, Default)]
pub struct Config {
    #[serde(default)]
    always: bool,
    #[serde(default, rename = "loop")]
    spin: bool,
}

/// The fixture.
pub struct Trap(Config);

impl Plugin for Trap {
    type Config = Config;
    fn new(config: Config) -> Result<Self, Error> {
        Ok(Trap(config))
    }
    fn on_request(&self, _ctx: &Ctx, req: &mut Request) -> Result<Action, Error> {
        if self.0.spin {
            let mut n: u64 = 0;
            loop {
                n = core::hint::black_box(n.wrapping_add(1));
            }
        }
        if self.0.always || req.path().contains("/trap") {
            panic!("fixture-trap: deliberate trap");
        }
        Ok(Action::Continue)
    }
}

flexgate_sdk::export!(Trap);
