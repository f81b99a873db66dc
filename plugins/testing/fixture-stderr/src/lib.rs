//! fixture-stderr
