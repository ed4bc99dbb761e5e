//! `graphcdc relay`: publishes the Neo4j outbox (written by the `before`-phase trigger
//! in `deploy/neo4j/`) to the change and state topics, then deletes what was published.
//!
//! At-least-once: entries are deleted only after the broker acknowledged them, so a
//! crash between publish and delete publishes them again, which the version fence makes
//! harmless. Per key, all pending entries go out in one round in version order. Only one
//! relay per database is active: a lease node with an expiry (`CdcRelayLease`).

use super::{connect, context, outbox_event, OutboxRow};
use crate::codec::{Codec, Format, SchemaRegistry};
use crate::config::Config;
use crate::kafka::ChangePublisher;
use crate::stats::RelayStats;
use anyhow::Context;
use neo4rs::{query, Graph};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Take or renew the lease when it is free, ours, or expired; returns the holder.
pub const ACQUIRE_LEASE: &str =
    include_str!("../../../../deploy/neo4j/queries/relay-acquire-lease.cypher");

/// Give the lease up on shutdown.
pub const RELEASE_LEASE: &str =
    include_str!("../../../../deploy/neo4j/queries/relay-release-lease.cypher");

/// The oldest entries' keys, then every pending entry of those keys in version order.
pub const READ_OUTBOX: &str =
    include_str!("../../../../deploy/neo4j/queries/relay-read-outbox.cypher");

/// Delete published entries.
pub const DELETE_PUBLISHED: &str =
    include_str!("../../../../deploy/neo4j/queries/relay-delete-published.cypher");

/// Mark an entry that cannot become an event.
pub const MARK_FAILED: &str =
    include_str!("../../../../deploy/neo4j/queries/relay-mark-failed.cypher");

/// Outbox depth and age of the oldest entry.
pub const OUTBOX_DEPTH: &str =
    include_str!("../../../../deploy/neo4j/queries/relay-outbox-depth.cypher");

/// The outbox relay of one database.
pub struct Relay {
    config: Config,
    graph: Graph,
    publisher: ChangePublisher,
    /// Lease holder name: host and process id.
    me: String,
    stats: Arc<RelayStats>,
}

impl Relay {
    /// Connect to Neo4j and the broker.
    ///
    /// # Errors
    /// When the Bolt URI or the producer config is invalid.
    pub fn new(config: Config, stats: Arc<RelayStats>) -> anyhow::Result<Self> {
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
            stats,
        })
    }

    /// Whether this relay holds the lease now (taking or renewing it when possible).
    ///
    /// # Errors
    /// When Neo4j cannot be reached.
    pub async fn acquire_lease(&self) -> anyhow::Result<bool> {
        let q = query(ACQUIRE_LEASE)
            .param("me", self.me.as_str())
            .param("now", crate::unix_ms())
            .param("ttl", self.config.relay.lease_ttl_ms as i64);
        let mut rows = self
            .graph
            .execute(q)
            .await
            .context("acquiring the relay lease")?;
        let mut held = false;
        while let Some(row) = rows.next().await? {
            held |= row.get::<String>("holder").is_ok_and(|h| h == self.me);
        }
        Ok(held)
    }

    async fn release_lease(&self) -> anyhow::Result<()> {
        self.graph
            .run(query(RELEASE_LEASE).param("me", self.me.as_str()))
            .await
            .context("releasing the relay lease")?;
        Ok(())
    }

    /// Publish one round of the outbox; returns how many entries went out.
    ///
    /// # Errors
    /// When Neo4j or the broker fails; nothing is deleted then.
    pub async fn publish_round(&self) -> anyhow::Result<usize> {
        let q = query(READ_OUTBOX).param("limit", self.config.relay.batch_size as i64);
        let mut rows = self.graph.execute(q).await.context("reading the outbox")?;
        let mut events = Vec::new();
        let mut ids = Vec::new();
        let mut failed = Vec::new();
        while let Some(row) = rows.next().await? {
            let event = row
                .to::<OutboxRow>()
                .map_err(anyhow::Error::from)
                .and_then(outbox_event);
            match event {
                Ok(event) => {
                    ids.push(event.event_id.clone());
                    events.push(event);
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
        let db = self.config.neo4j.database.as_deref().unwrap_or("neo4j");
        let mappings = &self.config.mappings;
        let reemitted = context::reemit(&self.graph, mappings, &events, db).await?;
        events.extend(reemitted);
        context::enrich(&self.graph, mappings, &mut events).await?;
        // Events carry this span's trace context unless the outbox entry had its own.
        let span = tracing::info_span!(
            "relay.publish",
            otel.kind = "producer",
            events = events.len()
        );
        self.publisher.publish_all(&events).instrument(span).await?;
        self.graph
            .run(query(DELETE_PUBLISHED).param("ids", ids))
            .await
            .context("deleting published outbox entries")?;
        self.stats.published.add(events.len() as u64);
        Ok(events.len())
    }

    async fn measure_depth(&self) -> anyhow::Result<()> {
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
    /// lease before each; release it on the way out.
    ///
    /// # Errors
    /// Only set-up errors; Neo4j and broker failures are retried.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let idle = Duration::from_millis(self.config.relay.poll_interval_ms);
        let mut holding = false;
        while !shutdown.is_cancelled() {
            let round = async {
                if !self.acquire_lease().await? {
                    return anyhow::Ok(None);
                }
                self.stats.set_holds_lease(true);
                let published = self.publish_round().await?;
                self.measure_depth().await?;
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
