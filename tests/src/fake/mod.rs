//! Fake external services, built to the official specs in `shared/specs/`:
//! real HTTP servers on 127.0.0.1 that record what they receive.

pub mod accounting;
pub mod discord;
pub mod openai;
pub mod otlp;
pub mod slack;
pub mod telegram;

use std::future::IntoFuture;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

/// Serves `router` on an ephemeral loopback port; returns its address.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake server");
    let addr = listener.local_addr().expect("fake server address");
    tokio::spawn(axum::serve(listener, router).into_future());
    addr
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}
