//! fixture-alloc
