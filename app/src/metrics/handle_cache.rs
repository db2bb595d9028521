//! A recorder that remembers the handles the Prometheus recorder gave out.
//!
//! axum-prometheus asks the global recorder for its three handles on every request (`gauge!`,
//! `counter!`, `histogram!` with the request's labels). The exporter answers each call by copying
//! the key into owned memory (`Key::to_retained`: an allocation per label) and finding it in its
//! registry with `Key`'s order-insensitive equality, which sorts both label lists; together that
//! was about 4,750 instructions per request, close to half of the metrics layer's cost (see
//! docs/performance.md). Here a request's key is found by its precomputed hash and compared label
//! by label in order, without allocating, and the exporter is only asked on a miss.
//!
//! Correct only because the exporter never drops a metric once registered: handles share their
//! storage with the registry for the life of the process, so a remembered handle is the one the
//! exporter would return. `PrometheusBuilder::idle_timeout` would break that (an evicted
//! metric's remembered handle would keep counting into storage nothing renders): do not set it
//! without removing this cache.

use std::sync::{PoisonError, RwLock};

use hashbrown::HashTable;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// Keys remembered per metric kind. The HTTP label set is bounded (routes x methods x statuses,
/// unknown paths all `unmatched`), far below this; the cap only keeps a future unbounded label
/// from growing memory here. Keys past it still work, at the exporter's full cost.
const CAPACITY: usize = 4096;

/// Wraps `inner`, answering `register_*` from remembered handles when it can.
pub struct CachingRecorder<R> {
    inner: R,
    counters: HandleCache<Counter>,
    gauges: HandleCache<Gauge>,
    histograms: HandleCache<Histogram>,
}

impl<R> CachingRecorder<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            counters: HandleCache::default(),
            gauges: HandleCache::default(),
            histograms: HandleCache::default(),
        }
    }
}

impl<R: Recorder> Recorder for CachingRecorder<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    // Metadata (target, level, module) is ignored, as the Prometheus recorder ignores it: the
    // handle depends on the key alone.
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.counters
            .get_or_register(key, || self.inner.register_counter(key, metadata))
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.gauges
            .get_or_register(key, || self.inner.register_gauge(key, metadata))
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.histograms
            .get_or_register(key, || self.inner.register_histogram(key, metadata))
    }
}

struct HandleCache<H> {
    // Read-mostly: after the first request of each label set every lookup is a hit.
    table: RwLock<HashTable<(Key, H)>>,
}

impl<H> Default for HandleCache<H> {
    fn default() -> Self {
        Self {
            table: RwLock::new(HashTable::new()),
        }
    }
}

impl<H: Clone> HandleCache<H> {
    fn get_or_register(&self, key: &Key, register: impl FnOnce() -> H) -> H {
        let hash = key.get_hash();
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, handle)) = table.find(hash, |(cached, _)| same_key(cached, key)) {
            return handle.clone();
        }
        drop(table);

        let handle = register();
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        // Another thread may have inserted the key meanwhile; the exporter gave both the same
        // handle, so keeping the first is enough.
        if table.len() < CAPACITY && table.find(hash, |(c, _)| same_key(c, key)).is_none() {
            table.insert_unique(hash, (key.to_retained(), handle.clone()), |(k, _)| {
                k.get_hash()
            });
        }
        handle
    }
}

/// Equal name and labels in the same order. Stricter than `Key`'s own equality, which ignores
/// label order at the price of sorting: a caller always lists its labels in the same order, and a
/// key spelt in another order is a miss that the exporter resolves to the same metric (it is then
/// remembered under both spellings).
fn same_key(cached: &Key, key: &Key) -> bool {
    cached.get_hash() == key.get_hash()
        && same_str(cached.name(), key.name())
        && cached.labels().len() == key.labels().len()
        && cached
            .labels()
            .zip(key.labels())
            .all(|(a, b)| same_str(a.key(), b.key()) && same_str(a.value(), b.value()))
}

/// Metric names and label keys are `&'static str`s, kept as such in the cached key, so most
/// comparisons end at the pointer; only label values need their bytes compared (with musl's
/// byte-at-a-time `memcmp`, that is still about half of what a lookup costs).
fn same_str(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || a == b
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    /// Records through the cache and renders what the exporter saw.
    fn render(record: impl FnOnce()) -> String {
        let prometheus = PrometheusBuilder::new().build_recorder();
        let handle = prometheus.handle();
        metrics::with_local_recorder(&CachingRecorder::new(prometheus), record);
        handle.render()
    }

    #[test]
    fn each_label_set_keeps_its_own_series() {
        let text = render(|| {
            // Twice each, interleaved, so the second round is answered from the cache.
            for _ in 0..2 {
                metrics::counter!("requests", "endpoint" => "/a", "status" => "200").increment(1);
                metrics::counter!("requests", "endpoint" => "/b", "status" => "200").increment(10);
                metrics::counter!("requests", "endpoint" => "/a", "status" => "404").increment(100);
                metrics::counter!("other", "endpoint" => "/a", "status" => "200").increment(1000);
                metrics::gauge!("pending", "endpoint" => "/a").increment(1.0);
                metrics::gauge!("pending", "endpoint" => "/b").increment(5.0);
                metrics::histogram!("latency", "endpoint" => "/a").record(1.0);
                metrics::histogram!("latency", "endpoint" => "/b").record(7.0);
            }
        });
        for series in [
            r#"requests{endpoint="/a",status="200"} 2"#,
            r#"requests{endpoint="/b",status="200"} 20"#,
            r#"requests{endpoint="/a",status="404"} 200"#,
            r#"other{endpoint="/a",status="200"} 2000"#,
            r#"pending{endpoint="/a"} 2"#,
            r#"pending{endpoint="/b"} 10"#,
            r#"latency_sum{endpoint="/a"} 2"#,
            r#"latency_sum{endpoint="/b"} 14"#,
        ] {
            assert!(text.contains(series), "missing {series}\n{text}");
        }
    }

    #[test]
    fn label_order_does_not_split_a_series() {
        let text = render(|| {
            metrics::counter!("requests", "method" => "GET", "status" => "200").increment(1);
            metrics::counter!("requests", "status" => "200", "method" => "GET").increment(1);
            metrics::counter!("requests", "method" => "GET", "status" => "200").increment(1);
        });
        let series: Vec<_> = text
            .lines()
            .filter(|l| l.starts_with("requests{"))
            .collect();
        assert_eq!(series.len(), 1, "{text}");
        assert!(series[0].ends_with(" 3"), "{text}");
    }

    #[test]
    fn keys_past_the_capacity_still_count() {
        let text = render(|| {
            for round in 0..2 {
                for i in 0..CAPACITY + 10 {
                    metrics::counter!("many", "i" => i.to_string()).increment(round + 1);
                }
            }
        });
        for i in [0, CAPACITY - 1, CAPACITY, CAPACITY + 9] {
            let series = format!(r#"many{{i="{i}"}} 3"#);
            assert!(text.contains(&series), "missing {series}");
        }
    }
}
