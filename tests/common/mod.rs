//! Shared fixtures for the integration tests: a DuckDB warehouse in a temp folder, a config
//! file, and the Mixpanel-compatible receiver on 127.0.0.1.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use wharf::receiver::{Receiver, ReceiverAuth, ReceiverConfig};

pub mod emulators;
pub mod kafka;
pub mod pg;
pub mod scenario;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("temp dir"),
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn warehouse(&self) -> PathBuf {
        self.path("wh.duckdb")
    }

    /// Runs SQL against the test warehouse (read-write).
    pub fn sql(&self, sql: &str) {
        let conn = duckdb::Connection::open(self.warehouse()).expect("open duckdb");
        conn.execute_batch(sql).expect("sql");
    }

    pub fn receiver(&self, name: &str, auth: ReceiverAuth) -> Receiver {
        self.rt
            .block_on(Receiver::start(
                ReceiverConfig::new(self.path(name), auth),
                SocketAddr::from(([127, 0, 0, 1], 0)),
            ))
            .expect("receiver")
    }

    pub fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write config");
        p
    }

    /// Runs the wharf binary with `args` in the fixture folder.
    pub fn wharf(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().expect("run wharf")
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The tables most test configs share: `[warehouses.wh]` (DuckDB, `wh.duckdb`) and
/// `[destinations.mp]` (Mixpanel at `host`, backoff in milliseconds); the destination's table
/// is last, so a caller may add keys to it.
pub fn duckdb_and_mixpanel(host: &str) -> String {
    format!(
        r#"[warehouses.wh]
type = "duckdb"
path = "wh.duckdb"
[destinations.mp]
type = "mixpanel"
api_host = "{host}"
project_id = "42"
service_account = {{ username = "sa", secret = "test-secret" }}
initial_backoff = "50ms"
max_backoff = "200ms"
"#
    )
}

/// A config with one events sync `s` reading `table` into a Mixpanel destination at `host`.
pub fn events_config(state_dir: &str, host: &str, table: &str, mapping: &str) -> String {
    format!(
        r#"state_dir = "{state_dir}"
{}[[syncs]]
name = "s"
warehouse = "wh"
table = "{table}"
table_type = "events"
mode = "append"
destinations = ["mp"]
[syncs.mapping]
{mapping}
"#,
        duckdb_and_mixpanel(host)
    )
}

pub fn read_ndjson(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// Key → op of change envelopes (`{"op","key","after",…}`); non-string keys as their JSON.
pub fn ops(envelopes: &[serde_json::Value]) -> std::collections::BTreeMap<String, String> {
    envelopes
        .iter()
        .map(|e| {
            (
                e["key"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| e["key"].to_string()),
                e["op"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Reads `src` whole and in 1, 3 and 4 parts (`Warehouse::partitions` by `key`), each time
/// keeping the rows `filter` keeps, and checks that the parts hold exactly the whole read's
/// rows (by the BIGINT column `id`), each once, and that a split read has no empty part.
/// Returns how many rows the whole read had.
pub fn parts_cover_the_table(
    wh: &dyn wharf::warehouse::Warehouse,
    src: &wharf::warehouse::SourceRef,
    key: &[String],
    filter: &str,
) -> usize {
    use wharf::warehouse::Partition;
    use wharf_operators::arrow::array::AsArray;
    use wharf_operators::arrow::datatypes::Int64Type;
    let ids = |part: &Partition| {
        let mut out = Vec::new();
        wh.read(src, filter, part, &mut |b| {
            let col = b.column_by_name("id").expect("a BIGINT `id` column");
            let col = col.as_primitive::<Int64Type>();
            out.extend((0..col.len()).map(|i| col.value(i)));
            true
        })
        .unwrap();
        out
    };
    let mut whole = ids(&Partition::whole());
    whole.sort_unstable();
    for count in [1, 3, 4] {
        let parts = wh.partitions(key, count);
        assert_eq!(parts.len(), count, "{count} parts asked");
        let mut all = Vec::new();
        for part in &parts {
            let got = ids(part);
            assert!(!got.is_empty(), "part {} of {count} is empty", part.index);
            all.extend(got);
        }
        all.sort_unstable();
        assert_eq!(all, whole, "{count} parts hold the rows once each");
    }
    whole.len()
}

/// The `id`s the parts of a split read hold, each part read on a thread of its own (as the
/// workers of a run read them), sorted; a row read twice appears twice.
pub fn ids_of_parts(parts: Vec<wharf::warehouse::PartRead>) -> Vec<i64> {
    let threads: Vec<_> = parts
        .into_iter()
        .map(|part| std::thread::spawn(move || ids_of(part)))
        .collect();
    let mut all: Vec<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("a part's thread"))
        .collect();
    all.sort_unstable();
    all
}

/// The `id` (BIGINT) values a part of a split read holds.
pub fn ids_of(part: wharf::warehouse::PartRead) -> Vec<i64> {
    use wharf_operators::arrow::array::AsArray;
    use wharf_operators::arrow::datatypes::Int64Type;
    let mut ids = Vec::new();
    part(&mut |b| {
        let col = b.column_by_name("id").expect("a BIGINT `id` column");
        ids.extend(col.as_primitive::<Int64Type>().values().iter().copied());
        true
    })
    .unwrap();
    ids
}
