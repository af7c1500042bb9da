//! The `wharf` command line.

mod cli;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
#[cfg(feature = "duckdb")]
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use wharf::config::Config;
#[cfg(feature = "duckdb")]
use wharf::demo;
use wharf::receiver::{Faults, Receiver, ReceiverAuth, ReceiverConfig, SlowResponses};
use wharf::service::Service;
use wharf::sync::{run_continuous, run_sync, SyncOptions, SyncReport};

use cli::history::{history, status};
use cli::inspect::{check, preview};
use cli::report::{print_report, summary_json_line};

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "Keeps warehouse tables loaded into Mixpanel"
)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "WHARF_CONFIG",
        default_value = "wharf.toml"
    )]
    config: PathBuf,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a commented example wharf.toml and a demo DuckDB warehouse.
    Init {
        /// Folder to write into.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Demo events to generate.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Mixpanel host the example config points at (the local receiver by default).
        #[arg(long, default_value = "http://127.0.0.1:8765")]
        api_host: String,
    },
    /// Validate the config and connect to every warehouse and destination.
    Check,
    /// Show a sync's column mapping and its first records exactly as they would be sent.
    Preview {
        /// The sync.
        sync: String,
        /// Rows to show.
        #[arg(long, default_value_t = 5)]
        limit: usize,
    },
    /// Run a sync once.
    Sync {
        /// The sync.
        sync: String,
        /// Timely worker threads.
        #[arg(long, short, default_value_t = 1)]
        workers: usize,
        /// Print the run summary as one JSON line on stdout.
        #[arg(long)]
        summary_json: bool,
        /// Testing hook: exit after delivery and before the commit, as a crash would.
        #[arg(long, hide = true, env = "WHARF_CRASH_BEFORE_COMMIT", value_parser = clap::builder::BoolishValueParser::new())]
        crash_before_commit: bool,
        /// Testing hook: exit after the transactional destinations (Kafka with
        /// `exactly_once`) committed and before the state store commits, as a crash would.
        #[arg(long, hide = true, env = "WHARF_CRASH_AFTER_DESTINATION_COMMIT", value_parser = clap::builder::BoolishValueParser::new())]
        crash_after_destination_commit: bool,
        /// Testing hook: exit after a PostgreSQL slot was confirmed and before the state
        /// store commits, as a crash would.
        #[arg(long, hide = true, env = "WHARF_CRASH_AFTER_SLOT_CONFIRM", value_parser = clap::builder::BoolishValueParser::new())]
        crash_after_slot_confirm: bool,
        /// Most changes one change-stream run takes (default 100,000); `wharf sync` runs
        /// again until it has drained the stream up to where it stood at its start.
        #[arg(long, hide = true, env = "WHARF_MAX_CHANGES_PER_RUN")]
        max_changes_per_run: Option<usize>,
        /// Most rows one append run takes (default 1,000,000; more where rows share the last
        /// insert time); `wharf sync` runs again, each run committed, until it has them all.
        #[arg(long, env = "WHARF_MAX_ROWS_PER_RUN")]
        max_rows_per_run: Option<u64>,
        /// Keep running: poll again every `--interval` and send changes as they come (mirror
        /// syncs with change capture send each change within about one interval). Ctrl-C
        /// stops after the current run.
        #[arg(long)]
        continuous: bool,
        /// Pause between runs in continuous mode.
        #[arg(long, default_value = "200ms", value_parser = parse_interval)]
        interval: std::time::Duration,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Run every sync on its schedule as a service, with an HTTP API, metrics and a web page
    /// (see `[service]` in the config). SIGHUP reloads the config; SIGTERM/SIGINT stops after
    /// the running runs (a second signal stops at once). Across processes, process 0 is the
    /// service (API, schedules, state store) and every other process joins its syncs.
    Run {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Show a sync's run history (from the state store, or from the running service's API
    /// while `wharf run` holds the store).
    History {
        /// The sync.
        sync: String,
        /// Runs to show, newest first.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the runs as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Make a sync start over: forget its watermark (or change position) and snapshot state,
    /// so its next run sends the whole table again. Run history is kept.
    Reset {
        /// The sync.
        sync: String,
    },
    /// Show the last runs of each sync.
    Status {
        /// Runs per sync.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Run the demo end to end: demo warehouse → local Mixpanel receiver, then check it.
    Quickstart {
        /// Folder for the demo files.
        #[arg(long, default_value = "wharf-quickstart")]
        dir: PathBuf,
        /// Demo events to generate.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Timely worker threads.
        #[arg(long, short, default_value_t = 2)]
        workers: usize,
    },
    /// Serve a Mixpanel-compatible receiver for local dry runs.
    MixpanelReceiver {
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 8765)]
        port: u16,
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
        /// Folder where accepted events are stored.
        #[arg(long, default_value = "receiver")]
        data: PathBuf,
        /// Accept only this project token (default: any credentials).
        #[arg(long, env = "WHARF_RECEIVER_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Fail this fraction of requests, on every endpoint (429 with Retry-After, 503, a 502
        /// after storing, or a connection dropped after storing), to test clients.
        #[arg(long, default_value_t = 0.0)]
        fault_rate: f64,
        /// Answer this fraction of requests late (after storing), 0 to 1.
        #[arg(long, default_value_t = 0.0)]
        slow_fraction: f64,
        /// How late slow answers are, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        slow_delay_ms: u64,
        /// Seed choosing which requests fail.
        #[arg(long, default_value_t = 1)]
        fault_seed: u64,
        /// Retry-After seconds sent with injected 429s.
        #[arg(long, default_value_t = 1)]
        retry_after: u64,
    },
}

/// Keeps glibc's malloc from handing the request-sized buffers of a run (a few MB each,
/// allocated and freed for every request) back to the kernel and faulting them in again:
/// below 32 MiB an allocation comes from the heap, and freed memory is kept up to 256 MiB.
fn keep_freed_memory() {
    // SAFETY: mallopt only sets the allocator's parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

fn main() {
    keep_freed_memory();
    let cli = Cli::parse();
    // The quickstart narrates its own steps; its default log level only shows problems.
    let level = match (&cli.command, cli.log_level.as_str()) {
        (Command::Quickstart { .. }, "info") => "warn",
        (_, level) => level,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(log_colours())
        .init();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Colour in log lines only on a terminal, and not when `NO_COLOR` is set (no-color.org): a
/// log written to a file or a pipe stays plain text.
fn log_colours() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Where this process is in a cluster of processes (timely's cluster mode).
#[derive(clap::Args, Debug)]
struct ClusterArgs {
    /// Run on a cluster of this many processes, each started with the same config (and for
    /// `wharf sync` the same `--workers`), its own `--process` and the same `--hostfile`.
    /// Process 0 owns the state store and commits.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// This process's number in the cluster, from 0.
    #[arg(long, default_value_t = 0)]
    process: usize,
    /// The cluster's addresses: one `host:port` line per process, in process order.
    #[arg(long)]
    hostfile: Option<PathBuf>,
    /// How long a process of a cluster waits for the others to connect (at the start of a
    /// sync's dataflow).
    #[arg(long, default_value = "2m", value_parser = parse_interval)]
    connect_timeout: std::time::Duration,
}

fn parse_interval(s: &str) -> std::result::Result<std::time::Duration, String> {
    wharf::duration::parse_duration(s)
        .ok_or_else(|| format!("`{s}` is not a duration (e.g. 200ms, 5s)"))
}

/// In a cluster, a process that is gone makes timely's threads in the others panic (its
/// connection failed): one log line each instead of a panic report, as the run's error says
/// what happened. Other panics are reported as usual.
fn quiet_timely_panics() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        match thread.name().filter(|n| n.starts_with("timely:")) {
            Some(name) => {
                let payload = info.payload();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::warn!(thread = name, "{message}");
            }
            None => report(info),
        }
    }));
}

/// The cluster this process is part of (`--processes` above 1), from its hostfile.
fn cluster_spec(args: &ClusterArgs) -> Result<Option<wharf_pipelines::cluster::ClusterSpec>> {
    let (processes, process) = (args.processes, args.process);
    let hostfile = args.hostfile.as_deref();
    let connect_within = args.connect_timeout;
    if processes <= 1 {
        if process != 0 {
            bail!(
                "--process {process} needs --processes (the number of processes, above {process})"
            );
        }
        return Ok(None);
    }
    if process >= processes {
        bail!("--process {process} is not below --processes {processes} (processes are numbered from 0)");
    }
    let Some(path) = hostfile else {
        bail!("--processes {processes} needs --hostfile (one host:port line per process)");
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the hostfile {}", path.display()))?;
    let mut addresses = wharf_pipelines::cluster::read_hostfile(&text);
    if addresses.len() < processes {
        bail!(
            "{}: {} address line(s) for --processes {processes}; write one host:port line per process",
            path.display(),
            addresses.len()
        );
    }
    addresses.truncate(processes);
    if let Some(bad) = addresses.iter().find(|a| !a.contains(':')) {
        bail!("{}: `{bad}` is not host:port", path.display());
    }
    Ok(Some(wharf_pipelines::cluster::ClusterSpec {
        process,
        addresses,
        connect_within,
        hub: None,
    }))
}

fn load(path: &Path) -> Result<Config> {
    Ok(Config::load(path)?)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init {
            dir,
            events,
            api_host,
        } => init(&dir, events, &api_host),
        Command::Check => check(&load(&cli.config)?),
        Command::Preview { sync, limit } => preview(&load(&cli.config)?, &sync, limit),
        Command::Sync {
            sync,
            workers,
            summary_json,
            crash_before_commit,
            crash_after_destination_commit,
            crash_after_slot_confirm,
            max_changes_per_run,
            max_rows_per_run,
            continuous,
            interval,
            cluster: cluster_args,
        } => {
            let config = load(&cli.config)?;
            let cluster = cluster_spec(&cluster_args)?;
            let process = cluster_args.process;
            if cluster.is_some() {
                quiet_timely_panics();
            }
            let rt = runtime()?;
            let options = SyncOptions {
                workers,
                progress: !summary_json && !continuous,
                crash_before_commit,
                crash_after_destination_commit,
                crash_after_slot_confirm,
                skip_idle: continuous,
                max_changes: max_changes_per_run
                    .unwrap_or(wharf::sync::MAX_CHANGES_PER_POLL)
                    .max(1),
                max_rows: max_rows_per_run
                    .unwrap_or(wharf::sync::MAX_ROWS_PER_RUN)
                    .max(1),
                cluster: cluster.clone(),
                ..SyncOptions::default()
            };
            if cluster.as_ref().is_some_and(|c| !c.leads()) {
                let epochs = wharf::sync::follow(&config, &sync, &options, &rt)?;
                eprintln!("wharf: process {process}: {epochs} epoch(s) delivered; process 0 committed them");
                return Ok(());
            }
            if continuous {
                let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let flag = stop.clone();
                rt.spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    eprintln!("wharf: stopping after the current run");
                    flag.store(true, std::sync::atomic::Ordering::Relaxed);
                });
                let runs = run_continuous(&config, &sync, &options, &rt, interval, &stop, |r| {
                    if summary_json {
                        println!("{}", summary_json_line(r));
                    } else {
                        print_report(r);
                    }
                })?;
                eprintln!("wharf: {runs} run(s) committed");
                return Ok(());
            }
            let print = |r: &SyncReport| {
                if summary_json {
                    println!("{}", summary_json_line(r));
                } else {
                    print_report(r);
                }
            };
            let report = run_sync(&config, &sync, &options, &rt, print)?;
            print(&report);
            Ok(())
        }
        Command::Status { runs } => status(&load(&cli.config)?, runs),
        Command::Run { cluster } => serve(&cli.config, cluster_spec(&cluster)?),
        Command::History { sync, limit, json } => history(&load(&cli.config)?, &sync, limit, json),
        Command::Reset { sync } => {
            let cleared = wharf::sync::reset_sync(&load(&cli.config)?, &sync)?;
            if cleared.is_empty() {
                println!("{sync}: nothing to reset (it has not committed a run)");
            } else {
                println!(
                    "{sync}: forgot {}; its next run starts over",
                    cleared.join(", ")
                );
            }
            Ok(())
        }
        Command::Quickstart {
            dir,
            events,
            workers,
        } => quickstart(&dir, events, workers),
        Command::MixpanelReceiver {
            port,
            host,
            data,
            token,
            fault_rate,
            slow_fraction,
            slow_delay_ms,
            fault_seed,
            retry_after,
        } => {
            let rt = runtime()?;
            let auth = match token {
                Some(token) => ReceiverAuth::ProjectToken { token },
                None => ReceiverAuth::AnyCredentials,
            };
            if !(0.0..=1.0).contains(&fault_rate) {
                bail!("--fault-rate must be between 0 and 1");
            }
            let mut config = ReceiverConfig::new(&data, auth);
            if !(0.0..=1.0).contains(&slow_fraction) {
                bail!("--slow-fraction must be between 0 and 1");
            }
            if fault_rate > 0.0 {
                config.faults = Some(Faults {
                    rate: fault_rate,
                    seed: fault_seed,
                    retry_after: std::time::Duration::from_secs(retry_after),
                });
            }
            if slow_fraction > 0.0 {
                config.slow_responses = Some(SlowResponses {
                    fraction: slow_fraction,
                    delay: std::time::Duration::from_millis(slow_delay_ms),
                    seed: fault_seed,
                });
            }
            rt.block_on(async {
                let receiver = Receiver::start(config, SocketAddr::new(host, port)).await?;
                eprintln!(
                    "Mixpanel-compatible receiver on {} storing into {} (Ctrl-C stops)",
                    receiver.base_url(),
                    data.display()
                );
                tokio::signal::ctrl_c().await?;
                let stats = receiver.stats();
                receiver.shutdown().await;
                eprintln!(
                    "stopped: {} events accepted, {} unique",
                    stats.events_accepted, stats.unique_events
                );
                Ok(())
            })
        }
    }
}

/// What `init` and `quickstart` say in a build without the `duckdb` feature.
#[cfg(not(feature = "duckdb"))]
const NO_DUCKDB: &str =
    "this build of wharf has no DuckDB support (the demo warehouse is a DuckDB file); build with the `duckdb` feature";

#[cfg(not(feature = "duckdb"))]
fn init(_dir: &Path, _events: u64, _api_host: &str) -> Result<()> {
    bail!(NO_DUCKDB)
}

#[cfg(not(feature = "duckdb"))]
fn quickstart(_dir: &Path, _events: u64, _workers: usize) -> Result<()> {
    bail!(NO_DUCKDB)
}

#[cfg(feature = "duckdb")]
fn init(dir: &Path, events: u64, api_host: &str) -> Result<()> {
    let config_path = dir.join("wharf.toml");
    if config_path.exists() {
        bail!(
            "{} exists already; remove it or use --dir",
            config_path.display()
        );
    }
    let started = Instant::now();
    demo::create_demo_warehouse(&dir.join("demo.duckdb"), events)?;
    std::fs::write(&config_path, demo::demo_config("demo.duckdb", api_host))
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    println!(
        "wrote {} and {} ({events} events, 5000 users, 300 companies, 200 products) in {:.1}s",
        config_path.display(),
        dir.join("demo.duckdb").display(),
        started.elapsed().as_secs_f64()
    );
    println!("next: `wharf mixpanel-receiver` in another terminal, then `wharf preview demo_events` and `wharf sync demo_events`");
    Ok(())
}

fn serve(config_path: &Path, cluster: Option<wharf_pipelines::cluster::ClusterSpec>) -> Result<()> {
    let rt = std::sync::Arc::new(runtime()?);
    if cluster.is_some() {
        quiet_timely_panics();
    }
    if let Some(spec) = cluster.clone().filter(|c| !c.leads()) {
        eprintln!(
            "wharf: process {} of {}: joining the syncs of process 0 at {}",
            spec.process,
            spec.processes(),
            spec.addresses[0]
        );
        wharf::service::cluster::follow(config_path, spec, rt)?;
        return Ok(());
    }
    let service = Service::start(config_path.to_path_buf(), rt.clone(), cluster)?;
    eprintln!(
        "wharf: running; status page and API on http://{}/ (SIGHUP reloads the config, Ctrl-C stops)",
        service.addr()
    );
    let shared = service.shared();
    rt.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        let mut stops = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = hup.recv() => {
                    let s = shared.clone();
                    let _ = tokio::task::spawn_blocking(move || s.reload()).await;
                    continue;
                }
            }
            stops += 1;
            if stops == 1 {
                eprintln!(
                    "wharf: stopping: running runs may finish (a second signal stops at once)"
                );
                shared.shutdown();
            } else {
                eprintln!("wharf: second signal: exiting now; unfinished runs are not committed");
                std::process::exit(130);
            }
        }
    });
    service.wait();
    Ok(())
}

#[cfg(feature = "duckdb")]
fn quickstart(dir: &Path, events: u64, workers: usize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Start from a clean demo: only the quickstart's own files are replaced.
    for sub in [".wharf", "receiver", "out"] {
        let p = dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("cannot clear {}", p.display()))?;
        }
    }
    let rt = runtime()?;
    let receiver = rt.block_on(Receiver::start(
        ReceiverConfig::new(dir.join("receiver"), ReceiverAuth::AnyCredentials),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    ))?;
    println!(
        "1. Mixpanel-compatible receiver listening on {}",
        receiver.base_url()
    );
    let warehouse = dir.join("demo.duckdb");
    demo::create_demo_warehouse(&warehouse, events)?;
    let config_path = dir.join("wharf.toml");
    std::fs::write(
        &config_path,
        demo::demo_config("demo.duckdb", &receiver.base_url()),
    )?;
    println!(
        "2. demo warehouse {} with {events} events; config {}",
        warehouse.display(),
        config_path.display()
    );
    let config = Config::load(&config_path)?;
    let options = SyncOptions {
        workers,
        progress: true,
        ..SyncOptions::default()
    };
    let first = run_sync(&config, "demo_events", &options, &rt, |_| {})?;
    print!("3. first run:  ");
    print_report(&first);
    let total = demo::append_demo_events(&warehouse, 1_000)?;
    let second = run_sync(&config, "demo_events", &options, &rt, |_| {})?;
    print!("4. 1000 new rows arrived; second run: ");
    print_report(&second);
    let stats = receiver.stats();
    rt.block_on(receiver.shutdown());
    println!(
        "5. the receiver holds {} events ({} unique by event, distinct_id, time, $insert_id); the warehouse table has {total} rows",
        stats.events_accepted, stats.unique_events
    );
    println!(
        "   received events (NDJSON, gzipped; `zcat` reads it): {}",
        dir.join("receiver").join("events.ndjson.gz").display()
    );
    println!(
        "   run history: `wharf --config {} status`",
        config_path.display()
    );
    let expected = total - first.outcome.rejected - second.outcome.rejected;
    if stats.unique_events != expected || stats.events_accepted != expected {
        bail!(
            "the receiver holds {} events ({} unique) but {expected} were expected",
            stats.events_accepted,
            stats.unique_events
        );
    }
    println!("OK: every demo event arrived exactly once.");
    Ok(())
}
