//! The `rempart` binary: parse the command line, run, exit with its code.

// The gateway allocates a few small buffers per request and frees them on
// another request's turn; mimalloc's per-thread free lists cost less than
// glibc's bins there (BENCHMARKS.md, gateway section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    rempart_cli::main_with_args(std::env::args_os())
}
