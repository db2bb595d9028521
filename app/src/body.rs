//! Request bodies are read whole, within `server.body_limit_bytes`, before the handler runs.
//!
//! A `Content-Length` over the limit is refused at once, unread. tower-http's
//! `RequestBodyLimitLayer` did that too, but a chunked body has no length: it was limited only
//! if a handler read it, and a `GET` handler never does, so a 200 KB chunked `GET` got `200`. A body nobody reads also ends the connection: hyper cannot
//! find the next request behind it, so a pipelined or keep-alive follow-up was dropped. Reading
//! it here enforces the limit for every body (`413`) and leaves the connection reusable. Bodies
//! are at most the limit (64 KiB by default), and a request without one costs a check.

use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures_util::future::{BoxFuture, Either};
use http::Request;
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use tower::{Layer, Service};

use crate::error::ApiError;

/// Reads each request's body (at most `limit` bytes) before the inner service sees it.
#[derive(Clone, Copy)]
pub struct ReadBodyLayer {
    pub limit: usize,
}

impl<S> Layer<S> for ReadBodyLayer {
    type Service = ReadBody<S>;

    fn layer(&self, inner: S) -> ReadBody<S> {
        ReadBody {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Clone)]
pub struct ReadBody<S> {
    inner: S,
    limit: usize,
}

impl<S> Service<Request<Body>> for ReadBody<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if request.body().is_end_stream() {
            return Either::Left(self.inner.call(request));
        }
        let declared = request.headers().get(http::header::CONTENT_LENGTH);
        let declared = declared.and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.limit as u64) {
            return Either::Right(Box::pin(async {
                Ok(ApiError::PayloadTooLarge.into_response())
            }));
        }
        // The clone serves this request; `self.inner`, made ready by `poll_ready`, stays for the
        // next (tower's guidance for services that call their inner one later).
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let limit = self.limit;
        Either::Right(Box::pin(async move {
            let (parts, body) = request.into_parts();
            match Limited::new(body, limit).collect().await {
                Ok(collected) => {
                    let body = Body::from(collected.to_bytes());
                    inner.call(Request::from_parts(parts, body)).await
                }
                Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                    Ok(ApiError::PayloadTooLarge.into_response())
                }
                Err(_) => Ok(ApiError::rejected(
                    http::StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                )
                .into_response()),
            }
        }))
    }
}
