//! The node's connections to Redis (work in progress).
