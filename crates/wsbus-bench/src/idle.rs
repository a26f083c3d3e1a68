//! `wsbus bench idle`: open N connections, leave them idle, and report how
//! much the server's resident memory grew per connection.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::{Map, Value, json};

use super::fanout::connect_all;
use super::socket::{Target, UpgradeOptions};
use super::{BenchResult, Common, ProcessProbe, progress, round3};

#[derive(Args, Debug)]
#[doc = "The `idle` scenario's arguments."]
pub struct IdleArgs {
    #[doc = "Options every scenario takes."]
    #[command(flatten)]
    pub common: Common,
    #[doc = "What the upgrade requests carry."]
    #[command(flatten)]
    pub upgrade: UpgradeOptions,
    /// Connections to hold.
    #[arg(long, short = 'c', default_value_t = 10_000)]
    pub connections: usize,
    /// Seconds the server gets, after the last handshake, to finish what it
    /// does per connection (tasks spawned, buffers released) before its RSS
    /// is read.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
}

pub(crate) async fn run(args: IdleArgs) -> BenchResult {
    let probe = ProcessProbe::new(args.common.server_pid);
    let before = probe
        .sample()
        .ok_or("idle needs --server-pid of a running server (reads /proc/PID/status)")?;
    let target = Arc::new(Target::with_headers(
        &args.common.url,
        false,
        &args.upgrade.headers,
    )?);
    progress(format_args!(
        "opening {} idle connections to {}",
        args.connections, args.common.url
    ));
    let sockets = connect_all(&target, args.connections).await?;
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let after = probe.sample().ok_or("the server exited")?;
    // Still connected: the server must not have dropped any while we waited.
    let mut closed = 0usize;
    for socket in &sockets {
        let mut probe_buf = [0u8; 1];
        match socket.stream.try_read(&mut probe_buf) {
            Ok(_) => closed += 1, // EOF or unexpected data
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => closed += 1,
        }
    }
    let grown = after.rss_kib.saturating_sub(before.rss_kib);
    let per_conn = grown as f64 / args.connections.max(1) as f64;
    let mut report = Map::new();
    report.insert("scenario".into(), json!("idle"));
    report.insert("connections".into(), json!(args.connections));
    report.insert("rss_before_kib".into(), json!(before.rss_kib));
    report.insert("rss_after_kib".into(), json!(after.rss_kib));
    report.insert("rss_per_conn_kib".into(), json!(round3(per_conn)));
    report.insert("closed_by_server".into(), json!(closed));
    progress(format_args!(
        "idle: {} connections, server RSS {} → {} KiB, {per_conn:.2} KiB each",
        args.connections, before.rss_kib, after.rss_kib
    ));
    drop(sockets);
    Ok(Value::Object(report))
}
