//! `flexgate`: reads the command line, then hands over to the command. No logic of its own.
#![forbid(unsafe_code)]

mod cli;
mod reload;
mod serve;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Serve(args) => serve::run(args),
        cli::Command::Validate(args) => cli::validate(&args.config),
    }
}
