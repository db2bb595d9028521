use axum::extract::State;
use axum::response::IntoResponse;
use http::{HeaderValue, header};

use crate::system_info::InfoSnapshot;

/// OS facts from the latest background snapshot, already serialized.
pub async fn info(State(snapshot): State<InfoSnapshot>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        snapshot.body(),
    )
}
