//! Sandbox fixture: floods stdout and stderr on every request (`{"lines": N}`, default 10 000),
//! to exercise output capture truncation and rate limiting. Always continues.
use flexgate_sdk::{Action, Ctx, Error, Plugin, Request};

/// `{"lines": u32}`.
#[derive(serde::Deserialize)]
pub struct Config {
    #[serde(default = "default_lines")]
    lines: u32,
}

fn default_lines() -> u32 {
    10_000
}

/// The fixture.
pub struct Flood(Config);

impl Plugin for Flood {
    type Config = Config;
    fn new(config: Config) -> Result<Self, Error> {
        Ok(Flood(config))
    }
    fn on_request(&self, ctx: &Ctx, _req: &mut Request) -> Result<Action, Error> {
        for i in 0..self.0.lines {
            eprintln!("fixture-stderr: line {i} of request {}", ctx.request_id);
            if i % 100 == 0 {
                println!("fixture-stderr: stdout line {i}");
            }
        }
        Ok(Action::Continue)
    }
}

flexgate_sdk::export!(Flood);
