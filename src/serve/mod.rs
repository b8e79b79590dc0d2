//! `mnist-ae serve`: the explorer, a local web app over trained runs. One embedded page (no
//! files are served from disk, nothing is fetched from the network) and a JSON API
//! ([`api`]): draw a digit and see its reconstruction, code, class probabilities, anomaly
//! score and nearest training images; move over the map of the test codes; turn the codes'
//! principal axes; compare runs side by side; follow a run's loss curves while it trains.
//!
//! Model work runs on tokio's blocking pool, at most one computation per core at a time;
//! request bodies are limited to [`BODY_LIMIT`] bytes.

pub mod api;
pub mod state;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use burn::prelude::*;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::run::Run;
use state::RunState;

/// Largest request body accepted (a code of 4,096 numbers fits several times over).
pub const BODY_LIMIT: usize = 256 * 1024;

/// The page, with its script and style.
const PAGE: &str = include_str!("page.html");

/// The runs being explored.
pub struct Explorer {
    /// The runs, in the order given.
    pub runs: Vec<Arc<RunState>>,
    permits: Semaphore,
}

/// Where a run's data comes from.
#[derive(Debug, Clone)]
pub struct DataOptions {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// Whether missing files may be downloaded.
    pub allow_download: bool,
}

/// A URL-safe name for a run folder: its name, with anything but letters, digits, `-`, `_`
/// and `.` replaced.
fn url_name(dir: &Path) -> String {
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean.chars().all(|c| c == '.') {
        "run".into()
    } else {
        clean
    }
}

impl Explorer {
    /// Opens the runs in `dirs` on `device` and prepares each (see [`RunState::new`]);
    /// `progress` hears which run is being prepared.
    pub fn open(
        dirs: &[PathBuf],
        data: &DataOptions,
        device: &Device,
        mut progress: impl FnMut(&str),
    ) -> Result<Explorer> {
        if dirs.is_empty() {
            return Err(Error::config("run", "name at least one run folder"));
        }
        let mut runs: Vec<Arc<RunState>> = Vec::new();
        for dir in dirs {
            let mut name = url_name(dir);
            let mut n = 2;
            while runs.iter().any(|r| r.name == name) {
                name = format!("{}-{n}", url_name(dir));
                n += 1;
            }
            let run = Run::open(dir, device)?;
            progress(&name);
            let dataset = run.data(data.data_dir.as_deref(), data.allow_download)?;
            runs.push(Arc::new(RunState::new(name, run, dataset)?));
        }
        // One model computation per worker thread (`--threads`, default one per core).
        Ok(Explorer {
            runs,
            permits: Semaphore::new(rayon::current_num_threads()),
        })
    }

    /// The web app: the page at `/`, the API under `/api`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/", get(page))
            .route("/api/runs", get(api::runs))
            .route("/api/{run}/reconstruct", post(api::reconstruct))
            .route("/api/{run}/decode", post(api::decode))
            .route("/api/{run}/map", get(api::map))
            .route("/api/{run}/map/decode", get(api::map_decode))
            .route("/api/{run}/test/{index}", get(api::test_image))
            .route("/api/{run}/metrics", get(api::metrics))
            .fallback(api::not_found)
            .method_not_allowed_fallback(api::wrong_method)
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .layer(axum::middleware::from_fn(refuse_declared_oversize))
            .with_state(self)
    }
}

/// Answers a request whose declared length is over [`BODY_LIMIT`] at once, without reading
/// its body (a body sent without a length is cut off at the limit while it is read).
async fn refuse_declared_oversize(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > BODY_LIMIT as u64 => api::ApiError(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is {n} bytes, over the limit of {BODY_LIMIT}"),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:"),
        ],
        PAGE,
    )
}

/// Serves `explorer` on `addr` until `shutdown` completes; `ready` hears the bound address
/// (with the port chosen when `addr` asks for port 0).
pub async fn serve(
    explorer: Arc<Explorer>,
    addr: SocketAddr,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::config("port", format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::config("port", e.to_string()))?;
    ready(bound);
    axum::serve(listener, explorer.router())
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::config("port", format!("serving on {bound}: {e}")))
}
