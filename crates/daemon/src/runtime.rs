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

/// Most blocking-pool threads at once (tokio's default is 512). The pool runs the driver's
/// file-system calls and the provider's DNS lookups and cloud-file reads: short calls, where a
/// queue costs microseconds but each extra thread costs its stack and, under glibc, an arena.
/// Measured (issue 15): 64 concurrent first mounts started 18 threads for their DNS lookups.
pub const MAX_BLOCKING_THREADS: usize = 8;

/// glibc malloc arenas when `MALLOC_ARENA_MAX` is not set: one. glibc gives threads arenas of
/// their own (up to 8 per core) that each keep their free pages; the daemons' allocations are
/// small and short, so one shared arena costs no measurable time. Measured (issue 15, provider,
/// 64 concurrent mounts): peak RSS 9.1 -> 8.9 MiB, after the load 9.1 -> 8.7 MiB.
pub const MALLOC_ARENAS: i32 = 1;

/// Limits glibc's malloc to [`MALLOC_ARENAS`] unless the operator set `MALLOC_ARENA_MAX`. Called
/// by [`build`], before any thread of the runtime exists. A no-op off glibc.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        #[allow(unsafe_code)]
        // SAFETY: mallopt only changes a malloc tuning parameter; it is called before the
        // runtime's threads start.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

/// A multi-thread runtime with `worker_threads` workers (0: [`DEFAULT_WORKER_THREADS`]), timers
/// and IO enabled.
pub fn build(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    limit_malloc_arenas();
    let workers = if worker_threads == 0 {
        DEFAULT_WORKER_THREADS
    } else {
        worker_threads
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
}

/// How often an idle daemon hands freed heap pages back (see [`release_free_memory`]).
pub const RELEASE_FREE_MEMORY_EVERY: Duration = Duration::from_secs(30);

/// Gives the kernel back the heap pages the allocator holds free. glibc's malloc returns memory
/// only from the top of its heap; what a start-up (the system CA bundle is read and parsed) or a
/// burst of mounts frees in the middle stays resident until `malloc_trim` releases it. Cheap (a
/// walk of the free lists): the daemons call it once when they are serving and then every
/// [`RELEASE_FREE_MEMORY_EVERY`]. A no-op off glibc.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim takes the allocator's own locks; it may be called from any thread at
    // any time and only changes which free pages are backed by memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Calls [`release_free_memory`] now and then every `period`, forever (callers abort the task or
/// drop the future at shutdown).
pub async fn release_free_memory_every(period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        release_free_memory();
    }
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

    #[test]
    fn released_memory_stays_usable() {
        let big: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 * 1024]).collect();
        let kept = big[63].clone();
        drop(big);
        release_free_memory();
        let again = vec![7u8; 64 * 1024];
        assert!(kept.iter().all(|b| *b == 63));
        assert!(again.iter().all(|b| *b == 7));
    }
}
