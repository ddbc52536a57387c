//! The process's allocator: mimalloc, in the glibc build and in the static
//! musl image alike. It serves the request path's many small, short-lived
//! allocations faster than glibc's malloc (and far faster than musl's). Two
//! options keep its resident memory within SPEC §8 (150 MB): arenas are
//! committed as they are used, not up front, and freed memory goes back to
//! the OS after 10 ms instead of 1 s. Measured in BENCHMARKS.md ("A faster
//! allocator").

use std::ffi::{c_int, c_long};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_e` values of mimalloc v3's `mimalloc.h`, the version
/// libmimalloc-sys builds by default.
const ARENA_EAGER_COMMIT: c_int = 4;
const PURGE_DELAY: c_int = 15;

/// Milliseconds freed memory stays mapped before it goes back to the OS.
pub const PURGE_DELAY_MS: i64 = 10;

unsafe extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
    fn mi_option_get(option: c_int) -> c_long;
}

/// Sets the options before `main` (of the binary, a test or a bench), as a
/// C constructor does, so that they hold from the first arena on.
#[used]
#[unsafe(link_section = ".init_array")]
static CONFIGURE: extern "C" fn() = configure;

extern "C" fn configure() {
    // SAFETY: setting an option only stores it; mimalloc reads it on use.
    unsafe {
        mi_option_set(ARENA_EAGER_COMMIT, 0);
        mi_option_set(PURGE_DELAY, PURGE_DELAY_MS as c_long);
    }
}

/// The purge delay in force, in milliseconds.
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reading an option has no preconditions.
    unsafe { mi_option_get(PURGE_DELAY) as i64 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_options_are_set_before_main() {
        assert_eq!(super::purge_delay_ms(), super::PURGE_DELAY_MS);
    }
}
