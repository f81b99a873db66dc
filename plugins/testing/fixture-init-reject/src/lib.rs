//! Sandbox fixture: `init` rejects every config unless it is `{"accept": true}`, so a binding
//! using it fails at load time.
use flexgate_sdk::{Error, Plugin};

/// `{"accept": bool}`.
#[derive(serde::Deserialize)]
pub struct Config {
    #[serde(default)]
    accept: bool,
}

/// The fixture.
pub struct Reject;

impl Plugin for Reject {
    type Config = Config;
    fn new(config: Config) -> Result<Self, Error> {
        if config.accept {
            Ok(Reject)
        } else {
            Err(Error::new(
                "fixture-init-reject: config rejected (set \"accept\": true)",
            ))
        }
    }
}

flexgate_sdk::export!(Reject);

#[cfg(test)]
mod tests {
    #[test]
    fn rejects_by_default() {
        assert!(flexgate_sdk::instantiate::<super::Reject>("{}").is_err());
        assert!(flexgate_sdk::instantiate::<super::Reject>(r#"{"accept":true}"#).is_ok());
    }
}
