//! Audit reports: a table per label/type for people, JSON for machines. The sink part is
//! the reconciler's own report ([`crate::reconcile::report`]).

use super::{AuditClass, AuditReport, AuditResult, RESTORE_RUNBOOK};
use crate::reconcile::{report as sink_report, OnceResult};
use serde_json::json;

/// Keys shown per class.
const SAMPLE: usize = 5;

fn samples(report: &AuditReport, class: AuditClass) -> Vec<String> {
    report
        .findings
        .iter()
        .filter(|f| f.class == class)
        .take(SAMPLE)
        .map(|f| {
            let target = report
                .targets
                .get(f.target)
                .map_or("?", |t| t.name.as_str());
            format!("{target}/{}", f.key)
        })
        .collect()
}

fn sink_once(report: &AuditReport) -> Option<OnceResult> {
    report.sink.as_ref().map(|sink| OnceResult {
        found: sink.clone(),
        repair: None,
        remaining: sink.clone(),
    })
}

fn audit_json(report: &AuditReport) -> serde_json::Value {
    let counts = report.counts();
    let targets: Vec<serde_json::Value> = report
        .targets
        .iter()
        .zip(&counts)
        .map(|(t, c)| {
            let mut value = serde_json::to_value(t).unwrap_or_default();
            value["classes"] = c
                .iter()
                .map(|(class, n)| (class.name().to_owned(), json!(n)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            value
        })
        .collect();
    let sink = sink_once(report)
        .and_then(|once| serde_json::from_str::<serde_json::Value>(&sink_report::json(&once)).ok())
        .map(|v| v["found"].clone());
    json!({
        "targets": targets,
        "classes": AuditClass::ALL.iter().map(|c| (c.name().to_owned(), json!({
            "count": report.count(*c),
            "sample": samples(report, *c),
        }))).collect::<serde_json::Map<_, _>>(),
        "not_held": report.unheld_total(),
        "restored_neo4j": report.count(AuditClass::Behind) > 0,
        "runbook": (report.count(AuditClass::Behind) > 0).then_some(RESTORE_RUNBOOK),
        "sink": sink,
        "took_ms": report.duration.as_millis() as u64,
        "clean": report.is_clean(),
    })
}

/// The result as one JSON document.
pub fn json(result: &AuditResult) -> String {
    let value = json!({
        "found": audit_json(&result.found),
        "repair": result.repair.as_ref().map(|r| json!({
            "dry_run": r.dry_run,
            "upserts_planned": r.upserts_planned,
            "deletes_planned": r.deletes_planned,
            "upserts": r.upserts,
            "tombstones": r.tombstones,
            "skipped": r.skipped,
            "refused": r.refused,
            "unpublished": r.unpublished,
        })),
        "remaining": audit_json(&result.remaining),
        "clean": result.is_clean(),
        "epoch": result.epoch,
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

fn audit_table(report: &AuditReport) -> String {
    let counts = report.counts();
    let mut out = format!(
        "{:<20} {:>8} {:>8} {:>8} {:>10} {:>6} {:>7} {:>6} {:>6} {:>9} {:>10}\n",
        "label/type",
        "neo4j",
        "state",
        "in_sync",
        "uncaptured",
        "lost",
        "differs",
        "stale",
        "behind",
        "in_flight",
        "unreadable"
    );
    for (t, c) in report.targets.iter().zip(&counts) {
        let n = |class| c.get(&class).copied().unwrap_or(0);
        out.push_str(&format!(
            "{:<20} {:>8} {:>8} {:>8} {:>10} {:>6} {:>7} {:>6} {:>6} {:>9} {:>10}\n",
            t.name,
            t.neo4j,
            t.state_live,
            t.in_sync,
            n(AuditClass::Uncaptured),
            n(AuditClass::Lost),
            n(AuditClass::Differs),
            n(AuditClass::Stale),
            n(AuditClass::Behind),
            t.in_flight,
            t.unreadable
        ));
    }
    for class in AuditClass::ALL {
        let sample = samples(report, class);
        if !sample.is_empty() {
            out.push_str(&format!("  {}: {}\n", class.name(), sample.join(", ")));
        }
    }
    let behind = report.count(AuditClass::Behind);
    if behind > 0 {
        out.push_str(&format!(
            "restored Neo4j? {behind} entities have a version below graph.state's: new writes to \
             them are fenced as stale. See {RESTORE_RUNBOOK} (`graphcdc audit --repair` \
             publishes them above graph.state's version; `--bump-epoch` moves every counter)\n"
        ));
    }
    out
}

/// The result as a table.
pub fn table(result: &AuditResult) -> String {
    let found = &result.found;
    let mut out = String::new();
    if let Some(e) = &result.epoch {
        out.push_str(&format!(
            "epoch bump: every counter is at least {} now (graph.state's highest version {}; \
             {} of {} counters moved, {} keys of graph.state ensured)\n",
            e.epoch, e.state_max, e.moved, e.counters, e.state_keys
        ));
    }
    out.push_str(&format!(
        "audit: Neo4j against graph.state ({} findings, took {} ms)\n",
        found.findings.len(),
        found.duration.as_millis()
    ));
    out.push_str(&audit_table(found));
    if found.unheld_total() > 0 {
        out.push_str(&format!(
            "{} more findings counted, not held (--max-findings): run the audit again after the repair\n",
            found.unheld_total()
        ));
    }
    if let Some(once) = sink_once(found) {
        out.push_str("sink against graph.state (the reconciler's check):\n");
        out.push_str(&sink_report::table(&once));
    }
    if let Some(r) = &result.repair {
        let deletes: Vec<String> = r
            .deletes_planned
            .iter()
            .map(|(t, n)| format!("{t}={n}"))
            .collect();
        out.push_str(&format!(
            "repair plan: upserts={} tombstones={} ({})\n",
            r.upserts_planned,
            r.deletes(),
            deletes.join(", ")
        ));
        match (&r.refused, r.dry_run) {
            (Some(refused), true) => out.push_str(&format!(
                "dry run: the guard would refuse this plan: {refused}\n"
            )),
            (Some(refused), false) => {
                out.push_str(&format!("refused, nothing published: {refused}\n"))
            }
            (None, true) => out.push_str("dry run: nothing published\n"),
            (None, false) => {
                out.push_str(&format!(
                    "repaired through the log: upserts={} tombstones={} skipped={} \
                     (outbox entries, published by the relay)\n",
                    r.upserts, r.tombstones, r.skipped
                ));
                if r.unpublished > 0 {
                    out.push_str(&format!(
                        "not yet published by the relay: {} entries (is `graphcdc relay` running?)\n",
                        r.unpublished
                    ));
                }
                out.push_str(&format!(
                    "after the repair ({} findings):\n",
                    result.remaining.findings.len()
                ));
                out.push_str(&audit_table(&result.remaining));
                if let Some(sink) = &result.remaining.sink {
                    out.push_str(&format!(
                        "sink: drift {} points, foreign {}, not yet judged {}\n",
                        sink.drifts.len(),
                        sink.foreign_count(),
                        sink.in_grace
                    ));
                }
            }
        }
    }
    out.push_str(if result.is_clean() {
        "audit: clean\n"
    } else {
        "audit: drift remains\n"
    });
    out
}
