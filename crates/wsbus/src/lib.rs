//! wsbus runtime
