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

use std::sync::Arc;

use ::axum::extract::Request;
use ::axum::response::{IntoResponse, Response};
use ::axum::routing::{MethodRouter, any};

use crate::app::WebSocketApp;
use crate::runtime::Runtime;

/// An axum route that serves `app`. TLS is reported as absent: put a TLS
/// terminator's scheme in `X-Forwarded-Proto` once trusted proxies land.
pub fn websocket<A: WebSocketApp, S: Clone + Send + Sync + 'static>(
    runtime: Runtime,
    app: A,
) -> MethodRouter<S> {
    let app = Arc::new(app);
    any(move |req: Request| {
        let app = app.clone();
        let runtime = runtime.clone();
        async move {
            let response: Response =
                crate::upgrade::upgrade(&app, &runtime, req, false).into_response();
            response
        }
    })
}
