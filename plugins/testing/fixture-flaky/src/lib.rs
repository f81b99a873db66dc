//! fixture-flaky
