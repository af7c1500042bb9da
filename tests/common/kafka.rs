//! Apache Kafka for the tests and benches: one KRaft node (broker and controller in one JVM)
//! on 127.0.0.1 and two free ports, transactions enabled for a single node. Its jars come
//! from Maven Central through `tests/kafka-up.sh` (run here once per test process; it does
//! nothing when its cache is ready), its storage is a copy of the template that script
//! formats, and it lives in a temp folder of its own.
//!
//! `stop` kills the JVM (SIGKILL: a crash); `restart` starts it again on the same ports with
//! the same data, as a broker coming back would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::free_port;

pub struct KafkaBroker {
    home: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    controller_port: u16,
    child: Option<Child>,
    /// How long the last start took, until the broker answered a metadata request.
    pub started_in: Duration,
}

/// The folder `tests/kafka-up.sh` filled (jars in `libs/`, storage template in `template/`).
pub fn kafka_home() -> PathBuf {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let home = std::env::var("WHARF_KAFKA_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                    .join(".cache/wharf/kafka")
            });
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka-up.sh");
        let out = Command::new(&script)
            .env("WHARF_KAFKA_HOME", &home)
            .output()
            .expect("run tests/kafka-up.sh");
        assert!(
            out.status.success(),
            "tests/kafka-up.sh failed (Java 17+ and Maven with Maven Central are needed):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        home
    })
    .clone()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read template") {
        let entry = entry.expect("template entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy template");
        }
    }
}

impl KafkaBroker {
    /// A new, empty broker, up and answering.
    pub fn start() -> KafkaBroker {
        let home = kafka_home();
        let dir = tempfile::tempdir().expect("temp dir");
        copy_dir(&home.join("template/data"), &dir.path().join("data"));
        let mut broker = KafkaBroker {
            home,
            dir,
            port: free_port(),
            controller_port: free_port(),
            child: None,
            started_in: Duration::ZERO,
        };
        broker.write_config();
        broker.restart();
        broker
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits until an idempotent producer can write: a broker just started answers metadata
    /// at once but refuses producer ids ("Coordinator load in progress") until it has loaded
    /// its transaction state, and librdkafka asks again only 500 ms later. Benches that time
    /// the first records call this first, so that they time wharf, not the broker's start.
    pub fn wait_until_producers_can_write(&self) {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let producer: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("enable.idempotence", "true")
            .create()
            .expect("producer");
        producer
            .send(
                BaseRecord::to("wharf-bench-ready")
                    .key("ready")
                    .payload("ready"),
            )
            .map_err(|(e, _)| e)
            .expect("produce");
        producer
            .flush(Duration::from_secs(30))
            .expect("the broker accepts an idempotent producer's record within 30 s");
    }

    fn write_config(&self) {
        let (p, c) = (self.port, self.controller_port);
        let data = self.dir.path().join("data");
        let config = format!(
            "process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c}
advertised.listeners=PLAINTEXT://127.0.0.1:{p}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.quorum.voters=1@127.0.0.1:{c}
log.dirs={data}
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
",
            data = data.display()
        );
        std::fs::write(self.dir.path().join("server.properties"), config).expect("config");
    }

    /// Starts the broker (again) on its ports with its data, and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("broker log");
        let java_opts = std::env::var("WHARF_KAFKA_JAVA_OPTS")
            .unwrap_or_else(|_| "-Xms128m -Xmx512m -XX:+UseSerialGC".into());
        let started = Instant::now();
        let child = Command::new("java")
            .args(java_opts.split_whitespace())
            .args([
                "-Djava.awt.headless=true",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp",
            ])
            .arg(format!("{}/libs/*", self.home.display()))
            .arg("kafka.Kafka")
            .arg(self.dir.path().join("server.properties"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start java (the Kafka broker)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        let client: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("log_level", "0")
            .create()
            .expect("client");
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "the Kafka broker exited at start ({status}):\n{}",
                    self.log_tail()
                );
            }
            if let Ok(m) = client.fetch_metadata(None, Duration::from_millis(500)) {
                if !m.brokers().is_empty() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the Kafka broker did not answer within 90 s:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.started_in = started.elapsed();
    }

    /// Kills the broker (SIGKILL); its data stays for `restart`.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The JVM's resident memory in KiB (Linux).
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    /// CPU seconds (user + system) the JVM has used so far (Linux).
    pub fn cpu_seconds(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces): state is field 3.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("broker.log")
    }

    /// The end of the broker's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One consumed Kafka record.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub key: Option<String>,
    pub value: serde_json::Value,
    pub partition: i32,
    pub offset: i64,
    pub headers: std::collections::BTreeMap<String, String>,
}

/// Reads `topic` from the beginning as consumer group `group` until `expected` records came
/// and then `quiet` passed without another one (so duplicates would show), or `timeout`.
/// `read_committed` consumers see only the records of committed transactions.
pub fn consume(
    brokers: &str,
    topic: &str,
    group: &str,
    expected: usize,
    read_committed: bool,
    timeout: Duration,
) -> Vec<Consumed> {
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let quiet = Duration::from_secs(2);
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut last = Instant::now();
    while Instant::now() < deadline {
        if out.len() >= expected && last.elapsed() >= quiet {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let mut headers = std::collections::BTreeMap::new();
                if let Some(h) = m.headers() {
                    for hd in h.iter() {
                        headers.insert(
                            hd.key.to_string(),
                            String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(Consumed {
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: serde_json::from_slice(m.payload().unwrap_or_default())
                        .unwrap_or(serde_json::Value::Null),
                    partition: m.partition(),
                    offset: m.offset(),
                    headers,
                });
                last = Instant::now();
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
    out
}

/// How many records (and transaction markers) the topic's `partitions` partitions hold: the
/// sum of their high watermarks, as a `read_uncommitted` client sees them; 0 for a topic that
/// does not exist yet.
pub fn records_on(brokers: &str, topic: &str, partitions: i32) -> usize {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // librdkafka's default is read_committed, whose high watermark stops at the first
        // open transaction.
        .set("isolation.level", "read_uncommitted")
        .set("log_level", "0")
        .create()
        .expect("consumer");
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map(|(low, high)| usize::try_from(high - low).unwrap_or(0))
                .unwrap_or(0)
        })
        .sum()
}
