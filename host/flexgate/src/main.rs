//! `flexgate`: reads the command line, then hands over to the command. No logic of its own.
#![forbid(unsafe_code)]

mod admin;
mod cli;
mod plugin_cmd;
mod reload;
mod rollouts;
mod serve;
mod view;

use std::process::ExitCode;

use clap::Parser;

/// jemalloc instead of glibc malloc: freed memory goes back to the OS (see .cargo/config.toml),
/// so idle connections and finished bursts do not pin their peak RSS.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Serve(args) => serve::run(args),
        cli::Command::Validate(args) => cli::validate(&args.config),
        cli::Command::Plugin(command) => plugin_cmd::run(command),
    }
}
