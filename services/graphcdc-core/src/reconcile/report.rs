//! Reconcile reports: a table for people, JSON for machines.

use super::classify::{DriftClass, DriftReport};
use super::OnceResult;
use serde_json::json;

/// Keys shown per drift class.
const SAMPLE: usize = 5;

fn samples(report: &DriftReport, class: DriftClass) -> Vec<String> {
    report
        .drifts
        .iter()
        .filter(|d| d.class == class)
        .take(SAMPLE)
        .map(|d| format!("{}/{}", d.collection, d.key))
        .collect()
}

/// Points the pipeline did not write, as `collection/id`.
fn foreign_samples(report: &DriftReport) -> Vec<String> {
    report
        .foreign
        .iter()
        .flat_map(|(collection, ids)| ids.iter().map(move |id| format!("{collection}/{id}")))
        .take(SAMPLE)
        .collect()
}

fn check_json(report: &DriftReport) -> serde_json::Value {
    let counts = report.counts();
    json!({
        "expected_points": report.expected_points,
        "sink_live_points": report.sink_live_points,
        "in_grace": report.in_grace,
        "rechecked": report.rechecked,
        "drifted": report.drifts.len(),
        "drift_percent": report.drift_percent(),
        "took_ms": report.duration.as_millis() as u64,
        "classes": DriftClass::ALL.iter().map(|c| (c.name().to_owned(), json!({
            "count": counts[c],
            "sample": samples(report, *c),
        }))).collect::<serde_json::Map<_, _>>(),
        "foreign": {
            "count": report.foreign_count(),
            "sample": foreign_samples(report),
        },
    })
}

/// The result as one JSON document.
pub fn json(result: &OnceResult) -> String {
    let value = json!({
        "found": check_json(&result.found),
        "repair": result.repair.as_ref().map(|r| json!({
            "planned": r.planned,
            "deletes": r.deletes,
            "rewrites": r.rewrites,
            "repaired": r.repaired,
            "left_ahead": r.left_ahead,
            "deferred_orphans": r.deferred_orphans,
            "refused": r.refused,
        })),
        "remaining": check_json(&result.remaining),
        "clean": result.remaining.is_clean(),
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// The result as a table.
pub fn table(result: &OnceResult) -> String {
    let r = &result.found;
    let counts = r.counts();
    let mut out = format!(
        "expected points: {}   live points in sink: {}   looked at again: {}   not yet judged: {}   took: {} ms\n",
        r.expected_points,
        r.sink_live_points,
        r.rechecked,
        r.in_grace,
        r.duration.as_millis()
    );
    out.push_str(&format!("{:<18} {:>8}  sample\n", "class", "count"));
    for class in DriftClass::ALL {
        out.push_str(&format!(
            "{:<18} {:>8}  {}\n",
            class.name(),
            counts[&class],
            samples(r, class).join(", ")
        ));
    }
    out.push_str(&format!(
        "{:<18} {:>8}  {}\n",
        "foreign",
        r.foreign_count(),
        foreign_samples(r).join(", ")
    ));
    if r.foreign_count() > 0 {
        out.push_str(
            "  (points graphcdc did not write: a numeric id or no cdc_* fields; not repaired)\n",
        );
    }
    out.push_str(&format!(
        "drift: {:.3} % ({} points)\n",
        r.drift_percent(),
        r.drifts.len()
    ));
    if let Some(repair) = &result.repair {
        out.push_str(&format!(
            "repair: planned={} repaired={} left_ahead={} remaining={}\n",
            repair.planned,
            repair.repaired,
            repair.left_ahead,
            result.remaining.drifts.len()
        ));
        out.push_str(&format!(
            "plan: deletes={} same-version rewrites={} orphans deferred (seen once)={}\n",
            repair.deletes, repair.rewrites, repair.deferred_orphans
        ));
        if let Some(refused) = &repair.refused {
            out.push_str(&format!(
                "dry run: the guard would refuse this plan: {refused}\n"
            ));
        }
    }
    out
}
