//! lean-noop: a scheduler policy that passes every node and has no
//! preference, built with `core` and `alloc` only. Rust's `std` brings
//! WASI imports (stdio, environment, exit) and an adapter module with them;
//! without `std` the component is one core module importing Steward's
//! interfaces alone, so its fresh instance and call are the sandbox's own
//! floor. It is a Wasm-only crate: empty on other targets, which the
//! workspace's native builds compile.
#![cfg(target_arch = "wasm32")]
#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "scheduler",
    generate_all,
});

struct LeanNoop;

impl Guest for LeanNoop {
    fn validate_settings(_settings: String) -> Result<SchedulerNeeds, String> {
        Ok(SchedulerNeeds {
            node_labels: Vec::new(),
            capacity_sources: Vec::new(),
            tidb_operator: false,
        })
    }

    fn filter(_settings: String, _pod: Pod, _nodes: Candidates) -> Result<FilterResult, String> {
        Ok(FilterResult {
            reasons: Vec::new(),
            rejections: Vec::new(),
        })
    }

    fn prioritize(
        _settings: String,
        _pod: Pod,
        _nodes: Candidates,
    ) -> Result<Vec<NodeScore>, String> {
        Ok(Vec::new())
    }
}

export!(LeanNoop);

/// Every allocation of a call is freed with its instance: bump upwards
/// from the heap's base through linear memory, the initial memory first
/// (the host keeps it resident), growing memory only beyond it. Blocks
/// start on a cache line: with the host on mimalloc, its copy of 5,000
/// candidate ids into a block that did not took 5 µs longer
/// (BENCHMARKS.md, "The sandbox floor").
struct Bump;

static mut NEXT: usize = 0;
static mut END: usize = 0;

unsafe extern "C" {
    /// The linker's end of static data and stack: the heap starts here.
    static __heap_base: u8;
}

const PAGE: usize = 65536;

unsafe impl core::alloc::GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        // SAFETY: a component instance runs one call at a time, on one thread.
        unsafe {
            if NEXT == 0 {
                NEXT = &raw const __heap_base as usize;
                END = core::arch::wasm32::memory_size(0) * PAGE;
            }
            let align = layout.align().max(64);
            let start = (NEXT + align - 1) & !(align - 1);
            let end = start + layout.size();
            if end > END {
                let pages = (end - END).div_ceil(PAGE);
                if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
                    return core::ptr::null_mut();
                }
                END += pages * PAGE;
            }
            NEXT = end;
            start as *mut u8
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: core::alloc::Layout) {}
}

#[global_allocator]
static ALLOCATOR: Bump = Bump;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// The canonical ABI's allocator export, on the bump allocator.
#[unsafe(no_mangle)]
unsafe extern "C" fn cabi_realloc(
    old: *mut u8,
    old_size: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    use core::alloc::{GlobalAlloc, Layout};
    // SAFETY: the canonical ABI passes a valid power-of-two alignment.
    unsafe {
        let layout = Layout::from_size_align_unchecked(old_size, align);
        if old.is_null() {
            ALLOCATOR.alloc(Layout::from_size_align_unchecked(new_size, align))
        } else {
            ALLOCATOR.realloc(old, layout, new_size)
        }
    }
}
