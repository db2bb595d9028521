//! The request timeout (`server.request_timeout`): `504` for a request not answered in time.
//!
//! tower-http's `TimeoutLayer` creates a timer for every request, which registers in the
//! runtime's timer wheel when first polled and is removed again when the request ends: ~1,500
//! instructions and two locked wheel updates per request, for requests that mostly answer at
//! their first poll (`/health`, `/info`, every error). Here the timer is created only when the
//! request is still pending after its first poll, with the deadline counted from its start.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokio::time::{Instant, Sleep};
use tower::Service;

/// `504` for a request not answered within `timeout` (a layer:
/// `tower::layer::layer_fn(|inner| RequestTimeout::new(inner, timeout))`).
#[derive(Clone)]
pub struct RequestTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> RequestTimeout<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, timeout }
    }
}

impl<S, B, ResBody> Service<Request<B>> for RequestTimeout<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Timed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Timed {
            deadline: Instant::now() + self.timeout,
            inner: self.inner.call(request),
            timer: None,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct Timed<F> {
        #[pin]
        inner: F,
        // Boxed: a `Sleep` is 112 bytes that every enclosing layer's future would carry and
        // copy at each move, for the few requests still pending after their first poll.
        timer: Option<Pin<Box<Sleep>>>,
        deadline: Instant,
    }
}

impl<F, ResBody, E> Future for Timed<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: Default,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result);
        }
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(*this.deadline)));
        ready!(timer.as_mut().poll(cx));
        let mut response = Response::new(ResBody::default());
        *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::ServiceExt;

    use super::*;

    /// A service that answers after `delay` (at once for zero), with 200.
    fn answers_after(
        delay: Duration,
    ) -> impl Service<Request<()>, Response = Response<String>, Error = Infallible, Future: Send> + Clone
    {
        tower::service_fn(move |_: Request<()>| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok::<_, Infallible>(Response::new("done".to_owned()))
        })
    }

    async fn status(timeout: Duration, delay: Duration) -> StatusCode {
        let service = RequestTimeout::new(answers_after(delay), timeout);
        let response = service.oneshot(Request::new(())).await.unwrap();
        response.status()
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_pending_past_the_deadline_gets_504_at_the_deadline() {
        let started = Instant::now();
        assert_eq!(
            status(Duration::from_secs(2), Duration::from_secs(60)).await,
            504
        );
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_answered_before_the_deadline_keeps_its_answer() {
        assert_eq!(
            status(Duration::from_secs(2), Duration::from_millis(1_999)).await,
            200
        );
        assert_eq!(status(Duration::from_secs(2), Duration::ZERO).await, 200);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_counts_from_the_start_not_from_the_first_wait() {
        let mut service = RequestTimeout::new(
            answers_after(Duration::from_secs(60)),
            Duration::from_secs(2),
        );
        let future = service.call(Request::new(()));
        // Time passes before the request is first polled (a busy worker).
        tokio::time::advance(Duration::from_millis(1_500)).await;
        let started = Instant::now();
        assert_eq!(future.await.unwrap().status(), 504);
        assert_eq!(started.elapsed(), Duration::from_millis(500));
    }
}
