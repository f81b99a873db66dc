//! fixture-trap
