//! One sync across processes (timely's cluster mode: `wharf sync --processes P --process I
//! --hostfile F`): two processes on 127.0.0.1 send exactly what one process sends (append,
//! full and mirror); one killed mid-epoch leaves nothing committed and the rerun is exact;
//! append and mirror the same across two network namespaces with their own addresses;
//! `--continuous` across processes; `wharf run` across processes.

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, text, Fixture};
use wharf::receiver::{Receiver, ReceiverAuth};

const ROWS: u64 = 20_000;

/// The warehouse and the destinations (Mixpanel at `host`, and a file) of every config here.
fn header(state_dir: &str, host: &str) -> String {
    format!(
        r#"state_dir = "{state_dir}"
{}project_token = "tok"
[destinations.out]
type = "file"
path = "{state_dir}-out.ndjson"
"#,
        common::duckdb_and_mixpanel(host)
    )
}

/// An append sync `ev` of the events table into Mixpanel and a file.
fn config(state_dir: &str, host: &str) -> String {
    header(state_dir, host)
        + r#"[[syncs]]
name = "ev"
warehouse = "wh"
table = "ev"
table_type = "events"
mode = "append"
destinations = ["mp", "out"]
[syncs.mapping]
event_name_column = "name"
time_column = "ts"
user_id_column = "uid"
"#
}

/// Rows `from..to` of the events table (created with the first).
fn add_rows(f: &Fixture, from: u64, to: u64) {
    let rows = format!(
        "SELECT CASE i % 3 WHEN 0 THEN 'Signup' WHEN 1 THEN 'Purchase' ELSE 'View' END AS name,
           TIMESTAMP '2024-01-01' + to_microseconds(i * 1000) AS ts, 'u' || i AS uid,
           i AS n, 'plan ' || (i % 7) AS plan FROM range({from}, {to}) t(i)"
    );
    if from == 0 {
        f.sql(&format!("CREATE TABLE ev AS {rows};"));
    } else {
        f.sql(&format!("INSERT INTO ev {rows};"));
    }
}

/// A hostfile of `addresses`, written into the fixture.
fn hostfile(f: &Fixture, addresses: &[String]) -> String {
    let path = f.path("hosts");
    std::fs::write(&path, addresses.join("\n") + "\n").expect("hostfile");
    path.display().to_string()
}

/// A hostfile of two processes on 127.0.0.1, each on a free port.
fn local_hostfile(f: &Fixture) -> String {
    let local = || format!("127.0.0.1:{}", free_port());
    hostfile(f, &[local(), local()])
}

/// `wharf sync ev` as process `process` of `processes`, with 2 workers, started through
/// `prefix` (e.g. `ip netns exec …`).
fn spawn(f: &Fixture, prefix: &[&str], config: &str, process: usize, hosts: &str) -> Child {
    spawn_with(f, prefix, config, process, hosts, &[])
}

/// [`spawn`] with `extra` arguments.
fn spawn_with(
    f: &Fixture,
    prefix: &[&str],
    config: &str,
    process: usize,
    hosts: &str,
    extra: &[&str],
) -> Child {
    let bin = env!("CARGO_BIN_EXE_wharf");
    let (first, rest) = match prefix.split_first() {
        Some((first, rest)) => (*first, rest.to_vec()),
        None => (bin, Vec::new()),
    };
    let mut cmd = Command::new(first);
    if !prefix.is_empty() {
        cmd.args(rest).arg(bin);
    }
    cmd.args([
        "-c",
        config,
        "sync",
        "ev",
        "--workers",
        "2",
        "--summary-json",
    ])
    .args(["--processes", "2", "--process", &process.to_string()])
    .args(["--hostfile", hosts])
    .args(extra)
    .current_dir(f.dir.path())
    .env("RUST_LOG", "wharf=info")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start wharf")
}

/// Waits for `child`, killing it after `limit`.
fn finish(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("a process ran past {limit:?}:\n{}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// Runs both processes of the cluster to their end.
fn run_cluster(f: &Fixture, prefixes: [&[&str]; 2], config: &str, hosts: &str) -> [Output; 2] {
    let first = spawn(f, prefixes[0], config, 0, hosts);
    let second = spawn(f, prefixes[1], config, 1, hosts);
    let limit = Duration::from_secs(120);
    [finish(first, limit), finish(second, limit)]
}

/// The events a receiver holds, each as its JSON text, sorted.
fn events(receiver: &Receiver) -> Vec<String> {
    let mut all: Vec<String> = receiver
        .events()
        .expect("events")
        .iter()
        .map(|e| e.to_string())
        .collect();
    all.sort();
    all
}

/// The lines of a file.
fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The summary line process 0 printed.
fn summary(out: &Output) -> serde_json::Value {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .unwrap_or_else(|| panic!("no summary line:\n{}", text(out)))
}

/// Rows process 1 delivered, from its log lines.
fn delivered_by_process_1(out: &Output) -> u64 {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("epoch delivered"))
        .filter_map(|l| {
            let at = l.find(" delivered=")? + " delivered=".len();
            l[at..].split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

fn runs(f: &Fixture, config: &str) -> Vec<serde_json::Value> {
    let out = f.wharf(&["-c", config, "history", "ev", "--json"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn two_processes_on_one_host_send_exactly_what_one_process_sends() {
    let f = Fixture::new();
    add_rows(&f, 0, ROWS);
    let alone = f.receiver("alone", ReceiverAuth::AnyCredentials);
    let cluster = f.receiver("cluster", ReceiverAuth::AnyCredentials);
    f.write_config("one.toml", &config(".one", &alone.base_url()));
    f.write_config("two.toml", &config(".two", &cluster.base_url()));
    let hosts = local_hostfile(&f);
    let mut sent_by_1 = 0;
    for (round, total) in [(0, ROWS), (1, ROWS + 5_000)] {
        if round == 1 {
            add_rows(&f, ROWS, total);
        }
        let out = f.wharf(&["-c", "one.toml", "sync", "ev", "--workers", "2"], &[]);
        assert!(out.status.success(), "{}", text(&out));
        let [p0, p1] = run_cluster(&f, [&[], &[]], "two.toml", &hosts);
        assert!(p0.status.success(), "process 0: {}", text(&p0));
        assert!(p1.status.success(), "process 1: {}", text(&p1));
        let s = summary(&p0);
        assert_eq!(
            String::from_utf8_lossy(&p0.stdout).lines().count(),
            1,
            "stdout holds the summary alone: {}",
            text(&p0)
        );
        assert_eq!(s["rows_read"], total - round * ROWS, "{s}");
        // Two destinations: each row is delivered twice.
        assert_eq!(s["delivered"], 2 * (total - round * ROWS), "{s}");
        sent_by_1 += delivered_by_process_1(&p1);
        assert_eq!(cluster.stats().unique_events, total);
        assert_eq!(
            events(&cluster),
            events(&alone),
            "round {round}: the cluster sent exactly what one process sent"
        );
        // The file destination: each process wrote its own file, together the same lines.
        let mut two = lines(&f.path(".two-out.ndjson"));
        let of_1 = lines(&f.path(".two-out.process-1.ndjson"));
        assert!(!of_1.is_empty(), "process 1 wrote its own file");
        two.extend(of_1);
        two.sort();
        let mut one = lines(&f.path(".one-out.ndjson"));
        one.sort();
        assert_eq!(one.len() as u64, total);
        assert!(one == two, "round {round}: the files hold the same records");
    }
    // Process 1 read and sent its parts itself (rowid ranges: about half of the records).
    let all = 2 * (ROWS + 5_000);
    assert!(
        sent_by_1 > all / 4 && sent_by_1 < all * 3 / 4,
        "process 1 delivered {sent_by_1} of {all} records"
    );
    let history = runs(&f, "two.toml");
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(
        history.iter().all(|r| r["status"] == "SUCCEEDED"),
        "{history:?}"
    );
    // Only process 0 keeps a state store.
    assert!(f.path(".two").join("state").exists() || f.path(".two").exists());
}

#[test]
fn a_process_killed_mid_epoch_leaves_nothing_committed_and_the_rerun_is_exact() {
    // Process 1, then process 0: the other one stops too (it never waits for ever).
    for killed in [1, 0] {
        killed_mid_epoch(killed);
    }
}

fn killed_mid_epoch(killed: usize) {
    let f = Fixture::new();
    add_rows(&f, 0, ROWS);
    let receiver = f.receiver("recv", ReceiverAuth::AnyCredentials);
    // 2,000 records a second in each process: an epoch lasts seconds, long enough to kill a
    // process in it.
    let slow = config(".state", &receiver.base_url()).replace(
        "max_backoff = \"200ms\"",
        "max_backoff = \"200ms\"\nmax_records_per_second = 2000.0",
    );
    f.write_config("wharf.toml", &slow);
    let hosts = local_hostfile(&f);
    let mut started = [
        Some(spawn(&f, &[], "wharf.toml", 0, &hosts)),
        Some(spawn(&f, &[], "wharf.toml", 1, &hosts)),
    ];
    let start = Instant::now();
    while receiver.stats().requests < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no request arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut victim = started[killed].take().expect("the killed process");
    victim.kill().expect("kill a process");
    let _ = victim.wait();
    let other = started[1 - killed].take().expect("the other process");
    let out = finish(other, Duration::from_secs(60));
    assert!(
        !out.status.success(),
        "the other process failed: {}",
        text(&out)
    );
    let all = text(&out);
    assert!(
        all.contains("cluster") || all.contains("process"),
        "the error says a process of the cluster is gone: {all}"
    );
    eprintln!(
        "process {} after process {killed} was killed:\n{all}",
        1 - killed
    );
    let partial = receiver.stats().unique_events;
    assert!(partial < ROWS, "killed mid-epoch: {partial} of {ROWS} sent");
    let history = runs(&f, "wharf.toml");
    assert!(
        history.iter().all(|r| r["status"] != "SUCCEEDED"),
        "nothing committed: {history:?}"
    );
    // The rerun (both processes again) sends the rest; the re-sent rows are deduplicated.
    let [p0, p1] = run_cluster(&f, [&[], &[]], "wharf.toml", &hosts);
    assert!(p0.status.success(), "process 0: {}", text(&p0));
    assert!(p1.status.success(), "process 1: {}", text(&p1));
    let stats = receiver.stats();
    eprintln!(
        "killed after {partial} unique events; the rerun sent {} events, {} unique in all",
        stats.events_accepted, stats.unique_events
    );
    assert_eq!(stats.unique_events, ROWS, "{stats:?}");
    let history = runs(&f, "wharf.toml");
    assert_eq!(history[0]["status"], "SUCCEEDED", "{history:?}");
    assert_eq!(history[0]["rows_read"], ROWS, "{history:?}");
}

#[test]
fn a_cluster_refuses_what_it_does_not_run_yet_with_a_clear_error() {
    let f = Fixture::new();
    add_rows(&f, 0, 10);
    f.sql("CREATE TABLE users AS SELECT 'u' || i AS id, 'n' || i AS name FROM range(10) t(i);");
    let receiver = f.receiver("recv", ReceiverAuth::AnyCredentials);
    let lookup = r#"
[[syncs]]
name = "users"
warehouse = "wh"
table = "users"
table_type = "lookup"
mode = "full"
primary_key = ["id"]
destinations = ["mp"]
[syncs.mapping]
lookup_table_id = "6b1a7e0c-2f4d-4c59-9a57-0d8e3c1f2a90"
"#;
    f.write_config(
        "wharf.toml",
        &(config(".state", &receiver.base_url()) + lookup),
    );
    let hosts = local_hostfile(&f);
    let out = f.wharf(
        &[
            "sync",
            "users",
            "--processes",
            "2",
            "--process",
            "0",
            "--hostfile",
            &hosts,
        ],
        &[],
    );
    assert!(!out.status.success());
    let all = text(&out);
    assert!(
        all.contains("a lookup table (replaced whole, in one request) across processes")
            && all.contains("not supported yet")
            && all.contains("--workers"),
        "{all}"
    );
    for (args, says) in [
        (vec!["--processes", "2"], "--hostfile"),
        (vec!["--process", "1"], "--processes"),
        (
            vec!["--processes", "2", "--process", "2", "--hostfile", &hosts],
            "not below",
        ),
        (
            vec!["--processes", "3", "--hostfile", &hosts],
            "address line",
        ),
    ] {
        let mut all_args = vec!["sync", "ev"];
        all_args.extend(args);
        let out = f.wharf(&all_args, &[]);
        assert!(!out.status.success());
        assert!(text(&out).contains(says), "{says}: {}", text(&out));
    }
}

/// Two network namespaces joined by a veth pair, each end with its own address; removed on
/// drop (with the pair).
struct Namespaces {
    names: [String; 2],
    addresses: [String; 2],
}

impl Namespaces {
    fn create() -> Namespaces {
        let id = std::process::id() % 10_000;
        let names = [format!("wharf-a{id}"), format!("wharf-b{id}")];
        let subnet = format!("10.213.{}", id % 250);
        let addresses = [format!("{subnet}.1"), format!("{subnet}.2")];
        let (va, vb) = (format!("wva{id}"), format!("wvb{id}"));
        let ns = Namespaces { names, addresses };
        let [a, b] = &ns.names;
        for cmd in [
            format!("ip netns add {a}"),
            format!("ip netns add {b}"),
            format!("ip link add {va} type veth peer name {vb}"),
            format!("ip link set {va} netns {a}"),
            format!("ip link set {vb} netns {b}"),
            format!("ip -n {a} addr add {}/24 dev {va}", ns.addresses[0]),
            format!("ip -n {b} addr add {}/24 dev {vb}", ns.addresses[1]),
            format!("ip -n {a} link set {va} up"),
            format!("ip -n {b} link set {vb} up"),
            format!("ip -n {a} link set lo up"),
            format!("ip -n {b} link set lo up"),
        ] {
            let out = Command::new("sh").args(["-c", &cmd]).output().expect("sh");
            assert!(out.status.success(), "{cmd}: {}", text(&out));
        }
        ns
    }

    /// The prefix that runs a command in namespace `i`.
    fn exec(&self, i: usize) -> [&str; 4] {
        ["ip", "netns", "exec", &self.names[i]]
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

#[test]
fn two_processes_in_two_network_namespaces_send_and_mirror_exactly_as_one_process() {
    let root = Command::new("id").arg("-u").output().expect("id");
    assert_eq!(
        String::from_utf8_lossy(&root.stdout).trim(),
        "0",
        "network namespaces need root (CI runs as root)"
    );
    let f = Fixture::new();
    add_rows(&f, 0, ROWS);
    let alone = f.receiver("alone", ReceiverAuth::AnyCredentials);
    f.write_config("one.toml", &config(".one", &alone.base_url()));
    let out = f.wharf(&["-c", "one.toml", "sync", "ev", "--workers", "2"], &[]);
    assert!(out.status.success(), "{}", text(&out));

    let ns = Namespaces::create();
    // The receiver in the first namespace, on its own address: the second reaches it through
    // the veth pair.
    let port = free_port();
    let data = f.path("cluster-recv");
    let mut receiver = Command::new(ns.exec(0)[0])
        .args(&ns.exec(0)[1..])
        .arg(env!("CARGO_BIN_EXE_wharf"))
        .args(["mixpanel-receiver", "--host", &ns.addresses[0]])
        .args(["--port", &port.to_string(), "--data"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("receiver");
    let host = format!("http://{}:{port}", ns.addresses[0]);
    // It says so once it listens (its log is read to its end, so that it never blocks).
    let stderr = receiver.stderr.take().expect("receiver's stderr");
    let (tx, listening) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if line.contains("listening") {
                let _ = tx.send(line);
            }
        }
    });
    listening
        .recv_timeout(Duration::from_secs(30))
        .expect("the receiver did not start");
    f.write_config("two.toml", &config(".two", &host));
    let hosts = hostfile(
        &f,
        &[
            format!("{}:{}", ns.addresses[0], free_port()),
            format!("{}:{}", ns.addresses[1], free_port()),
        ],
    );
    let [p0, p1] = run_cluster(&f, [&ns.exec(0), &ns.exec(1)], "two.toml", &hosts);
    // A mirror of user profiles (snapshot diffs), twice, with updates and deletes between.
    f.sql(
        "CREATE TABLE users AS SELECT 'u' || i AS id, 'n' || i AS name, i % 5 AS plan
         FROM range(5000) t(i);",
    );
    f.write_config(
        "one-users.toml",
        &users_config(".one-u", &alone.base_url(), "mirror"),
    );
    f.write_config("two-users.toml", &users_config(".two-u", &host, "mirror"));
    for sql in [
        "",
        "UPDATE users SET name = 'x' || id WHERE plan = 1; DELETE FROM users WHERE plan = 2;",
    ] {
        if !sql.is_empty() {
            f.sql(sql);
        }
        let out = f.wharf(
            &["-c", "one-users.toml", "sync", "ev", "--workers", "2"],
            &[],
        );
        assert!(out.status.success(), "{}", text(&out));
        let [q0, q1] = run_cluster(&f, [&ns.exec(0), &ns.exec(1)], "two-users.toml", &hosts);
        assert!(q0.status.success(), "mirror, process 0: {}", text(&q0));
        assert!(q1.status.success(), "mirror, process 1: {}", text(&q1));
    }
    // SIGINT stops the receiver, which keeps what it stored in its folder.
    unsafe {
        libc::kill(receiver.id() as libc::pid_t, libc::SIGINT);
    }
    let _ = receiver.wait();
    assert!(p0.status.success(), "process 0: {}", text(&p0));
    assert!(p1.status.success(), "process 1: {}", text(&p1));
    assert_eq!(summary(&p0)["delivered"], 2 * ROWS);
    assert!(delivered_by_process_1(&p1) > 0, "{}", text(&p1));
    let stored =
        f.rt.block_on(Receiver::start(
            wharf::receiver::ReceiverConfig::new(&data, ReceiverAuth::AnyCredentials),
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        ))
        .expect("reopen the receiver's folder");
    assert_eq!(stored.stats().unique_events, ROWS);
    assert_eq!(
        events(&stored),
        events(&alone),
        "across namespaces, exactly what one process sent"
    );
    let profiles = stored.profiles();
    assert_eq!(profiles.len(), 4000, "the mirror deleted a fifth");
    assert!(
        profiles == alone.profiles(),
        "across namespaces, the mirror's profiles are one process's"
    );
}

#[test]
fn a_process_that_never_comes_fails_the_others_at_the_start_naming_it() {
    let f = Fixture::new();
    add_rows(&f, 0, 10);
    let receiver = f.receiver("recv", ReceiverAuth::AnyCredentials);
    f.write_config("wharf.toml", &config(".state", &receiver.base_url()));
    let missing = format!("127.0.0.1:{}", free_port());
    let hosts = hostfile(&f, &[format!("127.0.0.1:{}", free_port()), missing.clone()]);
    let started = Instant::now();
    let out = f.wharf(
        &[
            "sync",
            "ev",
            "--processes",
            "2",
            "--hostfile",
            &hosts,
            "--connect-timeout",
            "2s",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(30));
    let all = text(&out);
    assert!(
        all.contains(&format!("process 1 ({missing}) did not connect within 2s")),
        "{all}"
    );
    assert_eq!(receiver.stats().requests, 0);
    assert!(runs(&f, "wharf.toml")
        .iter()
        .all(|r| r["status"] != "SUCCEEDED"));
}

/// A sync `ev` of the users table in `mode` into Mixpanel.
fn users_config(state_dir: &str, host: &str, mode: &str) -> String {
    header(state_dir, host)
        + &format!(
            r#"[[syncs]]
name = "ev"
warehouse = "wh"
table = "users"
table_type = "users"
mode = "{mode}"
destinations = ["mp"]
[syncs.mapping]
user_id_column = "id"
"#
        )
}

/// Full and mirror syncs (snapshot diffs) of user profiles by 2 processes give the profiles,
/// and the counts of inserts, updates and deletes, of one process, run after run.
#[test]
fn two_processes_diff_snapshots_exactly_as_one_process() {
    for mode in ["full", "mirror"] {
        let f = Fixture::new();
        f.sql(
            "CREATE TABLE users AS SELECT 'u' || i AS id, 'n' || i AS name, i % 5 AS plan
             FROM range(20000) t(i);",
        );
        let alone = f.receiver("alone", ReceiverAuth::AnyCredentials);
        let cluster = f.receiver("cluster", ReceiverAuth::AnyCredentials);
        f.write_config("one.toml", &users_config(".one", &alone.base_url(), mode));
        f.write_config("two.toml", &users_config(".two", &cluster.base_url(), mode));
        let hosts = local_hostfile(&f);
        let changes = [
            "",
            "UPDATE users SET name = 'changed ' || id WHERE plan = 1;
             DELETE FROM users WHERE plan = 2 AND length(id) > 5;
             INSERT INTO users SELECT 'v' || i, 'new', 0 FROM range(300) t(i);",
            "UPDATE users SET plan = 9 WHERE id LIKE 'v1%';",
        ];
        for (round, sql) in changes.iter().enumerate() {
            if !sql.is_empty() {
                f.sql(sql);
            }
            let out = f.wharf(&["-c", "one.toml", "sync", "ev", "--workers", "2"], &[]);
            assert!(out.status.success(), "{}", text(&out));
            let [p0, p1] = run_cluster(&f, [&[], &[]], "two.toml", &hosts);
            assert!(p0.status.success(), "{mode} process 0: {}", text(&p0));
            assert!(p1.status.success(), "{mode} process 1: {}", text(&p1));
            assert!(
                delivered_by_process_1(&p1) > 0 || round == 2,
                "process 1 sent its part: {}",
                text(&p1)
            );
            let (one, two) = (alone.profiles(), cluster.profiles());
            assert!(!one.is_empty());
            assert!(one == two, "{mode}, round {round}: the same profiles");
            let (h1, h2) = (&runs(&f, "one.toml")[0], &runs(&f, "two.toml")[0]);
            for count in ["rows_read", "inserted", "updated", "deleted"] {
                assert_eq!(h1[count], h2[count], "{mode}, round {round}, {count}: {h2}");
            }
            eprintln!(
                "{mode}, round {round}: {} profiles; run {} inserted {}, updated {}, deleted {}",
                two.len(),
                h2["run_id"],
                h2["inserted"],
                h2["updated"],
                h2["deleted"]
            );
        }
    }
}

/// `--continuous` across processes: each poll that finds rows is an epoch of both; stopping
/// process 0 (Ctrl-C) ends both after the current run.
#[test]
fn a_continuous_sync_runs_across_processes_until_process_0_stops() {
    let f = Fixture::new();
    add_rows(&f, 0, 5_000);
    let receiver = f.receiver("recv", ReceiverAuth::AnyCredentials);
    f.write_config("wharf.toml", &config(".state", &receiver.base_url()));
    let hosts = local_hostfile(&f);
    let continuous = ["--continuous", "--interval", "200ms"];
    let first = spawn_with(&f, &[], "wharf.toml", 0, &hosts, &continuous);
    let second = spawn_with(&f, &[], "wharf.toml", 1, &hosts, &continuous);
    let wait_for = |n: u64| {
        let start = Instant::now();
        while receiver.stats().unique_events < n {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{} of {n} events arrived",
                receiver.stats().unique_events
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(5_000);
    let mut total = 5_000;
    for _ in 0..3 {
        add_rows(&f, total, total + 1_000);
        total += 1_000;
        wait_for(total);
    }
    // Ctrl-C: process 0 stops after its current run and ends the sync in both.
    unsafe {
        libc::kill(first.id() as libc::pid_t, libc::SIGINT);
    }
    let (p0, p1) = (
        finish(first, Duration::from_secs(30)),
        finish(second, Duration::from_secs(30)),
    );
    assert!(p0.status.success(), "process 0: {}", text(&p0));
    assert!(p1.status.success(), "process 1: {}", text(&p1));
    assert!(delivered_by_process_1(&p1) > 0, "{}", text(&p1));
    assert_eq!(receiver.stats().unique_events, total);
    let history = runs(&f, "wharf.toml");
    assert!(
        history.len() >= 4,
        "a run per batch of new rows: {history:?}"
    );
    assert!(
        history.iter().all(|r| r["status"] == "SUCCEEDED"),
        "{history:?}"
    );
}

/// A process whose part fails mid-epoch (here: its rejects file cannot be written) fails the
/// epoch in every process with its reason; nothing is committed; the rerun is exact.
#[test]
fn a_failure_in_one_process_fails_the_epoch_in_all_with_its_reason() {
    let f = Fixture::new();
    add_rows(&f, 0, ROWS);
    // Ten rows without an event name, in process 1's parts (the upper rowid ranges).
    f.sql("UPDATE ev SET name = NULL WHERE n >= 15000 AND n < 15010;");
    let receiver = f.receiver("recv", ReceiverAuth::AnyCredentials);
    f.write_config("wharf.toml", &config(".state", &receiver.base_url()));
    let blocked = f.path(".state/rejects/ev.process-1.ndjson");
    std::fs::create_dir_all(&blocked).expect("a folder where process 1's rejects go");
    let hosts = local_hostfile(&f);
    let [p0, p1] = run_cluster(&f, [&[], &[]], "wharf.toml", &hosts);
    assert!(!p0.status.success() && !p1.status.success());
    let all = text(&p0);
    assert!(
        all.contains("process 1 of the cluster failed") && all.contains("ev.process-1.ndjson"),
        "process 0 says which process failed and why: {all}"
    );
    assert!(runs(&f, "wharf.toml")
        .iter()
        .all(|r| r["status"] != "SUCCEEDED"));
    std::fs::remove_dir(&blocked).expect("remove the folder");
    let [p0, p1] = run_cluster(&f, [&[], &[]], "wharf.toml", &hosts);
    assert!(p0.status.success(), "process 0: {}", text(&p0));
    assert!(p1.status.success(), "process 1: {}", text(&p1));
    // Ten rows, rejected for each of the two destinations.
    assert_eq!(summary(&p0)["rejected"], 20);
    assert_eq!(receiver.stats().unique_events, ROWS - 10);
    let rejects = common::read_ndjson(&blocked);
    assert_eq!(
        rejects.len(),
        20,
        "process 1 recorded its rejects: {rejects:?}"
    );
}

/// A backlog larger than a run takes: one `wharf sync` of the cluster runs it in several
/// epochs of the same dataflow, each committed by process 0.
#[test]
fn a_backlog_is_loaded_in_several_committed_epochs_of_one_cluster() {
    let f = Fixture::new();
    add_rows(&f, 0, ROWS);
    let receiver = f.receiver("recv", ReceiverAuth::AnyCredentials);
    f.write_config("wharf.toml", &config(".state", &receiver.base_url()));
    let hosts = local_hostfile(&f);
    let per_run = ["--max-rows-per-run", "6000"];
    let first = spawn_with(&f, &[], "wharf.toml", 0, &hosts, &per_run);
    let second = spawn_with(&f, &[], "wharf.toml", 1, &hosts, &per_run);
    let limit = Duration::from_secs(120);
    let (p0, p1) = (finish(first, limit), finish(second, limit));
    assert!(p0.status.success(), "process 0: {}", text(&p0));
    assert!(p1.status.success(), "process 1: {}", text(&p1));
    let history = runs(&f, "wharf.toml");
    assert_eq!(
        history.len(),
        4,
        "runs of 6,000, 6,000, 6,000 and 2,000: {history:?}"
    );
    assert!(
        history.iter().all(|r| r["status"] == "SUCCEEDED"),
        "{history:?}"
    );
    let read: u64 = history.iter().filter_map(|r| r["rows_read"].as_u64()).sum();
    assert_eq!(read, ROWS);
    let epochs = String::from_utf8_lossy(&p1.stderr)
        .lines()
        .filter(|l| l.contains("epoch delivered"))
        .count();
    assert_eq!(
        epochs,
        4,
        "process 1 took part in every epoch: {}",
        text(&p1)
    );
    assert_eq!(receiver.stats().unique_events, ROWS);
}

/// A mirror that would read PostgreSQL's change stream is refused before anything is made on
/// the server (no replication slot), and says how to run it across processes.
#[test]
fn a_change_stream_mirror_is_refused_before_its_slot_is_made() {
    use wharf::warehouse::{SourceRef, Warehouse};
    let name = format!("cluster_pg_{}", std::process::id());
    common::pg::exec(
        5432,
        "test",
        &format!(
            "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id text PRIMARY KEY, plan int);
             INSERT INTO {name} VALUES ('a', 1), ('b', 2);"
        ),
    );
    let f = Fixture::new();
    f.write_config(
        "wharf.toml",
        &format!(
            r#"state_dir = ".state"
{}[destinations.out]
type = "file"
path = "out.ndjson"
[[syncs]]
name = "{name}"
warehouse = "pg"
table = "{name}"
table_type = "users"
mode = "mirror"
destinations = ["out"]
[syncs.mapping]
user_id_column = "id"
"#,
            common::pg::warehouse_toml("test")
        ),
    );
    let hosts = local_hostfile(&f);
    let out = f.wharf(
        &["sync", &name, "--processes", "2", "--hostfile", &hosts],
        &[],
    );
    let slots = common::pg::warehouse(5432, "test").count_where(
        &SourceRef::Query(format!(
            "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE '%{name}%'"
        )),
        "",
    );
    common::pg::exec(5432, "test", &format!("DROP TABLE IF EXISTS {name};"));
    assert!(!out.status.success());
    let all = text(&out);
    assert!(
        all.contains("change stream") && all.contains("change_capture = \"snapshot\""),
        "{all}"
    );
    assert_eq!(slots.expect("count the slots"), 0, "no slot was made");
}

/// A full sync of user profiles from PostgreSQL (parts by a hash of the key) by 2 processes
/// gives one process's profiles, run after run.
#[test]
fn a_postgres_full_sync_across_processes_gives_one_process_s_profiles() {
    let table = format!("cluster_full_{}", std::process::id());
    common::pg::exec(
        5432,
        "test",
        &format!(
            "DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} AS SELECT 'u' || i AS id, 'n' || i AS name, i % 5 AS plan
               FROM generate_series(0, 2999) AS i;
             ALTER TABLE {table} ADD PRIMARY KEY (id);"
        ),
    );
    let f = Fixture::new();
    let alone = f.receiver("alone", ReceiverAuth::AnyCredentials);
    let cluster = f.receiver("cluster", ReceiverAuth::AnyCredentials);
    let sync = |state: &str, host: &str| {
        header(state, host)
            + &common::pg::warehouse_toml("test")
            + &format!(
                r#"[[syncs]]
name = "ev"
warehouse = "pg"
table = "{table}"
table_type = "users"
mode = "full"
destinations = ["mp"]
[syncs.mapping]
user_id_column = "id"
"#
            )
    };
    f.write_config("one.toml", &sync(".one", &alone.base_url()));
    f.write_config("two.toml", &sync(".two", &cluster.base_url()));
    let hosts = local_hostfile(&f);
    for change in ["", "UPDATE {t} SET name = 'x' || id WHERE plan = 3;"] {
        if !change.is_empty() {
            common::pg::exec(5432, "test", &change.replace("{t}", &table));
        }
        let out = f.wharf(&["-c", "one.toml", "sync", "ev", "--workers", "2"], &[]);
        assert!(out.status.success(), "{}", text(&out));
        let [p0, p1] = run_cluster(&f, [&[], &[]], "two.toml", &hosts);
        assert!(p0.status.success(), "process 0: {}", text(&p0));
        assert!(p1.status.success(), "process 1: {}", text(&p1));
        assert!(delivered_by_process_1(&p1) > 0, "{}", text(&p1));
        assert_eq!(cluster.profiles().len(), 3000);
        assert!(alone.profiles() == cluster.profiles(), "the same profiles");
        let (h1, h2) = (&runs(&f, "one.toml")[0], &runs(&f, "two.toml")[0]);
        for count in ["rows_read", "inserted", "updated", "deleted"] {
            assert_eq!(h1[count], h2[count], "{count}: {h2}");
        }
    }
    common::pg::exec(5432, "test", &format!("DROP TABLE IF EXISTS {table};"));
}

/// `wharf run` as process `process` of two, on `config`; its log to `log`.
fn spawn_service(f: &Fixture, config: &str, process: usize, hosts: &str, log: &str) -> Child {
    let log = std::fs::File::create(f.path(log)).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["-c", config, "run", "--processes", "2"])
        .args(["--process", &process.to_string(), "--hostfile", hosts])
        .args(["--connect-timeout", "5s"])
        .current_dir(f.dir.path())
        .env("RUST_LOG", "wharf=info")
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("start wharf run")
}

/// `GET` or `POST` of the service on `port`: status and JSON answer (`None`: no answer).
fn call(f: &Fixture, port: u16, method: &str, path: &str) -> Option<(u16, serde_json::Value)> {
    let url = format!("http://127.0.0.1:{port}{path}");
    f.rt.block_on(async {
        let r = reqwest::Client::new()
            .request(method.parse().ok()?, &url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        let text = r.text().await.ok()?;
        Some((status, serde_json::from_str(&text).unwrap_or_default()))
    })
}

/// `wharf run` across two processes: process 0 is the service (API, schedule, state store);
/// every run of its sync is an epoch of one dataflow process 1 joined, and process 1 reads
/// and delivers its parts. Process 1 killed: the next run fails naming it, nothing of it is
/// committed, and once process 1 is started again the retry joins it and is exact.
#[test]
fn a_service_runs_its_syncs_across_processes_and_takes_a_restarted_process_back() {
    let f = Fixture::new();
    add_rows(&f, 0, ROWS);
    let receiver = f.receiver("recv", ReceiverAuth::AnyCredentials);
    let port = free_port();
    let text = config(".svc", &receiver.base_url()).replace(
        "mode = \"append\"",
        "mode = \"append\"\nschedule = \"manual\"",
    ) + &format!(
        "[service]\nlisten = \"127.0.0.1:{port}\"\nretry_initial = \"300ms\"\nretry_max = \"1s\"\n"
    );
    f.write_config("svc.toml", &text);
    let hosts = local_hostfile(&f);
    let mut second = spawn_service(&f, "svc.toml", 1, &hosts, "p1.log");
    let mut first = spawn_service(&f, "svc.toml", 0, &hosts, "p0.log");
    let logs = || {
        let read = |n: &str| std::fs::read_to_string(f.path(n)).unwrap_or_default();
        format!(
            "process 0:\n{}\nprocess 1:\n{}",
            read("p0.log"),
            read("p1.log")
        )
    };
    let until = |what: &str, check: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !check() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{what} did not happen:\n{}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let last_run = || {
        call(&f, port, "GET", "/syncs/ev")
            .map(|(_, s)| s["last_run"].clone())
            .unwrap_or_default()
    };
    until("the service's start", &|| {
        call(&f, port, "GET", "/healthz").is_some()
    });
    let run = || {
        let (status, answer) = call(&f, port, "POST", "/syncs/ev/run").expect("run now");
        assert_eq!(status, 202, "{answer}");
    };
    run();
    until("run 1", &|| last_run()["status"] == "SUCCEEDED");
    assert_eq!(last_run()["delivered"], 2 * ROWS, "{}", last_run());
    assert_eq!(receiver.stats().unique_events, ROWS);
    let of_1 = lines(&f.path(".svc-out.process-1.ndjson"));
    assert!(
        !of_1.is_empty() && (of_1.len() as u64) < ROWS,
        "process 1 delivered a part: {} lines",
        of_1.len()
    );
    assert_eq!(
        lines(&f.path(".svc-out.ndjson")).len() + of_1.len(),
        ROWS as usize
    );

    // Process 1 is gone: the next run fails, naming it, and commits nothing.
    let _ = second.kill();
    let _ = second.wait();
    add_rows(&f, ROWS, ROWS + 5_000);
    run();
    until("a failed run", &|| last_run()["status"] == "FAILED");
    let failed = last_run();
    let error = failed["error"].as_str().unwrap_or("");
    assert!(
        error.contains("process") || error.contains("cluster"),
        "{failed}"
    );
    // Back: a retry joins the new process and sends the rest, each row once by its key.
    second = spawn_service(&f, "svc.toml", 1, &hosts, "p1b.log");
    until("the retry", &|| last_run()["status"] == "SUCCEEDED");
    let done = last_run();
    assert_eq!(done["rows_read"], 5_000, "{done}");
    assert_eq!(receiver.stats().unique_events, ROWS + 5_000);
    let mut all = lines(&f.path(".svc-out.ndjson"));
    all.extend(lines(&f.path(".svc-out.process-1.ndjson")));
    all.sort();
    all.dedup();
    assert_eq!(all.len() as u64, ROWS + 5_000);
    let history = runs(&f, "svc.toml");
    assert_eq!(history[0]["status"], "SUCCEEDED", "{history:?}");
    eprintln!("runs: {history:?}\n{}", logs());
    for child in [&mut first, &mut second] {
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    assert!(
        finish(first, Duration::from_secs(30)).status.success(),
        "{}",
        logs()
    );
    let _ = second.kill();
    let _ = second.wait();
}

/// A process of a `wharf run` cluster whose config file is not process 0's refuses to join,
/// and the run fails at once with its reason (not after the connect timeout).
#[test]
fn a_service_process_with_another_config_refuses_to_join_and_says_why() {
    let f = Fixture::new();
    add_rows(&f, 0, 1_000);
    let receiver = f.receiver("recv", ReceiverAuth::AnyCredentials);
    let port = free_port();
    let text = config(".svc", &receiver.base_url()).replace(
        "mode = \"append\"",
        "mode = \"append\"\nschedule = \"manual\"",
    ) + &format!("[service]\nlisten = \"127.0.0.1:{port}\"\nretry_initial = \"1m\"\n");
    f.write_config("svc.toml", &text);
    f.write_config(
        "other.toml",
        &(text.clone() + "# edited on one machine only\n"),
    );
    let hosts = local_hostfile(&f);
    let mut second = spawn_service(&f, "other.toml", 1, &hosts, "p1.log");
    let mut first = spawn_service(&f, "svc.toml", 0, &hosts, "p0.log");
    let start = Instant::now();
    while call(&f, port, "GET", "/healthz").is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "no service");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _) = call(&f, port, "POST", "/syncs/ev/run").expect("run now");
    assert_eq!(status, 202);
    let asked = Instant::now();
    let error = loop {
        let (_, s) = call(&f, port, "GET", "/syncs/ev").expect("status");
        if s["last_run"]["status"] == "FAILED" {
            break s["last_run"]["error"].as_str().unwrap_or("").to_string();
        }
        assert!(asked.elapsed() < Duration::from_secs(30), "{s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        error.contains("process 1") && error.contains("is not the one process 0 loaded"),
        "{error}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "refused at once, not after the 5 s connect timeout: {:?}",
        asked.elapsed()
    );
    assert_eq!(receiver.stats().requests, 0);
    for child in [&mut first, &mut second] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
