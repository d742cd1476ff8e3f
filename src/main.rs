//! The command line: parses flags and calls the library.

use clap::{Parser, Subcommand};
use taskwire::config::ServeArgs;

#[derive(Parser)]
#[command(
    name = "taskwire",
    version,
    about = "A real-time data layer for a team task dashboard"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server (the default).
    Serve(ServeArgs),
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => match Cli::try_parse_from(["taskwire", "serve"]) {
            Ok(Cli {
                command: Some(Command::Serve(args)),
            }) => args,
            _ => unreachable!("`serve` parses with its defaults"),
        },
    };
    let listener = taskwire::bind(args.bind)?;
    actix_web::rt::System::new().block_on(taskwire::run(listener, args.into(), shutdown_signal()))
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
