//! The `intentra` binary: everything lives in `intentra_daemon::cli`.

fn main() -> std::process::ExitCode {
    intentra_daemon::cli::main()
}
