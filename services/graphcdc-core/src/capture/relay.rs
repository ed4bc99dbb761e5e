//! `graphcdc relay`: publishes the Neo4j outbox (written by the `before`-phase trigger
//! in `deploy/neo4j/`) to the change and state topics, then deletes what was published.
//!
//! At-least-once: entries are deleted only after the broker acknowledged them, so a
//! crash between publish and delete publishes them again, which the version fence makes
//! harmless. Per key, all pending entries go out in one round in version order. Only one
//! relay per database is active: a lease node (`CdcRelayLease`) with an expiry on the
//! database's clock and a fencing epoch that each takeover increments. A round renews the
//! lease under its epoch right before publishing, and deletes entries only while the lease
//! still carries that epoch, so a relay that lost the lease publishes nothing more and
//! deletes nothing another relay owns. The lease time must exceed the producer's delivery
//! timeout ([`check_lease_ttl`]), so records of a round are delivered or failed before
//! another relay can take over (the remaining window is in `deploy/neo4j/README.md`).

use super::{connect, context, outbox_event, OutboxRow};
use crate::codec::{Codec, Format, SchemaRegistry};
use crate::config::Config;
use crate::error::Context;
use crate::kafka::ChangePublisher;
use crate::stats::RelayStats;
use neo4rs::{query, Graph};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Take or renew the lease when it is free, ours, or expired; returns the holder.
pub const ACQUIRE_LEASE: &str =
    include_str!("../../../../deploy/neo4j/queries/relay-acquire-lease.cypher");

/// Give the lease up on shutdown.
pub const RELEASE_LEASE: &str =
    include_str!("../../../../deploy/neo4j/queries/relay-release-lease.cypher");

/// The keys of the oldest pending entries (an index seek on `created_at`).
pub const READ_OUTBOX_KEYS: &str =
    include_str!("../../../../deploy/neo4j/queries/relay-read-outbox-keys.cypher");

/// Every pending entry of those keys, in version order per key.
pub const READ_OUTBOX: &str =
    include_str!("../../../../deploy/neo4j/queries/relay-read-outbox.cypher");

/// Renew the lease only while it carries this relay's epoch (the check before publishing).
pub const RENEW_LEASE: &str =
    include_str!("../../../../deploy/neo4j/queries/relay-renew-lease.cypher");

/// Delete published entries, only while the lease carries this relay's epoch.
pub const DELETE_PUBLISHED: &str =
    include_str!("../../../../deploy/neo4j/queries/relay-delete-published.cypher");

/// Mark an entry that cannot become an event.
pub const MARK_FAILED: &str =
    include_str!("../../../../deploy/neo4j/queries/relay-mark-failed.cypher");

/// Outbox depth and age of the oldest entry.
pub const OUTBOX_DEPTH: &str =
    include_str!("../../../../deploy/neo4j/queries/relay-outbox-depth.cypher");

/// How often the relay counts the outbox (a full scan): on a timer, not every round.
pub const DEPTH_INTERVAL: Duration = Duration::from_secs(10);

/// librdkafka's default `message.timeout.ms` (the producer sets it unless configured).
const DEFAULT_DELIVERY_TIMEOUT_MS: u64 = 30_000;

/// The round stopped because another relay took the lease over (its epoch changed).
#[derive(Debug, thiserror::Error)]
#[error("the relay lease was taken over (epoch {0} is no longer current)")]
pub struct LeaseLost(pub i64);

impl From<LeaseLost> for crate::error::Error {
    fn from(e: LeaseLost) -> Self {
        crate::error::Error::service(crate::error::ErrorKind::External, e)
    }
}

/// The lease must outlive the producer's delivery timeout: a relay whose round stalls on
/// the broker then still holds the lease until every record of the round was delivered
/// or failed, and a successor cannot interleave with them.
///
/// # Errors
/// When `relay.lease_ttl_ms` is not above the delivery timeout, naming both fields.
pub fn check_lease_ttl(config: &Config) -> crate::error::Result<()> {
    let props = &config.kafka.properties;
    let (field, timeout) = ["delivery.timeout.ms", "message.timeout.ms"]
        .iter()
        .find_map(|name| {
            let value = props.get(*name)?.expose().trim().parse::<u64>().ok();
            Some((format!("kafka.properties.\"{name}\""), value))
        })
        .unwrap_or((
            "kafka.properties.\"message.timeout.ms\" (default)".into(),
            Some(DEFAULT_DELIVERY_TIMEOUT_MS),
        ));
    let timeout = timeout.with_context(|| format!("{field} is not a number of milliseconds"))?;
    crate::error::ensure!(
        config.relay.lease_ttl_ms > timeout,
        Invalid,
        "relay.lease_ttl_ms ({}) must exceed the producer's delivery timeout {field} ({timeout}): \
         otherwise a relay stalled on the broker loses the lease while its records are still \
         being delivered, and its successor's records interleave with them",
        config.relay.lease_ttl_ms
    );
    Ok(())
}

/// The outbox relay of one database.
pub struct Relay {
    config: Config,
    graph: Graph,
    publisher: ChangePublisher,
    /// Lease holder name: host and process id.
    me: String,
    /// Fencing epoch of the lease as this relay last took it (0: never).
    epoch: AtomicI64,
    stats: Arc<RelayStats>,
}

impl Relay {
    /// Connect to Neo4j and the broker.
    ///
    /// # Errors
    /// When the Bolt URI or the producer config is invalid, or the lease time does not
    /// exceed the delivery timeout ([`check_lease_ttl`]).
    pub fn new(config: Config, stats: Arc<RelayStats>) -> crate::error::Result<Self> {
        check_lease_ttl(&config)?;
        let graph = connect(&config.neo4j)?;
        let codec = Arc::new(Codec::new(SchemaRegistry::from_config(&config.registry)?));
        let publisher = ChangePublisher::new(&config.kafka, codec, Format::Avro)?;
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "relay".into());
        Ok(Relay {
            me: format!(
                "{host}-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ),
            config,
            graph,
            publisher,
            epoch: AtomicI64::new(0),
            stats,
        })
    }

    /// Whether this relay holds the lease now (taking or renewing it when possible).
    ///
    /// # Errors
    /// When Neo4j cannot be reached.
    pub async fn acquire_lease(&self) -> crate::error::Result<bool> {
        let q = query(ACQUIRE_LEASE)
            .param("me", self.me.as_str())
            .param("ttl", self.config.relay.lease_ttl_ms as i64);
        let mut rows = self
            .graph
            .execute(q)
            .await
            .context("acquiring the relay lease")?;
        let mut held = false;
        while let Some(row) = rows.next().await? {
            if row.get::<String>("holder").is_ok_and(|h| h == self.me) {
                held = true;
                let epoch: i64 = row.get("epoch").context("lease without an epoch")?;
                self.epoch.store(epoch, Ordering::SeqCst);
            }
        }
        Ok(held)
    }

    /// The fencing epoch this relay last took the lease with (0: never).
    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Renew the lease under this relay's epoch.
    ///
    /// # Errors
    /// [`LeaseLost`] when another relay took it over; Neo4j errors.
    async fn renew_lease(&self) -> crate::error::Result<()> {
        let epoch = self.epoch();
        let q = query(RENEW_LEASE)
            .param("me", self.me.as_str())
            .param("epoch", epoch)
            .param("ttl", self.config.relay.lease_ttl_ms as i64);
        let mut rows = self
            .graph
            .execute(q)
            .await
            .context("renewing the relay lease")?;
        if rows.next().await?.is_none() {
            return Err(LeaseLost(epoch).into());
        }
        Ok(())
    }

    /// Delete published outbox entries, only while the lease carries this relay's epoch;
    /// returns how many were deleted (0 when the lease was taken over).
    ///
    /// # Errors
    /// When Neo4j fails.
    pub async fn delete_published(&self, ids: &[String]) -> crate::error::Result<i64> {
        let mut rows = self
            .graph
            .execute(self.delete_query(ids))
            .await
            .context("deleting published outbox entries")?;
        Ok(match rows.next().await? {
            Some(row) => row.get("deleted").unwrap_or(0),
            None => 0,
        })
    }

    fn delete_query(&self, ids: &[String]) -> neo4rs::Query {
        query(DELETE_PUBLISHED)
            .param("me", self.me.as_str())
            .param("epoch", self.epoch())
            .param("ids", ids.to_vec())
    }

    /// After publishing, in one transaction: check the epoch (taking the lease's write
    /// lock), re-emit the nodes whose context changed (version bump and outbox entry
    /// together), and delete the published entries. Nothing commits when the lease was
    /// taken over.
    async fn finish_round(
        &self,
        events: &[crate::event::ChangeEvent],
        changed: &[Option<Vec<String>>],
        ids: &[String],
    ) -> crate::error::Result<()> {
        let epoch = self.epoch();
        let mut txn = self
            .graph
            .start_txn()
            .await
            .context("starting the delete transaction")?;
        let q = query(RENEW_LEASE)
            .param("me", self.me.as_str())
            .param("epoch", epoch)
            .param("ttl", self.config.relay.lease_ttl_ms as i64);
        let mut rows = txn.execute(q).await.context("checking the relay lease")?;
        let held = rows.next(txn.handle()).await?.is_some();
        drop(rows);
        if !held {
            txn.rollback().await.ok();
            return Err(LeaseLost(epoch).into());
        }
        let db = self.config.neo4j.database.as_deref().unwrap_or("neo4j");
        let work = async {
            let mappings = &self.config.mappings;
            let exclude = &self.config.capture.exclude_properties;
            let reemitted =
                context::reemit(&mut txn, mappings, exclude, events, changed, db).await?;
            txn.run(self.delete_query(ids))
                .await
                .context("deleting published outbox entries")?;
            Ok::<_, crate::error::Error>(reemitted)
        };
        let reemitted =
            super::commit_or_roll_back(work.await, txn, "committing the delete transaction")
                .await?;
        self.stats.context_reemitted.add(reemitted.written as u64);
        for o in &reemitted.overflows {
            tracing::warn!(
                label = %o.label,
                context = %o.field,
                related = %o.related,
                max_fanout = o.max_fanout,
                "context fan-out over max_fanout: only that many nodes were re-emitted; the \
                 others keep the old value until `graphcdc backfill` re-publishes them"
            );
        }
        self.stats
            .context_fanout_overflow
            .add(reemitted.overflows.len() as u64);
        Ok(())
    }

    async fn release_lease(&self) -> crate::error::Result<()> {
        self.graph
            .run(query(RELEASE_LEASE).param("me", self.me.as_str()))
            .await
            .context("releasing the relay lease")?;
        Ok(())
    }

    /// Publish one round of the outbox; returns how many entries went out. Call it while
    /// holding the lease ([`Relay::acquire_lease`]).
    ///
    /// # Errors
    /// When Neo4j or the broker fails, or [`LeaseLost`] when another relay took the lease
    /// over; nothing is deleted then.
    pub async fn publish_round(&self) -> crate::error::Result<usize> {
        let q = query(READ_OUTBOX_KEYS).param("limit", self.config.relay.batch_size as i64);
        let mut rows = self.graph.execute(q).await.context("reading the outbox")?;
        let keys: Vec<String> = match rows.next().await? {
            Some(row) => row.get("keys").unwrap_or_default(),
            None => Vec::new(),
        };
        if keys.is_empty() {
            return Ok(0);
        }
        let q = query(READ_OUTBOX).param("keys", keys);
        let mut rows = self.graph.execute(q).await.context("reading the outbox")?;
        let mut events = Vec::new();
        let mut changed = Vec::new();
        let mut ids = Vec::new();
        let mut failed = Vec::new();
        while let Some(row) = rows.next().await? {
            let event = row
                .to::<OutboxRow>()
                .map_err(crate::error::Error::from)
                .and_then(|row| {
                    let names = row.changed.clone();
                    outbox_event(row).map(|event| (event, names))
                });
            match event {
                Ok((event, names)) => {
                    ids.push(event.event_id.clone());
                    events.push(event);
                    changed.push(names);
                }
                Err(e) => failed.push((
                    row.get::<String>("event_id").unwrap_or_default(),
                    format!("{e:#}"),
                )),
            }
        }
        for (id, error) in failed {
            tracing::warn!(event_id = %id, %error, "outbox entry cannot become an event; marked failed");
            self.graph
                .run(query(MARK_FAILED).param("id", id).param("error", error))
                .await
                .context("marking a failed outbox entry")?;
            self.stats.failed.add(1);
        }
        if events.is_empty() {
            return Ok(0);
        }
        context::enrich(&self.graph, &self.config.mappings, &mut events).await?;
        // The fence: publish only under the epoch this round read the outbox with.
        self.renew_lease().await?;
        // Events carry this span's trace context unless the outbox entry had its own.
        let span = tracing::info_span!(
            "relay.publish",
            otel.kind = "producer",
            events = events.len()
        );
        self.publisher.publish_all(&events).instrument(span).await?;
        self.finish_round(&events, &changed, &ids).await?;
        self.stats.published.add(events.len() as u64);
        Ok(events.len())
    }

    async fn measure_depth(&self) -> crate::error::Result<()> {
        let mut rows = self.graph.execute(query(OUTBOX_DEPTH)).await?;
        if let Some(row) = rows.next().await? {
            let depth: i64 = row.get("depth").unwrap_or(0);
            let oldest: Option<i64> = row.get("oldest").ok();
            self.stats.outbox_depth.set(depth.max(0) as f64);
            let lag_ms = oldest.map_or(0, |t| (crate::unix_ms() - t).max(0));
            self.stats.lag.set(lag_ms as f64 / 1000.0);
        }
        Ok(())
    }

    /// Relay until `shutdown`: wait for the lease, then publish rounds, renewing the
    /// lease before each; count the outbox every [`DEPTH_INTERVAL`]; release the lease on
    /// the way out.
    ///
    /// # Errors
    /// Only set-up errors; Neo4j and broker failures are retried.
    pub async fn run(self, shutdown: CancellationToken) -> crate::error::Result<()> {
        let idle = Duration::from_millis(self.config.relay.poll_interval_ms);
        let mut holding = false;
        let mut measured: Option<Instant> = None;
        while !shutdown.is_cancelled() {
            let round = async {
                if !self.acquire_lease().await? {
                    return Ok::<_, crate::error::Error>(None);
                }
                self.stats.set_holds_lease(true);
                let published = self.publish_round().await?;
                if measured.is_none_or(|at| at.elapsed() >= DEPTH_INTERVAL) {
                    measured = Some(Instant::now());
                    self.measure_depth().await?;
                }
                Ok(Some(published))
            };
            let pause = match round.await {
                Ok(None) => {
                    if holding {
                        tracing::warn!("relay lease lost");
                    }
                    holding = false;
                    self.stats.set_holds_lease(false);
                    idle.max(Duration::from_millis(self.config.relay.lease_ttl_ms / 3))
                }
                Ok(Some(published)) => {
                    if !holding {
                        tracing::info!(holder = %self.me, "relay lease acquired");
                    }
                    holding = true;
                    self.stats.set_holds_lease(true);
                    if published > 0 {
                        Duration::ZERO
                    } else {
                        idle
                    }
                }
                Err(e) if e.downcast_ref::<LeaseLost>().is_some() => {
                    tracing::warn!(error = %e, "relay lease lost mid-round; nothing deleted");
                    holding = false;
                    self.stats.set_holds_lease(false);
                    idle
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "relay round failed; retrying");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        if holding {
            self.release_lease().await?;
        }
        Ok(())
    }
}
