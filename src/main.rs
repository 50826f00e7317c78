//! The `chime` binary: all behaviour lives in the library; see [`chime::cli`].

fn main() -> std::process::ExitCode {
    chime::cli::main()
}
