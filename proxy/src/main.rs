//! The `maschera` binary: everything lives in the library so that tests can run the same code.
fn main() -> std::process::ExitCode {
    maschera::cli::main()
}
