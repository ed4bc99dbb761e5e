//! The processor's batch span, exported through the SDK's in-memory exporter, against
//! the real embedded sink.

use super::*;
use crate::codec::{Codec, Format};
use crate::dlq::DeadLetterQueue;
use crate::event::{ChangeEvent, Op};
use crate::kafka::Record;
use crate::mapping::Mapper;
use crate::processor::batch::BatchApplier;
use crate::sink::embedded::EmbeddedSink;
use crate::sink::{CollectionSpec, VectorSink};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::InMemorySpanExporter;
use std::sync::Arc;

const TRACE_A: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN_A: &str = "00f067aa0ba902b7";
const TRACE_B: &str = "0af7651916cd43dd8448eb211c80319c";
const SPAN_B: &str = "b7ad6b7169203331";
const DIMENSION: usize = 8;

async fn record(
    codec: &Codec,
    offset: i64,
    header: Option<String>,
    field: Option<String>,
) -> Record {
    let mut event = ChangeEvent::node(&format!("c{offset}"), &["Chunk"], Op::Upsert, 1, 1_000);
    event.vector = Some(vec![0.5; DIMENSION]);
    event.traceparent = field;
    Record {
        topic: "graph.changes".into(),
        partition: 0,
        offset,
        key: Some(event.key.clone().into_bytes()),
        payload: Some(codec.encode_change(&event, Format::Avro).await.unwrap()),
        headers: header
            .map(|tp| vec![(TRACEPARENT.to_owned(), Some(tp.into_bytes()))])
            .unwrap_or_default(),
        timestamp_ms: None,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_batch_continues_the_producer_trace_links_every_event_and_traces_sink_calls() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let config = crate::config::Config::from_toml(&format!(
        "[kafka]\nbootstrap_servers = \"127.0.0.1:9\"\n\n[[mappings]]\nlabel = \"Chunk\"\ncollection = \"chunks\"\ndimension = {DIMENSION}\n"
    ))
    .unwrap();
    let sink = Arc::new(EmbeddedSink::open(dir.path()).unwrap());
    let spec = CollectionSpec::from(&config.mappings[0]);
    sink.ensure_collection(&spec).await.unwrap();
    let codec = Arc::new(Codec::local());
    let applier = Arc::new(BatchApplier::new(
        codec.clone(),
        Mapper::new(config.mappings.clone(), 65_536),
        Arc::default(),
        sink.clone(),
    ));
    let dlq = Arc::new(DeadLetterQueue::new(
        crate::kafka::producer(&config.kafka).unwrap(),
        "dlq".into(),
        "group".into(),
        crate::dlq::DEFAULT_MAX_RECORD_BYTES,
    ));
    // Trace A in the header, trace B only in the event field, one without context.
    let records = vec![
        record(&codec, 0, Some(format!("00-{TRACE_A}-{SPAN_A}-01")), None).await,
        record(&codec, 1, None, Some(format!("00-{TRACE_B}-{SPAN_B}-01"))).await,
        record(&codec, 2, None, None).await,
    ];
    let prepared = applier.prepare(&records).await.unwrap();
    let stats = Arc::new(crate::stats::Stats::default());
    let (_, result) =
        crate::processor::run_batch(applier, dlq, stats, records, Some(prepared)).await;
    assert_eq!(result.unwrap().applied, 3);
    assert_eq!(sink.count_live(&spec.name).await.unwrap(), 3);

    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let trace_a = TraceId::from_hex(TRACE_A).unwrap();
    let trace_b = TraceId::from_hex(TRACE_B).unwrap();
    let batch = spans
        .iter()
        .find(|s| s.name == "process_batch")
        .expect("a batch span was exported");
    assert_eq!(
        batch.span_context.trace_id(),
        trace_a,
        "continues the first trace"
    );
    assert_eq!(batch.parent_span_id, SpanId::from_hex(SPAN_A).unwrap());
    let linked: Vec<TraceId> = batch
        .links
        .iter()
        .map(|l| l.span_context.trace_id())
        .collect();
    assert_eq!(
        linked,
        vec![trace_a, trace_b],
        "one link per event with context"
    );
    for name in ["sink.versions", "sink.write"] {
        let child = spans.iter().find(|s| s.name == name).expect(name);
        assert_eq!(child.parent_span_id, batch.span_context.span_id(), "{name}");
        assert_eq!(child.span_context.trace_id(), trace_a, "{name}");
    }
}

#[test]
fn produced_records_carry_the_current_span_and_nothing_without_a_trace() {
    assert_eq!(
        current_traceparent(),
        None,
        "no trace layer: nothing injected"
    );
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::with_default(subscriber, || {
        let incoming = Record {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            key: None,
            payload: None,
            headers: vec![(
                "TraceParent".into(),
                Some(format!("00-{TRACE_A}-{SPAN_A}-01").into_bytes()),
            )],
            timestamp_ms: None,
        };
        let span = batch_span(std::iter::once(incoming.headers.as_slice()), &[]);
        let _entered = span.enter();
        let tp = current_traceparent().expect("a traceparent inside a traced span");
        assert!(tp.starts_with(&format!("00-{TRACE_A}-")), "{tp}");
        assert!(
            !tp.contains(SPAN_A),
            "the batch span, not the producer's: {tp}"
        );
    });
}
