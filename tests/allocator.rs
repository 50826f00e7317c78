//! How chime sets up mimalloc (`chime::memory::configure_allocator`). A test binary of
//! its own: mimalloc reserves its first arena once per process, at its first allocation.

/// The `VmFlags` of the mapping that holds `addr`, from `/proc/self/smaps`.
fn vm_flags_of(addr: usize) -> Option<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ')
            && let Some((start, end)) = range.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            inside = (start..end).contains(&addr);
        } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
            return Some(flags.trim().to_string());
        }
    }
    None
}

#[test]
fn mimalloc_does_not_ask_for_transparent_huge_pages() {
    // As in the binary, whose first allocation (before `main`) reserves the arena.
    // SAFETY: a plain allocation, freed below.
    let block = unsafe { libmimalloc_sys::mi_malloc(1024) };
    assert!(!block.is_null());
    chime::memory::configure_allocator();
    let flags = vm_flags_of(block as usize).expect("the block's mapping in /proc/self/smaps");
    // SAFETY: allocated above by mi_malloc, freed once.
    unsafe { libmimalloc_sys::mi_free(block) };
    // `hg`: the mapping was madvise(MADV_HUGEPAGE)d.
    assert!(
        !flags.split_whitespace().any(|flag| flag == "hg"),
        "mimalloc's arena is advised for huge pages: {flags}"
    );
}
