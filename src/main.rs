//! The `chime` binary: all behaviour lives in the library; see [`chime::cli`].

// Runs are started and ended on different threads, thousands at once in a burst;
// mimalloc frees memory across threads without contending on a lock (what was
// measured: benches/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Before anything else: no descriptor this process inherited may reach a job.
    chime::exec::shell::close_inherited_on_exec();
    chime::memory::configure_allocator();
    chime::cli::main()
}
