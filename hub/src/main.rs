//! `matchpoint`: sync source systems into the pseudonymised involvement index.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// jemalloc instead of the system allocator: a sync parses, maps and stages on three threads,
/// and records allocated by one are freed by another, which glibc's malloc handles slowly
/// (the stage phase of a 1M-record sync took 11.0 s with it, 5.8 s with jemalloc; mimalloc
/// was as fast but peaked at 204 MB instead of 135 MB; see bench/README.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose, args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
