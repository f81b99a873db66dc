//! Parsing of the small string grammars in the schema: key sources (`header:x-user`), retry
//! conditions and breaker failure conditions. They live here rather than as serde enums because YAML
//! users write them as plain strings or bare status numbers (`on: [connect_failure, 502]`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::schema::{FailureOn, KeySource, RetryOn};
use crate::units::StrVisitor;

/// Is `s` an RFC 9110 `token` (the grammar of header names and methods)?
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn status(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(code) if (100..=599).contains(&code) => Ok(code),
        _ => Err(format!(
            "invalid status `{s}`: expected a number from 100 to 599"
        )),
    }
}

impl FromStr for KeySource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "client_ip" => Ok(KeySource::ClientIp),
            "route" => Ok(KeySource::Route),
            _ => match s.strip_prefix("header:") {
                Some(name) if is_token(name.trim()) => {
                    Ok(KeySource::Header(name.trim().to_ascii_lowercase()))
                }
                Some(name) => Err(format!("invalid header name `{name}` in key `{s}`")),
                None => Err(format!(
                    "invalid key `{s}`: expected `client_ip`, `route` or `header:NAME`"
                )),
            },
        }
    }
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::ClientIp => f.write_str("client_ip"),
            KeySource::Route => f.write_str("route"),
            KeySource::Header(name) => write!(f, "header:{name}"),
        }
    }
}

impl<'de> Deserialize<'de> for KeySource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrVisitor::<KeySource>::new(
            "`client_ip`, `route` or `header:NAME`",
        ))
    }
}

impl FromStr for RetryOn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "connect_failure" => Ok(RetryOn::ConnectFailure),
            "timeout" => Ok(RetryOn::Timeout),
            other if other.bytes().all(|b| b.is_ascii_digit()) => {
                status(other).map(RetryOn::Status)
            }
            other => Err(format!(
                "invalid retry condition `{other}`: expected `connect_failure`, `timeout` or a status such as \"503\""
            )),
        }
    }
}

impl fmt::Display for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryOn::ConnectFailure => f.write_str("connect_failure"),
            RetryOn::Timeout => f.write_str("timeout"),
            RetryOn::Status(code) => write!(f, "{code}"),
        }
    }
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrVisitor::<RetryOn>::new(
            "`connect_failure`, `timeout` or a status code",
        ))
    }
}

impl FromStr for FailureOn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let lower = s.to_ascii_lowercase();
        match lower.as_str() {
            "connect_failure" => Ok(FailureOn::ConnectFailure),
            "timeout" => Ok(FailureOn::Timeout),
            "1xx" | "2xx" | "3xx" | "4xx" | "5xx" => {
                Ok(FailureOn::Class(u16::from(lower.as_bytes()[0] - b'0')))
            }
            other if other.bytes().all(|b| b.is_ascii_digit()) => {
                status(other).map(FailureOn::Status)
            }
            _ => Err(format!(
                "invalid failure condition `{s}`: expected `connect_failure`, `timeout`, a class such as \"5xx\" or a status such as \"503\""
            )),
        }
    }
}

impl fmt::Display for FailureOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureOn::ConnectFailure => f.write_str("connect_failure"),
            FailureOn::Timeout => f.write_str("timeout"),
            FailureOn::Class(class) => write!(f, "{class}xx"),
            FailureOn::Status(code) => write!(f, "{code}"),
        }
    }
}

impl<'de> Deserialize<'de> for FailureOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrVisitor::<FailureOn>::new(
            "`connect_failure`, `timeout`, a status class or a status code",
        ))
    }
}

impl FailureOn {
    /// Does a response with this status count as a failure under this condition?
    pub fn matches_status(&self, code: u16) -> bool {
        match *self {
            FailureOn::Class(class) => code / 100 == class,
            FailureOn::Status(s) => code == s,
            FailureOn::ConnectFailure | FailureOn::Timeout => false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn key_sources() {
        assert_eq!(
            "client_ip".parse::<KeySource>().unwrap(),
            KeySource::ClientIp
        );
        assert_eq!("route".parse::<KeySource>().unwrap(), KeySource::Route);
        assert_eq!(
            "header:X-User".parse::<KeySource>().unwrap(),
            KeySource::Header("x-user".into())
        );
        assert!("header:bad name".parse::<KeySource>().is_err());
        assert!("header:".parse::<KeySource>().is_err());
        assert!("cookie:a".parse::<KeySource>().is_err());
        assert_eq!(KeySource::Header("x-a".into()).to_string(), "header:x-a");
    }

    #[test]
    fn retry_on() {
        let v: Vec<RetryOn> =
            serde_yaml::from_str("[connect_failure, timeout, \"502\", 503]").unwrap();
        assert_eq!(
            v,
            [
                RetryOn::ConnectFailure,
                RetryOn::Timeout,
                RetryOn::Status(502),
                RetryOn::Status(503)
            ]
        );
        assert!(serde_yaml::from_str::<RetryOn>("700").is_err());
        assert!(serde_yaml::from_str::<RetryOn>("5xx").is_err());
        assert!(serde_yaml::from_str::<RetryOn>("sometimes").is_err());
    }

    #[test]
    fn failure_on() {
        let v: Vec<FailureOn> =
            serde_yaml::from_str("[connect_failure, timeout, \"5xx\", 4XX, \"503\", 429]").unwrap();
        assert_eq!(
            v,
            [
                FailureOn::ConnectFailure,
                FailureOn::Timeout,
                FailureOn::Class(5),
                FailureOn::Class(4),
                FailureOn::Status(503),
                FailureOn::Status(429)
            ]
        );
        assert!(serde_yaml::from_str::<FailureOn>("6xx").is_err());
        assert!(serde_yaml::from_str::<FailureOn>("99").is_err());
        assert!(FailureOn::Class(5).matches_status(502));
        assert!(!FailureOn::Status(503).matches_status(502));
        assert_eq!(FailureOn::Class(5).to_string(), "5xx");
    }
}
