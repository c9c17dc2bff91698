//! The `intentra` binary: everything lives in `intentra::cli`.

fn main() -> std::process::ExitCode {
    intentra::cli::main()
}
