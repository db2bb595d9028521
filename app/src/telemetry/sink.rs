//! Where log lines go: a buffer that a thread of its own writes to stdout in batches.
//!
//! Writing each line with its own `write(2)` under stdout's lock cost every request a system
//! call, and a stdout that blocks (a stalled log collector, a full pipe) stalled every worker
//! behind that lock. Here a line is copied into a shared buffer; the writer thread lets
//! `BATCH_DELAY` of lines gather (less once `HIGH_WATER` bytes are waiting) and writes them in
//! one call. A line wakes it only when it sleeps with nothing to gather (the first line after a
//! quiet spell) or when `HIGH_WATER` is reached: each wake-up is two context switches, on the
//! CPU that serves requests. While the output cannot keep up, the buffer holds at
//! most `MAX_PENDING` bytes: further lines are dropped and counted, never queued without bound
//! and never waited for (`log_lines_dropped_total` on `/metrics`).
//!
//! `close` writes what is buffered and joins the thread; lines logged after it are written
//! directly. A process that is killed loses at most the last `BATCH_DELAY` of lines.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the first line of a batch may wait for others: the delay before a line is visible.
pub const BATCH_DELAY: Duration = Duration::from_millis(10);
/// Waiting bytes that start a write without waiting for `BATCH_DELAY`.
const HIGH_WATER: usize = 16 * 1024;
/// Waiting bytes beyond which lines are dropped: the output has stalled.
pub const MAX_PENDING: usize = 1024 * 1024;

type Output = Box<dyn Write + Send>;

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    closed: bool,
    /// The writer sleeps until a line comes, with no timeout: the next line must wake it.
    idle: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    dropped: AtomicU64,
    /// The output; the writer thread holds it while it writes, `close` afterwards.
    output: Mutex<Output>,
}

/// A handle to the sink; clones share it.
#[derive(Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain bytes behind: still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LogSink {
    /// A sink writing to stdout.
    pub fn stdout() -> std::io::Result<Self> {
        Self::new(Box::new(std::io::stdout()))
    }

    /// A sink writing to `output`, with its writer thread started.
    pub fn new(output: Output) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
            output: Mutex::new(output),
        });
        let writer = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn({
                let shared = shared.clone();
                move || write_batches(&shared)
            })?;
        Ok(Self {
            shared,
            writer: Arc::new(Mutex::new(Some(writer))),
        })
    }

    /// Queues one complete line (with its newline). Never blocks on the output.
    pub fn write_line(&self, line: &[u8]) {
        let mut pending = lock(&self.shared.pending);
        if pending.closed {
            drop(pending);
            self.write_now(line);
            return;
        }
        let before = pending.lines.len();
        if before + line.len() > MAX_PENDING {
            drop(pending);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.lines.extend_from_slice(line);
        let after = pending.lines.len();
        // Wake the writer only if it sleeps with no timeout, or once a batch is large; while
        // it gathers, its timeout writes this line.
        let idle = std::mem::take(&mut pending.idle);
        drop(pending);
        if idle || (before < HIGH_WATER && after >= HIGH_WATER) {
            self.shared.wake.notify_one();
        }
    }

    fn write_now(&self, line: &[u8]) {
        let mut output = lock(&self.shared.output);
        if output
            .write_all(line)
            .and_then(|()| output.flush())
            .is_err()
        {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped so far: the output stalled with `MAX_PENDING` bytes waiting, or failed.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Writes every buffered line and stops the writer thread; later lines are written at once.
    pub fn close(&self) {
        lock(&self.shared.pending).closed = true;
        self.shared.wake.notify_one();
        if let Some(writer) = lock(&self.writer).take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: lets a batch gather and writes it; when nothing came, sleeps until a
/// first line wakes it, and gathers again. Until closed.
fn write_batches(shared: &Shared) {
    let mut batch = Vec::new();
    loop {
        let closed = {
            let mut pending = gather(shared, lock(&shared.pending));
            if pending.lines.is_empty() && !pending.closed {
                // Cleared by the first line, which then wakes this thread.
                pending.idle = true;
                pending = shared
                    .wake
                    .wait_while(pending, |p| p.lines.is_empty() && !p.closed)
                    .unwrap_or_else(PoisonError::into_inner);
                pending = gather(shared, pending);
            }
            std::mem::swap(&mut pending.lines, &mut batch);
            pending.closed
        };
        if !batch.is_empty() {
            let mut output = lock(&shared.output);
            if output
                .write_all(&batch)
                .and_then(|()| output.flush())
                .is_err()
            {
                let lines = batch.iter().filter(|&&b| b == b'\n').count();
                shared.dropped.fetch_add(lines as u64, Ordering::Relaxed);
            }
            batch.clear();
            // A burst must not keep its buffer for the life of the process (peak RSS).
            batch.shrink_to(HIGH_WATER);
        }
        if closed && lock(&shared.pending).lines.is_empty() {
            return;
        }
    }
}

/// Waits up to `BATCH_DELAY` for lines to gather, less once `HIGH_WATER` bytes wait or the
/// sink closes.
fn gather<'a>(shared: &Shared, pending: MutexGuard<'a, Pending>) -> MutexGuard<'a, Pending> {
    if pending.closed || pending.lines.len() >= HIGH_WATER {
        return pending;
    }
    shared
        .wake
        .wait_timeout(pending, BATCH_DELAY)
        .unwrap_or_else(PoisonError::into_inner)
        .0
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;

    /// An output that records what it was given.
    #[derive(Clone, Default)]
    struct Recorded(Arc<Mutex<Vec<u8>>>);

    impl Write for Recorded {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// An output whose first write blocks until the test lets it go: a stalled collector.
    struct Stalled(Mutex<mpsc::Receiver<()>>, Recorded);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = lock(&self.0).recv();
            self.1.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn line(i: usize) -> Vec<u8> {
        format!("{{\"n\":{i}}}\n").into_bytes()
    }

    #[test]
    fn every_line_is_written_whole_and_in_order_by_close() {
        let out = Recorded::default();
        let sink = LogSink::new(Box::new(out.clone())).unwrap();
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        sink.write_line(&line(t * 10_000 + i));
                    }
                })
            })
            .collect();
        writers.into_iter().for_each(|w| w.join().unwrap());
        sink.close();

        let text = String::from_utf8(lock(&out.0).clone()).unwrap();
        let numbers: Vec<usize> = text
            .lines()
            .map(|l| l[5..l.len() - 1].parse().unwrap())
            .collect();
        assert_eq!(numbers.len(), 20_000, "every line, none split");
        for t in 0..4 {
            let mine: Vec<_> = numbers.iter().filter(|n| *n / 10_000 == t).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "thread {t} in order");
        }
        assert_eq!(sink.dropped(), 0);
    }

    #[test]
    fn a_line_is_written_without_waiting_for_more() {
        let out = Recorded::default();
        let sink = LogSink::new(Box::new(out.clone())).unwrap();
        sink.write_line(b"one\n");
        let deadline = Instant::now() + Duration::from_secs(2);
        while lock(&out.0).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(lock(&out.0).as_slice(), b"one\n");
        sink.close();
    }

    #[test]
    fn a_line_logged_while_the_writer_gathers_is_written_without_waking_it() {
        // Right after a batch the writer gathers with a timeout and no line wakes it: the
        // timeout alone must write what came meanwhile.
        let out = Recorded::default();
        let sink = LogSink::new(Box::new(out.clone())).unwrap();
        let written = |len: usize| {
            let deadline = Instant::now() + Duration::from_secs(2);
            while lock(&out.0).len() < len && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            lock(&out.0).len() >= len
        };
        for round in 0..20 {
            sink.write_line(b"one\n");
            assert!(written(4 * (round + 1)), "line {round} within 2 s");
        }
        assert_eq!(lock(&out.0).len(), 80);
    }

    #[test]
    fn a_stalled_output_drops_and_counts_lines_instead_of_blocking() {
        let (release, stalled) = mpsc::channel();
        let out = Recorded::default();
        let sink = LogSink::new(Box::new(Stalled(Mutex::new(stalled), out.clone()))).unwrap();
        let line = vec![b'x'; 1023];
        let line = [line.as_slice(), b"\n"].concat();
        // The first batch is taken and blocks in the output; then the buffer fills.
        sink.write_line(&line);
        std::thread::sleep(BATCH_DELAY * 5);
        let started = Instant::now();
        let lines = 3 * MAX_PENDING / line.len();
        for _ in 0..lines {
            sink.write_line(&line);
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "writers never wait"
        );
        let dropped = sink.dropped();
        assert!(
            dropped >= (lines - MAX_PENDING / line.len()) as u64,
            "{dropped} of {lines} dropped"
        );

        for _ in 0..10 {
            let _ = release.send(());
        }
        drop(release);
        sink.close();
        let written = lock(&out.0).len() / line.len();
        assert_eq!(
            written as u64 + dropped,
            lines as u64 + 1,
            "written or counted"
        );
    }

    #[test]
    fn lines_the_output_refuses_are_counted() {
        let sink = LogSink::new(Box::new(Broken)).unwrap();
        sink.write_line(b"a\n");
        sink.write_line(b"b\n");
        sink.close();
        sink.write_line(b"after close\n");
        assert_eq!(sink.dropped(), 3);
    }
}
