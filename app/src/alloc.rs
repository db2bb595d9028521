//! The global allocator: mimalloc, called through its plain `mi_malloc` whenever that already
//! gives the alignment asked for.
//!
//! musl's allocator is slow for the many small, short-lived allocations of a request (labels,
//! log fields, headers): mimalloc made the static binary ~1.5x faster. It is compiled to commit
//! its arenas lazily (`.cargo/config.toml`), which keeps peak RSS small with no environment
//! variable (docs/performance.md).
//!
//! Why not the `mimalloc` crate's `MiMalloc`: it passes every allocation to
//! `mi_malloc_aligned`, whose fast path serves a size only from a page that already has a free
//! block. When that size's page has none (always, for a size nothing has allocated through
//! `mi_malloc` yet), mimalloc 3 falls back to over-allocating `size + align - 1` from a bigger
//! size class unless the block size is a power of two (`alloc-aligned.c`,
//! `mi_theap_malloc_zero_aligned_at_generic`). Nothing then refills the right size class, so
//! every 48-, 80- or 96-byte allocation of a request took that path: ~1,000 instructions per
//! request (callgrind). `mi_malloc` refills the page instead, and its blocks are 16-byte
//! aligned from 16 bytes up (bins of two words, `MI_ALIGN2W` in `page-queue.c`), the rule
//! Rust's own `System` allocator applies to `malloc`. The `alignment` test checks it.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment `mi_malloc` gives every block of at least this size (`MI_MAX_ALIGN_SIZE`).
const MIN_ALIGN: usize = 16;

/// mimalloc as the global allocator (`#[global_allocator] static A: Allocator = Allocator;`).
pub struct Allocator;

/// Whether `mi_malloc(size)` is aligned enough: blocks under 16 bytes are 8-byte aligned,
/// and an alignment up to the size is all such a block can need.
fn plain(size: usize, align: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

/// A block for `layout` from `plain` when its alignment is enough (`plain`), else from `aligned`.
///
/// # Safety
/// `layout` has a non-zero size (`GlobalAlloc::alloc`'s contract).
#[inline]
unsafe fn allocate(
    layout: Layout,
    plain_call: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned_call: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    let (size, align) = (layout.size(), layout.align());
    let block = unsafe {
        if plain(size, align) {
            plain_call(size)
        } else {
            aligned_call(size, align)
        }
    };
    block.cast()
}

// SAFETY: every pointer comes from mimalloc and goes back to it; the plain calls are used only
// where their alignment is at least the layout's (`plain`), the aligned ones elsewhere.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { allocate(layout, mi::mi_malloc, mi::mi_malloc_aligned) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { allocate(layout, mi::mi_zalloc, mi::mi_zalloc_aligned) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        unsafe {
            if plain(new_size, align) {
                mi::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast(), new_size, align).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every block must honour its layout's alignment, whichever call served it: if a mimalloc
    /// update changed its block alignment (or `MIN_ALIGN` were raised), this fails before any
    /// caller misbehaves.
    #[test]
    fn alignment() {
        let mut live = Vec::new();
        for size in 1..=4096 {
            for align in [1, 2, 4, 8, 16, 32, 64] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // Several per class: the first block of a page is not the only one to check.
                for _ in 0..4 {
                    // SAFETY: a non-zero size; freed below with the same layout.
                    let p = unsafe { Allocator.alloc(layout) };
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size}, align {align}");
                    live.push((p, layout));
                }
            }
        }
        for (p, layout) in live {
            // SAFETY: allocated above with this layout.
            unsafe { Allocator.dealloc(p, layout) }
        }
    }

    #[test]
    fn zeroed_grown_and_over_aligned_blocks() {
        let layout = Layout::from_size_align(40, 8).unwrap();
        // SAFETY: valid layouts; each pointer is freed once, with its current layout.
        unsafe {
            let p = Allocator.alloc_zeroed(layout);
            assert!(std::slice::from_raw_parts(p, 40).iter().all(|&b| b == 0));
            p.write_bytes(7, 40);
            let q = Allocator.realloc(p, layout, 5000);
            assert!(std::slice::from_raw_parts(q, 40).iter().all(|&b| b == 7));
            Allocator.dealloc(q, Layout::from_size_align(5000, 8).unwrap());

            let wide = Layout::from_size_align(24, 128).unwrap();
            let r = Allocator.alloc(wide);
            assert_eq!(r as usize % 128, 0);
            let s = Allocator.realloc(r, wide, 300);
            assert_eq!(s as usize % 128, 0);
            Allocator.dealloc(s, Layout::from_size_align(300, 128).unwrap());
        }
    }
}
