//! The `wharf` command line.

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
use wharf::state::StateStore;
use wharf::sync::{resolve, run_continuous, run_sync, SyncOptions, SyncReport};
use wharf_operators::change::{ChangeOp, ChangeSet, RowChange};
use wharf_operators::columns::row_json;
use wharf_operators::record::MappedBatch;
use wharf_operators::RecordMapper;

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
        /// Keep running: poll again every `--interval` and send changes as they come (mirror
        /// syncs with change capture send each change within about one interval). Ctrl-C
        /// stops after the current run.
        #[arg(long)]
        continuous: bool,
        /// Pause between runs in continuous mode.
        #[arg(long, default_value = "200ms", value_parser = parse_interval)]
        interval: std::time::Duration,
    },
    /// Run every sync on its schedule as a service, with an HTTP API, metrics and a web page
    /// (see `[service]` in the config). SIGHUP reloads the config; SIGTERM/SIGINT stops after
    /// the running runs (a second signal stops at once).
    Run,
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

fn main() {
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

fn parse_interval(s: &str) -> std::result::Result<std::time::Duration, String> {
    wharf::duration::parse_duration(s)
        .ok_or_else(|| format!("`{s}` is not a duration (e.g. 200ms, 5s)"))
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
            continuous,
            interval,
        } => {
            let config = load(&cli.config)?;
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
                ..SyncOptions::default()
            };
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
        Command::Run => serve(&cli.config),
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

fn check(config: &Config) -> Result<()> {
    let rt = runtime()?;
    let mut failures = 0;
    let mut report = |what: String, r: Result<String, String>| match r {
        Ok(detail) => println!("ok    {what}{detail}"),
        Err(e) => {
            failures += 1;
            println!("FAIL  {what}: {e}");
        }
    };
    for name in config.warehouses.keys() {
        let Some(wh) = wharf::warehouse::open(config, name) else {
            continue;
        };
        let detail = match wh.logical_decoding() {
            // Mirror syncs on PostgreSQL read its change stream when wal_level allows it.
            Some(pg) if pg.settings().flavor == wharf::warehouse::postgres::Flavor::Postgres => {
                match pg.wal_level() {
                    Ok(level) if level == "logical" => {
                        " (wal_level = logical: mirror syncs use change capture)".to_string()
                    }
                    Ok(level) => format!(
                        " (wal_level = {level}: mirror syncs diff snapshots; for change capture \
                         run ALTER SYSTEM SET wal_level = logical and restart PostgreSQL)"
                    ),
                    Err(_) => String::new(),
                }
            }
            _ => String::new(),
        };
        report(
            format!("warehouse {name}"),
            wh.check().map(|_| detail).map_err(|e| e.to_string()),
        );
    }
    for (name, d) in &config.destinations {
        let r = d.check(&rt).map_err(|e| e.to_string());
        report(format!("destination {name}"), r);
    }
    for s in &config.syncs {
        let r = resolve(config, &s.name).map(|r| match (&r.cursor, &r.events) {
            (Some(cursor), Some(events)) => format!(
                " ({} columns, cursor `{}`, {} property columns)",
                r.schema.columns.len(),
                cursor.0,
                events.property_columns(&r.schema.arrow).len()
            ),
            _ => format!(
                " ({} columns, {} by primary key {})",
                r.schema.columns.len(),
                format!("{:?}", r.sync.mode).to_lowercase(),
                r.sync.key_columns().join(", ")
            ),
        });
        report(format!("sync {}", s.name), r.map_err(|e| e.to_string()));
    }
    if failures > 0 {
        bail!("{failures} check(s) failed");
    }
    Ok(())
}

fn preview(config: &Config, name: &str, limit: usize) -> Result<()> {
    let r = resolve(config, name)?;
    println!(
        "sync {name}: {} → {}",
        r.source,
        r.sync.destinations.join(", ")
    );
    println!(
        "  table type : {} ({} sync)",
        format!("{:?}", r.sync.table_type).to_lowercase(),
        format!("{:?}", r.sync.mode).to_lowercase()
    );
    if let Some(ev) = &r.events {
        let m = ev.mapping();
        println!("  event name : {:?}", m.event_name);
        println!("  time       : {} ({:?})", m.time_column, m.time_unit);
        println!(
            "  distinct_id: {}",
            m.user_id_column.as_deref().unwrap_or("(none)")
        );
        println!(
            "  $device_id : {}",
            m.device_id_column.as_deref().unwrap_or("(none)")
        );
        println!(
            "  $insert_id : from {}",
            if m.key_columns.is_empty() {
                "the whole row".to_string()
            } else {
                m.key_columns.join(", ")
            }
        );
        println!(
            "  properties : {}",
            ev.property_columns(&r.schema.arrow).join(", ")
        );
    }
    println!(
        "  JSON props : {}",
        r.sync
            .mapping
            .properties_column
            .as_deref()
            .unwrap_or("(none)")
    );
    if let Some(c) = &r.cursor {
        println!("  cursor     : {} ({})", c.0, c.1);
    }
    if !r.schema.primary_key.is_empty() {
        println!("  table's primary key: {}", r.schema.primary_key.join(", "));
    }
    let now = chrono::Utc::now().timestamp_millis();
    let batches = r.warehouse.preview(&r.source, limit)?;
    if r.hasher.is_some() {
        println!("  sync key   : {}", r.sync.key_columns().join(", "));
        let rt = runtime()?;
        let p = wharf::sync::preview_changes(config, &r, 1, &rt)?;
        println!(
            "next run would send: {} inserts, {} updates, {} deletes ({} rows in the table; nothing sent, nothing committed)",
            p.inserts, p.updates, p.deletes, p.rows
        );
        let mapper = wharf::sync::change_mapper(config, &r, &r.sync.destinations[0], None)?;
        println!("records as they would be sent for new rows:");
        for b in &batches {
            let keys = r
                .hasher
                .as_ref()
                .map(|h| h.key_texts(b))
                .unwrap_or_default();
            let set = ChangeSet::Rows {
                batch: b.clone(),
                changes: vec![
                    RowChange {
                        op: ChangeOp::Insert,
                        identity_changed: false
                    };
                    b.num_rows()
                ],
                keys,
                rejects: Vec::new(),
            };
            print_mapped(&mapper.map_changes(&set, now));
        }
    } else if let Some(ev) = &r.events {
        println!("records as they would be sent:");
        for b in &batches {
            print_mapped(&ev.map_batch(b, now));
        }
    }
    if batches.is_empty() {
        println!("(the table is empty)");
    } else if let Some(b) = batches.first() {
        println!("first source row: {}", row_json(b, 0));
    }
    Ok(())
}

fn print_mapped(mapped: &MappedBatch) {
    for rec in mapped.records.iter() {
        println!("{}", String::from_utf8_lossy(rec));
    }
    for rej in &mapped.rejects {
        println!("REJECTED key={} reason: {}", rej.key, rej.reason);
    }
}

fn serve(config_path: &Path) -> Result<()> {
    let rt = std::sync::Arc::new(runtime()?);
    let service = Service::start(config_path.to_path_buf(), rt.clone())?;
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

fn history(config: &Config, sync: &str, limit: usize, json: bool) -> Result<()> {
    if config.sync(sync).is_none() {
        bail!(
            "no sync named `{sync}` in the config; defined: {}",
            config
                .syncs
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let runs = runs_of(config, None, sync, limit)?;
    if json {
        for r in &runs {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    if runs.is_empty() {
        println!("{sync}: no runs yet");
        return Ok(());
    }
    println!(
        "{:>5}  {:<9}  {:<24}  {:>8}  {:>10}  {:>10}  {:>8}  {:>10}  {:<22}  {:<22}  ERROR",
        "RUN",
        "STATUS",
        "STARTED",
        "SECONDS",
        "READ",
        "DELIVERED",
        "REJECTED",
        "BYTES",
        "CHANGES +/~/-",
        "WATERMARK BEFORE → AFTER"
    );
    for r in runs {
        let seconds = r
            .ended_at
            .as_deref()
            .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
            .zip(chrono::DateTime::parse_from_rfc3339(&r.started_at).ok())
            .map(|(e, s)| format!("{:.1}", (e - s).num_milliseconds() as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        let wm = |w: Option<wharf_operators::watermark::Watermark>| {
            w.map(|w| w.to_string()).unwrap_or_else(|| "-".into())
        };
        println!(
            "{:>5}  {:<9}  {:<24}  {:>8}  {:>10}  {:>10}  {:>8}  {:>10}  {:<22}  {:<22}  {}",
            r.run_id,
            format!("{:?}", r.status).to_uppercase(),
            r.started_at,
            seconds,
            r.rows_read,
            r.delivered,
            r.rejected,
            r.bytes_sent,
            format!("{}/{}/{}", r.inserted, r.updated, r.deleted),
            format!("{} → {}", wm(r.watermark_before), wm(r.watermark_after)),
            r.error.unwrap_or_default()
        );
    }
    Ok(())
}

/// The latest runs of `sync`: from the state store (`store`, or opened here), or, while
/// `wharf run` holds the store, from its API.
fn runs_of(
    config: &Config,
    store: Option<&StateStore>,
    sync: &str,
    limit: usize,
) -> Result<Vec<wharf::state::RunRecord>> {
    if let Some(store) = store {
        return Ok(store.runs(sync, limit)?);
    }
    match StateStore::open(&config.state_dir()) {
        Ok(store) => Ok(store.runs(sync, limit)?),
        Err(local) => history_from_service(config, sync, limit).map_err(|api| {
            anyhow::anyhow!("{local}; the service's API did not answer either: {api}")
        }),
    }
}

/// The history from a running `wharf run`'s API (`service.listen`, `service.token`).
fn history_from_service(
    config: &Config,
    sync: &str,
    limit: usize,
) -> Result<Vec<wharf::state::RunRecord>> {
    let rt = runtime()?;
    rt.block_on(async {
        let url = format!(
            "http://{}/syncs/{sync}/runs?limit={limit}",
            config.service.listen
        );
        let mut req = reqwest::Client::new().get(&url);
        if let Some(t) = &config.service.token {
            req = req.bearer_auth(t.expose());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?;
        if !resp.status().is_success() {
            bail!("{url}: HTTP {}", resp.status());
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?;
        Ok(serde_json::from_slice(&body)?)
    })
}

fn status(config: &Config, runs: usize) -> Result<()> {
    // While `wharf run` holds the store, the runs come from its API.
    let store = StateStore::open(&config.state_dir()).ok();
    for s in &config.syncs {
        println!("{} ({:?}, schedule {}):", s.name, s.mode, s.schedule);
        let history = runs_of(config, store.as_ref(), &s.name, runs)?;
        if history.is_empty() {
            println!("  no runs yet");
        }
        for r in history {
            println!(
                "  run {:>4} {:<9} {} → {}  read {} sent {} rejected {}{}  watermark {}{}",
                r.run_id,
                format!("{:?}", r.status).to_uppercase(),
                r.started_at,
                r.ended_at.as_deref().unwrap_or("-"),
                r.rows_read,
                r.delivered,
                r.rejected,
                if r.inserted + r.updated + r.deleted + r.unapplied > 0 {
                    format!(
                        "  +{} ~{} -{} unapplied {}",
                        r.inserted, r.updated, r.deleted, r.unapplied
                    )
                } else {
                    String::new()
                },
                r.watermark_after
                    .or(r.watermark_before)
                    .map(|w| w.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.error.map(|e| format!("  error: {e}")).unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Peak resident memory of this process in bytes (Linux), if known.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn summary_json_line(r: &SyncReport) -> String {
    let secs = r.outcome.elapsed.as_secs_f64();
    serde_json::json!({
        "sync": r.run.sync,
        "run_id": r.run.run_id,
        "rows_read": r.outcome.rows_read,
        "delivered": r.outcome.delivered,
        "rejected": r.outcome.rejected,
        "bytes_sent": r.outcome.bytes_sent,
        "requests": r.outcome.requests,
        "retries": r.outcome.retries,
        "seconds": secs,
        "rows_per_second": r.outcome.rows_read as f64 / secs.max(1e-9),
        "peak_rss_bytes": peak_rss_bytes(),
        "watermark": r.run.watermark_after.map(|w| w.to_string()),
        "inserted": r.run.inserted,
        "updated": r.run.updated,
        "deleted": r.run.deleted,
        "unapplied": r.run.unapplied,
        "rejects_path": r.rejects_path,
    })
    .to_string()
}

fn print_report(r: &SyncReport) {
    let secs = r.outcome.elapsed.as_secs_f64();
    println!(
        "sync {} run {}: read {} rows, delivered {}, rejected {} in {:.2}s ({:.0} rows/s); watermark {}",
        r.run.sync,
        r.run.run_id,
        r.outcome.rows_read,
        r.outcome.delivered,
        r.outcome.rejected,
        secs,
        r.outcome.rows_read as f64 / secs.max(1e-9),
        r.run.watermark_after.map(|w| w.to_string()).unwrap_or_else(|| "-".into())
    );
    if r.run.inserted + r.run.updated + r.run.deleted > 0 || r.run.mode != "append" {
        println!(
            "  changes: {} inserted, {} updated, {} deleted",
            r.run.inserted, r.run.updated, r.run.deleted
        );
    }
    if r.run.unapplied > 0 {
        println!(
            "  {} changes the destination cannot apply are in the change log (state folder, changes/{}.ndjson)",
            r.run.unapplied, r.run.sync
        );
    }
    if r.outcome.rejected > 0 {
        println!("  rejected rows and reasons: {}", r.rejects_path.display());
    }
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
