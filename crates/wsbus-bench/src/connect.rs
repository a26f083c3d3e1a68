//! `wsbus bench connect`: K loops of connect, upgrade, closing handshake,
//! TCP close. One cycle is one full life of a WebSocket connection; over
//! wss:// it includes a full TLS handshake (the client keeps no sessions to
//! resume, as on a browser's first visit).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use clap::Args;
use serde_json::{Map, Value, json};
use wsbus_proto::CloseCode;

use super::socket::{DeflateOffer, Target, UpgradeOptions};
use super::{BenchResult, Common, progress};

#[derive(Args, Debug)]
#[doc = "The `connect` scenario's arguments."]
pub struct ConnectArgs {
    #[doc = "Options every scenario takes."]
    #[command(flatten)]
    pub common: Common,
    #[doc = "What the upgrade requests carry."]
    #[command(flatten)]
    pub upgrade: UpgradeOptions,
    /// Cycles in progress at once.
    #[arg(long, short = 'k', default_value_t = 16)]
    pub concurrency: usize,
}

#[derive(Debug, Default)]
struct Shared {
    measuring: AtomicBool,
    cycles: AtomicU64,
    errors: AtomicU64,
}

pub(crate) async fn run(args: ConnectArgs) -> BenchResult {
    let target = Arc::new(Target::new(
        &args.common.url,
        DeflateOffer::None,
        &args.upgrade,
    )?);
    let shared = Arc::new(Shared::default());
    progress(format_args!(
        "{} connect loops against {}",
        args.concurrency, args.common.url
    ));
    for _ in 0..args.concurrency.max(1) {
        let (target, shared) = (target.clone(), shared.clone());
        tokio::spawn(async move {
            loop {
                match cycle(&target).await {
                    Ok(()) if shared.measuring.load(Ordering::Relaxed) => {
                        shared.cycles.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(()) => {}
                    Err(err) => {
                        if shared.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            progress(format_args!("cycle failed: {err}"));
                        }
                        // Back off a little so a refusing server is not spun on.
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    let end = args.common.measure(&shared.measuring).await;
    let cycles = shared.cycles.load(Ordering::Relaxed);

    let mut report = Map::new();
    report.insert("scenario".into(), json!("connect"));
    // Over TLS every cycle is a full handshake: no session resumption.
    report.insert("tls".into(), json!(target.is_tls()));
    report.insert("concurrency".into(), json!(args.concurrency));
    report.insert("cycles".into(), json!(cycles));
    end.add_to(&mut report, cycles, "cycles_per_sec");
    report.insert(
        "errors".into(),
        json!(shared.errors.load(Ordering::Relaxed)),
    );
    progress(format_args!(
        "connect: {:.0} cycles/s, server {} µs/cycle",
        cycles as f64 / end.secs,
        report["server_cpu_us_per_op"]
    ));
    Ok(Value::Object(report))
}

/// One connection's whole life. The server closes TCP first (RFC 6455
/// §7.1.1), so TIME_WAIT stays on its side and the generator does not run
/// out of ephemeral ports.
async fn cycle(target: &Target) -> std::io::Result<()> {
    let mut socket = target.connect().await?;
    socket
        .conn
        .close(CloseCode::NORMAL, "")
        .map_err(std::io::Error::other)?;
    socket.flush().await?;
    loop {
        socket.fill().await?;
        if !socket.process(|_, _| {}) {
            break;
        }
    }
    // Wait for the server's FIN.
    loop {
        socket.rbuf.clear();
        socket.fill().await?;
        if socket.rbuf.is_empty() {
            return Ok(());
        }
    }
}
