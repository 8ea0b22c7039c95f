//! The `rempart` binary: parse the command line, run, exit with its code.

fn main() -> std::process::ExitCode {
    rempart_cli::main_with_args(std::env::args_os())
}
