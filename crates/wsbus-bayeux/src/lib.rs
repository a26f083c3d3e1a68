//! # wsbus-bayeux
//!
//! The Bayeux 1.0 protocol (CometD) of the wsbus message bus, without I/O.
#![forbid(unsafe_code)]
