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

/// mimalloc's `mi_option_purge_delay` (its index in `mimalloc.h`, v2 and v3 alike; the
/// Rust bindings do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long freed memory is kept before it goes back to the OS. mimalloc's default,
/// 1 s, is the period of an every-second job: each burst's memory would be handed back
/// just before the next burst faults it in again (measured: benches/README.md).
/// [`release_freed`] still hands everything back at once after loading.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// Sets how mimalloc hands memory back; called first thing by the binary.
pub fn configure_allocator() {
    // SAFETY: mi_option_set only stores the option's value.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}
