//! Every log line of the test process, at trace level, for the secret-canary checks: one global
//! subscriber per test binary (tests run on several threads and runtimes, so a thread-local
//! default would miss the driver's tasks).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static BUFFER: OnceLock<Buffer> = OnceLock::new();

/// Starts capturing (idempotent) and returns a handle to what was logged so far.
pub fn capture() -> Logs {
    let buffer = BUFFER.get_or_init(|| {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        // Another subscriber set first (none in these tests) would make this a no-op.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .try_init();
        buffer
    });
    Logs(buffer.clone())
}

/// The captured log of this test process.
#[derive(Clone)]
pub struct Logs(Buffer);

impl Logs {
    /// Everything logged since capture started, by every test of this binary.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Fails when any log line carries a canary.
    #[track_caller]
    pub fn assert_no_canary(&self) {
        super::assert_no_canary("the log", &self.text());
    }
}
