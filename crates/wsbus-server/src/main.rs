//! The `wsbus` binary.
//!
//! Exit status: 0 after a clean shutdown; 1 when a command fails at run
//! time (the address cannot be listened on, the TLS files cannot be
//! loaded); 2 for usage and configuration errors. A failure is printed as
//! one line, `error: <what>: <why>`.

// A binary has no public API: `pub` here marks what a module offers the rest
// of the binary, which is what `unreachable_pub` (a lint for libraries)
// would have spelled `pub(crate)` everywhere.
#![allow(unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use wsbus::proto::{DeflateConfig, Limits};
use wsbus::{Runtime, Server, ServerConfig};

mod admin;
mod alloc;
mod api;
mod auth;
#[allow(dead_code)] // its `main` serves the example alone; here only `Chat` is used
#[path = "../examples/chat.rs"]
mod chat;
mod cluster;
mod config;
mod log;
mod probe;
mod security;
mod web;

#[derive(Parser, Debug)]
#[command(
    name = "wsbus",
    version,
    about = "A self-hosted real-time messaging server",
    after_help = "Exit status: 0 after a clean shutdown, 1 when the server cannot start \
                  (e.g. the address is taken), 2 for usage or configuration errors."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The server: with no configuration, listens on 127.0.0.1:8080 with a
    /// WebSocket chat at /chat, a page to use it at /, the message bus at
    /// /amb, a demo login (POST /login, POST /logout) and metrics at
    /// /metrics.
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
        /// Serve wss:// with this PEM certificate chain (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Keep permessage-deflate's compression context between messages
        /// (context takeover) when the client allows it, instead of the
        /// default of resetting it after each message. For measuring its
        /// cost, so not capped: ~440 KiB per connection at 15 window bits.
        #[arg(long)]
        deflate_context_takeover: bool,
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

/// `wsbus echo` accepts messages up to 64 MiB: room for the conformance
/// suites' largest cases.
const ECHO_MAX_MESSAGE: usize = 64 << 20;

type MainResult = Result<(), Box<dyn std::error::Error>>;
/// A server's result: sendable, because servers run on a worker thread.
type ServerResult = Result<(), StartError>;

/// Why a server did not start (or stopped), for people.
#[derive(Debug)]
enum StartError {
    /// Invalid configuration (exit status 2).
    Config(config::ConfigError),
    /// The address could not be listened on.
    Listen {
        addr: String,
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    Tls(std::io::Error),
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl StartError {
    fn exit_code(&self) -> ExitCode {
        match self {
            StartError::Config(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(err) => write!(f, "config: {err}"),
            StartError::Listen { addr, source } => {
                write!(f, "cannot listen on {addr}: {}", config::io_reason(source))
            }
            StartError::Tls(err) => write!(f, "tls: {}", config::io_reason(err)),
            StartError::Other(err) => write!(f, "{err}"),
        }
    }
}

impl From<config::ConfigError> for StartError {
    fn from(err: config::ConfigError) -> Self {
        StartError::Config(err)
    }
}

impl From<std::io::Error> for StartError {
    fn from(err: std::io::Error) -> Self {
        StartError::Other(Box::new(err))
    }
}

/// Bind `addr`, or say which address could not be taken.
async fn listen_on(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen {
            addr: addr.to_string(),
            source,
        })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` installs its logging once its configuration is read (`[log]`).
    if !matches!(cli.command, Command::Serve { .. }) {
        log::init_default();
    }
    let command = match cli.command {
        // The generator picks its own runtime (one thread by default).
        Command::Bench { scenario } => return report(wsbus_bench::run(scenario)),
        command => command,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return report(Err(err.into())),
    };
    runtime.block_on(async move {
        match command {
            Command::Serve { config, listen } => on_worker(serve(config, listen)).await,
            Command::Echo {
                listen,
                tls_cert,
                tls_key,
                deflate_context_takeover,
            } => {
                let tls = tls_cert.zip(tls_key);
                on_worker(echo(listen, tls, deflate_context_takeover)).await
            }
            Command::Client { url, deflate } => report(client(&url, deflate).await),
            Command::Bench { .. } => unreachable!("handled above"),
        }
    })
}

/// A command's outcome as the process's: `error: …` on one line, status 1.
fn report(result: MainResult) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Run a server on a worker thread rather than in `block_on` on the main
/// thread: its accept loop then spawns connection tasks onto the worker it
/// runs on, instead of waking that worker from another thread (a futex wake
/// and a context switch per accepted connection). Reports its failure.
async fn on_worker<F>(server: F) -> ExitCode
where
    F: Future<Output = ServerResult> + Send + 'static,
{
    let result = match tokio::spawn(server).await {
        Ok(result) => result,
        Err(join_error) => Err(StartError::Other(Box::new(join_error))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            err.exit_code()
        }
    }
}

async fn serve(config_file: Option<PathBuf>, listen: Option<String>) -> ServerResult {
    let flags: Vec<(&str, toml::Value)> = listen
        .map(|l| ("listen", toml::Value::String(l)))
        .into_iter()
        .collect();
    let config = config::Config::load(config_file.as_deref(), std::env::vars(), &flags)?;
    let started = admin::Started::now();
    let log = log::init(&config.log.level, config.log.format)
        .map_err(|(setting, why)| config::ConfigError::new(setting, why))?;
    let bus_path =
        web::bus_path(&config.bus.path).map_err(|why| config::ConfigError::new("bus.path", why))?;
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
    let security = security::from_config(&config)?;
    let verifier = security.auth.as_ref().map(|auth| auth.verifier.clone());
    let (policies, channel_schemas) = security::bus_channels(&config)?;
    let demo = config.demo_enabled();
    if demo && !config.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %config.listen,
            "the demo (chat page and its login, where anyone signs in under any name) is on \
             and the listener is not loopback: set `demo = false` or configure [auth]"
        );
    }
    let cluster = cluster::Cluster::start(&config.cluster)?;
    let mut builder = Runtime::builder(server_config).security(security);
    if let Some(cluster) = &cluster {
        builder = cluster.install(builder);
    }
    let runtime = builder.build();
    if let Some(cluster) = &cluster {
        cluster.attach(runtime.clone());
    }
    runtime
        .captures()
        .set_redacted_fields(&config.admin.capture_redact);
    if let Some(verifier) = &verifier {
        // The JWKS, if any, before the first client needs it; a failure is
        // logged by the verifier and retried on demand.
        let verifier = verifier.clone();
        tokio::spawn(async move {
            let _ = verifier.prefetch_keys().await;
        });
    }
    let listener = listen_on(config.listen).await?;
    let bus = wsbus::bus::Bus::with_runtime(
        wsbus_bayeux::BusConfig {
            websocket_enabled: config.bus.websocket_enabled,
            limits: wsbus_bayeux::Limits {
                batch,
                ..wsbus_bayeux::Limits::default()
            },
            policies,
            ..wsbus_bayeux::BusConfig::default()
        },
        &runtime,
        channel_schemas,
    );
    if let Some(cluster) = &cluster {
        cluster.join_bus(&bus);
    }
    let bus_socket_paths = [bus_path.clone(), format!("{bus_path}/")];
    let test_page = probe::TestPage::new(
        &runtime,
        &bus_path,
        config.bus.websocket_enabled,
        wsbus_bayeux::BusConfig::DEFAULT_TIMEOUT,
    );
    let routes = web::BusRoutes {
        bus: bus.clone(),
        path: bus_path,
        publish: api::PublishAuth {
            token: config
                .bus
                .publish_token
                .as_ref()
                .map(|t| auth::BearerToken::new(t.expose())),
            jwt: verifier,
        },
        demo,
        admin: config.admin.token.as_ref().map(|token| admin::Admin {
            token: auth::BearerToken::new(token.expose()),
            bus: bus.clone(),
            log: log.clone(),
            config: std::sync::Arc::new(
                serde_json::to_value(&config).unwrap_or(serde_json::Value::Null),
            ),
            started,
        }),
        test_page,
    };
    let mut server = Server::new(runtime);
    if demo {
        server = server.websocket("/chat", chat::Chat);
    }
    let mut server = server
        .websocket_at(
            bus_socket_paths.iter().map(String::as_str),
            wsbus::bus::BusSocket::new(bus),
        )
        .router(web::router(routes));
    let scheme = match &config.tls {
        Some(tls) => {
            let acceptor = wsbus::tls_acceptor(&tls.cert, &tls.key).map_err(StartError::Tls)?;
            server = server.tls(acceptor);
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

async fn echo(
    listen: SocketAddr,
    tls: Option<(PathBuf, PathBuf)>,
    deflate_context_takeover: bool,
) -> ServerResult {
    let deflate = if deflate_context_takeover {
        DeflateConfig {
            context_takeover_max_connections: usize::MAX,
            ..DeflateConfig::with_context_takeover()
        }
    } else {
        DeflateConfig::default()
    };
    let config = ServerConfig {
        limits: Limits::uniform(ECHO_MAX_MESSAGE),
        deflate: Some(deflate),
        ..ServerConfig::default()
    };
    let listener = listen_on(listen).await?;
    let mut server = Server::new(Runtime::new(config)).websocket_fallback(wsbus::echo::Echo);
    let scheme = match tls {
        Some((cert, key)) => {
            server = server.tls(wsbus::tls_acceptor(&cert, &key).map_err(StartError::Tls)?);
            "wss"
        }
        None => "ws",
    };
    eprintln!(
        "wsbus echo listening on {scheme}://{}",
        listener.local_addr()?
    );
    finish(server.serve(listener, shutdown_signal()).await);
    Ok(())
}

async fn client(url: &str, deflate: bool) -> MainResult {
    use tokio::io::AsyncBufReadExt;
    use wsbus::proto::{CloseCode, Event, Message};
    let options = wsbus::client::ClientOptions {
        // Offer context takeover first, as before the server's defaults
        // changed: one connection can afford it.
        deflate: deflate.then(DeflateConfig::with_context_takeover),
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
