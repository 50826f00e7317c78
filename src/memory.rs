//! Giving freed memory back to the OS.
//!
//! chime's binary uses mimalloc (see `main.rs`), which keeps freed pages for reuse.
//! After the big transient allocations of loading schedules (parse trees, replaced jobs)
//! that would leave tens of megabytes of RSS held for nothing, so the places that end
//! such work call [`release_freed`]. Under another allocator (tests, benches that do not
//! install mimalloc) it has nothing to collect and costs next to nothing.

static KEEP_FREED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on freed memory is never handed back to the OS ([`release_freed`] does
/// nothing, and mimalloc purges nothing, not even at exit): for a command that exits as
/// soon as its work is done (`chime status`), where pages handed back after each
/// schedule file would only be faulted in again for the next one, and the purge at exit
/// (an `madvise` of everything) is work the kernel does anyway.
pub fn keep_freed() {
    KEEP_FREED.store(true, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: mi_option_set only stores the option's value; a negative delay turns
    // purging off.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Returns memory freed so far by this thread (and abandoned by exited threads) to the OS.
pub fn release_freed() {
    if KEEP_FREED.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
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

/// mimalloc's `mi_option_allow_thp`: its index in v3's `mimalloc.h` (the default of
/// `libmimalloc-sys`; v2's is 37, hence the check that the bindings are v3's).
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;
const _: () = assert!(
    libmimalloc_sys::_mi_option_last == 47,
    "not mimalloc v3's options"
);

/// Sets how mimalloc takes and hands back memory; called first thing by the binary.
///
/// Transparent huge pages off for mimalloc's memory: by default mimalloc advises its
/// arena (1 GiB reserved) for huge pages, so every 2 MiB of it that holds anything
/// counts as a whole 2 MiB of RSS. chime's heap is small (about 1 MB live with 1,000
/// jobs) and spread thin over the arena by runs that start and end on different
/// threads; a purge of part of a huge page splits it, and khugepaged collapses it back
/// whole. In benches/soak.rs RSS was 27–45 MB, moving by whole huge pages, over a live
/// heap flat at 1.05–1.13 MB.
///
/// mimalloc's own switch (`MIMALLOC_ALLOW_THP=0` in the environment) would do it with
/// `PR_SET_THP_DISABLE`, which every job chime spawns would inherit, so the option is
/// set here instead. That is too late for the first arena: the binary's first
/// allocation, before `main`, reserved and advised it. [`unadvise_arena`] takes the
/// advice back; arenas reserved later are not advised.
pub fn configure_allocator() {
    // SAFETY: mi_option_set only stores the option's value.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0);
    }
    unadvise_arena();
}

/// Marks the mapping that holds mimalloc's allocations (its first arena) `MADV_NOHUGEPAGE`:
/// no new huge pages there, at a fault or from khugepaged (also where the system's THP
/// mode is `always`). Best effort: without `/proc`, nothing changes.
fn unadvise_arena() {
    // SAFETY: a plain allocation, freed below; only its address is used.
    let block = unsafe { libmimalloc_sys::mi_malloc(1) };
    let mapping = mapping_of(block as usize);
    // SAFETY: allocated above by mi_malloc, freed once.
    unsafe { libmimalloc_sys::mi_free(block) };
    if let Some((start, end)) = mapping {
        // SAFETY: the range is a whole mapping of mimalloc's; MADV_NOHUGEPAGE changes
        // only how its pages are backed, never its contents.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end - start,
                libc::MADV_NOHUGEPAGE,
            )
        };
    }
}

/// The mapping (start, end) of `/proc/self/maps` that holds `addr`.
fn mapping_of(addr: usize) -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let (start, end) = line.split_once(' ')?.0.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        (start..end).contains(&addr).then_some((start, end))
    })
}
