//! The JSON log format: one object per event, with the fields of the span it happened in.
//!
//! ```json
//! {"timestamp":"2026-11-26T23:34:32.096486Z","level":"INFO","message":"request completed",
//!  "status":200,"latency_ms":0.11,"target":"backend::http",
//!  "span":{"method":"GET","route":"/api/v1/health","path":"/api/v1/health","request_id":"…","name":"request"}}
//! ```
//!
//! The same shape as tracing-subscriber's `json()` with `flatten_event` and `with_current_span`,
//! which cost ~23,000 instructions per request line (a third of the service's user-space work):
//! it keeps a span's fields as a JSON text, parses that text back into a `serde_json::Value` for
//! every event, and checks every written fragment for UTF-8 again. Here a span's fields are
//! encoded once, when recorded, and an event is written into a reused buffer (docs/performance.md).
//! Strings are escaped by serde_json, so a line stays valid JSON whatever a client sends.

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write as _};
use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::{LookupSpan, Registry};

use super::sink::LogSink;

/// The tracing layer that writes each event as a JSON line to `sink`.
pub struct JsonLines {
    sink: LogSink,
}

impl JsonLines {
    pub fn new(sink: LogSink) -> Self {
        Self { sink }
    }
}

/// A span's fields, each encoded once as JSON `"name":value` in `json`. A field recorded again
/// gets a new one (the old bytes stay unused), so every name appears once in a line.
struct SpanFields {
    json: Vec<u8>,
    fields: Vec<(&'static str, Range<usize>)>,
}

impl SpanFields {
    fn write_to(&self, line: &mut Vec<u8>) {
        for (_, range) in &self.fields {
            line.extend_from_slice(&self.json[range.clone()]);
            line.push(b',');
        }
    }
}

/// An event's own fields, written straight into its line as `"name":value,`.
struct EventFields<'a>(&'a mut Vec<u8>);

/// Where a visited field's JSON goes: a span's fields or an event's line.
trait Fields {
    fn field(&mut self, field: &Field, write: impl FnOnce(&mut Vec<u8>));
}

impl Fields for SpanFields {
    fn field(&mut self, field: &Field, write: impl FnOnce(&mut Vec<u8>)) {
        // `otel.name`, `otel.kind`, …: what tracing-opentelemetry makes of the exported span,
        // not the request's data. Left out, a line has the same span fields with traces on or
        // off, and the span's name is not formatted a second time (~1,200 instructions).
        if field.name().starts_with("otel.") {
            return;
        }
        self.set(field.name(), write);
    }
}

impl SpanFields {
    /// Sized for a request's fields, so recording them does not reallocate.
    fn with_capacity(fields: usize) -> Self {
        Self {
            json: Vec::with_capacity(256),
            fields: Vec::with_capacity(fields),
        }
    }

    /// Sets field `name` to what `write` writes.
    fn set(&mut self, name: &'static str, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.json.len();
        string(&mut self.json, name);
        self.json.push(b':');
        write(&mut self.json);
        let range = start..self.json.len();
        match self.fields.iter_mut().find(|(old, _)| *old == name) {
            Some((_, old)) => *old = range,
            None => self.fields.push((name, range)),
        }
    }
}

thread_local! {
    /// The fields of the request this thread is handling, when that request has no span.
    static REQUEST: Cell<Option<SpanFields>> = const { Cell::new(None) };
}

/// A request's fields without a span: its lines' `"span"` object, as if a `request` span held
/// them. A tracing span costs each request a slot in the registry, a map of extensions and a
/// table lookup at each poll (a sixth of its user-space work); with traces off and no filter
/// on span fields, nothing else reads it (`telemetry::request_spans`). Every event logged on
/// the thread inside `scope`, and outside any span of its own, carries these fields.
pub struct RequestFields(Option<SpanFields>);

/// A string value of `RequestFields::of`.
#[derive(Clone, Copy)]
pub enum Text<'a> {
    /// Text that cannot hold anything JSON escapes, not checked: an HTTP token such as a method
    /// (RFC 9110 §5.6.2: no control characters, quotes or backslashes), or our own text.
    Token(&'a str),
    /// Any text, escaped where it must be.
    Str(&'a str),
}

impl RequestFields {
    /// A request's string fields, in this order; later `record`s add to them. Written in one
    /// pass into a buffer sized for them: field by field (a reservation, a search for an
    /// earlier value and two quoted strings each) they cost a request ~130 instructions more.
    /// Names must differ, and are ours: nothing in them needs escaping.
    pub fn of(fields: &[(&'static str, Text<'_>)]) -> Self {
        let text = |value: &Text<'_>| match value {
            Text::Token(text) | Text::Str(text) => text.len(),
        };
        // `"name":"value",` for each: what `SpanFields::write_to` copies into every line.
        let len = fields
            .iter()
            .map(|(name, value)| name.len() + text(value) + 6);
        let mut span = SpanFields {
            json: Vec::with_capacity(len.sum()),
            fields: Vec::with_capacity(fields.len()),
        };
        for &(name, value) in fields {
            debug_assert!(
                span.fields.iter().all(|(old, _)| *old != name),
                "{name} twice"
            );
            let start = span.json.len();
            plain(&mut span.json, name);
            span.json.push(b':');
            match value {
                Text::Token(text) => plain(&mut span.json, text),
                Text::Str(text) => string(&mut span.json, text),
            }
            span.fields.push((name, start..span.json.len()));
        }
        Self(Some(span))
    }

    /// Runs `f` with these fields as the thread's current request (restored after, even if
    /// `f` panics); `record` inside it adds to them.
    pub fn scope<R>(&mut self, f: impl FnOnce() -> R) -> R {
        struct Restore<'a> {
            mine: &'a mut Option<SpanFields>,
            outer: Option<SpanFields>,
        }
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                *self.mine = REQUEST.replace(self.outer.take());
            }
        }
        let outer = REQUEST.replace(self.0.take());
        let _restore = Restore {
            mine: &mut self.0,
            outer,
        };
        f()
    }
}

/// Records `name` on the current request: on its `RequestFields` when it has them, else on
/// the current span (a field the span did not declare is ignored, as tracing does).
pub fn record(name: &'static str, value: impl tracing::Value + serde::Serialize) {
    match REQUEST.take() {
        Some(mut fields) => {
            fields.set(name, |out| serialized(out, &value));
            REQUEST.set(Some(fields));
        }
        None => {
            tracing::Span::current().record(name, value);
        }
    }
}

/// Sets the string field `name` of `span` on the JSON lines alone, where they hold the span's
/// fields; no other layer sees it. For the trace id, which the span exports as its own: recorded
/// through tracing, every layer would take it too (OpenTelemetry as an attribute, converted and
/// encoded at each export: ~2,300 instructions a request). `false` where the JSON lines do not
/// hold the span (the text format): the caller records it through tracing.
pub fn record_on_lines(span: &tracing::Span, name: &'static str, value: &str) -> bool {
    on_lines(span, |fields, _| fields.set(name, |out| string(out, value)))
}

/// Runs `f` with the JSON fields the lines hold for `span`, and its name. `false` where they
/// hold none: a span the filter disabled, or no JSON layer (the text format).
fn on_lines(span: &tracing::Span, f: impl FnOnce(&mut SpanFields, &str)) -> bool {
    let found = |(id, dispatch): (&Id, &tracing::Dispatch)| {
        let span = dispatch.downcast_ref::<Registry>()?.span(id)?;
        let mut extensions = span.extensions_mut();
        f(extensions.get_mut::<SpanFields>()?, span.name());
        Some(())
    };
    span.with_subscriber(found).flatten().is_some()
}

impl Fields for EventFields<'_> {
    fn field(&mut self, field: &Field, write: impl FnOnce(&mut Vec<u8>)) {
        // What tracing-log adds to a `log` record: its metadata, shown as the event's own.
        if field.name().starts_with("log.") {
            return;
        }
        string(self.0, field.name());
        self.0.push(b':');
        write(self.0);
        self.0.push(b',');
    }
}

/// Encodes each field's value as JSON, by its type.
struct Visitor<'a, F>(&'a mut F);

impl<F: Fields> Visit for Visitor<'_, F> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.field(field, |out| string(out, value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.field(field, |out| debug(out, value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.field(field, |out| display(out, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.field(field, |out| serialized(out, value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.field(field, |out| serialized(out, value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.field(field, |out| serialized(out, value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.field(field, |out| serialized(out, value));
    }
}

/// A JSON string: quoted, and escaped by serde_json when it holds a control character, a quote
/// or a backslash. Most values (routes, ids, messages, names) hold none and are copied as they
/// are.
fn string(out: &mut Vec<u8>, value: &str) {
    if needs_escape(value.as_bytes()) {
        serde_json::to_writer(out, value).expect("writing to a Vec cannot fail");
    } else {
        quoted(out, value);
    }
}

/// A JSON string of text known to hold nothing JSON escapes (our own names and messages, HTTP
/// tokens): the escape check is a tenth of a request line's cost when made for every string.
fn plain(out: &mut Vec<u8>, value: &str) {
    debug_assert!(!needs_escape(value.as_bytes()), "{value:?} needs escaping");
    quoted(out, value);
}

/// `value` between quotes, as it is.
fn quoted(out: &mut Vec<u8>, value: &str) {
    out.reserve(value.len() + 2);
    out.push(b'"');
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
}

/// Whether `bytes` holds a byte JSON must escape: below 0x20, `"` or `\`. Without an early
/// exit, so the compiler checks 16 bytes at a time (a hand-written 8-byte version counted more
/// instructions per request).
fn needs_escape(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |escape, &b| {
        escape | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// A value as serde_json writes it: a number or bool (a float that is not finite as `null`),
/// or a string, escaped.
fn serialized(out: &mut Vec<u8>, value: impl serde::Serialize) {
    serde_json::to_writer(out, &value).expect("writing to a Vec cannot fail");
}

fn debug(out: &mut Vec<u8>, value: &dyn fmt::Debug) {
    formatted(out, format_args!("{value:?}"));
}

fn display(out: &mut Vec<u8>, value: &dyn fmt::Display) {
    formatted(out, format_args!("{value}"));
}

thread_local! {
    /// The line being written.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A formatted value as a JSON string, escaped as it is written.
fn formatted(out: &mut Vec<u8>, args: fmt::Arguments<'_>) {
    out.push(b'"');
    let _ = Escaped(out).write_fmt(args);
    out.push(b'"');
}

/// The inside of a JSON string: what is written to it, escaped.
struct Escaped<'a>(&'a mut Vec<u8>);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if needs_escape(text.as_bytes()) {
            // serde_json escapes it as a whole string: keep what is between the quotes.
            let quoted = serde_json::to_string(text).map_err(|_| fmt::Error)?;
            self.0
                .extend_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
        } else {
            self.0.extend_from_slice(text.as_bytes());
        }
        Ok(())
    }
}

/// `"2026-11-26T23:34:32.096486Z"`: UTC, microseconds, as before.
fn timestamp(out: &mut Vec<u8>) {
    timestamp_at(out, SystemTime::now());
}

thread_local! {
    /// The whole second last written by this thread, and its `2026-11-26T23:34:32`: formatting
    /// the date and time cost more than the rest of a request's line.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

fn timestamp_at(out: &mut Vec<u8>, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (second, mut text) = SECOND.get();
    if second != since.as_secs() {
        let whole = UNIX_EPOCH + Duration::from_secs(since.as_secs());
        let formatted = humantime::format_rfc3339_seconds(whole).to_string();
        text.copy_from_slice(&formatted.as_bytes()[..19]);
        SECOND.set((since.as_secs(), text));
    }
    let mut micros = [b'0'; 6];
    let mut rest = since.subsec_micros();
    for digit in micros.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.push(b'"');
    out.extend_from_slice(&text);
    out.push(b'.');
    out.extend_from_slice(&micros);
    out.extend_from_slice(b"Z\"");
}

impl<S> Layer<S> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::with_capacity(attrs.fields().len());
        attrs.record(&mut Visitor(&mut fields));
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(fields) = span.extensions_mut().get_mut::<SpanFields>() {
            values.record(&mut Visitor(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        write_line(&self.sink, |line| self.format(event, &ctx, line));
    }
}

/// Formats a line with `format` into this thread's reused buffer and hands it to `sink`.
fn write_line(sink: &LogSink, format: impl Fn(&mut Vec<u8>)) {
    let write = |line: &mut Vec<u8>| {
        line.clear();
        format(line);
        sink.write_line(line);
        // One huge line must not keep its buffer for the life of the thread.
        line.shrink_to(4096);
    };
    let reused = LINE.try_with(|line| match line.try_borrow_mut() {
        Ok(mut line) => {
            write(&mut line);
            true
        }
        Err(_) => false,
    });
    // An event logged while formatting another (from a Debug impl) gets a buffer of its own.
    if reused != Ok(true) {
        write(&mut Vec::new());
    }
}

/// A request's own line: what the `tracing` event with fields `status` and `latency_ms` and
/// this message would carry. `message` and `target` are the caller's constants and hold nothing
/// JSON escapes (they are not checked).
pub struct RequestLine {
    pub level: Level,
    pub message: &'static str,
    pub target: &'static str,
    pub status: u16,
    pub latency: Duration,
}

/// Writes `request` as its event would give it, without the event: where the request has
/// `RequestFields`, the JSON layer is the event's only reader, and dispatching it through
/// tracing (callsite, filter, visitor, the message's `fmt::Arguments`) cost ~1,000 instructions
/// per request. The caller checks the filter first. `false` when the JSON layer is not
/// installed (tests with a subscriber of their own): then the caller logs the event.
pub fn request_line(request: &RequestLine) -> bool {
    let Some(sink) = super::json_sink() else {
        return false;
    };
    write_request_line(sink, request, request_span);
    true
}

/// `request_line` for a request whose fields are in its tracing `span` (traces on, or a filter
/// on span fields): the line its event would give inside the span. With traces on, that event
/// would also become an OpenTelemetry span event, built, converted and encoded at every export
/// (~7,000 instructions a request); the exported span carries the status instead
/// (`telemetry::end_trace`). `false` when the JSON lines do not hold the span (the text format,
/// or a span the filter disabled): then the caller logs the event.
pub fn request_line_in(span: &tracing::Span, request: &RequestLine) -> bool {
    super::json_sink().is_some_and(|sink| write_request_line_in(sink, span, request))
}

fn write_request_line_in(sink: &LogSink, span: &tracing::Span, request: &RequestLine) -> bool {
    on_lines(span, |fields, name| {
        write_request_line(sink, request, |line| span_object(line, Some(fields), name));
    })
}

fn write_request_line(sink: &LogSink, request: &RequestLine, span: impl Fn(&mut Vec<u8>)) {
    write_line(sink, |line| {
        line_start(line, request.level);
        line.extend_from_slice(b"\"message\":");
        plain(line, request.message);
        line.extend_from_slice(b",\"status\":");
        serialized(line, request.status);
        line.extend_from_slice(b",\"latency_ms\":");
        millis(line, request.latency);
        line.extend_from_slice(b",\"target\":");
        plain(line, request.target);
        line_end(line, &span);
    });
}

/// `latency` in milliseconds to the microsecond, as serde_json writes `latency_ms(latency)`
/// (shortest form: `0.614`, `12.0`), without its float formatting.
fn millis(out: &mut Vec<u8>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    serialized(out, micros / 1000);
    out.push(b'.');
    let fraction = [micros / 100 % 10, micros / 10 % 10, micros % 10];
    let digits = fraction
        .iter()
        .rposition(|&d| d != 0)
        .map_or(1, |last| last + 1);
    out.extend(fraction[..digits].iter().map(|&d| b'0' + d as u8));
}

/// A latency as the request line's `latency_ms`: milliseconds, to the microsecond.
pub fn latency_ms(latency: Duration) -> f64 {
    latency.as_micros() as f64 / 1000.0
}

/// `{"timestamp":…,"level":…,`: what every line starts with.
fn line_start(line: &mut Vec<u8>, level: Level) {
    line.extend_from_slice(b"{\"timestamp\":");
    timestamp(line);
    line.extend_from_slice(b",\"level\":\"");
    line.extend_from_slice(level.as_str().as_bytes());
    line.extend_from_slice(b"\",");
}

/// The span object `span` writes (if any), closing the line.
fn line_end(line: &mut Vec<u8>, span: impl FnOnce(&mut Vec<u8>)) {
    span(line);
    line.extend_from_slice(b"}\n");
}

/// `,"span":{…,"name":…}`: a span's fields (if the JSON layer holds them) and its name.
fn span_object(line: &mut Vec<u8>, fields: Option<&SpanFields>, name: &str) {
    line.extend_from_slice(b",\"span\":{");
    if let Some(fields) = fields {
        fields.write_to(line);
    }
    line.extend_from_slice(b"\"name\":");
    string(line, name);
    line.push(b'}');
}

/// `,"span":{…,"name":"request"}` from the thread's current `RequestFields`, if it has one.
fn request_span(line: &mut Vec<u8>) {
    if let Some(fields) = REQUEST.take() {
        line.extend_from_slice(b",\"span\":{");
        fields.write_to(line);
        line.extend_from_slice(b"\"name\":\"request\"}");
        REQUEST.set(Some(fields));
    }
}

impl JsonLines {
    fn format<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>, line: &mut Vec<u8>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        line_start(line, *meta.level());
        event.record(&mut Visitor(&mut EventFields(line)));
        line.extend_from_slice(b"\"target\":");
        string(line, meta.target());
        line_end(line, |line| match ctx.event_span(event) {
            Some(span) => span_object(line, span.extensions().get::<SpanFields>(), span.name()),
            None => request_span(line),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};
    use tracing::field::Empty;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Recorded(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Recorded {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What `sink` wrote to `out`, once closed.
    fn closed(sink: &LogSink, out: &Recorded) -> String {
        sink.close();
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    /// Each line of `text` from its `"level"` on (what two lines written apart can share).
    fn after_timestamps(text: &str) -> Vec<&str> {
        text.lines()
            .map(|l| &l[l.find("\"level\"").unwrap()..])
            .collect()
    }

    /// The lines `log` writes, each parsed (a line that is not JSON fails the test).
    fn lines(log: impl FnOnce()) -> Vec<Value> {
        let out = Recorded::default();
        let sink = LogSink::new(Box::new(out.clone())).unwrap();
        let subscriber = tracing_subscriber::registry().with(JsonLines::new(sink.clone()));
        tracing::subscriber::with_default(subscriber, log);
        sink.close();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn an_event_in_a_span_carries_its_fields_and_the_spans() {
        let lines = lines(|| {
            let span =
                tracing::info_span!(target: "svc::http", "request", method = "GET", fault = Empty);
            let _entered = span.enter();
            span.record("fault", "latency");
            tracing::info!(target: "svc::http", status = 200u16, latency_ms = 0.25, ok = true, "request completed");
        });
        let [line] = lines.as_slice() else {
            panic!("{lines:?}")
        };
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "request completed");
        assert_eq!(line["status"], 200);
        assert_eq!(line["latency_ms"], 0.25);
        assert_eq!(line["ok"], true);
        assert_eq!(line["target"], "svc::http");
        assert_eq!(
            line["span"],
            json!({"method": "GET", "fault": "latency", "name": "request"})
        );
        let timestamp = line["timestamp"].as_str().unwrap();
        assert_eq!(
            timestamp.len(),
            "2026-11-26T23:34:32.096486Z".len(),
            "{timestamp}"
        );
        assert!(timestamp.ends_with('Z'));
    }

    #[test]
    fn request_fields_are_the_span_of_events_in_their_scope_only() {
        let lines = lines(|| {
            let mut fields =
                RequestFields::of(&[("method", Text::Token("GET")), ("path", Text::Str("/a\"b"))]);
            tracing::info!("before");
            fields.scope(|| {
                record("fault", "latency");
                record("fault_delay_ms", 25u64);
                tracing::warn!("inside");
                // A span of the handler's own is the one its events report, as with spans.
                tracing::info_span!("inner", step = 1).in_scope(|| tracing::info!("nested"));
            });
            tracing::info!("after");
            fields.scope(|| tracing::info!("again"));
        });
        let span = |i: usize| lines[i].get("span").cloned();
        assert_eq!(span(0), None, "{lines:?}");
        let request = json!({"method": "GET", "path": "/a\"b", "fault": "latency", "fault_delay_ms": 25, "name": "request"});
        assert_eq!(span(1), Some(request.clone()));
        assert_eq!(span(2), Some(json!({"step": 1, "name": "inner"})));
        assert_eq!(span(3), None, "the scope ended: {lines:?}");
        assert_eq!(span(4), Some(request), "kept what was recorded");
    }

    #[test]
    fn a_scope_restores_the_outer_request_even_when_it_panics() {
        let lines = lines(|| {
            let mut outer = RequestFields::of(&[("request_id", Text::Str("outer"))]);
            outer.scope(|| {
                let mut inner = RequestFields::of(&[("request_id", Text::Str("inner"))]);
                let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    inner.scope(|| panic!("handler panicked"))
                }));
                assert!(panicked.is_err());
                tracing::info!("outer again");
                inner.scope(|| tracing::info!("inner again"));
            });
        });
        assert_eq!(lines[0]["span"]["request_id"], "outer");
        assert_eq!(lines[1]["span"]["request_id"], "inner");
    }

    #[test]
    fn record_outside_request_fields_goes_to_the_current_span() {
        let lines = lines(|| {
            let span = tracing::info_span!("request", fault = Empty);
            span.in_scope(|| {
                record("fault", "error");
                record("undeclared", 1u64);
                tracing::info!("in span");
            });
        });
        assert_eq!(
            lines[0]["span"],
            json!({"fault": "error", "name": "request"})
        );
    }

    #[test]
    fn a_request_line_written_directly_is_the_line_its_event_gives() {
        let out = Recorded::default();
        let sink = LogSink::new(Box::new(out.clone())).unwrap();
        let subscriber = tracing_subscriber::registry().with(JsonLines::new(sink.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let mut fields = RequestFields::of(&[
                ("method", Text::Token("GET")),
                ("path", Text::Str("/a\"b\n")),
            ]);
            let request = RequestLine {
                level: Level::WARN,
                message: "request failed",
                target: "svc::http",
                status: 503,
                latency: Duration::from_micros(125),
            };
            fields.scope(|| {
                let (message, status) = (request.message, i64::from(request.status));
                let latency_ms = latency_ms(request.latency);
                // The shape of `request_log`'s event: the message a `&str` field, given first.
                tracing::warn!(target: "svc::http", message, status, latency_ms);
                write_request_line(&sink, &request, request_span);
            });
            let outside = RequestLine {
                level: Level::INFO,
                message: "outside",
                status: 200,
                latency: Duration::from_micros(1_500),
                ..request
            };
            write_request_line(&sink, &outside, request_span);
        });
        let text = closed(&sink, &out);
        // Byte for byte after the timestamp: same keys, same order, same escaping.
        let [event, direct, outside] = after_timestamps(&text)[..] else {
            panic!("{text}")
        };
        assert_eq!(direct, event);
        let parsed: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(parsed["span"]["path"], "/a\"b\n");
        assert_eq!(parsed["status"], 503);
        assert_eq!(
            outside,
            r#""level":"INFO","message":"outside","status":200,"latency_ms":1.5,"target":"svc::http"}"#
        );
    }

    #[test]
    fn a_request_line_written_in_a_span_is_the_line_its_event_gives() {
        let out = Recorded::default();
        let sink = LogSink::new(Box::new(out.clone())).unwrap();
        let subscriber = tracing_subscriber::registry().with(JsonLines::new(sink.clone()));
        let request = RequestLine {
            level: Level::INFO,
            message: "request completed",
            target: "svc::http",
            status: 200,
            latency: Duration::from_micros(2_250),
        };
        tracing::subscriber::with_default(subscriber, || {
            let span =
                tracing::info_span!("request", method = "GET", path = "/a\"b", fault = Empty);
            span.record("fault", "latency");
            span.in_scope(|| {
                let (message, status) = (request.message, i64::from(request.status));
                let latency_ms = latency_ms(request.latency);
                tracing::info!(target: "svc::http", message, status, latency_ms);
            });
            assert!(write_request_line_in(&sink, &span, &request));
            // A span the filter disabled has no fields to write: the caller logs the event.
            assert!(!write_request_line_in(
                &sink,
                &tracing::Span::none(),
                &request
            ));
        });
        // Without the JSON lines (the text format) the span holds no JSON fields either.
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            let span = tracing::info_span!("request", method = "GET");
            assert!(!write_request_line_in(&sink, &span, &request));
        });
        let text = closed(&sink, &out);
        let [event, direct] = after_timestamps(&text)[..] else {
            panic!("{text}")
        };
        assert_eq!(direct, event);
        let parsed: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(
            parsed["span"],
            json!({"method": "GET", "path": "/a\"b", "fault": "latency", "name": "request"})
        );
        assert_eq!(parsed["latency_ms"], 2.25);
    }

    #[test]
    fn a_field_recorded_again_appears_once_with_its_last_value() {
        let lines = lines(|| {
            let span = tracing::info_span!("request", fault = Empty);
            span.record("fault", "latency");
            span.record("fault", "latency+error");
            span.in_scope(|| tracing::warn!("injected"));
        });
        let raw = lines[0].to_string();
        assert_eq!(raw.matches("\"fault\"").count(), 1, "{raw}");
        assert_eq!(lines[0]["span"]["fault"], "latency+error");
    }

    #[test]
    fn a_field_recorded_on_the_lines_alone_reaches_no_other_layer() {
        let (seen, layer) = seen_fields();
        let out = Recorded::default();
        let sink = LogSink::new(Box::new(out.clone())).unwrap();
        let subscriber = tracing_subscriber::registry()
            .with(layer)
            .with(JsonLines::new(sink.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", trace_id = Empty);
            assert!(record_on_lines(&span, "trace_id", "4bf9"));
            span.in_scope(|| tracing::info!("request completed"));
        });
        sink.close();
        let line: Value = serde_json::from_slice(&out.0.lock().unwrap()).unwrap();
        assert_eq!(line["span"]["trace_id"], "4bf9");
        assert_eq!(*seen.lock().unwrap(), Vec::<String>::new());
        // Without the JSON lines (the text format) the caller must record it itself.
        let (seen, layer) = seen_fields();
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let span = tracing::info_span!("request", trace_id = Empty);
            assert!(!record_on_lines(&span, "trace_id", "4bf9"));
            span.record("trace_id", "4bf9");
        });
        assert_eq!(*seen.lock().unwrap(), ["trace_id"]);
    }

    /// A layer that notes the name of every field recorded on a span after its creation.
    fn seen_fields() -> (
        Arc<Mutex<Vec<String>>>,
        impl Layer<tracing_subscriber::Registry>,
    ) {
        struct Seen(Arc<Mutex<Vec<String>>>);
        impl<S: Subscriber> Layer<S> for Seen {
            fn on_record(&self, _: &Id, values: &Record<'_>, _: Context<'_, S>) {
                struct Names<'a>(&'a mut Vec<String>);
                impl Visit for Names<'_> {
                    fn record_debug(&mut self, field: &Field, _: &dyn fmt::Debug) {
                        self.0.push(field.name().to_owned());
                    }
                }
                values.record(&mut Names(&mut self.0.lock().unwrap()));
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        (seen.clone(), Seen(seen))
    }

    #[test]
    fn a_spans_otel_fields_are_left_to_the_exporter() {
        let lines = lines(|| {
            let name = Some(tracing::field::display("GET /api/v1/health"));
            let span = tracing::info_span!(
                "request",
                route = "/x",
                otel.name = name,
                otel.kind = "server"
            );
            span.in_scope(|| tracing::info!("request completed"));
        });
        assert_eq!(lines[0]["span"], json!({"route": "/x", "name": "request"}));
    }

    #[test]
    fn whatever_a_client_sends_the_line_stays_valid_json() {
        let nasty = "a\"b\\c\n\r\t\u{0}\u{1b}[31m\u{7f}é😀</script>";
        let lines = lines(|| {
            let span = tracing::info_span!("request", path = nasty, id = ?nasty);
            span.in_scope(|| tracing::error!(header = nasty, "saw {}", nasty));
        });
        let line = &lines[0];
        assert_eq!(line["span"]["path"], nasty);
        assert_eq!(line["span"]["id"], format!("{nasty:?}"));
        assert_eq!(line["header"], nasty);
        assert_eq!(line["message"], format!("saw {nasty}"));
    }

    #[test]
    fn needs_escape_finds_every_byte_json_escapes_wherever_it_is() {
        let escaped = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
        for len in 0..=17 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    // Around it bytes that are close to the ones looked for, but allowed.
                    let mut text = vec![b' '; len];
                    text.iter_mut().step_by(2).for_each(|b| *b = b'#');
                    text[at] = byte;
                    assert_eq!(
                        needs_escape(&text),
                        escaped(byte),
                        "{byte:#x} at {at} of {len}"
                    );
                }
            }
        }
        assert!(!needs_escape(b""));
        assert!(!needs_escape("/api/v1/héllo😀\u{7f}".as_bytes()));
    }

    #[test]
    fn latencies_are_written_as_serde_json_writes_their_milliseconds() {
        let micros = (0..3_000).chain([10_000, 10_010, 123_456, 999_999_999, u64::from(u32::MAX)]);
        for micros in micros {
            let latency = Duration::from_micros(micros);
            let mut out = Vec::new();
            millis(&mut out, latency);
            let expected = serde_json::to_string(&latency_ms(latency)).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{micros} µs");
        }
    }

    #[test]
    fn timestamps_read_as_humantime_writes_them() {
        // Second boundaries, a leap day, the epoch, and times read out of order.
        let seconds = [
            0,
            59,
            60,
            951_782_399,
            951_782_400,
            1_798_761_599,
            1_798_761_600,
            60,
        ];
        for second in seconds {
            for micros in [0, 1, 999_999, 123_456] {
                let time = UNIX_EPOCH + Duration::new(second, micros * 1_000 + 999);
                let mut out = Vec::new();
                timestamp_at(&mut out, time);
                let expected = format!("\"{}\"", humantime::format_rfc3339_micros(time));
                assert_eq!(String::from_utf8(out).unwrap(), expected);
            }
        }
    }

    #[test]
    fn events_outside_spans_and_odd_numbers_are_written() {
        let lines = lines(|| {
            tracing::info!(
                nan = f64::NAN,
                big = u64::MAX,
                neg = -3i64,
                error = &io::Error::other("boom") as &dyn std::error::Error,
                "plain"
            );
        });
        let line = &lines[0];
        assert!(line.get("span").is_none());
        assert_eq!(line["nan"], Value::Null);
        assert_eq!(line["big"], u64::MAX);
        assert_eq!(line["neg"], -3);
        assert_eq!(line["error"], "boom");
    }

    #[test]
    fn a_value_that_logs_while_it_is_formatted_does_not_break_the_line() {
        struct Noisy;
        impl fmt::Debug for Noisy {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // tracing drops an event dispatched from inside a scoped subscriber; the
                // global one (the service's) delivers it, and it gets a buffer of its own.
                tracing::info!(n = 1, "from inside {}", 2);
                f.write_str("noisy")
            }
        }
        let lines = lines(|| tracing::info!(value = ?Noisy, "outer {}", 1));
        let outer = lines.last().unwrap();
        assert_eq!(outer["message"], "outer 1");
        assert_eq!(outer["value"], "noisy");
    }
}
