//! Damaging a sink on purpose, one drift class at a time, to show (and test) that the
//! reconciler finds and repairs it.

use graphcdc_core::event::{ChangeEvent, Op, PropertyValue};
use graphcdc_core::mapping::MappingConfig;
use graphcdc_core::mapping::{point_id, Mapper, PointWrite};
use graphcdc_core::sink::{Fence, VectorSink};

/// How many points to damage per drift class.
#[derive(Debug, Clone, Copy, Default)]
pub struct DriftPlan {
    /// Points removed from the sink.
    pub missing: usize,
    /// Points added that the state does not know.
    pub orphans: usize,
    /// Points set back to an older version.
    pub stale: usize,
    /// Points whose payload changes under the same version.
    pub mismatched: usize,
    /// Points moved to a newer version than the state's.
    pub ahead: usize,
}

impl DriftPlan {
    /// Live points the plan needs.
    pub fn live_needed(&self) -> usize {
        self.missing + self.stale + self.mismatched + self.ahead
    }
}

/// A synthetic upsert of `key` at `version` for `mapping`, with `text` and a constant
/// vector of the mapping's dimension.
fn upsert(mapping: &MappingConfig, key: &str, version: i64, text: &str) -> ChangeEvent {
    let labels: Vec<&str> = mapping.label.as_deref().into_iter().collect();
    ChangeEvent::node(key, &labels, Op::Upsert, version, 0)
        .with_property("text", PropertyValue::String(text.to_owned()))
        .with_vector(vec![0.5; mapping.dimension])
}

fn write_of(
    mapper: &Mapper,
    event: &ChangeEvent,
    collection: &str,
) -> graphcdc_core::error::Result<PointWrite> {
    mapper
        .map(event)?
        .into_iter()
        .find(|w| w.collection == collection)
        .ok_or_else(|| {
            graphcdc_core::Error::internal(format!("event does not map to {collection}"))
        })
}

/// Damage `mapping`'s collection following `plan`, using `live` (key, version) points in
/// order: first the missing ones, then stale, mismatched, ahead. Returns the number of
/// damaged points.
///
/// # Errors
/// When `live` holds too few points or the sink fails.
pub async fn inject(
    sink: &dyn VectorSink,
    mapper: &Mapper,
    mapping: &MappingConfig,
    live: &[(String, i64)],
    plan: DriftPlan,
) -> graphcdc_core::error::Result<usize> {
    if live.len() < plan.live_needed() {
        return Err(graphcdc_core::Error::internal(
            "not enough live points to damage",
        ));
    }
    let c = mapping.collection.as_str();
    let (missing, rest) = live.split_at(plan.missing);
    let (stale, rest) = rest.split_at(plan.stale);
    let (mismatched, rest) = rest.split_at(plan.mismatched);
    let ahead = &rest[..plan.ahead];
    for (key, version) in missing {
        sink.purge(c, &[(point_id(c, key), *version)]).await?;
    }
    for i in 0..plan.orphans {
        let orphan = write_of(
            mapper,
            &upsert(mapping, &format!("orphan-{i}"), 1, "orphan"),
            c,
        )?;
        sink.write(c, &[orphan], Fence::Newer).await?;
    }
    for (key, version) in stale {
        sink.purge(c, &[(point_id(c, key), *version)]).await?;
        let older = write_of(mapper, &upsert(mapping, key, version - 1, "older"), c)?;
        sink.write(c, &[older], Fence::Newer).await?;
    }
    for (key, version) in mismatched {
        let tampered = write_of(mapper, &upsert(mapping, key, *version, "tampered"), c)?;
        sink.write(c, &[tampered], Fence::NewerOrEqual).await?;
    }
    for (key, version) in ahead {
        let newer = write_of(
            mapper,
            &upsert(mapping, key, version + 5, "from the future"),
            c,
        )?;
        sink.write(c, &[newer], Fence::Newer).await?;
    }
    Ok(plan.live_needed() + plan.orphans)
}
