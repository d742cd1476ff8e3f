//! taskwire-bench: the load generator. It speaks the wire protocol as any
//! client would (WebSocket at `/ws`, `Authorization: Bearer` on the upgrade),
//! only to a loopback address, with bounded counts and times.
//!
//! Scenarios (see `docs/benchmarks.md`):
//! - `filtered`: N sockets over F filtered topics and U of `tasks`, one
//!   writer cycling a task's status and priority; filtered against plain
//!   event latency, each subscriber's events checked against its filter.
//! - `fanout`: N sockets subscribed to `tasks`, one writer sending W
//!   `task.update` calls at R per second (open loop). Each delivered event's
//!   latency runs from the send of the call whose reply carried its seq.
//! - `writes`: C sockets each sending `task.update` as fast as acks return.
//! - `conns`: N idle subscribed sockets; server RSS per socket, connect time.
//! - `resume`: N clients subscribe, disconnect, M writes happen, all resume at
//!   once; time until every client has its missed events.
//! - `readflood`: one paced writer's ack latency, idle and then while a member
//!   token floods the readers (change-log pages, far resumes).
//! - `tokenflood`: one agent's sockets heartbeating as fast as they are
//!   answered while dashboards subscribed to `agents` read the events.
//! - `fsync`: only the disk's durable-write ceiling.
//!
//! Every run prints one JSON line of results on stdout and a readable table on
//! stderr (with a progress bar while it runs, when stderr is a terminal). The
//! exit status is 1 when a correctness check failed (an event lost, duplicated
//! or out of order, a failed call), 2 when the run could not be set up.

mod cli;
mod client;
mod events;
mod flood;
mod fsync;
mod metrics;
mod pace;
mod process;
mod progress;
mod report;
mod rest;
mod scenarios;
mod seed;
mod sockets;
mod stats;
mod tally;
mod tasks;

use clap::Parser;
use cli::{check_bounds, Cli, Common, Scenario};
use report::{decorate, print_table, Rows};
use serde_json::Value;
use sockets::raise_nofile;
use std::time::Duration;

/// An error is a sentence for the user; the run stops with it.
type Res<T> = Result<T, String>;

fn main() {
    let cli = Cli::parse();
    let c = &cli.common;
    if !c.addr.ip().is_loopback() {
        fail_setup("the load generator only talks to a loopback address");
    }
    if c.token.is_empty() && !matches!(cli.scenario, Scenario::Fsync { .. }) {
        fail_setup("give --token or set TASKWIRE_ADMIN_TOKEN");
    }
    if let Err(e) = check_bounds(&cli.scenario, c) {
        fail_setup(&e);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail_setup(&format!("tokio runtime: {e}")));
    let result = rt.block_on(run(cli.common.clone(), cli.scenario));
    match result {
        Ok((mut report, table)) => {
            let ok = report["ok"].as_bool().unwrap_or(false);
            decorate(&mut report, &cli.common);
            println!("{report}");
            if !cli.common.quiet {
                print_table(&report, &table);
            }
            // Drop the sockets without waiting for their tasks.
            rt.shutdown_timeout(Duration::from_millis(200));
            std::process::exit(if ok { 0 } else { 1 });
        }
        Err(e) => fail_setup(&e),
    }
}

fn fail_setup(msg: &str) -> ! {
    eprintln!("taskwire-bench: {msg}");
    std::process::exit(2);
}

async fn run(c: Common, s: Scenario) -> Res<(Value, Rows)> {
    match s {
        Scenario::Fanout {
            subscribers,
            writes,
            rate,
            drain_secs,
        } => {
            raise_nofile(subscribers + 1)?;
            scenarios::fanout::run(&c, subscribers, writes, rate, Duration::from_secs(drain_secs)).await
        }
        Scenario::Filtered {
            subscribers,
            filters,
            plain,
            writes,
            rate,
            drain_secs,
        } => {
            raise_nofile(subscribers + plain + 1)?;
            let drain = Duration::from_secs(drain_secs);
            scenarios::filtered::run(&c, subscribers, filters, plain, writes, rate, drain).await
        }
        Scenario::Writes { conns, seconds } => {
            raise_nofile(conns + 1)?;
            scenarios::writes::run(&c, conns, Duration::from_secs_f64(seconds)).await
        }
        Scenario::Conns { sockets, hold_secs } => {
            raise_nofile(sockets + 1)?;
            scenarios::conns::run(&c, sockets, Duration::from_secs_f64(hold_secs)).await
        }
        Scenario::Resume { clients, writes } => {
            raise_nofile(clients + 1)?;
            scenarios::resume::run(&c, clients, writes).await
        }
        Scenario::History { entries, opens } => scenarios::history::run(&c, entries, opens).await,
        Scenario::Readflood {
            tasks,
            seconds,
            write_rate,
            via,
            http_flooders,
            ws_flooders,
            http_rate,
            ws_rate,
        } => {
            raise_nofile(http_flooders + ws_flooders + 2)?;
            // A rate of 0 is no pace: each loop sends as soon as it is answered.
            let flooders = scenarios::readflood::Flooders {
                http: http_flooders,
                ws: ws_flooders,
                http_rate: Some(http_rate).filter(|r| *r > 0.0),
                ws_rate: Some(ws_rate).filter(|r| *r > 0.0),
            };
            scenarios::readflood::run(&c, tasks, Duration::from_secs_f64(seconds), write_rate, via, flooders).await
        }
        Scenario::Tokenflood {
            agent_sockets,
            dashboards,
            seconds,
            drain_secs,
        } => {
            raise_nofile(agent_sockets + dashboards + 2)?;
            scenarios::tokenflood::run(
                &c,
                agent_sockets,
                dashboards,
                Duration::from_secs_f64(seconds),
                Duration::from_secs_f64(drain_secs),
            )
            .await
        }
        Scenario::Fsync { seconds } => scenarios::fsync::run(&c, Duration::from_secs_f64(seconds)),
    }
}
