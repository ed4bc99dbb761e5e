//! The embedding step against the real embedded engine, with a model of our own: which
//! texts reach the model (cache, duplicates, refusals) and how its failures are
//! classified. The real models are tested in `tests/embedding.rs`.

use super::*;
use crate::config::Config;
use crate::event::{ChangeEvent, Op, PropertyValue};
use crate::mapping::Mapper;
use crate::sink::embedded::EmbeddedSink;
use crate::sink::{CollectionSpec, Fence};
use std::sync::Mutex;

/// A model that turns a text into `[len, first byte, 1, 0]` (normalised by the sink's
/// cosine distance), records every call, refuses texts containing `REFUSE`, and can be
/// made slow or wrong.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<Vec<String>>>,
    dimension_override: Option<usize>,
    delay: Option<Duration>,
}

#[async_trait]
impl Embedder for Recorder {
    fn describe(&self) -> String {
        "recorder".into()
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.calls.lock().unwrap().push(texts.to_vec());
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        if texts.iter().any(|t| t.contains("REFUSE")) {
            return Err(EmbedError::Rejected("400: input refused".into()));
        }
        let dimension = self.dimension_override.unwrap_or(4);
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![t.len() as f32, f32::from(t.as_bytes()[0]), 1.0, 0.0];
                v.resize(dimension, 0.0);
                v
            })
            .collect())
    }
}

fn config() -> Config {
    Config::from_toml(
        r#"
        [sink]
        kind = "embedded"
        path = "/unused"

        [[mappings]]
        label = "Doc"
        collection = "docs"
        dimension = 4

        [mappings.embedding]
        template = "{title}: {text}"
        provider = "openai"
        url = "http://127.0.0.1:9/v1"
        model = "recorder"
        batch_size = 2
        timeout_ms = 200
        "#,
    )
    .unwrap()
}

/// Fields drop in order: the sink (which flushes) before its directory.
struct Setup {
    sink: EmbeddedSink,
    mapper: Mapper,
    embeddings: Embeddings,
    model: Arc<Recorder>,
    _dir: tempfile::TempDir,
}

async fn setup(model: Recorder) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let sink = EmbeddedSink::open(dir.path()).unwrap();
    let config = config();
    sink.ensure_collection(&CollectionSpec::from(&config.mappings[0]))
        .await
        .unwrap();
    let model = Arc::new(model);
    let mut embeddings = Embeddings::default();
    embeddings.insert(&config.mappings[0], model.clone());
    Setup {
        sink,
        mapper: Mapper::new(config.mappings, 65_536),
        embeddings,
        model,
        _dir: dir,
    }
}

fn doc(key: &str, version: i64, title: &str, text: &str) -> ChangeEvent {
    ChangeEvent::node(key, &["Doc"], Op::Upsert, version, 1_000)
        .with_property("title", PropertyValue::String(title.into()))
        .with_property("text", PropertyValue::String(text.into()))
}

impl Setup {
    fn writes(&self, events: &[ChangeEvent]) -> Vec<PointWrite> {
        events
            .iter()
            .flat_map(|e| self.mapper.map(e).unwrap())
            .collect()
    }

    /// Embed and write `events`; the refused indices.
    async fn apply(&self, events: &[ChangeEvent]) -> Result<Vec<usize>, SinkError> {
        let mut writes = self.writes(events);
        let refused = self
            .embeddings
            .complete(&self.sink, "docs", &mut writes)
            .await?;
        let refused: Vec<usize> = refused.into_iter().map(|(i, _)| i).collect();
        let kept: Vec<PointWrite> = writes
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !refused.contains(i))
            .map(|(_, w)| w)
            .collect();
        assert!(kept.iter().all(|w| w.vector.is_some()));
        self.sink.write("docs", &kept, Fence::Newer).await?;
        Ok(refused)
    }

    fn texts_sent(&self) -> Vec<String> {
        self.model.calls.lock().unwrap().concat()
    }

    fn stats(&self) -> &EmbeddingStats {
        self.embeddings.stats("docs").unwrap()
    }
}

#[tokio::test]
async fn unchanged_text_keeps_its_stored_vector_and_costs_no_model_call() {
    let s = setup(Recorder::default()).await;
    s.apply(&[doc("a", 1, "A", "first"), doc("b", 1, "B", "second")])
        .await
        .unwrap();
    assert_eq!(s.texts_sent(), ["A: first", "B: second"]);
    assert_eq!(s.stats().model_calls.get(), 1);

    // A metadata-only change (a property the template does not read) and an unchanged
    // text: no model call; a changed text: one.
    let renamed = doc("a", 2, "A", "first").with_property("tag", PropertyValue::Long(7));
    s.apply(&[renamed, doc("b", 2, "B", "second, edited")])
        .await
        .unwrap();
    assert_eq!(
        s.texts_sent(),
        ["A: first", "B: second", "B: second, edited"]
    );
    assert_eq!(s.stats().cache_hits.get(), 1);
    assert_eq!(s.stats().embedded.get(), 3);
    let stored = s
        .sink
        .stored_embeddings(
            "docs",
            "embedding",
            &[crate::mapping::point_id("docs", "a")],
        )
        .await
        .unwrap();
    let a = stored.values().next().unwrap();
    assert_eq!(
        a.text_hash,
        crate::mapping::text_hash("recorder", "A: first")
    );
    let point = s
        .sink
        .get("docs", crate::mapping::point_id("docs", "a"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        point.version, 2,
        "the payload moved on while the vector was kept"
    );
}

#[tokio::test]
async fn equal_texts_in_a_batch_are_embedded_once_in_batches_of_batch_size() {
    let s = setup(Recorder::default()).await;
    let events: Vec<_> = ["x", "y", "x", "z", "x"]
        .iter()
        .enumerate()
        .map(|(i, t)| doc(&format!("k{i}"), 1, "T", t))
        .collect();
    s.apply(&events).await.unwrap();
    let calls = s.model.calls.lock().unwrap().clone();
    assert_eq!(calls, [vec!["T: x", "T: y"], vec!["T: z"]]);
    let count = s.sink.count_live("docs").await.unwrap();
    assert_eq!(count, 5);
}

#[tokio::test]
async fn only_the_text_the_model_refuses_alone_is_reported() {
    let s = setup(Recorder::default()).await;
    let events = [
        doc("a", 1, "A", "fine"),
        doc("b", 1, "B", "REFUSE me"),
        doc("c", 1, "C", "fine too"),
    ];
    let refused = s.apply(&events).await.unwrap();
    assert_eq!(refused, [1]);
    assert_eq!(s.stats().rejected.get(), 1);
    assert_eq!(s.sink.count_live("docs").await.unwrap(), 2);
}

#[tokio::test]
async fn a_model_that_refuses_every_text_stops_the_stream_instead_of_filling_the_dlq() {
    let s = setup(Recorder::default()).await;
    let events = [
        doc("a", 1, "A", "REFUSE one"),
        doc("b", 1, "B", "REFUSE two"),
        doc("c", 1, "C", "REFUSE three"),
    ];
    let e = s.apply(&events).await.unwrap_err();
    assert!(matches!(e, SinkError::Misconfigured(_)), "{e}");
    assert_eq!(s.sink.count_live("docs").await.unwrap(), 0);
    // One text refused alone is that text's fault.
    let refused = s.apply(&events[..1]).await.unwrap();
    assert_eq!(refused, [0]);
}

#[tokio::test]
async fn a_slow_or_wrong_model_is_retried_or_stops_the_stream_and_poisons_nothing() {
    let slow = setup(Recorder {
        delay: Some(Duration::from_secs(2)),
        ..Recorder::default()
    })
    .await;
    let e = slow.apply(&[doc("a", 1, "A", "x")]).await.unwrap_err();
    assert!(matches!(e, SinkError::Unavailable(_)), "{e}");

    let wrong = setup(Recorder {
        dimension_override: Some(8),
        ..Recorder::default()
    })
    .await;
    let e = wrong.apply(&[doc("a", 1, "A", "x")]).await.unwrap_err();
    assert!(matches!(e, SinkError::Misconfigured(_)), "{e}");
    assert_eq!(wrong.sink.count_live("docs").await.unwrap(), 0);
}

#[test]
fn a_given_vector_wins_and_no_text_is_poison() {
    let mapper = Mapper::new(config().mappings, 65_536);
    let given = doc("a", 1, "A", "x").with_vector(vec![1.0, 0.0, 0.0, 0.0]);
    let w = &mapper.map(&given).unwrap()[0];
    assert!(w.text.is_none() && w.vector.is_some());
    let empty = ChangeEvent::node("b", &["Doc"], Op::Upsert, 1, 1_000);
    // The template's literal ": " alone is no text.
    let e = mapper.map(&empty).unwrap_err();
    assert_eq!(e.kind, PoisonKind::MissingText);
    let w = &mapper.map(&doc("c", 1, "C", "y")).unwrap()[0];
    assert!(w.needs_embedding() && !w.is_tombstone());
    assert_eq!(
        w.payload[crate::mapping::TEXT_HASH_FIELD],
        w.text.as_ref().unwrap().hash
    );
}
