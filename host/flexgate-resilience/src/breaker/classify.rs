//! Decide which attempt outcomes count as failures of the target.

/// One failure condition, as configured per upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureOn {
    /// TCP/TLS connection could not be established.
    ConnectFailure,
    /// The attempt exceeded its timeout.
    Timeout,
    /// A status class: `Class(5)` matches 500–599.
    Class(u16),
    /// One exact status code, e.g. `Status(429)`.
    Status(u16),
}

/// What happened to one attempt at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// Connection could not be established.
    ConnectFailure,
    /// The attempt timed out.
    Timeout,
    /// Any other error (e.g. the client went away, a malformed response). Never a
    /// failure of the target by itself: no `FailureOn` variant matches it, because
    /// the proxy cannot tell whose fault it was.
    OtherError,
    /// The target answered with this status.
    Status(u16),
}

/// Maps [`AttemptResult`]s to success/failure from a configured list.
///
/// Stored as a small bitset so classification is a few instructions with no
/// allocation on the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureClassifier {
    connect: bool,
    timeout: bool,
    /// Bit `n` set: status class `n` (1..=5, i.e. `n`xx) is a failure.
    classes: u8,
    statuses: Box<[u16]>,
}

impl Default for FailureClassifier {
    /// Connect failures, timeouts and 5xx: the usual "the target is unhealthy" set.
    fn default() -> Self {
        Self::new([
            FailureOn::ConnectFailure,
            FailureOn::Timeout,
            FailureOn::Class(5),
        ])
    }
}

impl FailureClassifier {
    /// Build from a list of conditions; duplicates are harmless. Classes outside
    /// 1..=7 can never match and are ignored.
    pub fn new(conditions: impl IntoIterator<Item = FailureOn>) -> Self {
        let mut c = Self {
            connect: false,
            timeout: false,
            classes: 0,
            statuses: Box::new([]),
        };
        let mut statuses = Vec::new();
        for cond in conditions {
            match cond {
                FailureOn::ConnectFailure => c.connect = true,
                FailureOn::Timeout => c.timeout = true,
                FailureOn::Class(n) if (1..=7).contains(&n) => c.classes |= 1 << n,
                FailureOn::Class(_) => {}
                FailureOn::Status(s) => statuses.push(s),
            }
        }
        statuses.sort_unstable();
        statuses.dedup();
        c.statuses = statuses.into_boxed_slice();
        c
    }

    /// Whether this attempt counts as a failure of the target.
    #[inline]
    pub fn is_failure(&self, result: &AttemptResult) -> bool {
        match *result {
            AttemptResult::ConnectFailure => self.connect,
            AttemptResult::Timeout => self.timeout,
            AttemptResult::OtherError => false,
            AttemptResult::Status(s) => {
                let class = s / 100;
                (class <= 7 && self.classes & (1 << class) != 0) || self.statuses.contains(&s)
            }
        }
    }

    /// [`is_failure`](Self::is_failure) as an [`Outcome`](super::Outcome) for the breaker.
    #[inline]
    pub fn outcome(&self, result: &AttemptResult) -> super::Outcome {
        super::Outcome::from_failed(self.is_failure(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set() {
        let c = FailureClassifier::default();
        assert!(c.is_failure(&AttemptResult::ConnectFailure));
        assert!(c.is_failure(&AttemptResult::Timeout));
        assert!(c.is_failure(&AttemptResult::Status(500)));
        assert!(c.is_failure(&AttemptResult::Status(599)));
        assert!(!c.is_failure(&AttemptResult::Status(499)));
        assert!(!c.is_failure(&AttemptResult::Status(200)));
        assert!(!c.is_failure(&AttemptResult::OtherError));
    }

    #[test]
    fn explicit_statuses_and_classes() {
        let c = FailureClassifier::new([FailureOn::Status(429), FailureOn::Status(503)]);
        assert!(c.is_failure(&AttemptResult::Status(429)));
        assert!(c.is_failure(&AttemptResult::Status(503)));
        assert!(!c.is_failure(&AttemptResult::Status(500)));
        assert!(!c.is_failure(&AttemptResult::ConnectFailure));
        assert!(!c.is_failure(&AttemptResult::Timeout));
        let c = FailureClassifier::new([FailureOn::Class(4), FailureOn::Class(9)]);
        assert!(c.is_failure(&AttemptResult::Status(404)));
        assert!(!c.is_failure(&AttemptResult::Status(503)));
        assert!(!c.is_failure(&AttemptResult::Status(999)));
        assert_eq!(
            c.outcome(&AttemptResult::Status(400)),
            super::super::Outcome::Failure
        );
    }

    #[test]
    fn empty_list_never_fails() {
        let c = FailureClassifier::new([]);
        for r in [
            AttemptResult::ConnectFailure,
            AttemptResult::Timeout,
            AttemptResult::OtherError,
            AttemptResult::Status(500),
        ] {
            assert!(!c.is_failure(&r));
        }
    }
}
