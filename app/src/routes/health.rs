use axum::extract::State;
use axum::response::IntoResponse;

use crate::error::ApiError;
use crate::shutdown::Readiness;

/// The original service's body, byte for byte.
const SUCCESS: &str = r#"{"success":true}"#;

fn success() -> impl IntoResponse {
    super::json(SUCCESS)
}

/// Liveness: the process serves HTTP.
pub async fn health() -> impl IntoResponse {
    success()
}

/// Readiness: 200 while serving, 503 from the moment shutdown begins.
pub async fn ready(State(readiness): State<Readiness>) -> Result<impl IntoResponse, ApiError> {
    if readiness.is_ready() {
        Ok(success())
    } else {
        Err(ApiError::ShuttingDown)
    }
}
