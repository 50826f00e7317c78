//! The `chime` binary: all behaviour lives in the library; see [`chime::cli`].

// Runs are started and ended on different threads, thousands at once in a burst;
// mimalloc frees across threads without the lock contention and consolidation that
// glibc's malloc spent ~15 % of a 10,000-job burst on (perf, benches/lateness.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    chime::memory::configure_allocator();
    chime::cli::main()
}
