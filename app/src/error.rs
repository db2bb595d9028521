//! One error type, one JSON shape: `{"success":false,"error":{"code":"…","message":"…"}}`.

use std::borrow::Cow;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

/// What a handler answers when it cannot succeed. `NotFound` and `Rejected` carry their own
/// message, so a route says what went wrong without a variant of its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// `404 not_found`: `ApiError::not_found("no note with id 7")`; unknown paths get
    /// `ApiError::NO_ROUTE`.
    #[error("{0}")]
    NotFound(Cow<'static, str>),
    /// A request the route refuses (a malformed body or parameter, a value out of range, a
    /// full store), with a 4xx status and a message saying why; its `code` is the status's
    /// reason in snake case (`422` → `unprocessable_entity`). Extractor rejections become
    /// this too (`crate::extract`).
    #[error("{message}")]
    Rejected {
        status: StatusCode,
        message: Cow<'static, str>,
    },
    #[error("method not allowed for this route")]
    MethodNotAllowed,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("the request took longer than the server's time limit")]
    Timeout,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("internal server error")]
    Internal,
    /// An error injected on purpose (`crate::faults`), with the 5xx status it was given.
    #[error("fault injected on purpose: see /faults on the metrics port")]
    InjectedFault(StatusCode),
}

impl ApiError {
    /// The answer to a path that matches no route.
    pub const NO_ROUTE: Self = Self::NotFound(Cow::Borrowed("no route for this path"));

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::NotFound(message.into())
    }

    pub fn rejected(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self::Rejected {
            status,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Rejected { status, .. } => *status,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::InjectedFault(status) => *status,
        }
    }

    pub fn code(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Self::NotFound(_) => "not_found",
            Self::Rejected { status, .. } => return reason_code(*status).into(),
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Timeout => "timeout",
            Self::ShuttingDown => "shutting_down",
            Self::Internal => "internal",
            Self::InjectedFault(_) => "injected_fault",
        })
    }

    /// The error a layer's bare error status stands for, where it is one of ours.
    fn for_status(status: StatusCode) -> Option<Self> {
        match status {
            StatusCode::NOT_FOUND => Some(Self::NO_ROUTE),
            StatusCode::METHOD_NOT_ALLOWED => Some(Self::MethodNotAllowed),
            StatusCode::PAYLOAD_TOO_LARGE => Some(Self::PayloadTooLarge),
            StatusCode::GATEWAY_TIMEOUT => Some(Self::Timeout),
            StatusCode::INTERNAL_SERVER_ERROR => Some(Self::Internal),
            _ => None,
        }
    }
}

/// `422 Unprocessable Entity` → `unprocessable entity`.
fn reason(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("error").to_lowercase()
}

/// `422 Unprocessable Entity` → `unprocessable_entity`.
fn reason_code(status: StatusCode) -> String {
    reason(status).replace([' ', '-'], "_")
}

/// A body that is not JSON, not the expected type, or too large: its status (400, 415, 422,
/// 413) and axum's explanation, which names the field and position.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::rejected(rejection.status(), rejection.body_text())
    }
}

/// A path parameter that does not parse (`/notes/abc` for a number): 400 and axum's reason.
impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::rejected(rejection.status(), rejection.body_text())
    }
}

#[derive(Serialize)]
struct ErrorBody {
    success: bool,
    error: ErrorDetail,
}

#[derive(Serialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

fn error_body(code: String, message: String) -> Json<ErrorBody> {
    Json(ErrorBody {
        success: false,
        error: ErrorDetail { code, message },
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status(),
            error_body(self.code().into_owned(), self.to_string()),
        )
            .into_response();
        if self == Self::ShuttingDown {
            response.extensions_mut().insert(crate::shutdown::Draining);
        }
        response
    }
}

/// Gives error responses made by layers and by axum itself (405, 413, 504, extractor
/// rejections) the one JSON shape, keeping their status and headers (e.g. `Allow`).
pub fn json_error_bodies<B>(response: http::Response<B>) -> Response
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response.map(axum::body::Body::new);
    }
    let (code, message) = match ApiError::for_status(status) {
        Some(error) => (error.code().into_owned(), error.to_string()),
        None => (reason_code(status), reason(status)),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = error_body(code, message).into_response().into_body();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, body)
}
/// What `catch_panic` answers: the panic is logged, the client gets the JSON 500.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    tracing::error!(panic = %detail, "handler panicked");
    ApiError::Internal.into_response()
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use serde_json::{Value, json};

    use super::*;

    async fn answer(error: ApiError) -> (StatusCode, Value) {
        let response = error.into_response();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).expect("a JSON body"))
    }

    #[tokio::test]
    async fn a_not_found_with_its_own_message_keeps_the_one_shape() {
        let (status, body) = answer(ApiError::not_found("no note with id 7")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            json!({"success": false, "error": {"code": "not_found", "message": "no note with id 7"}})
        );
    }

    #[tokio::test]
    async fn an_unknown_path_still_says_there_is_no_route() {
        let (status, body) = answer(ApiError::NO_ROUTE).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            json!({"success": false, "error": {"code": "not_found", "message": "no route for this path"}})
        );
    }

    #[tokio::test]
    async fn a_rejection_is_coded_by_its_status() {
        let too_long = ApiError::rejected(StatusCode::UNPROCESSABLE_ENTITY, "text is too long");
        let (status, body) = answer(too_long).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            body,
            json!({"success": false, "error": {"code": "unprocessable_entity", "message": "text is too long"}})
        );
    }
}
