use axum::extract::State;
use axum::response::IntoResponse;

use crate::system_info::InfoSnapshot;

/// OS facts from the latest background snapshot, already serialized.
pub async fn info(State(snapshot): State<InfoSnapshot>) -> impl IntoResponse {
    super::json(snapshot.body())
}
