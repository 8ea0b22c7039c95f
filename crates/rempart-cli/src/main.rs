//! The `rempart` binary: parse the command line, run, exit with its code.
//!
//! The system allocator on purpose: mimalloc saved about 3k instructions per
//! proxied request but doubled the open-loop p99.9 (BENCHMARKS.md).

fn main() -> std::process::ExitCode {
    rempart_cli::main_with_args(std::env::args_os())
}
