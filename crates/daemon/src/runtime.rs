//! The tokio runtime both daemons run on: a few worker threads, not one per core.
//!
//! `#[tokio::main]` starts one worker per core: 2 on a small VM, 64 on a big node, each with its
//! stack and, under glibc's malloc, an arena of its own that is never given back. Neither daemon
//! needs them: the driver serves kubelet's calls and puts every file-system call on the blocking
//! pool, and the provider waits on Key Vault most of the time; their CPU work (TLS, protobuf, a
//! PKCS#12 decode) is short. [`DEFAULT_WORKER_THREADS`] workers keep one request's CPU work from
//! stalling the others, whatever the node's size; `--worker-threads` changes it.

use std::time::Duration;

/// Worker threads when `--worker-threads` is not given.
pub const DEFAULT_WORKER_THREADS: usize = 2;

/// How long an idle blocking-pool thread lives (tokio's default is 10 s). Short, so a burst of
/// file-system work or DNS lookups does not leave its threads behind for long.
pub const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(2);

/// A multi-thread runtime with `worker_threads` workers (0: [`DEFAULT_WORKER_THREADS`]), timers
/// and IO enabled.
pub fn build(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = if worker_threads == 0 {
        DEFAULT_WORKER_THREADS
    } else {
        worker_threads
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_with_the_default_and_a_given_count() -> std::io::Result<()> {
        for n in [0, 1, 3] {
            let rt = build(n)?;
            let want = if n == 0 { DEFAULT_WORKER_THREADS } else { n };
            assert_eq!(rt.metrics().num_workers(), want);
            assert_eq!(rt.block_on(async { tokio::spawn(async { 7 }).await })?, 7);
        }
        Ok(())
    }
}
