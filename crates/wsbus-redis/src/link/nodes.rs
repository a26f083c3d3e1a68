//! Which nodes are alive: each node's heartbeat, and the end of those that
//! stopped (module docs of `link`, "Nodes").

use super::*;

/// How often a node says it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);

/// A node not heard of for this long is taken for dead: its members leave
/// every group and presence. Over three heartbeats, so that one late
/// heartbeat on a loaded machine does not drop a live node.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// The set of nodes that have run (node ids).
const NODES_KEY: &str = "wsbus:nodes";

/// A node's heartbeat key (expires after [`NODE_TIMEOUT`]).
fn alive_key(node: NodeId) -> String {
    format!("wsbus:alive:{}", node.0)
}

/// Says every [`HEARTBEAT_INTERVAL`] that this node is alive, and tells the
/// receivers ([`Receiver::node_stopped`]) of every node it heard from whose
/// heartbeat expired.
pub(super) async fn run(inner: Arc<Inner>) {
    let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = inner.shutdown.cancelled() => return,
        }
        let node = inner.origin.node;
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("SET")
            .arg(alive_key(node))
            .arg(inner.origin.incarnation)
            .arg("PX")
            .arg(NODE_TIMEOUT.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(NODES_KEY)
            .arg(node.0)
            .ignore();
        let others: Vec<NodeId> = inner
            .seen
            .lock()
            .expect("seen lock")
            .iter()
            .copied()
            .collect();
        for other in &others {
            pipeline.cmd("EXISTS").arg(alive_key(*other));
        }
        let Ok(alive) = inner.query::<Vec<bool>>(&pipeline).await else {
            continue;
        };
        for (other, alive) in others.into_iter().zip(alive) {
            if !alive {
                tracing::info!(target: "wsbus::cluster", node = other.0, "node stopped (no heartbeat for NODE_TIMEOUT): its members leave");
                inner.node_stopped(other);
                let mut cleanup = redis::pipe();
                cleanup.cmd("SREM").arg(NODES_KEY).arg(other.0).ignore();
                let _ = inner.query::<()>(&cleanup).await;
            }
        }
    }
}

impl RedisLink {
    /// Every other node that has run (`wsbus:nodes`), with the hash at
    /// `key(node)` if the node is alive, `None` if its heartbeat expired.
    /// The live ones are watched from now on ([`RedisLink::watch`]): what a
    /// caller learns of them here is dropped when they stop.
    pub async fn node_hashes(
        &self,
        key: impl Fn(NodeId) -> String,
    ) -> Result<Vec<(NodeId, Option<HashMap<String, String>>)>, RedisError> {
        let own = self.node();
        let (nodes,): (Vec<u16>,) = self
            .query(redis::pipe().cmd("SMEMBERS").arg(NODES_KEY))
            .await?;
        let mut hashes = Vec::new();
        for node in nodes.into_iter().map(NodeId).filter(|&n| n != own) {
            let mut pipeline = redis::pipe();
            pipeline
                .cmd("EXISTS")
                .arg(alive_key(node))
                .cmd("HGETALL")
                .arg(key(node));
            let (alive, hash): (bool, HashMap<String, String>) = self.query(&pipeline).await?;
            if alive {
                self.watch(node);
            }
            hashes.push((node, alive.then_some(hash)));
        }
        Ok(hashes)
    }
}
