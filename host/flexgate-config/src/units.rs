//! Human-friendly scalar units used throughout the config: durations (`250ms`, `1h30m`), byte sizes
//! (`10MiB`) and request rates (`100/s`). Each type parses from a string (`FromStr`), deserializes from
//! YAML and prints back in a form that parses again, so error messages and dumps stay readable.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use crate::schema::Rate;

/// A duration written with a unit (`250ms`, `1s`, `2m`, `1h30m`). A bare number is refused: `timeout: 5`
/// is ambiguous (seconds? milliseconds?) and a silent guess would be a production incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    /// The wrapped duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl Deref for Dur {
    type Target = Duration;
    fn deref(&self) -> &Duration {
        &self.0
    }
}

impl From<Duration> for Dur {
    fn from(d: Duration) -> Self {
        Dur(d)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        // humantime separates parts with spaces; joined parts parse back just the same and read better.
        let text = humantime::format_duration(self.0).to_string();
        f.write_str(&text.replace(' ', ""))
    }
}

const DUR_NEEDS_UNIT: &str = "a duration needs a unit, e.g. `250ms`, `5s`, `2m`, `1h30m`";

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(format!("`{s}`: {DUR_NEEDS_UNIT}"));
        }
        humantime::parse_duration(s)
            .map(Dur)
            .map_err(|e| format!("invalid duration `{s}` ({e}); {DUR_NEEDS_UNIT}"))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrVisitor::<Dur>::new("a duration such as `250ms` or `5s`"))
    }
}

/// A size in bytes: `512B`, `64KiB`, `10MiB`, `1GiB` (binary) or `10KB`, `10MB` (decimal); units are
/// case-insensitive and a bare integer means bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

fn byte_unit(unit: &str) -> Option<u64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return None,
    })
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let bad = || {
            format!(
                "invalid size `{s}`: expected a number with an optional unit B, KB, MB, GB, KiB, MiB, GiB or TiB, e.g. `10MiB`"
            )
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let mult = byte_unit(unit.trim()).ok_or_else(bad)?;
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size `{s}` is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrVisitor::<ByteSize>::new(
            "a size such as `64KiB` or `10MiB`",
        ))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "h",
            _ => return write!(f, "{}/{}", self.requests, Dur(self.per)),
        };
        write!(f, "{}/{unit}", self.requests)
    }
}

impl Rate {
    /// The sustained rate as requests per second (what a token bucket refills at).
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.per.as_secs_f64()
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || {
            format!(
                "invalid rate `{s}`: expected requests per period such as `100/s`, `6000/min` or `1000/h`"
            )
        };
        let (n, unit) = s.split_once('/').ok_or_else(bad)?;
        let requests: u64 = n.trim().parse().map_err(|_| bad())?;
        let secs = match unit.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hr" | "hour" => 3600,
            _ => return Err(bad()),
        };
        if requests == 0 {
            return Err(format!("rate `{s}` must allow at least one request"));
        }
        Ok(Rate {
            requests,
            per: Duration::from_secs(secs),
        })
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrVisitor::<Rate>::new("a rate such as `100/s`"))
    }
}

/// Visitor shared by every "string with a grammar" type: strings go through `FromStr`; integers go
/// through `FromStr` of their decimal text, so `Dur` can refuse them with its own message and
/// `ByteSize` can take them as bytes.
pub(crate) struct StrVisitor<T> {
    expecting: &'static str,
    _t: std::marker::PhantomData<T>,
}

impl<T> StrVisitor<T> {
    pub(crate) fn new(expecting: &'static str) -> Self {
        Self {
            expecting,
            _t: std::marker::PhantomData,
        }
    }
}

impl<T: FromStr<Err = String>> Visitor<'_> for StrVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dur(s: &str) -> Duration {
        s.parse::<Dur>().unwrap().get()
    }

    #[test]
    fn durations() {
        assert_eq!(dur("250ms"), Duration::from_millis(250));
        assert_eq!(dur("1s"), Duration::from_secs(1));
        assert_eq!(dur("2m"), Duration::from_secs(120));
        assert_eq!(dur("1h30m"), Duration::from_secs(5400));
        assert_eq!(dur("0s"), Duration::ZERO);
        let err = "5".parse::<Dur>().unwrap_err();
        assert!(err.contains("needs a unit"), "{err}");
        assert!("5 parsecs".parse::<Dur>().is_err());
        assert!("".parse::<Dur>().is_err());
    }

    #[test]
    fn durations_from_yaml() {
        let d: Dur = serde_yaml::from_str("1h30m").unwrap();
        assert_eq!(d.get(), Duration::from_secs(5400));
        let err = serde_yaml::from_str::<Dur>("30").unwrap_err().to_string();
        assert!(err.contains("needs a unit"), "{err}");
    }

    #[test]
    fn duration_display_round_trips() {
        for s in ["250ms", "1s", "2m", "1h30m", "0s", "1s500ms"] {
            let d: Dur = s.parse().unwrap();
            assert_eq!(d.to_string().parse::<Dur>().unwrap(), d, "{s}");
        }
        assert_eq!(Dur(Duration::from_secs(5400)).to_string(), "1h30m");
    }

    #[test]
    fn byte_sizes() {
        let b = |s: &str| s.parse::<ByteSize>().unwrap().get();
        assert_eq!(b("10MiB"), 10 * 1024 * 1024);
        assert_eq!(b("64KiB"), 64 * 1024);
        assert_eq!(b("1GiB"), 1 << 30);
        assert_eq!(b("512B"), 512);
        assert_eq!(b("10MB"), 10_000_000);
        assert_eq!(b("10mib"), 10 * 1024 * 1024);
        assert_eq!(b("10 MiB"), 10 * 1024 * 1024);
        assert_eq!(b("123"), 123);
        assert!("10XB".parse::<ByteSize>().is_err());
        assert!("MiB".parse::<ByteSize>().is_err());
        assert!("-1".parse::<ByteSize>().is_err());
        assert!("99999999999TiB".parse::<ByteSize>().is_err());
        let y: ByteSize = serde_yaml::from_str("4096").unwrap();
        assert_eq!(y.get(), 4096);
        assert_eq!(ByteSize(10 << 20).to_string(), "10MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn rates() {
        let r = |s: &str| s.parse::<Rate>().unwrap();
        assert_eq!(
            r("100/s"),
            Rate {
                requests: 100,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!(
            r("6000/min"),
            Rate {
                requests: 6000,
                per: Duration::from_secs(60)
            }
        );
        assert_eq!(r("6000/m").per, Duration::from_secs(60));
        assert_eq!(r("1000/h").per, Duration::from_secs(3600));
        assert_eq!(r("1000/hour").per, Duration::from_secs(3600));
        assert_eq!(r("5/sec").per, Duration::from_secs(1));
        assert!((r("6000/min").per_second() - 100.0).abs() < 1e-9);
        assert!("0/s".parse::<Rate>().is_err());
        assert!("100".parse::<Rate>().is_err());
        assert!("100/day".parse::<Rate>().is_err());
        assert_eq!(r("6000/min").to_string(), "6000/min");
    }
}
