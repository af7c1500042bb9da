//! The fault matrix, one test per fault: the destination down at start and going away
//! mid-run, answering later than the timeout, the warehouse restarted mid-read (a PostgreSQL
//! server of the test's own; a backend terminated: `tests/postgres.rs`), the state directory full (ENOSPC on a small tmpfs),
//! the state store and a snapshot file damaged, and the table changing between runs. Each
//! ends in a clear error with nothing committed, and the next run (once the fault is gone)
//! delivers everything — never a silent resend-all, a skip or a loss. (30% failing requests:
//! `tests/faults.rs`.)

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{events_config, free_port, text, Fixture};
use wharf::receiver::{Receiver, ReceiverAuth, ReceiverConfig, SlowResponses};

const MAPPING: &str = "event_name_column = \"name\"\ntime_column = \"ts\"\nuser_id_column = \"uid\"\nkey_columns = [\"id\"]";

fn events(f: &Fixture, n: u64) {
    f.sql(&format!(
        "CREATE TABLE ev AS SELECT i AS id, 'E' AS name, TIMESTAMP '2024-01-01' + to_seconds(i) AS ts,
           'u' || (i % 97) AS uid FROM range({n}) t(i);"
    ));
}

/// A receiver on `port` keeping its data in `dir` of the fixture (restartable there).
fn receiver_on(f: &Fixture, port: u16, slow: Option<Duration>) -> Receiver {
    let mut config = ReceiverConfig::new(f.path("recv"), ReceiverAuth::AnyCredentials);
    config.slow_responses = slow.map(|delay| SlowResponses {
        fraction: 1.0,
        delay,
        seed: 7,
    });
    f.rt.block_on(Receiver::start(
        config,
        SocketAddr::from(([127, 0, 0, 1], port)),
    ))
    .expect("receiver")
}

fn config_for(port: u16, extra: &str) -> String {
    events_config(".state", &format!("http://127.0.0.1:{port}"), "ev", MAPPING).replace(
        "max_backoff = \"200ms\"",
        &format!("max_backoff = \"200ms\"\n{extra}"),
    )
}

fn status(f: &Fixture) -> String {
    String::from_utf8_lossy(&f.wharf(&["status"], &[]).stdout).into_owned()
}

#[test]
fn the_destination_down_at_start_fails_the_run_uncommitted_then_everything_arrives() {
    let f = Fixture::new();
    events(&f, 5000);
    let port = free_port();
    f.write_config("wharf.toml", &config_for(port, "give_up_after = \"1s\""));
    let out = f.wharf(&["sync", "s"], &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("127.0.0.1:{port}")),
        "the error names the destination: {}",
        text(&out)
    );
    assert!(status(&f).contains("FAILED") && !status(&f).contains("SUCCEEDED"));
    let receiver = receiver_on(&f, port, None);
    let out = f.wharf(&["sync", "s"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(receiver.stats().unique_events, 5000);
}

#[test]
fn the_destination_going_away_mid_run_fails_it_uncommitted_then_everything_arrives_once() {
    let f = Fixture::new();
    events(&f, 20_000);
    let port = free_port();
    // Slow answers keep the run going; the receiver goes away after the first requests.
    let receiver = receiver_on(&f, port, Some(Duration::from_millis(200)));
    f.write_config(
        "wharf.toml",
        &config_for(port, "give_up_after = \"1s\"\nconcurrency = 2"),
    );
    let child = spawn_sync(&f);
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.stats().events_received == 0 {
        assert!(Instant::now() < deadline, "nothing arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(receiver);
    let out = child.wait_with_output().expect("wait");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!status(&f).contains("SUCCEEDED"), "{}", status(&f));
    let receiver = receiver_on(&f, port, None);
    let partial = receiver.stats().unique_events;
    assert!(partial > 0 && partial < 20_000, "{partial}");
    let out = f.wharf(&["sync", "s"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        receiver.stats().unique_events,
        20_000,
        "every event once by its dedup key"
    );
}

#[test]
fn a_destination_slower_than_the_timeout_fails_the_run_and_a_later_run_delivers_once() {
    let f = Fixture::new();
    events(&f, 3000);
    let port = free_port();
    let slow = receiver_on(&f, port, Some(Duration::from_millis(1500)));
    f.write_config(
        "wharf.toml",
        &config_for(port, "timeout = \"300ms\"\ngive_up_after = \"2s\""),
    );
    let out = f.wharf(&["sync", "s"], &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).to_lowercase().contains("timed out") || text(&out).contains("timeout"),
        "{}",
        text(&out)
    );
    drop(slow);
    let receiver = receiver_on(&f, port, None);
    let out = f.wharf(&["sync", "s"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    // Requests that timed out may have been stored: Mixpanel's dedup key makes them one.
    assert_eq!(receiver.stats().unique_events, 3000);
}

/// Runs `sh -c` as root (directly, or through sudo).
/// Whether the tests run as root.
fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `wharf sync s` in the fixture's folder, its output piped.
fn spawn_sync(f: &Fixture) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["sync", "s"])
        .current_dir(f.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start wharf")
}

fn as_root(cmd: &str) -> std::process::Output {
    let mut c = if is_root() {
        std::process::Command::new("sh")
    } else {
        let mut s = std::process::Command::new("sudo");
        s.arg("sh");
        s
    };
    c.args(["-c", cmd]).output().expect("sh")
}

/// A small tmpfs, unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: std::path::PathBuf, size: &str) -> SmallDisk {
        std::fs::create_dir_all(&at).expect("mount point");
        let out = as_root(&format!(
            "mount -t tmpfs -o size={size} tmpfs '{}'",
            at.display()
        ));
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (the test needs root or sudo): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(at)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = as_root(&format!("umount -l '{}'", self.0.display()));
    }
}

#[test]
fn a_full_state_directory_is_a_clear_error_with_nothing_committed() {
    let f = Fixture::new();
    f.sql(
        "CREATE TABLE users AS SELECT 'u' || i AS id, 'name ' || i AS name FROM range(50000) t(i);",
    );
    let receiver = f.receiver("recv", ReceiverAuth::AnyCredentials);
    let disk = SmallDisk::mount(f.path("state"), "4m");
    // Leave about 200 KB: less than the snapshot state of 50,000 rows (~2 MB).
    let filler = disk.0.join("filler");
    as_root(&format!(
        "dd if=/dev/zero of='{}' bs=1k count=3900 2>/dev/null",
        filler.display()
    ));
    f.write_config(
        "wharf.toml",
        &format!(
            r#"state_dir = "state"
[warehouses.wh]
type = "duckdb"
path = "wh.duckdb"
[destinations.mp]
type = "mixpanel"
api_host = "{}"
project_id = "42"
project_token = "tok"
service_account = {{ username = "sa", secret = "s" }}
[[syncs]]
name = "users"
warehouse = "wh"
table = "users"
table_type = "users"
mode = "mirror"
destinations = ["mp"]
[syncs.mapping]
user_id_column = "id"
"#,
            receiver.base_url()
        ),
    );
    let out = f.wharf(&["sync", "users"], &[]);
    assert!(!out.status.success(), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("No space left on device") && all.contains("state"),
        "the error says what and where: {all}"
    );
    as_root(&format!("rm -f '{}'", filler.display()));
    let out = f.wharf(&["sync", "users"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(receiver.profiles().len(), 50_000);
    let history = f.wharf(&["history", "users", "--json"], &[]);
    let runs: Vec<serde_json::Value> = String::from_utf8_lossy(&history.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(runs[0]["status"], "SUCCEEDED", "{runs:?}");
    assert!(
        runs.iter().skip(1).all(|r| r["status"] != "SUCCEEDED"),
        "nothing was committed while the disk was full: {runs:?}"
    );
}

#[test]
fn a_damaged_state_store_or_snapshot_file_is_named_with_the_fix() {
    let f = Fixture::new();
    f.sql("CREATE TABLE users AS SELECT 'u' || i AS id, 'n' || i AS name FROM range(1000) t(i);");
    let receiver = f.receiver("recv", ReceiverAuth::AnyCredentials);
    f.write_config(
        "wharf.toml",
        &format!(
            r#"state_dir = ".state"
[warehouses.wh]
type = "duckdb"
path = "wh.duckdb"
[destinations.mp]
type = "mixpanel"
api_host = "{}"
project_id = "42"
project_token = "tok"
service_account = {{ username = "sa", secret = "s" }}
[[syncs]]
name = "users"
warehouse = "wh"
table = "users"
table_type = "users"
mode = "mirror"
destinations = ["mp"]
[syncs.mapping]
user_id_column = "id"
"#,
            receiver.base_url()
        ),
    );
    let out = f.wharf(&["sync", "users"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let sent = receiver.endpoint_stats().engage.updates_received;

    // A snapshot part cut short: the run fails naming the file and the way out.
    let part = walk(&f.path(".state/snapshots/users"))
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-")
        })
        .expect("a sorted part");
    let len = std::fs::metadata(&part).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&part)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let out = f.wharf(&["sync", "users"], &[]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains(&part.file_name().unwrap().to_string_lossy().to_string())
            && all.contains("wharf reset"),
        "names the file and the fix: {all}"
    );
    assert_eq!(
        receiver.endpoint_stats().engage.updates_received,
        sent,
        "nothing resent"
    );

    // The state store itself damaged: named, with the fix, nothing sent.
    let store = f.path(".state/state.redb");
    std::fs::write(&store, b"not a database at all").unwrap();
    let out = f.wharf(&["sync", "users"], &[]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("state.redb"), "names the file: {all}");
    assert!(
        all.contains("backup") || all.contains("wharf reset"),
        "says what to do: {all}"
    );
    assert_eq!(receiver.endpoint_stats().engage.updates_received, sent);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn table_changes_between_runs_are_clear_errors_or_documented() {
    let f = Fixture::new();
    events(&f, 10);
    let receiver = f.receiver("recv", ReceiverAuth::AnyCredentials);
    f.write_config(
        "wharf.toml",
        &events_config(".state", &receiver.base_url(), "ev", MAPPING),
    );
    let out = f.wharf(&["sync", "s"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    // A column the mapping names is renamed: the error names it and lists the columns.
    f.sql("ALTER TABLE ev RENAME COLUMN uid TO user_id;");
    let out = f.wharf(&["sync", "s"], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("column `uid`") && text(&out).contains("user_id"),
        "{}",
        text(&out)
    );
    f.sql("ALTER TABLE ev RENAME COLUMN user_id TO uid;");
    // The time column's type changes: the error names the column and what is expected.
    f.sql("ALTER TABLE ev ALTER ts TYPE VARCHAR;");
    let out = f.wharf(&["sync", "s"], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("column `ts`") && text(&out).contains("time_column"),
        "{}",
        text(&out)
    );
    f.sql("ALTER TABLE ev ALTER ts TYPE TIMESTAMP;");
    // A column no setting names is dropped (documented): later events simply lack it.
    f.sql(
        "ALTER TABLE ev ADD COLUMN extra INTEGER DEFAULT 1;
         INSERT INTO ev (id, name, ts, uid, extra) VALUES (100, 'E', TIMESTAMP '2024-02-01', 'u1', 5);",
    );
    let out = f.wharf(&["sync", "s"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    f.sql(
        "ALTER TABLE ev DROP COLUMN extra;
         INSERT INTO ev VALUES (101, 'E', TIMESTAMP '2024-02-02', 'u1');",
    );
    let out = f.wharf(&["sync", "s"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(receiver.stats().unique_events, 12);
}

/// The warehouse going away mid-read, for a warehouse read over HTTP: the Snowflake emulator
/// (fakesnow) is killed while the run reads its table. The run fails with an error naming the
/// warehouse, nothing is committed; once the emulator is back (on the same address, the table
/// loaded again) the next run delivers every row once.
#[test]
fn an_emulator_killed_mid_read_fails_the_run_uncommitted_and_the_next_run_is_exact() {
    use common::emulators::FakeSnow;
    use std::io::BufRead;

    const ROWS: u64 = 300_000;
    let load = |sf: &FakeSnow| {
        sf.sql(&[&format!(
            "CREATE TABLE ev AS SELECT x AS id, 'E' AS name, '2024-01-01'::TIMESTAMP_NTZ + to_seconds(x) AS ts, \
             'u' || (x % 97)::VARCHAR AS uid FROM range({ROWS}) t(x)"
        )])
    };
    let f = Fixture::new();
    let sf = FakeSnow::start();
    let sf_port = sf.port;
    load(&sf);
    let receiver = f.receiver("recv", ReceiverAuth::AnyCredentials);
    f.write_config(
        "wharf.toml",
        &format!(
            r#"state_dir = ".state"
[warehouses.sf]
type = "snowflake"
account = "wharf-test"
user = "loader"
password = "pw"
database = "DB"
url = "{}"
[destinations.mp]
type = "mixpanel"
api_host = "{}"
project_id = "42"
project_token = "tok"
service_account = {{ username = "sa", secret = "test-secret" }}
[[syncs]]
name = "s"
warehouse = "sf"
table = "ev"
table_type = "events"
mode = "append"
destinations = ["mp"]
[syncs.mapping]
event_name_column = "NAME"
time_column = "TS"
user_id_column = "UID"
key_columns = ["ID"]
"#,
            sf.url(),
            receiver.base_url()
        ),
    );
    // The run logs "run started" after counting the rows and before reading them: the
    // emulator is killed then, while it answers the read.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["sync", "s"])
        .current_dir(f.dir.path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start wharf");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line.expect("log line");
        log.push_str(&line);
        log.push('\n');
        if line.contains("run started") {
            break;
        }
    }
    assert!(log.contains("run started"), "{log}");
    drop(sf);
    for line in lines {
        log.push_str(&line.expect("log line"));
        log.push('\n');
    }
    let status_code = child.wait().expect("wait");
    assert!(
        !status_code.success(),
        "the run survived its warehouse: {log}"
    );
    assert!(
        log.contains("Snowflake warehouse `sf`"),
        "the error names the warehouse: {log}"
    );
    let shown = status(&f);
    assert!(
        shown.contains("FAILED") && !shown.contains("SUCCEEDED"),
        "{shown}"
    );

    // Back on the same address, the table loaded again: the next run is exact.
    let sf = FakeSnow::start_on(sf_port);
    load(&sf);
    let out = f.wharf(&["sync", "s"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(receiver.stats().unique_events, ROWS, "every row once");
}

/// A PostgreSQL server of the test's own (Debian's binaries, `initdb` into a temporary
/// folder, 127.0.0.1 on a free port), so that it can be restarted without touching the shared
/// one the other tests use; stopped on drop. Run as `postgres` when the test runs as root.
struct PrivatePostgres {
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn start(f: &Fixture) -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("Debian's PostgreSQL (tests/postgres-up.sh installs it)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("pg_ctl").exists())
            .max()
            .expect("a PostgreSQL version with pg_ctl");
        let dir = f.path("private-pg");
        std::fs::create_dir_all(&dir).expect("folder");
        // The server's user must own its folder and reach it.
        let _ = as_root(&format!(
            "chown postgres '{0}' 2>/dev/null; chmod 755 '{1}'",
            dir.display(),
            f.path("").display()
        ));
        let pg = PrivatePostgres {
            dir,
            bin,
            port: free_port(),
        };
        pg.pg(&format!(
            "'{}/initdb' -D '{}/data' -A trust -U postgres --no-sync >/dev/null",
            pg.bin.display(),
            pg.dir.display()
        ));
        pg.ctl("start");
        pg
    }

    /// Runs `cmd` as the server's user.
    fn pg(&self, cmd: &str) {
        let out = if is_root() {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--", "sh", "-c", cmd])
                .output()
        } else {
            std::process::Command::new("sh").args(["-c", cmd]).output()
        }
        .expect("sh");
        assert!(
            out.status.success(),
            "{cmd}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl <action>` (start, restart: waits until the server answers).
    fn ctl(&self, action: &str) {
        self.pg(&format!(
            "'{bin}/pg_ctl' -D '{dir}/data' -l '{dir}/log' -w -m fast -o \"-p {port} -k '{dir}' -c listen_addresses=127.0.0.1 -c fsync=off\" {action} >/dev/null",
            bin = self.bin.display(),
            dir = self.dir.display(),
            port = self.port,
        ));
    }

    fn warehouse(&self) -> wharf::warehouse::postgres::PostgresWarehouse {
        common::pg::warehouse(self.port, "postgres")
    }

    /// Runs SQL statements, panicking on failure.
    fn exec(&self, sql: &str) {
        common::pg::exec(self.port, "postgres", sql);
    }

    /// The first column of the first row of `sql`'s answer, as an i64.
    fn query_i64(&self, sql: &str) -> i64 {
        use wharf::warehouse::SourceRef;
        let w = self.warehouse();
        w.block(async {
            let c = w.connect().await?;
            c.query_one(sql, &[])
                .await
                .map_err(|e| w.err(&SourceRef::Query(sql.to_string()), e))
        })
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.ctl("stop -m immediate"));
    }
}

/// The warehouse restarted mid-read (not only a backend terminated: `pg_ctl restart -m fast`
/// on a server of the test's own): the run fails with a connection error and nothing
/// committed; the next run, once the server is back, delivers every row, and the receiver
/// holds each exactly once by its dedup key.
#[test]
fn postgres_restarted_mid_read_fails_the_run_uncommitted_and_the_next_run_is_exact() {
    let f = Fixture::new();
    let pg = PrivatePostgres::start(&f);
    let n: u64 = 1_000_000;
    pg.exec(&format!(
        "CREATE TABLE ev AS SELECT g AS id, 'E'::text AS name,
           timestamp '2024-01-01' + g * interval '1 second' AS ts, 'u' || (g % 97) AS uid
         FROM generate_series(1, {n}) g"
    ));
    let port = free_port();
    let receiver = receiver_on(&f, port, None);
    let config = config_for(port, "").replace(
        "[warehouses.wh]\ntype = \"duckdb\"\npath = \"wh.duckdb\"",
        &format!(
            "[warehouses.wh]\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\ndatabase = \"postgres\"\nuser = \"postgres\"\nsslmode = \"disable\"",
            pg.port
        ),
    );
    assert!(config.contains("type = \"postgres\""), "{config}");
    f.write_config(
        "wharf.toml",
        &config.replace("table = \"ev\"", "table = \"public.ev\""),
    );
    let mut child = spawn_sync(&f);
    // Restart the server as soon as wharf is reading the table.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg.query_i64(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'wharf' \
         AND pid <> pg_backend_pid() AND query LIKE '%ev%' \
         AND query NOT LIKE '%count(*)%' AND query NOT LIKE '%pg_stat_activity%' \
         AND state = 'active'",
    ) == 0
    {
        assert!(Instant::now() < deadline, "the read never started");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the run ended before the restart"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    pg.ctl("restart");
    let out = child.wait_with_output().expect("wait");
    assert!(!out.status.success(), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("terminat") || all.contains("connection") || all.contains("shut"),
        "{all}"
    );
    eprintln!(
        "the run cut by the restart: {}",
        all.lines()
            .find(|l| l.contains("error"))
            .unwrap_or_default()
    );
    assert!(!status(&f).contains("SUCCEEDED"), "{}", status(&f));
    // The server is back: the next run delivers every row, each once by its $insert_id.
    let again = f.wharf(&["sync", "s"], &[]);
    assert!(again.status.success(), "{}", text(&again));
    let stats = receiver.stats();
    assert_eq!(stats.unique_events, n, "{stats:?}");
}
