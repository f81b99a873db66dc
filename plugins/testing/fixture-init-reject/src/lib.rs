//! fixture-init-reject
