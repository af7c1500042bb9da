//! Kafka: each record goes to the sync's topic, keyed by its primary key (an event's
//! `distinct_id` when the table has none), with headers `wharf-sync` and `wharf-op`.
//!
//! Guarantees:
//! - By default the producer is idempotent (`enable.idempotence`, `acks=all`): librdkafka
//!   retries inside `delivery_timeout` without duplicating or reordering within a partition.
//!   A request whose delivery reports are not all successful fails as a whole and is sent
//!   again by the delivery loop, so the destination is at-least-once; a run commits only
//!   after every delivery report of it was successful.
//! - With `exactly_once`, the producer is transactional: a run's records and its position
//!   (a progress record, see [`Destination::commit`]) are written in one transaction, which
//!   commits just before the run commits in the state store. A crash before that commit
//!   leaves nothing visible to `read_committed` consumers (the next `init_transactions` with
//!   the same `transactional.id` aborts it); a crash after it is repaired on the next start
//!   from [`Destination::committed_position`]. Any delivery failure inside a transaction
//!   aborts the run (the transaction cannot be partially retried).
//!
//! Every blocking librdkafka call (`init_transactions`, `commit_transaction`,
//! `abort_transaction`, `flush`, reading positions) runs on tokio's blocking pool or on the
//! calling (non-timely) thread, never on a timely worker. librdkafka is built from source
//! with zlib only: no TLS or SASL in this build.

pub mod config;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use wharf_operators::dataflow::BatchLimits;
use wharf_operators::record::EncodedRecords;
use wharf_pipelines::delivery::RetryPolicy;
use wharf_pipelines::destination::{
    BoxFuture, Destination, DestinationError, SendOutcome, Sending,
};
use wharf_pipelines::governor::RateCap;

use super::{fill_template, BuildContext, BuiltDestination};
use crate::duration::Span;
pub use config::{KafkaCompression, KafkaConfig, KafkaPayload};

/// Timeout of broker round trips wharf waits for (topic creation, transactions, positions).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the destination needs, resolved from the config for one sync.
#[derive(Clone, Debug)]
pub struct KafkaSettings {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The topic (template applied).
    pub topic: String,
    /// The sync (header `wharf-sync`, progress record key).
    pub sync: String,
    /// `compression.codec`.
    pub compression: &'static str,
    /// Partitions and replication factor of a topic created by wharf.
    pub partitions: i32,
    /// Replication factor of a topic created by wharf.
    pub replication_factor: i32,
    /// With transactions: the `transactional.id` and the progress topic.
    pub exactly_once: Option<ExactlyOnce>,
    /// `message.timeout.ms`.
    pub delivery_timeout: Duration,
    /// `linger.ms`.
    pub linger: Duration,
    /// Send the `wharf-sync` and `wharf-op` headers (per-message header lists in librdkafka:
    /// they cost about a quarter of a sync's throughput into Apache Kafka).
    pub headers: bool,
    /// Extra librdkafka settings (values never logged).
    pub properties: BTreeMap<String, String>,
}

/// Transactional settings.
#[derive(Clone, Debug)]
pub struct ExactlyOnce {
    /// The producer's `transactional.id`.
    pub transactional_id: String,
    /// Where positions go (one partition, compacted).
    pub progress_topic: String,
}

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Txn {
    Idle,
    Open,
}

/// Delivery reports of one request: how many are outstanding, the first failure, and a
/// wake-up for the request's task when the last one came. One shared tracker per request
/// (an `Arc` clone per record), instead of a channel and a boxed future per record.
#[derive(Default)]
struct Tracker {
    outstanding: AtomicUsize,
    failure: Mutex<Option<KafkaError>>,
    done: tokio::sync::Notify,
}

impl Tracker {
    fn settle(&self, n: usize) {
        if n > 0 && self.outstanding.fetch_sub(n, Ordering::AcqRel) == n {
            self.done.notify_one();
        }
    }

    async fn wait(&self) {
        loop {
            let notified = self.done.notified();
            if self.outstanding.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    fn failure(&self) -> Option<KafkaError> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }
}

/// librdkafka's callbacks: delivery reports settle their request's tracker; client logs go
/// to `tracing`.
struct WharfContext;

impl ClientContext for WharfContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel::*;
        match level {
            Emerg | Alert | Critical | Error => {
                tracing::error!(target: "librdkafka", "{fac}: {log_message}")
            }
            Warning => tracing::warn!(target: "librdkafka", "{fac}: {log_message}"),
            Notice | Info => tracing::info!(target: "librdkafka", "{fac}: {log_message}"),
            Debug => tracing::debug!(target: "librdkafka", "{fac}: {log_message}"),
        }
    }
}

impl ProducerContext for WharfContext {
    type DeliveryOpaque = Arc<Tracker>;

    fn delivery(&self, result: &DeliveryResult<'_>, tracker: Arc<Tracker>) {
        if let Err((e, _)) = result {
            if let Ok(mut f) = tracker.failure.lock() {
                f.get_or_insert_with(|| e.clone());
            }
        }
        tracker.settle(1);
    }
}

type WharfProducer = ThreadedProducer<WharfContext>;

/// Waits until the producer's queue is empty (every record delivered and reported). The
/// producer's own thread serves the reports; librdkafka's `flush` would also poll, racing that
/// thread for the last report and then waiting out its 100 ms poll: measured, 100 ms added to
/// one epoch in three of a continuous sync.
fn wait_for_queue(producer: &WharfProducer, timeout: Duration) -> KafkaResult<()> {
    let deadline = std::time::Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if std::time::Instant::now() >= deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(())
}

/// The Kafka destination of one sync.
pub struct KafkaDestination {
    settings: KafkaSettings,
    producer: WharfProducer,
    txn: Mutex<Txn>,
    /// Header values, encoded once.
    sync_header: Arc<[u8]>,
}

fn kafka_err(context: &str, e: &KafkaError) -> DestinationError {
    if let KafkaError::ClientConfig(_, _, key, _) = e {
        // librdkafka's message repeats the value, which may be a credential.
        return DestinationError::Permanent {
            message: format!("{context}: invalid librdkafka setting `{key}` (value not shown)"),
        };
    }
    let message = format!("{context}: {e}");
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => DestinationError::TooLarge { message },
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::Fatal
            | RDKafkaErrorCode::InvalidConfig
            | RDKafkaErrorCode::UnsupportedVersion,
        ) => DestinationError::Permanent { message },
        _ => DestinationError::Transient {
            message,
            retry_after: None,
        },
    }
}

/// The Kafka key of a record from its key's JSON text: a plain JSON string without escapes
/// becomes its contents (`"u1"` → `u1`), anything else (numbers, arrays of a composite key)
/// stays JSON text.
pub fn kafka_key(json: &[u8]) -> Cow<'_, [u8]> {
    if json.len() >= 2 && json[0] == b'"' && json[json.len() - 1] == b'"' {
        let inner = &json[1..json.len() - 1];
        if !inner.contains(&b'\\') && !inner.contains(&b'"') {
            return Cow::Borrowed(inner);
        }
        if let Ok(s) = serde_json::from_slice::<String>(json) {
            return Cow::Owned(s.into_bytes());
        }
    }
    Cow::Borrowed(json)
}

impl KafkaDestination {
    /// Connects, creates the topic (and progress topic) when missing, and with
    /// `exactly_once` initialises transactions (fencing any earlier producer with the same
    /// `transactional.id`, whose open transaction is aborted). Blocks; call off timely's
    /// workers, inside `runtime`.
    pub fn open(
        settings: KafkaSettings,
        runtime: &tokio::runtime::Handle,
    ) -> Result<KafkaDestination, DestinationError> {
        let mut cfg = base_config(&settings);
        cfg.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.codec", settings.compression)
            .set(
                "message.timeout.ms",
                settings.delivery_timeout.as_millis().max(1).to_string(),
            )
            .set("linger.ms", settings.linger.as_millis().to_string())
            .set("queue.buffering.max.messages", "1000000")
            .set("batch.num.messages", "10000")
            .set("batch.size", "1000000");
        if let Some(eo) = &settings.exactly_once {
            cfg.set("transactional.id", &eo.transactional_id)
                .set("transaction.timeout.ms", "600000");
        }
        // Again, so the user's settings win over the defaults above.
        for (k, v) in &settings.properties {
            cfg.set(k, v);
        }
        let producer: WharfProducer = cfg
            .create_with_context(WharfContext)
            .map_err(|e| kafka_err("cannot create the Kafka producer", &e))?;
        let dest = KafkaDestination {
            sync_header: Arc::from(settings.sync.as_bytes()),
            settings,
            producer,
            txn: Mutex::new(Txn::Idle),
        };
        match runtime.block_on(dest.ensure_topics()) {
            Ok(()) => {}
            // The brokers may be away for a moment: records wait and are retried like any
            // others (until `give_up_after`).
            Err(DestinationError::Transient { message, .. }) => {
                tracing::warn!(topic = %dest.settings.topic, "topics not checked: {message}")
            }
            Err(e) => return Err(e),
        }
        if dest.settings.exactly_once.is_some() {
            dest.producer
                .init_transactions(ADMIN_TIMEOUT)
                .map_err(|e| kafka_err("cannot initialise Kafka transactions", &e))?;
        }
        dest.warm_up();
        Ok(dest)
    }

    /// `kafka_err`, except that a producer fenced by another one with the same
    /// `transactional.id` (librdkafka reports it as a fatal error) says so plainly.
    fn producer_err(&self, context: &str, e: &KafkaError) -> DestinationError {
        let fatal = self.producer.client().fatal_error();
        let fenced = |code: Option<RDKafkaErrorCode>| {
            matches!(
                code,
                Some(
                    RDKafkaErrorCode::ProducerFenced
                        | RDKafkaErrorCode::InvalidProducerEpoch
                        | RDKafkaErrorCode::Fenced
                )
            )
        };
        match (&self.settings.exactly_once, fatal) {
            (Some(eo), fatal)
                if fenced(e.rdkafka_error_code())
                    || fenced(fatal.as_ref().map(|(code, _)| *code)) =>
            {
                DestinationError::Permanent {
                    message: format!(
                        "{context}: fenced: another producer started with transactional.id `{}` \
                         (a second wharf process running this sync, or another sync sharing its \
                         `transactional_id`); this process's transaction was aborted and it \
                         commits nothing ({})",
                        eo.transactional_id,
                        fatal.map(|(_, m)| m).unwrap_or_else(|| e.to_string())
                    ),
                }
            }
            _ => kafka_err(context, e),
        }
    }

    /// Connects the producer and loads its topic's metadata now, so that the first records
    /// sent do not wait for both (measured: the first epoch of a continuous sync took 558 ms
    /// without, against 5–25 ms for the next ones). Best effort: records retry as usual.
    fn warm_up(&self) {
        let timeout = self.settings.delivery_timeout.min(Duration::from_secs(5));
        if let Err(e) = self
            .producer
            .client()
            .fetch_metadata(Some(&self.settings.topic), timeout)
        {
            tracing::debug!(topic = %self.settings.topic, "producer not warmed up: {e}");
        }
    }

    /// The topic records go to.
    pub fn topic(&self) -> &str {
        &self.settings.topic
    }

    /// Whether `topic` exists (metadata lists partitions for it), without creating it.
    fn topic_exists(&self, topic: &str, timeout: Duration) -> Result<bool, DestinationError> {
        let client: BaseConsumer = base_config(&self.settings)
            .set("allow.auto.create.topics", "false")
            .create()
            .map_err(|e| kafka_err("cannot create a Kafka client", &e))?;
        let metadata = client
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| kafka_err("cannot read the cluster's metadata", &e))?;
        Ok(metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()))
    }

    /// Creates the topic (and the progress topic) unless they exist.
    async fn ensure_topics(&self) -> Result<(), DestinationError> {
        let timeout = self.settings.delivery_timeout.min(ADMIN_TIMEOUT);
        let mut wanted = vec![(self.settings.topic.clone(), self.settings.partitions, false)];
        if let Some(eo) = &self.settings.exactly_once {
            wanted.push((eo.progress_topic.clone(), 1, true));
        }
        let mut missing = Vec::new();
        for (topic, partitions, compact) in wanted {
            if !self.topic_exists(&topic, timeout)? {
                missing.push((topic, partitions, compact));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = base_config(&self.settings)
            .create()
            .map_err(|e| kafka_err("cannot create a Kafka admin client", &e))?;
        let topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|(name, partitions, compact)| {
                let t = NewTopic::new(
                    name,
                    *partitions,
                    TopicReplication::Fixed(self.settings.replication_factor),
                );
                if *compact {
                    t.set("cleanup.policy", "compact")
                } else {
                    t
                }
            })
            .collect();
        let opts = AdminOptions::new()
            .operation_timeout(Some(timeout))
            .request_timeout(Some(timeout));
        let results = admin
            .create_topics(topics.iter(), &opts)
            .await
            .map_err(|e| kafka_err("cannot create topics", &e))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    let message = format!("cannot create topic `{topic}`: {code}");
                    return Err(match code {
                        RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::ClusterAuthorizationFailed
                        | RDKafkaErrorCode::InvalidTopic
                        | RDKafkaErrorCode::InvalidPartitions
                        | RDKafkaErrorCode::InvalidReplicationFactor
                        | RDKafkaErrorCode::PolicyViolation => {
                            DestinationError::Permanent { message }
                        }
                        _ => DestinationError::Transient {
                            message,
                            retry_after: None,
                        },
                    });
                }
            }
        }
        Ok(())
    }

    /// Opens the run's transaction if none is open (transactional producers only).
    fn begin(&self) -> Result<(), DestinationError> {
        if self.settings.exactly_once.is_none() {
            return Ok(());
        }
        let mut txn = self.txn.lock().map_err(|_| DestinationError::Permanent {
            message: "transaction state poisoned by an earlier panic".into(),
        })?;
        if *txn == Txn::Idle {
            self.producer
                .begin_transaction()
                .map_err(|e| self.producer_err("cannot begin a Kafka transaction", &e))?;
            *txn = Txn::Open;
        }
        Ok(())
    }

    fn in_transaction(&self) -> bool {
        self.txn.lock().map(|t| *t == Txn::Open).unwrap_or(false)
    }

    fn set_idle(&self) {
        if let Ok(mut t) = self.txn.lock() {
            *t = Txn::Idle;
        }
    }

    /// Produces `records` to the topic and waits for every delivery report.
    async fn produce(&self, records: &EncodedRecords) -> Result<usize, DestinationError> {
        let tracker = Arc::new(Tracker::default());
        tracker.outstanding.store(records.len(), Ordering::Release);
        for i in 0..records.len() {
            let key = records.key(i).map(kafka_key);
            let mut record = BaseRecord::with_opaque_to(&self.settings.topic, tracker.clone())
                .payload(records.record(i));
            if self.settings.headers {
                record = record.headers(
                    OwnedHeaders::new_with_capacity(2)
                        .insert(Header {
                            key: "wharf-sync",
                            value: Some(&*self.sync_header),
                        })
                        .insert(Header {
                            key: "wharf-op",
                            value: Some(records.op(i).as_str()),
                        }),
                );
            }
            if let Some(k) = &key {
                record = record.key(k.as_ref());
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // librdkafka's queue is full: let it drain.
                        record = r;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => {
                        // The records not produced will never report.
                        tracker.settle(records.len() - i);
                        return Err(self.producer_err("cannot produce", &e));
                    }
                }
            }
        }
        tracker.wait().await;
        match tracker.failure() {
            None => Ok(records.len()),
            Some(e) => Err(self.producer_err("delivery failed", &e)),
        }
    }

    /// Runs a blocking producer call on tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(WharfProducer) -> T + Send + 'static,
    ) -> Result<T, DestinationError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || f(producer))
            .await
            .map_err(|e| DestinationError::Transient {
                message: format!("blocking Kafka call failed: {e}"),
                retry_after: None,
            })
    }
}

/// A client of `brokers` with the user's extra settings (security settings apply to every
/// client: producer, admin, metadata and progress reads).
fn client_config(
    brokers: &str,
    client_id: &str,
    properties: &BTreeMap<String, String>,
) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        .set("log_level", "4");
    for (k, v) in properties {
        cfg.set(k, v);
    }
    cfg
}

fn base_config(settings: &KafkaSettings) -> ClientConfig {
    client_config(
        &settings.brokers,
        &format!("wharf-{}", settings.sync),
        &settings.properties,
    )
}

impl Destination for KafkaDestination {
    fn describe(&self) -> String {
        format!(
            "kafka {} topic {}",
            self.settings.brokers, self.settings.topic
        )
    }

    fn send<'a>(&'a self, records: &'a EncodedRecords) -> Sending<'a> {
        Box::pin(async move {
            self.begin()?;
            match self.produce(records).await {
                Ok(delivered) => Ok(SendOutcome {
                    delivered,
                    rejects: vec![],
                }),
                // Inside a transaction a failed record cannot be retried on its own: the
                // transaction must be aborted, so the run fails and starts over.
                Err(e @ DestinationError::Permanent { .. }) => Err(e),
                Err(e) if self.settings.exactly_once.is_some() => {
                    Err(DestinationError::Permanent {
                        message: format!("{e} (inside the run's transaction; the run is aborted and sent again by the next run)"),
                    })
                }
                Err(e) => Err(e),
            }
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), DestinationError>> {
        Box::pin(async move {
            self.blocking(|p| wait_for_queue(&p, ADMIN_TIMEOUT))
                .await?
                .map_err(|e| kafka_err("flush failed", &e))
        })
    }

    fn is_transactional(&self) -> bool {
        self.settings.exactly_once.is_some()
    }

    fn commit<'a>(&'a self, position: &'a [u8]) -> BoxFuture<'a, Result<(), DestinationError>> {
        Box::pin(async move {
            let Some(eo) = &self.settings.exactly_once else {
                return Ok(());
            };
            self.begin()?;
            let tracker = Arc::new(Tracker::default());
            tracker.outstanding.store(1, Ordering::Release);
            let record = BaseRecord::with_opaque_to(&eo.progress_topic, tracker.clone())
                .partition(0)
                .key(self.settings.sync.as_bytes())
                .payload(position);
            if let Err((e, _)) = self.producer.send(record) {
                return Err(self.producer_err("cannot produce the progress record", &e));
            }
            tracker.wait().await;
            if let Some(e) = tracker.failure() {
                return Err(self.producer_err("progress record not delivered", &e));
            }
            let result = self
                .blocking(|p| p.commit_transaction(ADMIN_TIMEOUT))
                .await?;
            self.set_idle();
            result.map_err(|e| self.producer_err("cannot commit the Kafka transaction", &e))
        })
    }

    fn abort(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if !self.in_transaction() {
                return;
            }
            match self.blocking(|p| p.abort_transaction(ADMIN_TIMEOUT)).await {
                Ok(Ok(())) => {
                    tracing::info!(topic = %self.settings.topic, "Kafka transaction aborted")
                }
                Ok(Err(e)) => {
                    tracing::warn!(topic = %self.settings.topic, error = %e, "cannot abort the Kafka transaction; the next start aborts it")
                }
                Err(e) => tracing::warn!(error = %e, "cannot abort the Kafka transaction"),
            }
            self.set_idle();
        })
    }

    fn committed_position(&self) -> BoxFuture<'_, Result<Option<Vec<u8>>, DestinationError>> {
        Box::pin(async move {
            let Some(eo) = self.settings.exactly_once.clone() else {
                return Ok(None);
            };
            let settings = self.settings.clone();
            tokio::task::spawn_blocking(move || read_last_position(&settings, &eo))
                .await
                .map_err(|e| DestinationError::Transient {
                    message: format!("reading the progress topic failed: {e}"),
                    retry_after: None,
                })?
        })
    }
}

/// Builds the Kafka destination `name` for `ctx`'s sync (creating its topic when missing):
/// up to 4 requests in flight, each up to 50,000 records or 32 MB; retried from 0.5 s up to
/// 30 s apart.
pub fn build(
    k: &KafkaConfig,
    name: &str,
    ctx: &BuildContext,
) -> Result<BuiltDestination, DestinationError> {
    let sync = ctx.sync;
    let d = |v: Option<Span>, default: Duration| v.map_or(default, Span::get);
    let settings = KafkaSettings {
        brokers: k.brokers.clone(),
        topic: fill_template(&k.topic, sync),
        sync: sync.name.clone(),
        compression: k.compression.as_str(),
        partitions: k.partitions.unwrap_or(3),
        replication_factor: k.replication_factor.unwrap_or(1),
        exactly_once: k.exactly_once.then(|| ExactlyOnce {
            transactional_id: fill_template(
                k.transactional_id.as_deref().unwrap_or("wharf-{sync}"),
                sync,
            ),
            progress_topic: fill_template(
                k.progress_topic
                    .as_deref()
                    .unwrap_or("wharf.progress.{sync}"),
                sync,
            ),
        }),
        delivery_timeout: d(k.delivery_timeout, Duration::from_secs(30)),
        linger: d(k.linger, Duration::from_millis(5)),
        headers: k.headers,
        properties: k.exposed_properties(),
    };
    let destination = KafkaDestination::open(settings, ctx.runtime)?;
    Ok(BuiltDestination {
        name: name.to_string(),
        destination: Arc::new(destination),
        policy: RetryPolicy {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_jitter: Duration::from_millis(500),
            give_up_after: d(k.give_up_after, RetryPolicy::default().give_up_after),
            concurrency: k.concurrency.unwrap_or(4).max(1),
            rate: RateCap {
                records_per_second: k.max_records_per_second.filter(|r| *r > 0.0),
                bytes_per_minute: None,
            },
        },
        limits: BatchLimits {
            max_records: 50_000,
            max_bytes: 32 << 20,
        },
        envelope: k.payload == KafkaPayload::Envelope,
    })
}

/// Connects to `brokers` and reads the cluster's metadata: `" (N brokers, M topics)"`, or
/// why it cannot (for `wharf check`). Blocks for up to 10 s.
pub fn check_brokers(
    brokers: &str,
    properties: &BTreeMap<String, String>,
) -> Result<String, DestinationError> {
    let consumer: BaseConsumer = client_config(brokers, "wharf-check", properties)
        .create()
        .map_err(|e| kafka_err("cannot create a Kafka client", &e))?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|e| kafka_err(&format!("cannot reach the brokers at {brokers}"), &e))?;
    Ok(format!(
        " ({} brokers, {} topics)",
        metadata.brokers().len(),
        metadata.topics().len()
    ))
}

/// Reads the progress topic from the start (it is compacted: one record per sync survives)
/// with `read_committed`, and returns the last position of this sync.
fn read_last_position(
    settings: &KafkaSettings,
    eo: &ExactlyOnce,
) -> Result<Option<Vec<u8>>, DestinationError> {
    let consumer: BaseConsumer = base_config(settings)
        .set("group.id", format!("wharf-progress-{}", settings.sync))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(|e| kafka_err("cannot create a Kafka consumer", &e))?;
    let (_, high) = consumer
        .fetch_watermarks(&eo.progress_topic, 0, ADMIN_TIMEOUT)
        .map_err(|e| kafka_err("cannot read the progress topic's offsets", &e))?;
    if high <= 0 {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&eo.progress_topic, 0, Offset::Beginning)
        .map_err(|e| kafka_err("cannot assign the progress topic", &e))?;
    consumer
        .assign(&tpl)
        .map_err(|e| kafka_err("cannot assign the progress topic", &e))?;
    let deadline = std::time::Instant::now() + ADMIN_TIMEOUT;
    let mut last = None;
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(last),
            Some(Err(e)) => return Err(kafka_err("cannot read the progress topic", &e)),
            Some(Ok(m)) => {
                if m.key() == Some(settings.sync.as_bytes()) {
                    last = m.payload().map(|p| p.to_vec());
                }
            }
        }
    }
    Err(DestinationError::Transient {
        message: format!(
            "timed out reading the progress topic `{}`",
            eo.progress_topic
        ),
        retry_after: None,
    })
}

#[cfg(test)]
mod tests {
    use super::kafka_key;

    #[test]
    fn keys_unquote_plain_strings_only() {
        assert_eq!(&*kafka_key(br#""u1""#), b"u1");
        assert_eq!(&*kafka_key(br#""a\"b""#), br#"a"b"#);
        assert_eq!(&*kafka_key(b"42"), b"42");
        assert_eq!(&*kafka_key(br#"[1,"x"]"#), br#"[1,"x"]"#);
    }
}
