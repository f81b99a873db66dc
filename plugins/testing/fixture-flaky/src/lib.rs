//! Sandbox fixture: returns an error from `on_request` on a configurable fraction of requests
//! (`{"error_rate": 0.0..=1.0}`), deterministically from a counter, so a rate of 0.25 fails
//! exactly every 4th call of an instance. Used for canary-rollback tests. Counts its errors in
//! the plugin metric `flaky_errors`.
use flexgate_sdk::{Action, Ctx, Error, Plugin, Request, metrics};
use std::cell::Cell;

/// `{"error_rate": f64}`; without it the fixture fails 30% of requests (the canary "built to
/// fail" of the rollback tests, which shares its route config with a healthy stable version).
#[derive(serde::Deserialize)]
pub struct Config {
    #[serde(default = "default_rate")]
    error_rate: f64,
}

fn default_rate() -> f64 {
    0.3
}

/// The fixture.
pub struct Flaky {
    rate: f64,
    calls: Cell<u64>,
    acc: Cell<f64>,
}

impl Plugin for Flaky {
    type Config = Config;
    fn new(config: Config) -> Result<Self, Error> {
        if !(0.0..=1.0).contains(&config.error_rate) {
            return Err(Error::new("error_rate must be within 0..=1"));
        }
        Ok(Flaky {
            rate: config.error_rate,
            calls: Cell::new(0),
            acc: Cell::new(0.0),
        })
    }
    fn on_request(&self, _ctx: &Ctx, req: &mut Request) -> Result<Action, Error> {
        self.calls.set(self.calls.get() + 1);
        // Error accumulator: fails floor(n * rate) times over n calls, evenly spread.
        let acc = self.acc.get() + self.rate;
        if acc >= 1.0 - 1e-9 {
            self.acc.set(acc - 1.0);
            metrics::increment("flaky_errors");
            return Err(Error::new("fixture-flaky: injected error"));
        }
        self.acc.set(acc);
        req.set_header("x-flaky-calls", &self.calls.get().to_string());
        Ok(Action::Continue)
    }
}

flexgate_sdk::export!(Flaky);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_the_configured_fraction() {
        let p: Flaky = flexgate_sdk::instantiate(r#"{"error_rate":0.25}"#).expect("config");
        let ctx = Ctx::default();
        let errors = (0..100)
            .filter(|_| p.on_request(&ctx, &mut Request::new("GET", "/")).is_err())
            .count();
        assert_eq!(errors, 25);
        assert!(flexgate_sdk::instantiate::<Flaky>(r#"{"error_rate":2}"#).is_err());
    }
}
