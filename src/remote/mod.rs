//! The commands that talk to a running server over the socket, through the
//! Rust client (`taskwire tasks`, `taskwire agents`, `taskwire watch`);
//! unlike `taskwire token`, they never touch the database file.

pub mod agents;
mod show;
pub mod tasks;
pub mod watch;

use clap::Args;
use std::future::Future;
use taskwire_client::Client;

pub type Failure = Box<dyn std::error::Error>;

/// Where the server is and who is asking; global to each command family.
#[derive(Args, Clone, Debug)]
pub struct Remote {
    /// The server: http://HOST:PORT, HOST:PORT or ws://HOST:PORT/ws.
    #[arg(long, env = "TASKWIRE_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub url: String,
    /// An access token (prefer TASKWIRE_TOKEN: a flag shows in the process list).
    #[arg(long, env = "TASKWIRE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print JSON for scripts instead of tables for people.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Remote {
    /// Connects once; the first failure is the command's error.
    pub async fn connect(&self) -> Result<Client, Failure> {
        let token = self
            .token
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or("no token: pass --token or set TASKWIRE_TOKEN")?;
        Ok(Client::connect(&self.url, token).await?)
    }
}

/// Runs one command on its own single-threaded runtime. A reader that went
/// away (`| head`) ends it quietly.
pub fn block_on<F: Future<Output = Result<(), Failure>>>(command: F) -> Result<(), Failure> {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(command);
    match result {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Text on standard output, styles stripped unless it is a terminal.
fn out(text: impl std::fmt::Display) -> Result<(), Failure> {
    use std::io::Write;
    let mut stdout = anstream::stdout().lock();
    writeln!(stdout, "{text}")?;
    stdout.flush()?;
    Ok(())
}

/// Pretty JSON on standard output.
fn print_json(v: &impl serde::Serialize) -> Result<(), Failure> {
    out(serde_json::to_string_pretty(v)?)
}
