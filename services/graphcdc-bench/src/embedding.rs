//! Embeddings on the way (#16): how many texts a second the local model (all-MiniLM-L6-v2
//! through candle) embeds on this machine, and what the text-hash cache saves on a stream
//! of metadata-only updates, through the processor's own embedding step and the embedded
//! engine.

use crate::{per_s, Figure};
use graphcdc_core::config::Config;
use graphcdc_core::embed::local::LocalEmbedder;
use graphcdc_core::embed::{model_files, Embeddings};
use graphcdc_core::event::{ChangeEvent, Op, PropertyValue};
use graphcdc_core::mapping::{Mapper, PointWrite};
use graphcdc_core::sink::embedded::EmbeddedSink;
use graphcdc_core::sink::{CollectionSpec, Fence, VectorSink};
use graphcdc_demo::corpus;
use std::time::{Duration, Instant};

const COLLECTION: &str = "chunks";
const BATCH: usize = 32;

fn config(dir: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::from_toml(&format!(
        r#"
        [sink]
        kind = "embedded"
        path = {:?}

        [[mappings]]
        label = "Chunk"
        collection = "{COLLECTION}"
        dimension = 384

        [mappings.embedding]
        template = "{{topic}}: {{text}}"
        provider = "local"
        batch_size = {BATCH}
        "#,
        dir.display().to_string()
    ))?)
}

/// Chunk `i` at `version`; `reviewed` is a property the template does not read.
fn chunk(i: usize, version: i64, reviewed: bool) -> ChangeEvent {
    let (topic, text) = corpus::chunk_text(i, i / 7);
    ChangeEvent::node(
        &format!("chunk-{i}"),
        &["Chunk"],
        Op::Upsert,
        version,
        1_000,
    )
    .with_property("topic", PropertyValue::String(topic.into()))
    .with_property("text", PropertyValue::String(text))
    .with_property("reviewed", PropertyValue::Bool(reviewed))
}

/// Map, embed (or keep the stored vectors) and write `events` in batches of 500, as the
/// processor does; the elapsed time.
async fn apply(
    mapper: &Mapper,
    embeddings: &Embeddings,
    sink: &EmbeddedSink,
    events: &[ChangeEvent],
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for batch in events.chunks(500) {
        let mut writes: Vec<PointWrite> = Vec::with_capacity(batch.len());
        for event in batch {
            writes.extend(mapper.map(event)?);
        }
        let refused = embeddings.complete(sink, COLLECTION, &mut writes).await?;
        anyhow::ensure!(refused.is_empty(), "the model refused {refused:?}");
        sink.write(COLLECTION, &writes, Fence::Newer).await?;
    }
    sink.sync().await?;
    Ok(started.elapsed())
}

/// Figures for `n` texts.
pub async fn run(n: usize, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    let model = LocalEmbedder::load(&model_files::cached_model().await?)?;
    let texts: Vec<String> = (0..n)
        .map(|i| {
            let (topic, text) = corpus::chunk_text(i, i / 7);
            format!("{topic}: {text}")
        })
        .collect();
    model.embed_blocking(&texts[..BATCH.min(n)])?; // warm-up
    let started = Instant::now();
    for batch in texts.chunks(BATCH) {
        std::hint::black_box(model.embed_blocking(batch)?);
    }
    let batched = started.elapsed();
    let alone_n = n.min(200);
    let started = Instant::now();
    for text in &texts[..alone_n] {
        std::hint::black_box(model.embed_blocking(std::slice::from_ref(text))?);
    }
    let alone = started.elapsed();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "local model: {:.0} texts/s in batches of {BATCH}, {:.1} ms per text alone",
        per_s(n, batched),
        alone.as_secs_f64() * 1e3 / alone_n as f64
    );
    figures.push(Figure {
        name: "9. local model (all-MiniLM-L6-v2, candle, CPU)".into(),
        value: format!(
            "{:.0} texts/s in batches of {BATCH}; {:.1} ms for one text alone",
            per_s(n, batched),
            alone.as_secs_f64() * 1e3 / alone_n as f64
        ),
        note: format!(
            "{n} demo chunk texts (~12 words each), {threads} hardware threads; alone: the first {alone_n}, one call each"
        ),
    });

    // The cache: n chunks embedded and written, then n metadata-only updates.
    let dir = tempfile::tempdir()?;
    let config = config(dir.path())?;
    let sink = EmbeddedSink::open(dir.path())?;
    sink.ensure_collection(&CollectionSpec::from(&config.mappings[0]))
        .await?;
    let mapper = Mapper::new(config.mappings.clone(), 1 << 20);
    let embeddings = Embeddings::from_mappings(&config.mappings).await?;
    let stats = embeddings.stats(COLLECTION).expect("the mapping embeds");
    let first: Vec<ChangeEvent> = (0..n).map(|i| chunk(i, 1, false)).collect();
    let embedded = apply(&mapper, &embeddings, &sink, &first).await?;
    let calls_first = stats.model_calls.get();
    let metadata: Vec<ChangeEvent> = (0..n).map(|i| chunk(i, 2, true)).collect();
    let cached = apply(&mapper, &embeddings, &sink, &metadata).await?;
    let calls_second = stats.model_calls.get() - calls_first;
    anyhow::ensure!(
        stats.cache_hits.get() == n as u64,
        "{} cache hits for {n} metadata-only updates",
        stats.cache_hits.get()
    );
    println!(
        "cache: {n} new texts {:.0} events/s ({calls_first} model calls); {n} metadata-only updates {:.0} events/s ({calls_second} model calls)",
        per_s(n, embedded),
        per_s(n, cached)
    );
    figures.push(Figure {
        name: "10. metadata-only updates: the text-hash cache".into(),
        value: format!(
            "{:.0} events/s, {calls_second} model calls (vs {:.0} events/s, {calls_first} model calls for the same {n} events with new text): {:.1} × faster",
            per_s(n, cached),
            per_s(n, embedded),
            embedded.as_secs_f64() / cached.as_secs_f64().max(1e-9)
        ),
        note: format!(
            "map + embedding step + fenced write of {n} chunk events in batches of 500, embedded engine, flush at the end; updates change only a property the template does not read"
        ),
    });
    Ok(())
}
