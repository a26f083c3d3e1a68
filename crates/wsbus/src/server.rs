//! The listener: one port for WebSocket upgrades and plain HTTP, over TCP or
//! TLS, served by hyper.
//!
//! Plain HTTP goes to an [`axum::Router`](::axum::Router) given to
//! [`Server::router`]; WebSocket upgrades on the server's own endpoints do not
//! pass through it (see [`Server`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ::axum::Router;
use ::axum::extract::DefaultBodyLimit;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower_service::Service as _;

use crate::app::WebSocketApp;
use crate::proxy::client_view;
use crate::runtime::Runtime;
use crate::transport::tls;
use crate::upgrade::{text_response, upgrade};

/// What [`Server`] knows of the connection a plain-HTTP request came on,
/// inserted into every request it hands to the router. Read it in a handler
/// with `axum::Extension<ConnectionInfo>`:
///
/// ```
/// use axum::Extension;
/// use wsbus::ConnectionInfo;
///
/// async fn whoami(Extension(conn): Extension<ConnectionInfo>) -> String {
///     format!("{} over {}", conn.peer, if conn.tls { "TLS" } else { "TCP" })
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Whether the connection is TLS (the request came in as `https`).
    pub tls: bool,
    /// The TCP peer (the client, or the proxy in front of the server).
    pub peer: SocketAddr,
}

/// The body of every response the server writes: the upgrade path's own
/// responses as they are (no boxing on the handshake path), the router's as
/// axum makes them.
type ResponseBody = Either<Full<Bytes>, ::axum::body::Body>;

/// A type-erased WebSocket endpoint.
trait Endpoint: Send + Sync {
    fn handle<'a>(
        &'a self,
        runtime: &'a Runtime,
        req: Request<Incoming>,
        connection: ConnectionInfo,
    ) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send + 'a>>;
}

struct AppEndpoint<A>(Arc<A>);

impl<A: WebSocketApp> Endpoint for AppEndpoint<A> {
    fn handle<'a>(
        &'a self,
        runtime: &'a Runtime,
        req: Request<Incoming>,
        connection: ConnectionInfo,
    ) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send + 'a>> {
        Box::pin(upgrade(&self.0, runtime, req, connection))
    }
}

/// Load a rustls acceptor from PEM files (certificate chain, private key).
pub fn tls_acceptor(cert_pem: &Path, key_pem: &Path) -> std::io::Result<TlsAcceptor> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(cert_pem)?))
        .collect::<Result<Vec<_>, _>>()?;
    let key =
        rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(key_pem)?))?
            .ok_or_else(|| invalid(format!("no private key in {}", key_pem.display())))?;
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| invalid(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A server: WebSocket endpoints by path, an optional WebSocket endpoint for
/// every other path, and an axum [`Router`] for plain HTTP.
///
/// Where a request goes:
///
/// 1. A `GET` on a path given to [`websocket`](Self::websocket) goes straight
///    to that endpoint's upgrade decision, without passing through the
///    router: the handshake path stays as short as without one, and the
///    endpoint's [`WebSocketApp::upgrade`] also answers plain `GET`s there.
///    Other methods on that path go to the router (without one, to the
///    endpoint).
/// 2. A request with an `Upgrade` header goes to the
///    [`websocket_fallback`](Self::websocket_fallback) endpoint, if any.
/// 3. Everything else goes to the router; without one, to the fallback
///    endpoint, else `404`.
///
/// What the router's handlers get, besides the request:
///
/// * [`ConnectionInfo`] (TLS or not, the peer's address) and the
///   [`Runtime`] as request extensions: `Extension<ConnectionInfo>`,
///   `Extension<Runtime>`;
/// * a body limit of [`ServerConfig::max_body_bytes`](crate::ServerConfig::max_body_bytes)
///   on axum's body extractors (`Bytes`, `String`, `Json`, `Form`; `413`
///   above it) through [`DefaultBodyLimit`]. A route may set its own limit
///   with a `DefaultBodyLimit` layer of its own (the innermost wins); a
///   handler that reads the body stream itself must bound it itself (e.g.
///   `axum::body::to_bytes(body, limit)`).
///
/// Connection-level limits hold for every request whatever its route: the
/// request head must arrive within
/// [`handshake_timeout`](crate::ServerConfig::handshake_timeout) and fit in
/// [`max_request_bytes`](crate::ServerConfig::max_request_bytes) (`431`
/// otherwise).
pub struct Server {
    runtime: Runtime,
    endpoints: HashMap<String, Arc<dyn Endpoint>>,
    fallback: Option<Arc<dyn Endpoint>>,
    router: Option<Router>,
    /// The acceptor's configuration with secret extraction on
    /// ([`tls::server_config`]).
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("endpoints", &self.endpoints.keys().collect::<Vec<_>>())
            .field("router", &self.router.is_some())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server of `runtime`'s sockets, with no endpoint or route yet.
    pub fn new(runtime: Runtime) -> Self {
        Server {
            runtime,
            endpoints: HashMap::new(),
            fallback: None,
            router: None,
            tls: None,
        }
    }

    /// Serve `app` at exactly `path`.
    pub fn websocket<A: WebSocketApp>(self, path: &str, app: A) -> Self {
        self.websocket_at([path], app)
    }

    /// Serve one `app` at each of `paths` exactly (e.g. `/amb` and `/amb/`).
    pub fn websocket_at<'a, A: WebSocketApp>(
        mut self,
        paths: impl IntoIterator<Item = &'a str>,
        app: A,
    ) -> Self {
        let endpoint: Arc<dyn Endpoint> = Arc::new(AppEndpoint(Arc::new(app)));
        for path in paths {
            self.endpoints.insert(path.to_owned(), endpoint.clone());
        }
        self
    }

    /// Serve `app` on every path without an endpoint: upgrades always, plain
    /// requests when there is no [`router`](Self::router).
    pub fn websocket_fallback<A: WebSocketApp>(mut self, app: A) -> Self {
        self.fallback = Some(Arc::new(AppEndpoint(Arc::new(app))));
        self
    }

    /// Answer plain HTTP with `router` (see [`Server`] for what reaches it
    /// and what its handlers get). Its own fallback answers paths it has no
    /// route for (axum's default: an empty `404`).
    pub fn router(mut self, router: Router) -> Self {
        let body_limit = DefaultBodyLimit::max(self.runtime.config().max_body_bytes);
        self.router = Some(router.layer(body_limit));
        self
    }

    /// Serve TLS (wss:// and https://) with `acceptor` (see [`tls_acceptor`]).
    ///
    /// rustls runs the handshakes. A TLS 1.3 connection's records are then
    /// protected by wsbus, which keeps an idle connection's keys as bytes
    /// (the configuration is copied with `enable_secret_extraction` set,
    /// which hands the traffic secrets over to wsbus and to nothing else).
    pub fn tls(mut self, acceptor: TlsAcceptor) -> Self {
        self.tls = Some(tls::server_config(acceptor.config()));
        self
    }

    /// The runtime the server's sockets live in.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Accept connections until `shutdown` completes, then shut down
    /// gracefully (close every socket with 1001, wait up to the drain
    /// timeout). Returns whether the drain finished in time.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> bool {
        let server = Arc::new(self);
        let runtime = server.runtime.clone();
        let sweeper = runtime.sessions().spawn_sweeper();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                () = runtime.shutdown_token().cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: back off, don't spin.
                        tracing::warn!(target: "wsbus::handshake", %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            runtime.metrics().connection_accepted();
            let server = server.clone();
            runtime
                .tracker()
                .spawn(async move { server.connection(stream, peer).await });
        }
        drop(listener);
        sweeper.abort();
        tracing::info!(target: "wsbus::handshake", sockets = runtime.hub().len(), "shutting down");
        runtime.shutdown().await
    }

    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        match self.tls.clone() {
            None => self.http1(TokioIo::new(stream), peer, false).await,
            Some(config) => {
                let handshake = tokio::time::timeout(
                    self.runtime.config().handshake_timeout,
                    tls::accept(stream, config),
                );
                match handshake.await {
                    Ok(Ok(tls)) => self.http1(TokioIo::new(tls), peer, true).await,
                    Ok(Err(err)) => {
                        tracing::debug!(target: "wsbus::handshake", %peer, %err, "TLS handshake failed")
                    }
                    Err(_) => {
                        tracing::debug!(target: "wsbus::handshake", %peer, "TLS handshake timed out")
                    }
                }
            }
        }
    }

    async fn http1<I>(self: Arc<Self>, io: I, peer: SocketAddr, tls: bool)
    where
        I: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
    {
        let config = self.runtime.config();
        let service = {
            let server = self.clone();
            let connection = ConnectionInfo { tls, peer };
            service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.route(req, connection).await) }
            })
        };
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(config.handshake_timeout)
            .max_buf_size(config.max_request_bytes.max(8192))
            .serve_connection(io, service)
            .with_upgrades();
        let mut conn = std::pin::pin!(conn);
        let cancelled = self.runtime.shutdown_token().cancelled();
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(target: "wsbus::handshake", %peer, %err, "HTTP connection ended");
                }
            }
            () = cancelled => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        connection: ConnectionInfo,
    ) -> Response<ResponseBody> {
        // WebSocket upgrades are GETs (RFC 6455 §4.1); other methods on an
        // endpoint's path (the bus's long-polling POSTs) are plain HTTP.
        let endpoint = self.endpoints.get(req.uri().path());
        if let Some(endpoint) = endpoint
            && (req.method() == http::Method::GET || self.router.is_none())
        {
            return endpoint
                .handle(&self.runtime, req, connection)
                .await
                .map(Either::Left);
        }
        let wants_websocket = req.headers().contains_key(http::header::UPGRADE);
        match (&self.router, &self.fallback) {
            (_, Some(fallback)) if wants_websocket || self.router.is_none() => fallback
                .handle(&self.runtime, req, connection)
                .await
                .map(Either::Left),
            (Some(router), _) => {
                let mut req = req;
                // The client as the router's handlers should see it: behind
                // trusted proxies, the scheme, host and address they report.
                let client = client_view(
                    connection.peer,
                    connection.tls,
                    req.headers(),
                    &self.runtime.security().trusted_proxies,
                );
                req.extensions_mut().insert(client);
                req.extensions_mut().insert(connection);
                req.extensions_mut().insert(self.runtime.clone());
                // A `Router` is an `Arc` inside: the clone is a count, and its
                // `poll_ready` is always ready.
                let response = match router.clone().call(req).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                response.map(Either::Right)
            }
            (None, _) => text_response(StatusCode::NOT_FOUND, "not found").map(Either::Left),
        }
    }
}
