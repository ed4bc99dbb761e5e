//! The Neo4j side of the audit: every mapped label and relationship type in keyset pages
//! (the backfill's queries, read only: no lock, no counter bumped), each entity turned
//! into the event the capture would publish (context included) and compared with
//! graph.state; then a second look at what differs (nodes read again by key,
//! relationships by page).
//!
//! Memory: one page of entities at a time and the findings, plus graph.state's entries
//! (held by [`super::state::LogState`]) and the keys met in Neo4j, both in memory or, with
//! `--state-dir`, in files on disk ([`super::keyed`]).

use super::keyed::Keyed;
use super::state::LogState;
use super::targets::Targets;
use super::{classify, entity_hash, AuditClass, AuditOptions, AuditReport, Finding, TargetCounts};
use crate::capture::backfill::page::{self, Target};
use crate::capture::context;
use crate::config::Config;
use crate::error::Context as _;
use crate::event::ChangeEvent;
use neo4rs::{query, BoltType, Graph};
use std::collections::{BTreeMap, HashMap, HashSet};

const OUTBOX_PENDING: &str =
    include_str!("../../../../deploy/neo4j/queries/audit-outbox-pending.cypher");
const RELS_EXIST: &str = include_str!("../../../../deploy/neo4j/queries/audit-rels-exist.cypher");
const NODES_READ: &str =
    include_str!("../../../../deploy/neo4j/queries/backfill-nodes-read.cypher");
const VERSIONS: &str = include_str!("../../../../deploy/neo4j/queries/audit-versions.cypher");

/// Keys per lookup query of the second look.
const LOOKUP_CHUNK: usize = 500;

/// File of the keys met in Neo4j, beside graph.state's entries when those are on disk.
const SEEN_FILE: &str = "audit-seen.redb";

/// What the Neo4j side reads with.
pub struct Context<'a> {
    pub graph: &'a Graph,
    pub config: &'a Config,
    pub targets: &'a Targets,
    /// Database name written into events.
    pub db: &'a str,
}

/// Version and content hash of an event, as compared with graph.state.
fn observed(event: &ChangeEvent) -> (i64, u128) {
    let hash = entity_hash(
        event.kind,
        &event.labels,
        event.relationship.as_ref(),
        &event.properties,
    );
    (event.version, hash)
}

/// Whether a node event belongs to an earlier target than `index` (counted there).
fn counted_before(targets: &Targets, index: usize, event: &ChangeEvent) -> bool {
    let earlier = (1u64 << index) - 1;
    event.relationship.is_none() && targets.of_labels(&event.labels) & earlier != 0
}

/// One page of `target` after `after`, with context, as the capture would publish it.
pub async fn observe(
    ctx: &Context<'_>,
    target: &Target,
    after: Option<&serde_json::Value>,
    page_size: usize,
) -> crate::error::Result<page::Observed> {
    let capture = &ctx.config.capture;
    let mut observed = page::observe(ctx.graph, target, capture, after, page_size, ctx.db).await?;
    context::enrich(ctx.graph, &ctx.config.mappings, &mut observed.events).await?;
    Ok(observed)
}

/// Page every target and compare with `state` (read to its end by the caller), holding
/// at most `options.max_findings` findings (the rest counted).
///
/// # Errors
/// When Neo4j cannot be read.
pub async fn pass(
    ctx: &Context<'_>,
    state: &LogState,
    options: &AuditOptions,
) -> crate::error::Result<AuditReport> {
    let (page_size, max) = (options.page_size, options.max_findings);
    let targets = ctx.targets.list();
    let mut report = AuditReport {
        targets: targets
            .iter()
            .map(|t| TargetCounts {
                name: t.name(),
                ..TargetCounts::default()
            })
            .collect(),
        ..AuditReport::default()
    };
    let mut seen: Keyed<()> = state.entries.beside(SEEN_FILE)?;
    for (index, target) in targets.iter().enumerate() {
        let mut after: Option<serde_json::Value> = None;
        loop {
            let page = observe(ctx, target, after.as_ref(), page_size).await?;
            report.targets[index].unreadable += page.failed.len() as u64;
            for failed in &page.failed {
                seen.insert(&failed.key, ())?;
                tracing::warn!(target = %target.name(), key = %failed.key, error = %failed.error, "entity cannot become an event; not audited");
            }
            for event in &page.events {
                if counted_before(ctx.targets, index, event) {
                    continue;
                }
                report.targets[index].neo4j += 1;
                let held = state.entries.get(&event.key)?;
                if held.is_some() {
                    seen.insert(&event.key, ())?;
                }
                let (version, hash) = observed(event);
                match classify(Some((version, hash)), held.as_ref()) {
                    None => report.targets[index].in_sync += 1,
                    Some(class) => {
                        let finding = Finding {
                            class,
                            target: index,
                            key: event.key.clone(),
                            neo4j_version: Some(version),
                            neo4j_hash: Some(hash),
                            state_version: held.map(|h| h.version),
                            bits: held.map_or(0, |h| h.targets),
                            page_after: after.clone(),
                        };
                        report.add(finding, max);
                    }
                }
            }
            match page.last {
                Some(last) => after = Some(last),
                None => break,
            }
        }
    }
    seen.flush()?;
    let mut lookup = Ok(());
    state.entries.each(|key, entry| {
        let Some(index) = Targets::primary(entry.targets) else {
            return;
        };
        if entry.hash.is_none() || lookup.is_err() {
            return;
        }
        report.targets[index].state_live += 1;
        match seen.contains(key) {
            Ok(true) => {}
            Ok(false) => report.add(
                Finding {
                    class: AuditClass::Lost,
                    target: index,
                    key: key.to_owned(),
                    neo4j_version: None,
                    neo4j_hash: None,
                    state_version: Some(entry.version),
                    bits: entry.targets,
                    page_after: None,
                },
                max,
            ),
            Err(e) => lookup = Err(e),
        }
    })?;
    lookup?;
    report
        .findings
        .sort_by(|a, b| (a.target, a.class, &a.key).cmp(&(b.target, b.class, &b.key)));
    Ok(report)
}

/// Look again at the findings of `report`, after `state` was read to its new end: nodes
/// are read again by key, relationships by the page they were found in (a lost one is
/// looked up), each is classified again, and those with an outbox entry not yet
/// published are counted in flight.
///
/// # Errors
/// When Neo4j cannot be read.
pub async fn second_look(
    ctx: &Context<'_>,
    state: &LogState,
    report: &mut AuditReport,
    page_size: usize,
) -> crate::error::Result<()> {
    let targets = ctx.targets.list();
    // Neo4j again: (target, key) → what it holds now (None: gone; MAX: there, unread).
    let mut now: HashMap<(usize, String), Option<(i64, u128)>> = HashMap::new();
    let mut pages: BTreeMap<(usize, String), Option<serde_json::Value>> = BTreeMap::new();
    let mut by_key: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut lost_rels: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for f in &report.findings {
        now.insert((f.target, f.key.clone()), None);
        match (&targets[f.target], f.class) {
            (Target::Label { .. }, _) => by_key.entry(f.target).or_default().push(f.key.clone()),
            (Target::Type { .. }, AuditClass::Lost) => {
                lost_rels.entry(f.target).or_default().push(f.key.clone())
            }
            (Target::Type { .. }, _) => {
                let text = f.page_after.as_ref().map(ToString::to_string);
                pages.insert((f.target, text.unwrap_or_default()), f.page_after.clone());
            }
        }
    }
    for (index, keys) in &by_key {
        for event in read_nodes(ctx, &targets[*index], keys).await? {
            now.insert((*index, event.key.clone()), Some(observed(&event)));
        }
    }
    for ((index, _), after) in &pages {
        let page = observe(ctx, &targets[*index], after.as_ref(), page_size).await?;
        for event in &page.events {
            if let Some(slot) = now.get_mut(&(*index, event.key.clone())) {
                *slot = Some(observed(event));
            }
        }
    }
    for (index, keys) in &lost_rels {
        for key in existing(ctx, &targets[*index], keys).await? {
            // Created after its page was read: judged by the next audit.
            now.insert((*index, key), Some((i64::MAX, 0)));
        }
    }
    let mut kept = Vec::new();
    for mut f in std::mem::take(&mut report.findings) {
        let neo4j = now.get(&(f.target, f.key.clone())).copied().flatten();
        if neo4j.is_some_and(|(v, _)| v == i64::MAX) {
            continue;
        }
        let held = state.entries.get(&f.key)?;
        match classify(neo4j, held.as_ref()) {
            None => {
                if neo4j.is_some() {
                    report.targets[f.target].in_sync += 1;
                }
            }
            Some(class) => {
                f.class = class;
                f.neo4j_version = neo4j.map(|(v, _)| v);
                f.neo4j_hash = neo4j.map(|(_, h)| h);
                f.state_version = held.map(|h| h.version);
                f.bits = held.map_or(f.bits, |h| h.targets);
                kept.push(f);
            }
        }
    }
    let keys: Vec<String> = kept.iter().map(|f| f.key.clone()).collect();
    let pending = pending(ctx.graph, &keys).await?;
    for f in kept {
        if pending.contains(&f.key) {
            report.targets[f.target].in_flight += 1;
        } else {
            report.findings.push(f);
        }
    }
    Ok(())
}

/// The nodes of `target` with these keys (as graph.state spells them), read only: each
/// at the version its counter has now, with context, as the capture would publish it.
async fn read_nodes(
    ctx: &Context<'_>,
    target: &Target,
    keys: &[String],
) -> crate::error::Result<Vec<ChangeEvent>> {
    let capture = &ctx.config.capture;
    let mut events = Vec::new();
    for chunk in keys.chunks(LOOKUP_CHUNK) {
        let counters: Vec<String> = chunk
            .iter()
            .map(|k| format!("{}:{k}", target.kind()))
            .collect();
        let mut versions: HashMap<String, i64> = HashMap::new();
        let mut rows = ctx
            .graph
            .execute(query(VERSIONS).param("keys", counters))
            .await
            .context("reading version counters")?;
        while let Some(row) = rows.next().await? {
            let counter: String = row.get("key")?;
            let key = counter.split_once(':').map_or(counter.as_str(), |(_, k)| k);
            versions.insert(key.to_owned(), row.get("version")?);
        }
        let read = query(&page::text(NODES_READ, target, capture)).param("keys", key_params(chunk));
        let mut rows = ctx
            .graph
            .execute(read)
            .await
            .with_context(|| format!("reading nodes of {}", target.name()))?;
        while let Some(row) = rows.next().await? {
            let key = page::key_text(&page::key_of(&row)?);
            let version = versions.get(&key).copied().unwrap_or(0);
            // One that cannot become an event is left out (counted by the pass).
            if let Ok(event) = page::event(target, capture, &row, &key, version, ctx.db) {
                events.push(event);
            }
        }
    }
    context::enrich(ctx.graph, &ctx.config.mappings, &mut events).await?;
    Ok(events)
}

/// Keys as graph.state spells them, as Bolt parameters: text and, when it reads as one,
/// an integer (integer keys are published as their decimal text).
fn key_params(keys: &[String]) -> Vec<BoltType> {
    keys.iter()
        .flat_map(|k| {
            let int = k.parse::<i64>().ok().map(BoltType::from);
            std::iter::once(BoltType::from(k.as_str())).chain(int)
        })
        .collect()
}

/// Of `keys`, those with an outbox entry the relay has not published nor marked failed.
async fn pending(graph: &Graph, keys: &[String]) -> crate::error::Result<HashSet<String>> {
    let mut found = HashSet::new();
    for chunk in keys.chunks(LOOKUP_CHUNK) {
        let q = query(OUTBOX_PENDING).param("keys", chunk.to_vec());
        let mut rows = graph.execute(q).await.context("reading the outbox")?;
        while let Some(row) = rows.next().await? {
            found.insert(row.get::<String>("key")?);
        }
    }
    Ok(found)
}

/// The lookup of `chunk` (keys as graph.state spells them) as `target`: rows with `key`.
fn exists_query(ctx: &Context<'_>, target: &Target, chunk: &[String]) -> neo4rs::Query {
    let capture = &ctx.config.capture;
    match target {
        // A key is text in graph.state: look it up as a string and, when it reads as
        // one, as an integer (integer keys are published as their decimal text).
        Target::Label { .. } => {
            query(&page::text(NODES_READ, target, capture)).param("keys", key_params(chunk))
        }
        Target::Type { .. } => {
            query(&page::text(RELS_EXIST, target, capture)).param("keys", chunk.to_vec())
        }
    }
}

/// Of `keys` (as graph.state spells them), those that exist in Neo4j as `target`.
///
/// # Errors
/// When Neo4j cannot be read.
pub async fn existing(
    ctx: &Context<'_>,
    target: &Target,
    keys: &[String],
) -> crate::error::Result<HashSet<String>> {
    let mut found = HashSet::new();
    for chunk in keys.chunks(LOOKUP_CHUNK) {
        let mut rows = ctx
            .graph
            .execute(exists_query(ctx, target, chunk))
            .await
            .with_context(|| format!("looking up keys of {}", target.name()))?;
        while let Some(row) = rows.next().await? {
            found.insert(page::key_text(&page::key_of(&row)?));
        }
    }
    Ok(found)
}

/// As [`existing`], inside `txn` (reads what committed before, and `txn`'s own writes).
///
/// # Errors
/// When Neo4j cannot be read.
pub async fn existing_in(
    txn: &mut neo4rs::Txn,
    ctx: &Context<'_>,
    target: &Target,
    keys: &[String],
) -> crate::error::Result<HashSet<String>> {
    let mut found = HashSet::new();
    for chunk in keys.chunks(LOOKUP_CHUNK) {
        let mut rows = txn
            .execute(exists_query(ctx, target, chunk))
            .await
            .with_context(|| format!("looking up keys of {}", target.name()))?;
        while let Some(row) = rows.next(txn.handle()).await? {
            found.insert(page::key_text(&page::key_of(&row)?));
        }
    }
    Ok(found)
}
