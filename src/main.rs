//! The command line: parses flags and calls the library.

mod remote;

use clap::{Parser, Subcommand};
use taskwire::config::ServeArgs;

/// jemalloc: with glibc's malloc, freeing (often blocks another thread
/// allocated) was a fifth of the writer thread's instructions; see
/// docs/benchmarks.md. Built with `background_thread:true`, so memory freed
/// (a slow socket's queue) goes back to the system within about 10 s even
/// while the server is idle; `_RJEM_MALLOC_CONF` overrides its options.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Write a consistent copy of the database while the server runs. A
    /// server started on the copy gives clients a fresh snapshot.
    Backup {
        /// Where to write the copy (a new file).
        to: String,
        /// The SQLite file.
        #[arg(long, env = "DATABASE_URL", default_value = "./data/taskwire.db")]
        db: String,
    },
    /// Manage access tokens on the database file.
    Token {
        #[command(subcommand)]
        action: TokenAction,
        /// The SQLite file.
        #[arg(long, env = "DATABASE_URL", default_value = "./data/taskwire.db", global = true)]
        db: String,
    },
    /// Tasks on a running server (--url and --token, or TASKWIRE_URL and TASKWIRE_TOKEN).
    Tasks {
        #[command(subcommand)]
        action: remote::tasks::Action,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Agents on a running server.
    Agents {
        #[command(subcommand)]
        action: remote::agents::Action,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Follow a topic's changes live (tasks, task:N, agents, agent:N), across
    /// reconnects and server restarts, until Ctrl-C.
    Watch {
        topic: String,
        #[command(flatten)]
        remote: remote::Remote,
    },
    /// Serve the taskwire tools to an AI agent host over MCP on stdin and
    /// stdout, as a client of a running server (docs/agents.md#mcp).
    Mcp {
        /// The server's root URL.
        #[arg(long, env = "TASKWIRE_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The token the tools act with; an agent token makes it that agent.
        #[arg(long, env = "TASKWIRE_TOKEN", hide_env_values = true)]
        token: String,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a token and print it (the secret is shown this once).
    Create {
        /// admin, member or agent.
        #[arg(long)]
        role: String,
        /// Who or what the token is for.
        #[arg(long)]
        name: String,
        /// For an agent token: the agent it acts as.
        #[arg(long)]
        agent_id: Option<i64>,
    },
    /// List tokens, without secrets.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id or by name; its open sockets close within a second.
    Revoke {
        /// The token's id, or its name if one live token has it.
        token: String,
    },
    /// Print a link that logs a browser in as a token, once, within 10 minutes.
    LoginLink {
        /// The token's id, or its name if one live token has it.
        token: String,
        /// The server as the browser reaches it, like https://tasks.example.com
        /// [default: http:// and TASKWIRE_BIND, else http://127.0.0.1:8080]
        #[arg(long)]
        url: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let command = Cli::parse().command;
    // `taskwire mcp` speaks MCP on stdout; its log (stderr) keeps to its own
    // lines, not the SDK's line per message.
    let filter = match command {
        Some(Command::Mcp { .. }) => "info,rmcp=warn,tracing=warn",
        _ => "info",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter)).init();
    let result = match command {
        Some(Command::Serve(args)) => serve(args),
        None => serve(ServeArgs::default_from_env()),
        Some(Command::Token { action, db }) => token(action, &db),
        Some(Command::Backup { to, db }) => taskwire::admin::backup(&db, &to)
            .map(|()| println!("wrote a copy of {db} to {to}"))
            .map_err(|e| e.into()),
        Some(Command::Tasks { action, remote }) => remote::block_on(remote::tasks::run(remote, action)),
        Some(Command::Agents { action, remote }) => remote::block_on(remote::agents::run(remote, action)),
        Some(Command::Watch { topic, remote }) => remote::block_on(remote::watch::run(remote, topic)),
        Some(Command::Mcp { url, token }) => taskwire::mcp::run(&url, &token),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("taskwire: {}", chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

type Failure = Box<dyn std::error::Error>;

fn serve(args: ServeArgs) -> Result<(), Failure> {
    let listener = taskwire::bind(args.bind)?;
    let mut config: taskwire::Config = args.into();
    config.fit_open_file_limit();
    actix_web::rt::System::new().block_on(async {
        // Caught, not fatal: a write past the file size limit (RLIMIT_FSIZE)
        // then fails with EFBIG, which SQLite reports as an I/O error, and the
        // server answers 503 as for a full disk instead of being killed.
        // Registering replaces the default action; the handler only notes it.
        #[cfg(unix)]
        let _file_too_large = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))?;
        taskwire::run(listener, config, shutdown_signal()).await?;
        Ok::<_, Failure>(())
    })
}

fn token(action: TokenAction, db: &str) -> Result<(), Failure> {
    fn print(v: &impl serde::Serialize) {
        println!("{}", serde_json::to_string_pretty(v).expect("JSON prints"));
    }
    match action {
        TokenAction::Create { role, name, agent_id } => {
            print(&taskwire::admin::create_token(db, &role, &name, agent_id)?)
        }
        TokenAction::List { json: true } => print(&taskwire::admin::list_tokens(db)?),
        TokenAction::List { json: false } => {
            println!("{}", taskwire::admin::token_table(&taskwire::admin::list_tokens(db)?))
        }
        TokenAction::Revoke { token } => {
            let id = taskwire::admin::revoke_token(db, &token)?;
            println!("revoked token {id}");
        }
        TokenAction::LoginLink { token, url } => {
            let base = match url {
                Some(u) if u.starts_with("http://") || u.starts_with("https://") => u,
                Some(u) => return Err(format!("--url {u:?} must start with http:// or https://").into()),
                None => {
                    let bind = std::env::var("TASKWIRE_BIND").ok().and_then(|b| b.parse().ok());
                    taskwire::config::local_base_url(bind.unwrap_or(([127, 0, 0, 1], 8080).into()))
                }
            };
            let (row, code) = taskwire::admin::login_code(db, &token)?;
            // The link alone on stdout, for scripts; what it is for on stderr.
            println!("{}", taskwire::auth::login_link(&base, &code.code));
            eprintln!(
                "taskwire: logs a browser in as token {} ({}, {}) once, until {}",
                row.id, row.name, row.role, code.expires_at
            );
        }
    }
    Ok(())
}

/// An error and its causes, one per line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!("\n  caused by: {c}"));
        cause = c.source();
    }
    text
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
