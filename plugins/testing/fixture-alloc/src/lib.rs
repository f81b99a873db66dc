//! Sandbox fixture: allocates without bound in `on_request` on paths containing `/alloc` (or
//! always with `{"always": true}`), to exercise the memory cap.
use flexgate_sdk::{Action, Ctx, Error, Plugin, Request};

/// `{"always": bool}`.
#[derive(serde::Deserialize)]
pub struct Config {
    #[serde(default)]
    always: bool,
}

/// The fixture.
pub struct Alloc(Config);

impl Plugin for Alloc {
    type Config = Config;
    fn new(config: Config) -> Result<Self, Error> {
        Ok(Alloc(config))
    }
    fn on_request(&self, _ctx: &Ctx, req: &mut Request) -> Result<Action, Error> {
        if self.0.always || req.path().contains("/alloc") {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        Ok(Action::Continue)
    }
}

flexgate_sdk::export!(Alloc);
