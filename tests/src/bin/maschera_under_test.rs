//! The `maschera` binary as the end-to-end tests run it (same code: `maschera::cli::main`).
fn main() -> std::process::ExitCode {
    maschera::cli::main()
}
