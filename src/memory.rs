//! Giving freed memory back to the OS.
//!
//! chime's binary uses mimalloc (see `main.rs`), which keeps freed pages for reuse.
//! After the big transient allocations of loading schedules (parse trees, replaced jobs)
//! that would leave tens of megabytes of RSS held for nothing, so the places that end
//! such work call [`release_freed`]. Under another allocator (tests, benches that do not
//! install mimalloc) it has nothing to collect and costs next to nothing.

/// Returns memory freed so far by this thread (and abandoned by exited threads) to the OS.
pub fn release_freed() {
    // SAFETY: mi_collect has no preconditions; it only walks mimalloc's own heaps.
    unsafe { libmimalloc_sys::mi_collect(true) };
}
