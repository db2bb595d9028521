//! A panic in a handler (or in a layer inside this one) becomes the JSON `500` of
//! `error::panic_response`, and the server keeps serving.
//!
//! tower-http's `CatchPanicLayer` does the same but boxes every response body into its own
//! `UnsyncBoxBody` (to give the panic response and the inner one a common type), which the
//! router then boxes again into axum's `Body`: two allocations, and two dynamic calls per body
//! poll, on every request (~250 user-space instructions, docs/performance.md). Here the
//! common type is axum's `Body` itself, which the inner responses already have.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::response::Response;
use http::Request;
use tower::Service;

use crate::error::panic_response;

/// Catches panics of `inner`'s `call` and of its future's `poll` (a layer:
/// `tower::layer::layer_fn(CatchPanic::new)`).
#[derive(Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S> CatchPanic<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B, ResBody> Service<Request<B>> for CatchPanic<S>
where
    S: Service<Request<B>, Response = http::Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Caught<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The closure borrows the request: `catch_unwind` moves its closure through a union
        // and back, and a closure holding the request itself (~200 bytes) was copied four
        // times per request.
        let mut request = Some(request);
        let inner = &mut self.inner;
        let call = || inner.call(request.take().expect("called once"));
        match catch_unwind(AssertUnwindSafe(call)) {
            Ok(future) => Caught::Running { future },
            Err(panic) => Caught::Panicked {
                response: Some(panic_response(panic)),
            },
        }
    }
}

pin_project_lite::pin_project! {
    #[project = CaughtProj]
    pub enum Caught<F> {
        Running { #[pin] future: F },
        Panicked { response: Option<Response> },
    }
}

impl<F, ResBody, E> Future for Caught<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CaughtProj::Running { future } => {
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    // A `Body` stays as it is (`Body::new` unwraps it), so nothing is boxed.
                    Ok(poll) => poll.map(|result| result.map(|r| r.map(Body::new))),
                    // The future is not polled again: the caller drops it once it is ready.
                    Err(panic) => Poll::Ready(Ok(panic_response(panic))),
                }
            }
            CaughtProj::Panicked { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::StatusCode;
    use http_body_util::BodyExt;
    use tower::{ServiceExt, service_fn};

    use super::*;

    async fn status_and_body<S>(service: S) -> (StatusCode, String)
    where
        S: Service<Request<Body>, Response = Response, Error = Infallible>,
    {
        let response = service.oneshot(Request::new(Body::empty())).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_panic_while_polling_is_the_json_500() {
        let service = CatchPanic::new(service_fn(|_: Request<Body>| async {
            if true {
                panic!("in the future");
            }
            Ok::<_, Infallible>(Response::new(Body::empty()))
        }));
        let (status, body) = status_and_body(service).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains(r#""code":"internal""#), "{body}");
    }

    #[tokio::test]
    async fn a_panic_in_call_is_the_json_500() {
        let service = CatchPanic::new(service_fn(
            |_: Request<Body>| -> std::future::Ready<Result<Response, Infallible>> {
                panic!("in call")
            },
        ));
        let (status, body) = status_and_body(service).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains(r#""code":"internal""#), "{body}");
    }

    #[tokio::test]
    async fn an_answer_passes_unchanged() {
        let service = CatchPanic::new(service_fn(|_: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::from("fine")))
        }));
        assert_eq!(
            status_and_body(service).await,
            (StatusCode::OK, "fine".to_owned())
        );
    }
}
