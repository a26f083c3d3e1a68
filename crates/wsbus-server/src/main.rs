//! The `wsbus` binary.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use wsbus::proto::{DeflateConfig, Limits};
use wsbus::{Hub, Server, ServerConfig};

#[derive(Parser, Debug)]
#[command(
    name = "wsbus",
    version,
    about = "A self-hosted real-time messaging server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A plain echo server for conformance and benchmarks: echoes every
    /// message on every path; on /broadcast every message goes to every socket
    /// on /broadcast. permessage-deflate accepted, messages up to 64 MiB.
    Echo {
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
    },
}

/// `wsbus echo` accepts messages up to 64 MiB (SPEC §8).
const ECHO_MAX_MESSAGE: usize = 64 << 20;

fn main() -> anyhow_free::Result {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WSBUS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Echo { listen } => {
                let config = ServerConfig {
                    limits: Limits::uniform(ECHO_MAX_MESSAGE),
                    deflate: Some(DeflateConfig::default()),
                    ..ServerConfig::default()
                };
                let listener = TcpListener::bind(listen).await?;
                eprintln!("wsbus echo listening on ws://{}", listener.local_addr()?);
                Server::new(config, Hub::new(), wsbus::echo::Echo)
                    .serve(listener)
                    .await?;
            }
        }
        Ok(())
    })
}

mod anyhow_free {
    /// `main`'s result: any error, printed by the standard library.
    pub type Result = std::result::Result<(), Box<dyn std::error::Error>>;
}
