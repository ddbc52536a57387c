//! Gives the C library's freed heap back to the OS. Rust's heap is
//! mimalloc ([`crate::allocator`]), which returns freed memory on its own;
//! C code — aws-lc's TLS state for a flood of HTTPS connections — still
//! allocates from the C library's malloc, and glibc's keeps what a burst
//! freed as resident memory for good: `malloc_trim` returns the free pages.
//! Measured in BENCHMARKS.md ("Memory after bursts"). musl, in the static
//! image, returns freed memory on its own.

use std::time::Duration;

/// How often free heap is returned: a burst's memory is back within this.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Trims the heap every [`TRIM_EVERY`], off the reactor; never returns.
pub async fn trim_periodically() {
    let mut ticks = tokio::time::interval(TRIM_EVERY);
    loop {
        ticks.tick().await;
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    unsafe extern "C" {
        /// glibc: releases free memory at the top of the heap and, since
        /// 2.8, free whole pages anywhere in every arena.
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: malloc_trim only touches the allocator's own free lists.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
