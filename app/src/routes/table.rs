//! `Routes`: the API's router, and the (method, path template) pairs it serves, recorded by the
//! same call that routes them. axum cannot list a router's routes, and the metrics need that list
//! at start: each pair's 5xx series must exist at 0 before its first error, or `rate()` never
//! counts that error (sparse errors would vanish after every restart).

use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodFilter, on};
use http::Method;

/// One (method, path template) pair the API serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
}

/// A `Router` that can be extended only through methods that also record the endpoint. Calling
/// two methods with the same path serves both on it (axum merges them).
#[must_use]
pub struct Routes<S = ()> {
    router: Router<S>,
    endpoints: Vec<Endpoint>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self {
            router: Router::new(),
            endpoints: Vec::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(Method::GET, MethodFilter::GET, path, handler)
    }

    pub fn post<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(Method::POST, MethodFilter::POST, path, handler)
    }

    pub fn put<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(Method::PUT, MethodFilter::PUT, path, handler)
    }

    pub fn patch<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(Method::PATCH, MethodFilter::PATCH, path, handler)
    }

    pub fn delete<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(Method::DELETE, MethodFilter::DELETE, path, handler)
    }

    fn on<H: Handler<T, S>, T: 'static>(
        mut self,
        method: Method,
        filter: MethodFilter,
        path: &'static str,
        handler: H,
    ) -> Self {
        self.router = self.router.route(path, on(filter, handler));
        self.endpoints.push(Endpoint { method, path });
        self
    }

    pub fn merge(mut self, other: Routes<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.endpoints.extend(other.endpoints);
        self
    }

    /// What answers a request no route matches; not an endpoint.
    pub fn fallback<H: Handler<T, S>, T: 'static>(mut self, handler: H) -> Self {
        self.router = self.router.fallback(handler);
        self
    }

    /// Gives the handlers their state; see `Router::with_state`.
    pub fn with_state<S2>(self, state: S) -> Routes<S2> {
        Routes {
            router: self.router.with_state(state),
            endpoints: self.endpoints,
        }
    }
}

impl Routes {
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    pub fn into_router(self) -> Router {
        self.router
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::extract::MatchedPath;
    use tower::ServiceExt;

    use super::*;

    async fn matched(path: MatchedPath) -> String {
        path.as_str().to_owned()
    }

    #[tokio::test]
    async fn each_recorded_endpoint_is_served_under_its_template_and_nothing_else_is() {
        let routes: Routes = Routes::new()
            .get("/items/{id}", matched)
            .put("/items/{id}", matched)
            .merge(Routes::new().delete("/other", matched))
            .fallback(|| async { http::StatusCode::IM_A_TEAPOT });
        let expected = [
            (Method::GET, "/items/{id}", "/items/7"),
            (Method::PUT, "/items/{id}", "/items/7"),
            (Method::DELETE, "/other", "/other"),
        ];
        assert_eq!(
            routes.endpoints(),
            expected
                .clone()
                .map(|(method, path, _)| Endpoint { method, path })
        );

        let router = routes.into_router();
        let send = |method: Method, uri: &str| {
            let request = http::Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap();
            router.clone().oneshot(request)
        };
        for (method, template, uri) in expected {
            let response = send(method.clone(), uri).await.unwrap();
            assert_eq!(response.status(), 200, "{method} {uri}");
            let body = axum::body::to_bytes(response.into_body(), 1024).await;
            assert_eq!(body.unwrap(), template, "{method} {uri}");
        }
        // A method not recorded for a path is not served there.
        assert_eq!(send(Method::POST, "/items/7").await.unwrap().status(), 405);
        assert_eq!(send(Method::GET, "/nowhere").await.unwrap().status(), 418);
    }
}
