//! The listener: one port for WebSocket upgrades and plain HTTP, over TCP or
//! TLS, served by hyper.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::app::WebSocketApp;
use crate::runtime::Runtime;
use crate::upgrade::{text_response, upgrade};

/// A response future of an HTTP route.
pub type HttpFuture = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

/// What an HTTP route sees.
#[derive(Clone, Debug)]
pub struct HttpContext {
    pub runtime: Runtime,
    pub tls: bool,
    pub peer: SocketAddr,
}

/// A plain-HTTP handler: the request with its body read (bounded by
/// `ServerConfig::max_body_bytes`).
pub type HttpHandler = Arc<dyn Fn(HttpContext, Request<Bytes>) -> HttpFuture + Send + Sync>;

/// A type-erased WebSocket endpoint.
trait Endpoint: Send + Sync {
    fn handle(&self, runtime: &Runtime, req: Request<Incoming>, tls: bool)
    -> Response<Full<Bytes>>;
}

struct AppEndpoint<A>(Arc<A>);

impl<A: WebSocketApp> Endpoint for AppEndpoint<A> {
    fn handle(
        &self,
        runtime: &Runtime,
        req: Request<Incoming>,
        tls: bool,
    ) -> Response<Full<Bytes>> {
        upgrade(&self.0, runtime, req, tls)
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
/// every other path, and an HTTP handler for the rest.
pub struct Server {
    runtime: Runtime,
    endpoints: HashMap<String, Arc<dyn Endpoint>>,
    fallback: Option<Arc<dyn Endpoint>>,
    http: Option<HttpHandler>,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("endpoints", &self.endpoints.keys().collect::<Vec<_>>())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    pub fn new(runtime: Runtime) -> Self {
        Server {
            runtime,
            endpoints: HashMap::new(),
            fallback: None,
            http: None,
            tls: None,
        }
    }

    /// Serve `app` at exactly `path`.
    pub fn websocket<A: WebSocketApp>(mut self, path: &str, app: A) -> Self {
        self.endpoints
            .insert(path.to_owned(), Arc::new(AppEndpoint(Arc::new(app))));
        self
    }

    /// Serve `app` on every path without an endpoint or an HTTP answer.
    pub fn websocket_fallback<A: WebSocketApp>(mut self, app: A) -> Self {
        self.fallback = Some(Arc::new(AppEndpoint(Arc::new(app))));
        self
    }

    /// Answer plain HTTP requests on paths without a WebSocket endpoint.
    pub fn http(mut self, handler: HttpHandler) -> Self {
        self.http = Some(handler);
        self
    }

    pub fn tls(mut self, acceptor: TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

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
            Some(acceptor) => {
                let handshake = tokio::time::timeout(
                    self.runtime.config().handshake_timeout,
                    acceptor.accept(stream),
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
            service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.route(req, peer, tls).await) }
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
        peer: SocketAddr,
        tls: bool,
    ) -> Response<Full<Bytes>> {
        // WebSocket upgrades are GETs (RFC 6455 §4.1); other methods on an
        // endpoint's path (the bus's long-polling POSTs) are plain HTTP.
        let endpoint = self.endpoints.get(req.uri().path()).cloned();
        if let Some(endpoint) = endpoint
            && (req.method() == http::Method::GET || self.http.is_none())
        {
            return endpoint.handle(&self.runtime, req, tls);
        }
        let wants_websocket = req.headers().contains_key(http::header::UPGRADE);
        match (&self.http, &self.fallback) {
            (_, Some(fallback)) if wants_websocket || self.http.is_none() => {
                fallback.handle(&self.runtime, req, tls)
            }
            (Some(http), _) => {
                let (parts, body) = req.into_parts();
                let body = match Limited::new(body, self.runtime.config().max_body_bytes)
                    .collect()
                    .await
                {
                    Ok(collected) => collected.to_bytes(),
                    Err(_) => {
                        return text_response(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "request body too large",
                        );
                    }
                };
                let ctx = HttpContext {
                    runtime: self.runtime.clone(),
                    tls,
                    peer,
                };
                http(ctx, Request::from_parts(parts, body)).await
            }
            (None, _) => text_response(StatusCode::NOT_FOUND, "not found"),
        }
    }
}
