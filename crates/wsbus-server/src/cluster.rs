//! `[cluster]`: this node as one of several over one Redis (SPEC §7,
//! crate `wsbus-redis`).
//!
//! Unset `redis_url`: a single node, nothing here runs. Set: the node starts
//! whether or not Redis answers (its local clients are served either way),
//! reports the link in `wsbus_cluster_redis_up` and `/readyz`, and logs
//! every change of the link's state (`wsbus::cluster`).

use serde::{Deserialize, Serialize};
use wsbus::{NodeId, RuntimeBuilder};
use wsbus_redis::bus::RedisBus;
use wsbus_redis::forward::RedisForward;
use wsbus_redis::hub::ClusterHub;
use wsbus_redis::link::{LinkState, RedisLink};
use wsbus_redis::logout::{ClusterSessionStore, follow_session_ends};
use wsbus_redis::session::RedisSessionStore;

use std::sync::Arc;

use crate::config::{ConfigError, Secret};

/// `[cluster]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// `redis://[user:password@]host[:port]`: set, this node joins the
    /// cluster of every node that names the same Redis. A secret (it may
    /// carry a password).
    pub redis_url: Option<Secret>,
    /// This node's id, 0–65535, unique among the nodes: part of every
    /// socket id the node hands out. Unset: drawn at random at start, which
    /// two nodes of a small cluster share with a chance of about
    /// n² / 131,072 — set it (from a pod ordinal, a host number) for more
    /// than a few nodes.
    pub node_id: Option<u16>,
}

/// A node's part in the cluster, once started.
#[derive(Debug)]
pub struct Cluster {
    link: RedisLink,
    sessions: RedisSessionStore,
}

impl Cluster {
    /// Starts the link if `[cluster]` names a Redis.
    pub fn start(section: &ClusterSection) -> Result<Option<Cluster>, ConfigError> {
        let Some(url) = &section.redis_url else {
            return Ok(None);
        };
        let node = NodeId(section.node_id.unwrap_or_else(rand::random));
        let bad_url = |e: String| ConfigError::new("cluster.redis_url", e);
        let link = RedisLink::start(url.expose(), node).map_err(|e| bad_url(e.to_string()))?;
        // The URL was accepted above; the store's own error would quote it.
        let sessions =
            RedisSessionStore::open(url.expose()).map_err(|_| bad_url("not a Redis URL".into()))?;
        tracing::info!(target: "wsbus::cluster", node = node.0, "cluster mode: connecting to Redis");
        Ok(Some(Cluster { link, sessions }))
    }

    /// Routes the runtime's hub through the cluster and keeps its HTTP
    /// sessions in Redis.
    pub fn install(&self, builder: RuntimeBuilder) -> RuntimeBuilder {
        let link = self.link.clone();
        let store = ClusterSessionStore::new(self.sessions.clone(), self.link.clone());
        builder
            .node(self.link.node())
            .session_store(Arc::new(store))
            .hub_engine(move |local| ClusterHub::install(local, link))
    }

    /// Joins the node's bus to the other nodes' (before it serves
    /// clients): messages cross, and any node serves any request of a bus
    /// client (forwarded to the node that owns it).
    pub fn join_bus(&self, bus: &wsbus::bus::Bus) {
        RedisBus::install(bus, self.link.clone());
        RedisForward::install(bus, self.link.clone());
    }

    /// Once the runtime is built: its sessions end when other nodes end
    /// them, `wsbus_cluster_redis_up` (and so `/readyz`) follows the link
    /// for as long as the process runs, and the `wsbus_cluster_*` counters
    /// read the link's.
    pub fn attach(&self, runtime: wsbus::Runtime) {
        follow_session_ends(&self.link, runtime.sessions());
        let link = self.link.clone();
        runtime
            .metrics()
            .set_cluster_stats(move || wsbus::metrics::ClusterStats {
                malformed: link.malformed_messages(),
                publishes_dropped: link.dropped_publishes(),
                pending_bytes: link.pending_bytes() as u64,
            });
        let mut state = self.link.state();
        tokio::spawn(async move {
            loop {
                let up = *state.borrow_and_update() == LinkState::Up;
                runtime.metrics().set_cluster_redis_up(Some(up));
                if state.changed().await.is_err() {
                    return;
                }
            }
        });
    }
}
