//! Sandbox fixture: loops forever in `on_request` on paths containing `/loop` (or always with
//! `{"always": true}`), to exercise the per-call deadline.
use flexgate_sdk::{Action, Ctx, Error, Plugin, Request};

/// `{"always": bool}`.
#[derive(serde::Deserialize)]
pub struct Config {
    #[serde(default)]
    always: bool,
}

/// The fixture.
pub struct Loop(Config);

impl Plugin for Loop {
    type Config = Config;
    fn new(config: Config) -> Result<Self, Error> {
        Ok(Loop(config))
    }
    fn on_request(&self, _ctx: &Ctx, req: &mut Request) -> Result<Action, Error> {
        if self.0.always || req.path().contains("/loop") {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        Ok(Action::Continue)
    }
}

flexgate_sdk::export!(Loop);
