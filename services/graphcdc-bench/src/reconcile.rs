//! The reconciler's full check of a large state with 0.1 % drift.

use crate::{rss_mib, Args, Figure};
use graphcdc_core::codec::{Codec, Format};
use graphcdc_core::config::Config;
use graphcdc_core::event::{ChangeEvent, Op, PropertyValue};
use graphcdc_core::kafka::ChangePublisher;
use graphcdc_core::mapping::Mapper;
use graphcdc_core::reconcile::Reconciler;
use graphcdc_core::sink::embedded::EmbeddedSink;
use graphcdc_core::sink::{CollectionSpec, Fence, VectorSink};
use graphcdc_core::stats::DriftGauges;
use graphcdc_demo::drift::{self, DriftPlan};
use rdkafka::mocking::MockCluster;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Small vectors: the check's cost is per entity (decode, map, hash, scan), and the mock
/// broker keeps only about 5 MB per partition.
const DIM: usize = 8;
const PARTITIONS: i32 = 64;

/// Entity `i` at `version`, with a small vector.
pub(crate) fn item(i: usize, version: i64) -> ChangeEvent {
    ChangeEvent::node(
        &format!("item-{i:08}"),
        &["Item"],
        Op::Upsert,
        version,
        1_700_000_000_000,
    )
    .with_property("name", PropertyValue::String(format!("item {i}")))
    .with_vector((0..DIM).map(|d| ((i + d) % 13) as f32 - 6.0).collect())
}

/// A mock broker with the state topic, an embedded sink with the `items` collection, and
/// what writes to them: shared by both reconcile benches.
/// Fields drop in this order: the sink flushes before its directory goes.
pub(crate) struct Fixture {
    pub sink: Arc<EmbeddedSink>,
    pub publisher: ChangePublisher,
    pub mapper: Mapper,
    pub config: Config,
    pub mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn new(group: &str, state_partitions: i32) -> anyhow::Result<Fixture> {
        let dir = tempfile::tempdir()?;
        let mock = MockCluster::new(1)?;
        let config = Config::from_toml(&format!(
            r#"
            [kafka]
            bootstrap_servers = "{}"
            group_id = "{group}"
            [sink]
            kind = "embedded"
            path = "{}"
            [[mappings]]
            label = "Item"
            collection = "items"
            dimension = {DIM}
            "#,
            mock.bootstrap_servers(),
            dir.path().display()
        ))?;
        mock.create_topic(&config.kafka.state_topic, state_partitions, 1)?;
        let mapper = Mapper::new(config.mappings.clone(), config.processor.max_payload_bytes);
        let publisher =
            ChangePublisher::new(&config.kafka, Arc::new(Codec::local()), Format::Avro)?;
        let sink = Arc::new(EmbeddedSink::open(dir.path())?);
        sink.ensure_collection(&CollectionSpec {
            name: "items".into(),
            vector_name: "embedding".into(),
            dimension: DIM,
            distance: graphcdc_core::mapping::Distance::Cosine,
        })
        .await?;
        Ok(Fixture {
            dir,
            mock,
            config,
            mapper,
            publisher,
            sink,
        })
    }

    /// Publish entities `0..n` (entity `i` at version `1 + i % 5`) to the state topic and
    /// write them to the sink, `step` at a time.
    pub async fn load(&self, n: usize, step: usize) -> anyhow::Result<()> {
        for start in (0..n).step_by(step) {
            let events: Vec<ChangeEvent> = (start..(start + step).min(n))
                .map(|i| item(i, 1 + (i % 5) as i64))
                .collect();
            self.publisher.publish_states(&events).await?;
            let writes: Vec<_> = events
                .iter()
                .map(|e| self.mapper.map(e).map(|mut w| w.remove(0)))
                .collect::<Result<_, _>>()?;
            for chunk in writes.chunks(step / 4) {
                self.sink.write("items", chunk, Fence::Newer).await?;
            }
        }
        Ok(())
    }
}

pub async fn run(args: &Args, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    let n = args.entities;
    let fixture = Fixture::new("bench-reconcile", PARTITIONS).await?;
    let started = Instant::now();
    fixture.load(n, 10_000).await?;
    println!(
        "reconcile: {n} entities loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let damaged = (n / 1_000).max(4);
    let live: Vec<(String, i64)> = (0..damaged)
        .map(|i| item(i * 997 % n, 1 + (i * 997 % n % 5) as i64))
        .map(|e| (e.key, e.version))
        .collect();
    let quarter = damaged / 4;
    let plan = DriftPlan {
        missing: quarter,
        orphans: quarter,
        stale: quarter,
        mismatched: damaged - 3 * quarter,
        ahead: 0,
    };
    let Fixture {
        config,
        mapper,
        sink,
        ..
    } = &fixture;
    drift::inject(sink.as_ref(), mapper, &config.mappings[0], &live, plan).await?;

    let (rss_before, _) = rss_mib();
    let mut reconciler = Reconciler::new(
        config.clone(),
        sink.clone(),
        Arc::new(DriftGauges::default()),
    )?;
    // librdkafka's mock cluster keeps every record and has no topic configs to describe.
    reconciler.allow_non_compacted_state(true);
    let started = Instant::now();
    let report = reconciler.check(Duration::ZERO).await?;
    let elapsed = started.elapsed();
    let (rss_after, hwm) = rss_mib();
    anyhow::ensure!(
        report.drifts.len() == plan.live_needed() + plan.orphans,
        "found {} drifted points, injected {}",
        report.drifts.len(),
        plan.live_needed() + plan.orphans
    );
    println!(
        "reconcile: full check {:.1} s, {} drifted",
        elapsed.as_secs_f64(),
        report.drifts.len()
    );
    figures.push(Figure {
        name: format!("5. reconciler full check, {n} entities, 0.1 % drift"),
        value: format!("{:.1} s", elapsed.as_secs_f64()),
        note: format!(
            "all {} drifted points found; state read + sink scan; RSS +{:.0} MiB during the check (expected state), process peak {hwm:.0} MiB",
            report.drifts.len(),
            rss_after - rss_before
        ),
    });
    // The sink flushes when its last handle drops: before its directory goes.
    drop(reconciler);
    drop(fixture);
    Ok(())
}
