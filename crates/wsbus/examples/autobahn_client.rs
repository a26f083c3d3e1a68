//! The wsbus client under the Autobahn TestSuite (fuzzingserver mode).
//!
//! Follows the standard Autobahn client protocol: read the case count from
//! `/getCaseCount`, run case `i` by connecting to `/runCase?case=i&agent=A`
//! and echoing every message until the server closes, then connect to
//! `/updateReports?agent=A`. The server URL comes from `$AUTOBAHN_SERVER_URL`
//! (see `conformance/autobahn/run-client-suite.sh`).

use wsbus::client::{self, ClientOptions};
use wsbus::proto::{DeflateConfig, Event, Limits, Message};

const AGENT: &str = "wsbus";

fn options() -> ClientOptions {
    ClientOptions {
        // Offer permessage-deflate on every case: sections 12 and 13 need it
        // and the others must work with it offered. With context takeover
        // offered: the suite's servers answer with every parameter.
        deflate: Some(DeflateConfig::with_context_takeover()),
        limits: Limits::uniform(64 << 20),
        ..ClientOptions::default()
    }
}

/// Echo every message until the connection ends.
async fn run_case(url: &str) -> Result<(), client::ClientError> {
    let mut ws = client::connect(url, options()).await?;
    while let Some(event) = ws.recv().await? {
        if let Event::Message(message) = event {
            // The server may be closing; a refused echo is then correct.
            if let Err(err) = ws.send(message).await
                && !matches!(err, client::ClientError::Api(_))
            {
                return Err(err);
            }
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base =
        std::env::var("AUTOBAHN_SERVER_URL").unwrap_or_else(|_| "ws://127.0.0.1:9002".to_owned());
    let base = base.trim_end_matches('/');
    let mut ws = client::connect(&format!("{base}/getCaseCount"), ClientOptions::default()).await?;
    let count: u32 = match ws.recv_message().await? {
        Some(Message::Text(text)) => text.as_str().trim().parse()?,
        other => return Err(format!("unexpected case count reply {other:?}").into()),
    };
    drop(ws);
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={AGENT}");
        if let Err(err) = run_case(&url).await {
            eprintln!("case {case}: {err}");
        }
    }
    // kosoku drops this connection without a close frame: ignore how it ends.
    if let Ok(mut ws) = client::connect(
        &format!("{base}/updateReports?agent={AGENT}"),
        ClientOptions::default(),
    )
    .await
    {
        let _ = ws.recv().await;
    }
    Ok(())
}
