//! fixture-loop
