//! `Routes`: the API's routes, and the (method, path template) pairs they serve, recorded by the
//! same call that adds them. axum cannot list a router's routes, and the metrics need that list
//! at start: each pair's 5xx series must exist at 0 before its first error, or `rate()` never
//! counts that error (sparse errors would vanish after every restart).
//!
//! The routes become a `Router` only in `into_router`, given the layers to put around each
//! handler (`layers`): that is what serves each request through axum's route machinery once.

use axum::Router;
use axum::handler::{Handler, HandlerWithoutStateExt};
use axum::routing::MethodFilter;
use http::Method;

use crate::layers::Layers;

/// One (method, path template) pair the API serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
}

/// Adds one route (or the fallback) to a router, given the layers and the handlers' state.
type Add<S> = Box<dyn FnOnce(Router, &Layers, &S) -> Router + Send>;

/// The API's routes, extended only through methods that also record the endpoint. Calling two
/// methods with the same path serves both on it (axum merges them).
#[must_use]
pub struct Routes<S = ()> {
    routes: Vec<Add<S>>,
    fallback: Option<Add<S>>,
    endpoints: Vec<Endpoint>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self {
            routes: Vec::new(),
            fallback: None,
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
        self.routes.push(Box::new(move |router, layers, state| {
            layers.route(router, path, filter, handler.with_state(state.clone()))
        }));
        self.endpoints.push(Endpoint { method, path });
        self
    }

    /// Panics if both have a fallback, as `Router::merge` does.
    pub fn merge(mut self, other: Routes<S>) -> Self {
        assert!(
            self.fallback.is_none() || other.fallback.is_none(),
            "cannot merge two `Routes` that both have a fallback"
        );
        self.routes.extend(other.routes);
        self.fallback = self.fallback.or(other.fallback);
        self.endpoints.extend(other.endpoints);
        self
    }

    /// What answers a request no route matches; not an endpoint. Without one, axum's empty
    /// `404` does, still inside the layers.
    pub fn fallback<H: Handler<T, S>, T: 'static>(mut self, handler: H) -> Self {
        self.fallback = Some(Box::new(move |router, layers, state| {
            layers.fallback(router, handler.with_state(state.clone()))
        }));
        self
    }

    /// Gives the handlers their state; see `Router::with_state`.
    pub fn with_state<S2>(self, state: S) -> Routes<S2> {
        let give = |add: Add<S>| -> Add<S2> {
            let state = state.clone();
            Box::new(move |router, layers, _| add(router, layers, &state))
        };
        Routes {
            routes: self.routes.into_iter().map(give).collect(),
            fallback: self.fallback.map(give),
            endpoints: self.endpoints,
        }
    }
}

impl Routes {
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The router serving these routes, each handler inside `layers`.
    pub fn into_router(self, layers: &Layers) -> Router {
        let mut router = Router::new();
        for add in self.routes {
            router = add(router, layers, &());
        }
        let mut paths: Vec<_> = self.endpoints.iter().map(|e| e.path).collect();
        paths.sort_unstable();
        paths.dedup();
        for path in paths {
            router = layers.method_not_allowed(router, path);
        }
        match self.fallback {
            Some(add) => add(router, layers, &()),
            None => layers.fallback(
                router,
                (|| async { http::StatusCode::NOT_FOUND }).into_service(),
            ),
        }
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

        let router = routes.into_router(&Layers::none());
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
