//! Shared set-up of the integration tests: a real Kafka-protocol broker (address from
//! `GRAPHCDC_TEST_BOOTSTRAP`, started by `tests/run.sh`), unique topics and group per
//! test, an embedded Qdrant in a temporary directory, and the expected-state model.

#![allow(dead_code)]

use graphcdc_core::codec::{Codec, Format};
use graphcdc_core::config::Config;
use graphcdc_core::event::{ChangeEvent, Op, PropertyValue};
use graphcdc_core::kafka::{self, ChangePublisher};
use graphcdc_core::mapping::PointWrite;
use graphcdc_core::processor::Processor;
use graphcdc_core::sink::SinkError;
use graphcdc_core::sink::{
    embedded::EmbeddedSink, CollectionSpec, Fence, ScanCursor, ScanPage, StoredPoint, VectorSink,
};
use graphcdc_core::stats::{Health, Stats};
use graphcdc_demo::stream::Expected;
use graphcdc_demo::verify::{self, Comparison};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Collection the test mapping writes to.
pub const COLLECTION: &str = "docs";
/// Vector dimension of the test mapping.
pub const DIM: usize = 4;
/// Partitions of every test topic.
pub const PARTITIONS: i32 = 4;

/// Address of the broker started by `tests/run.sh`.
pub fn bootstrap() -> String {
    std::env::var("GRAPHCDC_TEST_BOOTSTRAP").expect(
        "GRAPHCDC_TEST_BOOTSTRAP is not set: run the tests with tests/run.sh, which starts a real broker",
    )
}

/// `prefix` plus a random suffix, for topics and groups no other test uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// One test's topics, group, config and embedded store.
pub struct Harness {
    pub config: Config,
    /// The config as TOML text, for child processes.
    pub toml: String,
    pub dir: tempfile::TempDir,
}

impl Harness {
    /// Fresh topics and group named after `name`, and an empty store.
    pub async fn new(name: &str) -> Harness {
        Self::with_extra(name, "").await
    }

    /// As [`Harness::new`], with `extra` TOML appended (e.g. a `[neo4j]` section).
    pub async fn with_extra(name: &str, extra: &str) -> Harness {
        Self::on_broker(name, &bootstrap(), extra).await
    }

    /// As [`Harness::with_extra`], on the broker at `bootstrap_servers`.
    pub async fn on_broker(name: &str, bootstrap_servers: &str, extra: &str) -> Harness {
        Self::on_broker_with(name, bootstrap_servers, &[], extra).await
    }

    /// As [`Harness::on_broker`], with librdkafka `properties` (TLS, SASL) for every
    /// client of the test.
    pub async fn on_broker_with(
        name: &str,
        bootstrap_servers: &str,
        properties: &[(&str, &str)],
        extra: &str,
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let properties: String = properties
            .iter()
            .map(|(k, v)| format!(", {k:?} = {v:?}"))
            .collect();
        let toml = format!(
            "{}\n{extra}",
            Self::toml(
                name,
                &dir.path().join("qdrant"),
                bootstrap_servers,
                &properties
            )
        );
        let config = Config::from_toml(&toml).unwrap();
        kafka::ensure_pipeline_topics(&config.kafka, PARTITIONS)
            .await
            .unwrap();
        Harness { config, toml, dir }
    }

    fn toml(name: &str, store: &std::path::Path, bootstrap: &str, properties: &str) -> String {
        let id = unique(name);
        format!(
            r#"
            [kafka]
            bootstrap_servers = "{bootstrap}"
            group_id = "{id}-group"
            changes_topic = "{id}.changes"
            state_topic = "{id}.state"
            dlq_topic = "{id}.dlq"
            properties = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "1000"{properties} }}

            [processor]
            batch_max_events = 200
            batch_max_wait_ms = 20
            retry_initial_ms = 50
            retry_max_ms = 400
            breaker_threshold = 3

            [sink]
            kind = "embedded"
            path = "{store}"

            [[mappings]]
            label = "Doc"
            collection = "{COLLECTION}"
            dimension = {DIM}
            vector_property = "embedding"
            "#,
            store = store.display(),
        )
    }

    /// Write the config to a file for a child process.
    pub fn config_file(&self) -> PathBuf {
        let path = self.dir.path().join("graphcdc.toml");
        std::fs::write(&path, &self.toml).unwrap();
        path
    }

    /// Run the `graphcdc` binary with `args` and this test's config (quiet logs).
    pub fn cli<S: AsRef<std::ffi::OsStr>>(
        &self,
        args: impl IntoIterator<Item = S>,
    ) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_graphcdc"))
            .args(args)
            .arg("--config")
            .arg(self.config_file())
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    }

    /// A publisher of `format` records to this test's topics.
    pub fn publisher(&self, format: Format) -> ChangePublisher {
        ChangePublisher::new(&self.config.kafka, Arc::new(Codec::local()), format).unwrap()
    }

    /// Open the embedded store (only while no processor process holds it).
    pub fn open_sink(&self) -> Arc<dyn VectorSink> {
        let graphcdc_core::sink::SinkConfig::Embedded { path } = &self.config.sink else {
            unreachable!()
        };
        Arc::new(EmbeddedSink::open(path).unwrap())
    }

    /// Current lag of the test group on the change topic.
    pub fn lag(&self) -> i64 {
        let k = &self.config.kafka;
        kafka::group_lag(k, &k.group_id, &k.changes_topic).unwrap()
    }

    /// Wait until the group committed everything on the change topic.
    pub async fn wait_caught_up(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let lag = tokio::task::block_in_place(|| self.lag());
            if lag == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "group did not catch up: lag {lag}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Start a processor in this process on `sink`.
    pub async fn start_processor(&self, sink: Arc<dyn VectorSink>) -> RunningProcessor {
        let stats = Arc::new(Stats::default());
        let health = Arc::new(Health::default());
        let processor = Processor::new(self.config.clone(), sink, stats.clone(), health.clone())
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(processor.run(shutdown.clone()));
        RunningProcessor {
            stats,
            health,
            shutdown,
            task,
        }
    }
}

impl Harness {
    /// Run a processor on `sink` until the group caught up, then stop it.
    pub async fn process_to_end(&self, sink: Arc<dyn VectorSink>) -> Arc<Stats> {
        let running = self.start_processor(sink).await;
        self.wait_caught_up(Duration::from_secs(90)).await;
        running.stop().await
    }
}

/// A processor running as a task of the test.
pub struct RunningProcessor {
    pub stats: Arc<Stats>,
    pub health: Arc<Health>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<graphcdc_core::error::Result<()>>,
}

impl RunningProcessor {
    /// Graceful stop: finish the batch, commit, leave the group.
    pub async fn stop(self) -> Arc<Stats> {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
        self.stats
    }
}

/// A `Doc` event whose vector and text derive from `version`.
pub fn doc(key: &str, version: i64, op: Op) -> ChangeEvent {
    let event = ChangeEvent::node(key, &["Doc"], op, version, 1_700_000_000_000 + version);
    match op {
        Op::Delete => event,
        Op::Upsert => event
            .with_property("text", PropertyValue::String(format!("{key} v{version}")))
            .with_vector(vec![1.0, version as f32, 0.5, -0.5]),
    }
}

/// The state a stream of `Doc` events must leave: highest version wins, deletes leave
/// tombstones.
#[derive(Default)]
pub struct Model {
    pub expected: BTreeMap<(String, String), Expected>,
}

impl Model {
    /// The model of `events`.
    pub fn of(events: &[ChangeEvent]) -> Model {
        let mut model = Model::default();
        events.iter().for_each(|e| model.apply(e));
        model
    }

    /// Fold `event` into the model.
    pub fn apply(&mut self, event: &ChangeEvent) {
        let slot = (COLLECTION.to_owned(), event.key.clone());
        let text = match (event.op, event.properties.get("text")) {
            (Op::Upsert, Some(PropertyValue::String(s))) => Some(s.clone()),
            _ => None,
        };
        if self
            .expected
            .get(&slot)
            .is_none_or(|e| e.version < event.version)
        {
            self.expected.insert(
                slot,
                Expected {
                    version: event.version,
                    text,
                },
            );
        }
    }

    /// Compare the sink with the model.
    pub async fn compare(&self, sink: &dyn VectorSink) -> Comparison {
        verify::compare(sink, &self.expected).await.unwrap()
    }
}

/// A random stream over `keys` keys with updates, deletes and re-creates, in per-key order.
pub fn churn(keys: usize, events: usize, seed: u64) -> Vec<ChangeEvent> {
    churn_from(vec![0; keys], events, seed)
}

/// [`churn`] over `versions.len()` keys whose versions go on from `versions`.
pub fn churn_from(mut versions: Vec<i64>, events: usize, seed: u64) -> Vec<ChangeEvent> {
    let keys = versions.len();
    let mut state = seed;
    (0..events)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = (state >> 33) as usize % keys;
            versions[k] += 1;
            let op = if i % 7 == 3 { Op::Delete } else { Op::Upsert };
            doc(&format!("doc-{k}"), versions[k], op)
        })
        .collect()
}

/// A record read back from a topic, headers as text.
pub struct DlqRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: std::collections::HashMap<String, String>,
}

/// The first `count` records of `topic` (30 s at most for each).
pub async fn read_topic(h: &Harness, topic: &str, count: usize) -> Vec<DlqRecord> {
    let mut config = graphcdc_core::kafka::client_config(&h.config.kafka);
    config
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest");
    let consumer: StreamConsumer = config.create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    while out.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("DLQ record within 30 s")
            .unwrap();
        let headers = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(DlqRecord {
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        });
    }
    out
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tansu broker of this test only (sqlite storage in `dir`), advertising `advertised`
/// so that every client connection goes through the proxy there.
pub fn start_tansu(dir: &std::path::Path, listen: u16, advertised: u16) -> Child {
    start_tansu_with(dir, listen, advertised, &[])
}

/// As [`start_tansu`], with more broker arguments (e.g. `--authentication`).
pub fn start_tansu_with(
    dir: &std::path::Path,
    listen: u16,
    advertised: u16,
    args: &[&str],
) -> Child {
    let child = Command::new("tansu")
        .current_dir(dir)
        .args(["broker", "--listener-url"])
        .arg(format!("tcp://127.0.0.1:{listen}"))
        .arg("--advertised-listener-url")
        .arg(format!("tcp://127.0.0.1:{advertised}"))
        .args([
            "--storage-engine",
            "sqlite://broker.db?maintenance_interval=1s",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu on PATH (tests/run.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
        assert!(Instant::now() < deadline, "private broker did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Which sink call a [`FaultySink`] asks its fault about.
pub enum Call<'a> {
    Versions,
    Write(&'a [PointWrite]),
    Purge,
    Scan,
    Sync,
}

/// The real embedded sink, with a fault injected wherever `fault` returns an error, and
/// a watch on the writes it passes on.
pub struct FaultySink {
    pub inner: Arc<dyn VectorSink>,
    fault: Box<dyn Fn(Call<'_>) -> Option<SinkError> + Send + Sync>,
    /// Each write is held this long before it reaches `inner` (to keep writes in flight).
    write_delay: Duration,
    pub writes: WriteWatch,
}

/// What a [`FaultySink`] saw of its writes.
#[derive(Default)]
pub struct WriteWatch {
    /// Points being written → by how many writes.
    writing: std::sync::Mutex<HashMap<Uuid, usize>>,
    concurrent: AtomicUsize,
    /// Most writes in flight together.
    pub max_concurrent: AtomicUsize,
    /// Writes that began while another write held one of their points.
    pub overlapping: AtomicUsize,
    last_version: std::sync::Mutex<HashMap<Uuid, i64>>,
    /// Points written at a lower version than a write before.
    pub regressions: AtomicUsize,
}

impl WriteWatch {
    fn begin(&self, points: &[PointWrite]) {
        let mut writing = self.writing.lock().unwrap();
        if points.iter().any(|p| writing.contains_key(&p.id)) {
            self.overlapping.fetch_add(1, Ordering::SeqCst);
        }
        for p in points {
            *writing.entry(p.id).or_default() += 1;
        }
        let mut last = self.last_version.lock().unwrap();
        for p in points {
            let before = last.entry(p.id).or_insert(p.version);
            if p.version < *before {
                self.regressions.fetch_add(1, Ordering::SeqCst);
            }
            *before = p.version.max(*before);
        }
        let now = self.concurrent.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_concurrent.fetch_max(now, Ordering::SeqCst);
    }

    fn end(&self, points: &[PointWrite]) {
        self.concurrent.fetch_sub(1, Ordering::SeqCst);
        let mut writing = self.writing.lock().unwrap();
        for p in points {
            if let Some(n) = writing.get_mut(&p.id) {
                *n -= 1;
                if *n == 0 {
                    writing.remove(&p.id);
                }
            }
        }
    }
}

impl FaultySink {
    /// `inner`, failing a call whenever `fault` says so.
    pub fn new(
        inner: Arc<dyn VectorSink>,
        fault: impl Fn(Call<'_>) -> Option<SinkError> + Send + Sync + 'static,
    ) -> Self {
        FaultySink {
            inner,
            fault: Box::new(fault),
            write_delay: Duration::ZERO,
            writes: WriteWatch::default(),
        }
    }

    /// `inner` without faults, each write held for `delay` first.
    pub fn slow(inner: Arc<dyn VectorSink>, delay: Duration) -> Self {
        FaultySink {
            write_delay: delay,
            ..Self::new(inner, |_| None)
        }
    }

    fn check(&self, call: Call<'_>) -> Result<(), SinkError> {
        (self.fault)(call).map_or(Ok(()), Err)
    }
}

#[async_trait::async_trait]
impl VectorSink for FaultySink {
    fn name(&self) -> &'static str {
        "faulty"
    }
    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), SinkError> {
        self.inner.ensure_collection(spec).await
    }
    async fn versions(&self, c: &str, ids: &[Uuid]) -> Result<HashMap<Uuid, i64>, SinkError> {
        self.check(Call::Versions)?;
        self.inner.versions(c, ids).await
    }
    async fn write(&self, c: &str, points: &[PointWrite], fence: Fence) -> Result<(), SinkError> {
        self.check(Call::Write(points))?;
        self.writes.begin(points);
        tokio::time::sleep(self.write_delay).await;
        let written = self.inner.write(c, points, fence).await;
        self.writes.end(points);
        written
    }
    async fn sync(&self) -> Result<(), SinkError> {
        self.check(Call::Sync)?;
        self.inner.sync().await
    }
    async fn purge(&self, c: &str, points: &[(Uuid, i64)]) -> Result<(), SinkError> {
        self.check(Call::Purge)?;
        self.inner.purge(c, points).await
    }
    async fn scan(
        &self,
        c: &str,
        from: Option<ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, SinkError> {
        self.check(Call::Scan)?;
        self.inner.scan(c, from, limit).await
    }
    async fn get(&self, c: &str, id: Uuid) -> Result<Option<StoredPoint>, SinkError> {
        self.inner.get(c, id).await
    }
    async fn count_live(&self, c: &str) -> Result<u64, SinkError> {
        self.inner.count_live(c).await
    }
    async fn describe(&self, c: &str, v: &str) -> Result<Option<CollectionSpec>, SinkError> {
        self.inner.describe(c, v).await
    }
    async fn tombstones_with_vector(
        &self,
        c: &str,
        v: &str,
    ) -> Result<Vec<StoredPoint>, SinkError> {
        self.inner.tombstones_with_vector(c, v).await
    }
    async fn nearest(
        &self,
        c: &str,
        v: &str,
        vector: &[f32],
        limit: usize,
    ) -> Result<Vec<Uuid>, SinkError> {
        self.inner.nearest(c, v, vector, limit).await
    }
}

impl Harness {
    /// Publish `events`, apply them with a processor to the end, and check that the
    /// store equals their model; returns the store and the model.
    pub async fn apply_exactly(&self, events: &[ChangeEvent]) -> (Arc<dyn VectorSink>, Model) {
        let model = Model::of(events);
        self.publisher(Format::Avro)
            .publish_all(events)
            .await
            .unwrap();
        let sink = self.open_sink();
        self.process_to_end(sink.clone()).await;
        let cmp = model.compare(sink.as_ref()).await;
        assert!(cmp.is_exact(), "{cmp:?}");
        (sink, model)
    }
}
