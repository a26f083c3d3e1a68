//! The `wsbus` binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use wsbus::proto::{DeflateConfig, Limits};
use wsbus::{Runtime, Server, ServerConfig};

mod alloc;
#[allow(dead_code)] // its `main` serves the example alone; here only `Chat` is used
#[path = "../examples/chat.rs"]
mod chat;
mod config;
mod web;

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
    /// The server: with no configuration, listens on 127.0.0.1:8080 with the
    /// seed's chat at /chat, a page to use it at /, a demo login
    /// (POST /login, POST /logout) and metrics at /metrics.
    Serve {
        /// A TOML configuration file (keys: see README); environment variables
        /// WSBUS_<SECTION>__<KEY> override it, flags override both.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (the `listen` key).
        #[arg(long)]
        listen: Option<String>,
    },
    /// A plain echo server for conformance and benchmarks: echoes every
    /// message on every path; on /broadcast every message goes to every socket
    /// on /broadcast. permessage-deflate accepted, messages up to 64 MiB.
    Echo {
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
    },
    /// A load generator usable against any WebSocket server: prints one JSON
    /// report on stdout (see BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        scenario: wsbus_bench::Scenario,
    },
    /// An interactive client for operators: each line of standard input is
    /// sent as a text message; every message received is printed.
    Client {
        /// A ws:// URL.
        url: String,
        /// Offer permessage-deflate.
        #[arg(long)]
        deflate: bool,
    },
}

/// `wsbus echo` accepts messages up to 64 MiB (SPEC §8).
const ECHO_MAX_MESSAGE: usize = 64 << 20;

type MainResult = Result<(), Box<dyn std::error::Error>>;
/// A server's result: sendable, because servers run on a worker thread.
type ServerResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn main() -> MainResult {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WSBUS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let command = match cli.command {
        // The generator picks its own runtime (one thread by default).
        Command::Bench { scenario } => return wsbus_bench::run(scenario),
        command => command,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            Command::Serve { config, listen } => on_worker(serve(config, listen)).await,
            Command::Echo { listen } => on_worker(echo(listen)).await,
            Command::Client { url, deflate } => client(&url, deflate).await,
            Command::Bench { .. } => unreachable!("handled above"),
        }
    })
}

/// Run a server on a worker thread rather than in `block_on` on the main
/// thread: its accept loop then spawns connection tasks onto the worker it
/// runs on, instead of waking that worker from another thread (a futex wake
/// and a context switch per accepted connection).
async fn on_worker<F>(server: F) -> MainResult
where
    F: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Send + 'static,
{
    match tokio::spawn(server).await {
        Ok(result) => result.map_err(|e| e as Box<dyn std::error::Error>),
        Err(join_error) => Err(Box::new(join_error)),
    }
}

async fn serve(config_file: Option<PathBuf>, listen: Option<String>) -> ServerResult {
    let flags: Vec<(&str, toml::Value)> = listen
        .map(|l| ("listen", toml::Value::String(l)))
        .into_iter()
        .collect();
    let config = config::Config::load(config_file.as_deref(), std::env::vars(), &flags)?;
    let server_config = config.server_config();
    // A Bayeux batch must fit both transports: long-polling bodies stop at
    // the HTTP body limit (413), so WebSocket batches stop there too (1009),
    // and a client that falls back to long-polling can send whatever it sent
    // over WebSocket.
    let batch = wsbus_bayeux::BatchLimits {
        max_bytes: server_config
            .max_body_bytes
            .min(wsbus_bayeux::BatchLimits::DEFAULT_MAX_BYTES),
        ..wsbus_bayeux::BatchLimits::default()
    };
    let runtime = Runtime::new(server_config);
    let listener = TcpListener::bind(config.listen).await?;
    let bus = wsbus::bus::Bus::new(
        wsbus_bayeux::BusConfig {
            websocket_enabled: config.bus.websocket_enabled,
            limits: wsbus_bayeux::Limits {
                batch,
                ..wsbus_bayeux::Limits::default()
            },
            ..wsbus_bayeux::BusConfig::default()
        },
        runtime.hub().clone(),
    );
    let routes = web::BusRoutes {
        bus: bus.clone(),
        path: config.bus.path.trim_end_matches('/').to_owned(),
        publish_token: config.bus.publish_token.clone(),
    };
    let mut server = Server::new(runtime)
        .websocket("/chat", chat::Chat)
        .websocket(&routes.path, wsbus::bus::BusSocket::new(bus.clone()))
        .websocket(
            &format!("{}/", routes.path),
            wsbus::bus::BusSocket::new(bus),
        )
        .http(web::handler(routes));
    let scheme = match &config.tls {
        Some(tls) => {
            server = server.tls(wsbus::tls_acceptor(&tls.cert, &tls.key)?);
            "https"
        }
        None => "http",
    };
    eprintln!(
        "wsbus serve listening on {scheme}://{}",
        listener.local_addr()?
    );
    finish(server.serve(listener, shutdown_signal()).await);
    Ok(())
}

async fn echo(listen: SocketAddr) -> ServerResult {
    let config = ServerConfig {
        limits: Limits::uniform(ECHO_MAX_MESSAGE),
        deflate: Some(DeflateConfig::default()),
        ..ServerConfig::default()
    };
    let listener = TcpListener::bind(listen).await?;
    eprintln!("wsbus echo listening on ws://{}", listener.local_addr()?);
    let server = Server::new(Runtime::new(config)).websocket_fallback(wsbus::echo::Echo);
    finish(server.serve(listener, shutdown_signal()).await);
    Ok(())
}

async fn client(url: &str, deflate: bool) -> MainResult {
    use tokio::io::AsyncBufReadExt;
    use wsbus::proto::{CloseCode, Event, Message};
    let options = wsbus::client::ClientOptions {
        deflate: deflate.then(DeflateConfig::default),
        ..wsbus::client::ClientOptions::default()
    };
    let mut ws = wsbus::client::connect(url, options).await?;
    if let Some(extensions) = &ws.negotiated().extensions {
        eprintln!("connected ({extensions})");
    } else {
        eprintln!("connected");
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut input_open = true;
    loop {
        tokio::select! {
            line = lines.next_line(), if input_open => match line? {
                Some(line) => ws.send(Message::text(line)).await?,
                // End of input: close, but print what is still on its way.
                None => {
                    input_open = false;
                    ws.start_close(CloseCode::NORMAL, "").await?;
                }
            },
            event = ws.recv() => match event? {
                Some(Event::Message(Message::Text(text))) => println!("{text}"),
                Some(Event::Message(Message::Binary(data))) => println!("<{} bytes of binary>", data.len()),
                Some(Event::Close(Some(frame))) => eprintln!("closed: {} {}", frame.code, frame.reason),
                Some(Event::Close(None)) => eprintln!("closed without a code"),
                Some(Event::Error(err)) => eprintln!("protocol error: {err}"),
                Some(_) => {}
                None => return Ok(()),
            },
        }
    }
}

/// Report how the drain ended; exit 0 either way (the sockets were told).
fn finish(drained: bool) {
    if drained {
        tracing::info!("all sockets closed; bye");
    } else {
        tracing::warn!("drain timeout reached with sockets still open");
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
