//! Mount a wsbus endpoint in an axum `Router`.
//!
//! ```no_run
//! # use wsbus::{Runtime, ServerConfig};
//! let runtime = Runtime::new(ServerConfig::default());
//! let router: axum::Router = axum::Router::new()
//!     .route("/ws", wsbus::axum::websocket(runtime.clone(), wsbus::echo::Echo));
//! ```
//!
//! The endpoint runs the same upgrade decision, origin rules and session
//! binding as [`crate::Server`]. Shut down with [`crate::Runtime::shutdown`].
//!
//! Such a route also works inside the router given to
//! [`Server::router`](crate::Server::router), though an endpoint registered
//! with [`Server::websocket`](crate::Server::websocket) is the shorter path
//! there (its upgrades skip the router).

use std::sync::Arc;

use ::axum::extract::Request;
use ::axum::response::{IntoResponse, Response};
use ::axum::routing::{MethodRouter, any};

use crate::app::WebSocketApp;
use crate::runtime::Runtime;
use crate::server::ConnectionInfo;

/// An axum route that serves `app`.
///
/// Whether the connection is TLS (for the origin rule and the session
/// cookie) comes from the [`ConnectionInfo`] extension that
/// [`crate::Server`] inserts; under another server (`axum::serve`) the
/// connection is taken as plain TCP.
pub fn websocket<A: WebSocketApp, S: Clone + Send + Sync + 'static>(
    runtime: Runtime,
    app: A,
) -> MethodRouter<S> {
    let app = Arc::new(app);
    any(move |req: Request| {
        let app = app.clone();
        let runtime = runtime.clone();
        async move {
            // Under another server than ours, the peer is unknown: the
            // unspecified address stands for it (no per-address limit can
            // tell clients apart then, and no proxy is trusted).
            let connection =
                req.extensions()
                    .get::<ConnectionInfo>()
                    .copied()
                    .unwrap_or(ConnectionInfo {
                        tls: false,
                        peer: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
                    });
            let response: Response = crate::upgrade::upgrade(&app, &runtime, req, connection)
                .await
                .into_response();
            response
        }
    })
}
