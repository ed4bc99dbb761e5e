//! Compares what a sink holds with an expected final state, point by point.

use super::stream::Expected;
use graphcdc_core::mapping::point_id;
use graphcdc_core::sink::VectorSink;
use std::collections::{BTreeMap, BTreeSet};

/// Differences between the sink and the expected state.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Comparison {
    /// Live points in the sink.
    pub live_points: u64,
    /// Entities expected to be live.
    pub expected_live: u64,
    /// Expected, absent from the sink.
    pub missing: Vec<String>,
    /// Version or tombstone state differs from the expected one.
    pub wrong_version: Vec<String>,
    /// Same version, different `text` payload.
    pub wrong_content: Vec<String>,
    /// Live in the sink, never expected.
    pub extra: Vec<String>,
}

impl Comparison {
    /// Whether the sink equals the expectation.
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty()
            && self.wrong_version.is_empty()
            && self.wrong_content.is_empty()
            && self.extra.is_empty()
            && self.live_points == self.expected_live
    }
}

/// Compare every expected (collection, key) with the sink, and scan for extras.
///
/// # Errors
/// When the sink cannot be read.
pub async fn compare(
    sink: &dyn VectorSink,
    expected: &BTreeMap<(String, String), Expected>,
) -> graphcdc_core::error::Result<Comparison> {
    let mut cmp = Comparison::default();
    let collections: BTreeSet<&str> = expected.keys().map(|(c, _)| c.as_str()).collect();
    for ((collection, key), want) in expected {
        if want.text.is_some() {
            cmp.expected_live += 1;
        }
        let Some(got) = sink.get(collection, point_id(collection, key)).await? else {
            cmp.missing.push(format!("{collection}/{key}"));
            continue;
        };
        if got.version != want.version || got.deleted != want.text.is_none() {
            cmp.wrong_version.push(format!(
                "{collection}/{key}: v{} deleted={} (want v{} deleted={})",
                got.version,
                got.deleted,
                want.version,
                want.text.is_none()
            ));
            continue;
        }
        let text = got
            .payload
            .as_ref()
            .and_then(|p| p.get("text"))
            .and_then(|t| t.as_str());
        if text != want.text.as_deref() {
            cmp.wrong_content.push(format!("{collection}/{key}"));
        }
    }
    for collection in collections {
        cmp.live_points += sink.count_live(collection).await?;
        let mut from = None;
        loop {
            let page = sink.scan(collection, from, 1_000).await?;
            for p in page.points {
                // A tombstone of an unknown key is invisible and harmless.
                if !p.deleted && !expected.contains_key(&(collection.to_owned(), p.key.clone())) {
                    cmp.extra.push(format!("{collection}/{}", p.key));
                }
            }
            match page.next {
                Some(next) => from = Some(next),
                None => break,
            }
        }
    }
    Ok(cmp)
}
