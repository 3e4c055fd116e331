//! The `twofold` binary: parse the command line, load the configuration, run.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod cli;

#[derive(Parser)]
#[command(
    name = "twofold",
    version,
    about = "gRPC-first authentication with one-time codes by SMS and email"
)]
struct Cli {
    /// Configuration file (YAML or JSON). Without one, the embedded defaults apply.
    #[arg(long, short, global = true, env = "TWOFOLD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the public and admin listeners (migrations run first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// The courier that delivers queued messages.
    Courier {
        #[command(subcommand)]
        command: CourierCommand,
    },
}

#[derive(Subcommand)]
enum CourierCommand {
    /// Deliver queued messages until stopped (`serve` runs the same worker).
    Watch,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve => cli::serve(cli.config.as_deref()).await,
        Command::Migrate => cli::migrate(cli.config.as_deref()).await,
        Command::Courier {
            command: CourierCommand::Watch,
        } => cli::courier_watch(cli.config.as_deref()).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("twofold: {error}");
            ExitCode::from(1)
        }
    }
}
