//! The `twofold` binary: parse the command line, load the configuration, run; or, for the
//! admin subcommands, talk to a running server's admin listener.
#![forbid(unsafe_code)]

use admin_cli::AdminArgs;
use admin_cli::config::ConfigCommand;
use admin_cli::identities::IdentitiesCommand;
use admin_cli::schema::SchemaCommand;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod admin_cli;
mod cli;

/// Measured faster than glibc's allocator for the server's many small, short-lived allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Read, validate and change the configuration of a running server.
    Config {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Read and change the identity schemas of a running server.
    Schema {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Administer identities on a running server.
    Identities {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: IdentitiesCommand,
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
        // The admin commands choose their own exit codes (1 refused, 2 usage or connection).
        Command::Config { admin, command } => {
            return admin_cli::run(&admin, |client| admin_cli::config::run(client, command)).await;
        }
        Command::Schema { admin, command } => {
            return admin_cli::run(&admin, |client| admin_cli::schema::run(client, command)).await;
        }
        Command::Identities { admin, command } => {
            return admin_cli::run(&admin, |client| admin_cli::identities::run(client, command))
                .await;
        }
    };
    cli::flush_logs();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("twofold: {error}");
            ExitCode::from(1)
        }
    }
}
