//! Extractors whose rejections are `ApiError`s: a body or path parameter that does not parse
//! gets the one JSON error shape with axum's explanation, which names the field and the
//! position, instead of a bare status. Handlers use these instead of axum's own.

use axum::extract::{FromRequest, FromRequestParts};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::ApiError;

/// `axum::Json`, rejecting with `ApiError`; as a response, the value serialized as JSON.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path`, rejecting with `ApiError`.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::post;
    use http::{Request, StatusCode, header};
    use http_body_util::BodyExt;
    use serde::Deserialize;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::*;

    #[derive(Deserialize)]
    struct Add {
        n: u64,
    }

    async fn add(Path(id): Path<u64>, Json(add): Json<Add>) -> Json<u64> {
        Json(id + add.n)
    }

    async fn post_json(path: &str, body: &str) -> (StatusCode, Value) {
        let request = Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let router = Router::new().route("/{id}", post(add));
        let response = router.oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).expect("a JSON body"))
    }

    #[tokio::test]
    async fn parsed_values_reach_the_handler_and_its_value_is_answered_as_json() {
        assert_eq!(
            post_json("/7", r#"{"n":1}"#).await,
            (StatusCode::OK, json!(8))
        );
    }

    #[tokio::test]
    async fn what_does_not_parse_is_an_api_error_that_says_why() {
        for (path, body, status, code, says) in [
            ("/seven", r#"{"n":1}"#, 400, "bad_request", "seven"),
            (
                "/7",
                r#"{"n":"one"}"#,
                422,
                "unprocessable_entity",
                "n: invalid type",
            ),
            ("/7", "{", 400, "bad_request", "JSON"),
        ] {
            let (got, answer) = post_json(path, body).await;

            assert_eq!(got.as_u16(), status, "{answer}");
            assert_eq!(answer["success"], false, "{answer}");
            assert_eq!(answer["error"]["code"], code, "{answer}");
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(says),
                "{message:?} should mention {says:?}"
            );
        }
    }
}
