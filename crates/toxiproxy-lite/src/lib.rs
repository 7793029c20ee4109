//! toxiproxy-lite: a small server that speaks the Toxiproxy HTTP API (its types from `noxious`, a Rust port of
//! Toxiproxy) and moves the bytes with its own relay, whose toxics behave as Toxiproxy's do. It exists so the network-layer tests can inject latency,
//! cuts and partitions without a Go toolchain or Docker; with real `toxiproxy-server` on PATH the test
//! launcher uses that instead.
//!
//! Implemented (the subset `noxious-client` 1.0.4 uses, plus `GET /version`):
//!
//! | Method        | Path                              | Answer                                    |
//! |---------------|-----------------------------------|-------------------------------------------|
//! | GET           | `/version`                        | 200 `{"version": ...}`                    |
//! | POST          | `/reset`                          | 204, all proxies enabled, all toxics gone |
//! | POST          | `/populate`                       | 201, JSON array of proxies (as noxious-client expects) |
//! | GET / POST    | `/proxies`                        | 200 map name → proxy / 201 proxy          |
//! | GET / POST / DELETE | `/proxies/{name}`           | 200 / 200 (update, enable, disable, rename) / 204 |
//! | GET / POST    | `/proxies/{name}/toxics`          | 200 list / 200 toxic                      |
//! | GET / POST / DELETE | `/proxies/{name}/toxics/{toxic}` | 200 / 200 (update) / 204             |
//!
//! Errors are `{"error": message, "status": code}` like Toxiproxy's. Toxics are those noxious describes: latency,
//! bandwidth, slow_close, timeout, slicer, limit_data (no reset_peer). A disabled proxy holds no socket,
//! so connections to it are refused; disabling cuts every live connection. `listen` may use port 0: a free
//! port is picked and reported back in the proxy's `listen`.

// Test tooling for the network layer: a panic fails the test that uses it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod relay;
mod store;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::sync::Arc;
use store::Store;

/// An API error, rendered as Toxiproxy renders its errors.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    pub(crate) fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }
    pub(crate) fn server(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message, "status": self.status.as_u16() });
        (self.status, axum::Json(body)).into_response()
    }
}

type Shared = State<Arc<Store>>;
type ApiResult = Result<Response, ApiError>;

fn ok_json(status: StatusCode, value: impl serde::Serialize) -> ApiResult {
    let body = serde_json::to_value(value).map_err(|err| ApiError::server(err.to_string()))?;
    Ok((status, axum::Json(body)).into_response())
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|err| ApiError::bad_request(format!("bad request body: {err}")))
}

/// The HTTP API over a fresh, empty proxy store. Proxies live as long as the router (and its clones).
pub fn router() -> Router {
    router_over(Arc::new(Store::new()))
}

fn router_over(store: Arc<Store>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/reset", post(reset))
        .route("/populate", post(populate))
        .route("/proxies", get(list_proxies).post(create_proxy))
        .route("/proxies/{name}", get(get_proxy).post(update_proxy).patch(update_proxy).delete(delete_proxy))
        .route("/proxies/{name}/toxics", get(list_toxics).post(add_toxic))
        .route(
            "/proxies/{name}/toxics/{toxic}",
            get(get_toxic).post(update_toxic).patch(update_toxic).delete(remove_toxic),
        )
        .with_state(store)
}

/// Serves the API on `listener` until the listener fails. Dropping the future (or the runtime) stops the
/// API; proxies and their connections end when the runtime that runs them shuts down.
pub async fn serve(listener: tokio::net::TcpListener) -> Result<()> {
    serve_populated(listener, None).await
}

/// [`serve`], with the proxies of a Toxiproxy config file created first (what `toxiproxy-server -config FILE`
/// does): a JSON array of `{"name", "listen", "upstream", "enabled"}` objects, as `POST /populate` takes.
pub async fn serve_populated(listener: tokio::net::TcpListener, config: Option<&std::path::Path>) -> Result<()> {
    let addr = listener.local_addr().context("listener address")?;
    let store = Arc::new(Store::new());
    if let Some(file) = config {
        let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let proxies = serde_json::from_slice(&text).with_context(|| format!("parsing {}", file.display()))?;
        let created =
            store.populate(proxies).await.map_err(|e| anyhow::anyhow!("{}: {}", file.display(), e.message))?;
        eprintln!("toxiproxy-lite: {} proxies from {}", created.len(), file.display());
    }
    axum::serve(listener, router_over(store)).await.with_context(|| format!("serving the Toxiproxy API on {addr}"))
}

async fn version() -> ApiResult {
    ok_json(StatusCode::OK, json!({ "version": concat!(env!("CARGO_PKG_VERSION"), "-toxiproxy-lite") }))
}

async fn reset(State(store): Shared) -> ApiResult {
    store.reset().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn populate(State(store): Shared, body: Bytes) -> ApiResult {
    ok_json(StatusCode::CREATED, store.populate(parse(&body)?).await?)
}

async fn list_proxies(State(store): Shared) -> ApiResult {
    ok_json(StatusCode::OK, store.list().await)
}

async fn create_proxy(State(store): Shared, body: Bytes) -> ApiResult {
    ok_json(StatusCode::CREATED, store.create(parse(&body)?).await?)
}

async fn get_proxy(State(store): Shared, Path(name): Path<String>) -> ApiResult {
    ok_json(StatusCode::OK, store.get(&name).await?)
}

async fn update_proxy(State(store): Shared, Path(name): Path<String>, body: Bytes) -> ApiResult {
    // Toxiproxy accepts partial bodies: missing fields keep their current values.
    let mut current =
        serde_json::to_value(store.get(&name).await?.proxy).map_err(|e| ApiError::server(e.to_string()))?;
    let patch: serde_json::Value = parse(&body)?;
    let (Some(current_map), Some(patch_map)) = (current.as_object_mut(), patch.as_object()) else {
        return Err(ApiError::bad_request("expected a JSON object"));
    };
    for (key, value) in patch_map {
        current_map.insert(key.clone(), value.clone());
    }
    let config = serde_json::from_value(current).map_err(|err| ApiError::bad_request(err.to_string()))?;
    ok_json(StatusCode::OK, store.update(&name, config).await?)
}

async fn delete_proxy(State(store): Shared, Path(name): Path<String>) -> ApiResult {
    store.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_toxics(State(store): Shared, Path(name): Path<String>) -> ApiResult {
    ok_json(StatusCode::OK, store.toxics(&name).await?)
}

async fn add_toxic(State(store): Shared, Path(name): Path<String>, body: Bytes) -> ApiResult {
    ok_json(StatusCode::OK, store.add_toxic(&name, parse(&body)?).await?)
}

async fn get_toxic(State(store): Shared, Path((name, toxic)): Path<(String, String)>) -> ApiResult {
    ok_json(StatusCode::OK, store.toxic(&name, &toxic).await?)
}

async fn update_toxic(State(store): Shared, Path((name, toxic)): Path<(String, String)>, body: Bytes) -> ApiResult {
    ok_json(StatusCode::OK, store.update_toxic(&name, &toxic, parse(&body)?).await?)
}

async fn remove_toxic(State(store): Shared, Path((name, toxic)): Path<(String, String)>) -> ApiResult {
    store.remove_toxic(&name, &toxic).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
