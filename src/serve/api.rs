//! The explorer's JSON API. Every answer is JSON; every bad request (unknown run, malformed or
//! oversized body, wrong lengths, numbers that are not finite) is a 4xx with a one-line
//! `{"error": …}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::state::RunState;
use super::Explorer;
use crate::data::PIXELS;

/// An error answer: status and one line.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult<T> = std::result::Result<Json<T>, ApiError>;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// The body of a request, as JSON of type `T`.
fn body<T: for<'de> Deserialize<'de>>(
    b: std::result::Result<Bytes, BytesRejection>,
) -> std::result::Result<T, ApiError> {
    let b = b.map_err(|e| ApiError(e.status(), e.body_text()))?;
    serde_json::from_slice(&b).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => bad(format!("not what this endpoint takes: {e}")),
        _ => bad(format!("malformed JSON: {e}")),
    })
}

/// `v` as single-precision numbers, once checked: `n` finite numbers, each inside `[lo, hi]`
/// when given, else of size at most `limit`. Read in double precision, so that a number too
/// large for single precision is named as such rather than turned into an infinity.
fn check(
    name: &str,
    v: &[f64],
    n: usize,
    range: Option<(f64, f64)>,
    limit: f64,
) -> std::result::Result<Vec<f32>, ApiError> {
    if v.len() != n {
        return Err(bad(format!("{name}: {} numbers, expected {n}", v.len())));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(bad(format!("{name}[{i}] is not a finite number")));
    }
    if let Some((lo, hi)) = range {
        if let Some(i) = v.iter().position(|&x| x < lo || x > hi) {
            return Err(bad(format!("{name}[{i}] = {} is not in {lo}..{hi}", v[i])));
        }
    }
    if let Some(i) = v.iter().position(|x| x.abs() > limit) {
        return Err(bad(format!(
            "{name}[{i}] is too large (over {limit:e} in size)"
        )));
    }
    Ok(v.iter().map(|&x| x as f32).collect())
}

fn run<'a>(ex: &'a Explorer, name: &str) -> std::result::Result<&'a Arc<RunState>, ApiError> {
    ex.runs
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no run named '{name}'")))
}

/// Runs model work on the blocking pool, at most as many at once as the explorer allows.
async fn work<T: Send + 'static>(
    ex: &Explorer,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::result::Result<T, ApiError> {
    let _permit = ex
        .permits
        .acquire()
        .await
        .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into()))?;
    tokio::task::spawn_blocking(|| crate::device::without_denormals(f))
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the computation failed".into(),
            )
        })
}

/// One run in `GET /api/runs`.
#[derive(Serialize)]
pub struct RunInfo {
    name: String,
    model: String,
    latent_dim: usize,
    variational: bool,
    classes: Vec<String>,
    trained: String,
    dataset: String,
}

/// `GET /api/runs`.
pub async fn runs(State(ex): State<Arc<Explorer>>) -> Json<Vec<RunInfo>> {
    Json(
        ex.runs
            .iter()
            .map(|r| RunInfo {
                name: r.name.clone(),
                model: r.run.config.model.name().to_string(),
                latent_dim: r.run.config.model.latent_dim,
                variational: r.run.config.model.is_variational(),
                classes: r.classes.clone(),
                trained: r.run.trained(),
                dataset: r.run.config.dataset.clone(),
            })
            .collect(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PixelsIn {
    pixels: Vec<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeIn {
    code: Vec<f64>,
}

/// A nearest training image.
#[derive(Serialize)]
pub struct Neighbour {
    pub index: usize,
    pub label: u8,
    pub distance: f32,
    pub pixels: Vec<f32>,
}

/// The answer to `reconstruct`.
#[derive(Serialize)]
pub struct Reconstruction {
    pub reconstruction: Vec<f32>,
    pub code: Vec<f32>,
    pub probabilities: Vec<f64>,
    pub anomaly: Anomaly,
    pub neighbours: Vec<Neighbour>,
}

/// The anomaly score of an image: its reconstruction MSE and where it falls among the test
/// images' scores.
#[derive(Serialize)]
pub struct Anomaly {
    pub mse: f64,
    pub percentile: f64,
}

/// Everything the explorer says about one image (pixels in [0, 1]).
pub fn reconstruction(r: &RunState, pixels: &[f32]) -> Reconstruction {
    let reconstruction = r.reconstruct(pixels);
    let code = r.encode(pixels);
    let mse = pixels
        .iter()
        .zip(&reconstruction)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        / PIXELS as f64;
    // The test scores are MSEs on the model's scale: [-1, 1] spans twice [0, 1].
    let (lo, hi) = r.run.scale().range();
    let model_mse = mse * ((hi - lo) as f64).powi(2);
    Reconstruction {
        probabilities: r.probabilities(&code),
        anomaly: Anomaly {
            mse: model_mse,
            percentile: r.percentile(model_mse),
        },
        neighbours: r
            .neighbours(&code, 8)
            .into_iter()
            .filter_map(|(index, distance)| {
                let (pixels, label) = r.image(false, index)?;
                Some(Neighbour {
                    index,
                    label,
                    distance,
                    pixels,
                })
            })
            .collect(),
        reconstruction,
        code,
    }
}

/// `POST /api/{run}/reconstruct` `{"pixels": [784 numbers in 0..1]}`.
pub async fn reconstruct(
    State(ex): State<Arc<Explorer>>,
    Path(name): Path<String>,
    b: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Reconstruction> {
    let r = run(&ex, &name)?.clone();
    let input: PixelsIn = body(b)?;
    let pixels = check("pixels", &input.pixels, PIXELS, Some((0.0, 1.0)), 1.0)?;
    Ok(Json(work(&ex, move || reconstruction(&r, &pixels)).await?))
}

/// Decoded pixels.
#[derive(Serialize)]
pub struct Pixels {
    pub pixels: Vec<f32>,
}

/// `POST /api/{run}/decode` `{"code": [latent numbers]}`.
pub async fn decode(
    State(ex): State<Arc<Explorer>>,
    Path(name): Path<String>,
    b: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Pixels> {
    let r = run(&ex, &name)?.clone();
    let input: CodeIn = body(b)?;
    let code = check(
        "code",
        &input.code,
        r.run.config.model.latent_dim,
        None,
        1e6,
    )?;
    let pixels = work(&ex, move || r.decode(&code)).await?;
    Ok(Json(Pixels { pixels }))
}

/// `GET /api/{run}/map`: the test codes in 2-D, and the principal axes of the codes.
pub async fn map(
    State(ex): State<Arc<Explorer>>,
    Path(name): Path<String>,
) -> std::result::Result<Response, ApiError> {
    let r = run(&ex, &name)?;
    Ok(Json(json!({
        "projection": r.map.projection,
        "points": r.map.points,
        "pca": r.pca,
    }))
    .into_response())
}

/// Where on the map to decode.
#[derive(Deserialize)]
pub struct MapAt {
    x: f32,
    y: f32,
}

/// `GET /api/{run}/map/decode?x=…&y=…`: the code under a point of the map, decoded. On a PCA
/// map the code is the point itself in the plane of the two axes (the exact inverse of the
/// projection there); on a t-SNE map, which has no inverse, a blend of the codes of the 8
/// nearest test images, weighted by inverse distance.
pub async fn map_decode(
    State(ex): State<Arc<Explorer>>,
    Path(name): Path<String>,
    at: std::result::Result<axum::extract::Query<MapAt>, axum::extract::rejection::QueryRejection>,
) -> std::result::Result<Response, ApiError> {
    let r = run(&ex, &name)?.clone();
    let axum::extract::Query(at) = at.map_err(|e| bad(e.body_text()))?;
    if !(at.x.is_finite() && at.y.is_finite()) || at.x.abs() > 1e6 || at.y.abs() > 1e6 {
        return Err(bad("x and y must be finite numbers of a sensible size"));
    }
    let out = work(&ex, move || {
        let (code, method) = if r.map.projection == "pca" {
            let mut code = r.pca.mean.clone();
            for (k, t) in [at.x, at.y].into_iter().enumerate() {
                if let Some(axis) = r.pca.axes.get(k) {
                    for (c, a) in code.iter_mut().zip(axis) {
                        *c += t * a;
                    }
                }
            }
            (code, "pca-inverse")
        } else {
            let mut near: Vec<(f32, usize)> = r
                .map
                .points
                .iter()
                .map(|p| ((p.x - at.x).hypot(p.y - at.y), p.index))
                .collect();
            let k = near.len().min(8);
            near.select_nth_unstable_by(k.saturating_sub(1), |a, b| a.0.total_cmp(&b.0));
            let mut code = vec![0f32; r.run.config.model.latent_dim];
            let mut total = 0f32;
            for &(d, i) in &near[..k] {
                let w = 1.0 / (d + 1e-3);
                total += w;
                for (c, v) in code.iter_mut().zip(&r.test_codes[i]) {
                    *c += w * v;
                }
            }
            code.iter_mut()
                .for_each(|c| *c /= total.max(f32::MIN_POSITIVE));
            (code, "tsne-blend")
        };
        let pixels = r.decode(&code);
        json!({ "pixels": pixels, "code": code, "method": method })
    })
    .await?;
    Ok(Json(out).into_response())
}

/// A test image.
#[derive(Serialize)]
pub struct TestImage {
    /// Its index in the test set.
    pub index: usize,
    /// Its class.
    pub label: u8,
    /// Its pixels, in [0, 1].
    pub pixels: Vec<f32>,
    /// Its code.
    pub code: Vec<f32>,
}

/// `GET /api/{run}/test/{index}`: a test image, in [0, 1], with its label.
pub async fn test_image(
    State(ex): State<Arc<Explorer>>,
    Path((name, index)): Path<(String, String)>,
) -> std::result::Result<Response, ApiError> {
    let r = run(&ex, &name)?;
    let index: usize = index.parse().map_err(|_| {
        bad(format!(
            "test image `{index}`: not an index (a whole number from 0)"
        ))
    })?;
    let (pixels, label) = r.image(true, index).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "no test image {index} (the test set has {})",
                r.data.test.len()
            ),
        )
    })?;
    Ok(Json(TestImage {
        index,
        label,
        pixels,
        code: r.test_codes[index].clone(),
    })
    .into_response())
}

/// `GET /api/{run}/metrics`: the run's training history as it stands (it grows while the run
/// trains).
pub async fn metrics(
    State(ex): State<Arc<Explorer>>,
    Path(name): Path<String>,
) -> std::result::Result<Response, ApiError> {
    let r = run(&ex, &name)?;
    let path = r.run.dir.join(crate::train::metrics::METRICS_FILE);
    let rows = if path.exists() {
        crate::train::metrics::read(&path)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    } else {
        Vec::new()
    };
    Ok(Json(json!({ "epochs": r.run.config.epochs, "history": rows })).into_response())
}

/// Any other path.
pub async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such page or endpoint".into())
}

/// The answer to a known path asked with another method (`GET` of a `POST` endpoint).
pub async fn wrong_method(method: axum::http::Method) -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("this endpoint does not take {method}"),
    )
}
