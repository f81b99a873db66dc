//! Sandbox fixture: traps (panics → `unreachable`) on every request whose path contains
//! `/trap` (or on every request when configured with `{"always": true}`); passes others.
use flexgate_sdk::{Action, Ctx, Error, Plugin, Request};

/// `{"always": bool}`.
#[derive(serde::Deserialize, Default)]
pub struct Config {
    #[serde(default)]
    always: bool,
}

/// The fixture.
pub struct Trap(Config);

impl Plugin for Trap {
    type Config = Config;
    fn new(config: Config) -> Result<Self, Error> {
        Ok(Trap(config))
    }
    fn on_request(&self, _ctx: &Ctx, req: &mut Request) -> Result<Action, Error> {
        if self.0.always || req.path().contains("/trap") {
            panic!("fixture-trap: deliberate trap");
        }
        Ok(Action::Continue)
    }
}

flexgate_sdk::export!(Trap);
