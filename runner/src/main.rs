//! `volley`: run LoadTests locally, validate manifests, print the CRD.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// Volley: load tests with exact merged percentiles and a pass/fail verdict.
#[derive(Parser)]
#[command(name = "volley", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check LoadTest manifests offline and print every problem with its field path.
    Validate {
        /// Manifest files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the LoadTest CustomResourceDefinition (YAML).
    Crd,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { files } => cli::validate_files(&files),
        Command::Crd => cli::print_crd(),
    }
}
