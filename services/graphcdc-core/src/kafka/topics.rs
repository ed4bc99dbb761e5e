//! Topic set-up (create what is missing, with its cleanup policy) and partition ids.

use super::client::{client_config, ADMIN_TIMEOUT};
use super::config::KafkaConfig;
use crate::error::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Cleanup policy of a topic to create.
#[derive(Debug, Clone, Copy)]
pub enum Cleanup {
    /// History: keep by time.
    Delete,
    /// Latest value per key.
    Compact,
}

/// Create the topics that do not exist yet.
///
/// # Errors
/// When metadata cannot be fetched or the broker refuses to create a topic.
pub async fn ensure_topics(
    kafka: &KafkaConfig,
    topics: &[(&str, Cleanup)],
    partitions: i32,
) -> crate::error::Result<()> {
    let probe: BaseConsumer = client_config(kafka)
        .create()
        .context("creating metadata client")?;
    let metadata = tokio::task::block_in_place(|| probe.fetch_metadata(None, ADMIN_TIMEOUT))
        .context("fetching topic metadata")?;
    let existing: Vec<&str> = metadata.topics().iter().map(|t| t.name()).collect();
    let missing: Vec<_> = topics
        .iter()
        .filter(|(name, _)| !existing.contains(name))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = client_config(kafka)
        .create()
        .context("creating admin client")?;
    let new_topics: Vec<NewTopic> = missing
        .iter()
        .map(|(name, cleanup)| {
            let policy = match cleanup {
                Cleanup::Delete => "delete",
                Cleanup::Compact => "compact",
            };
            NewTopic::new(name, partitions, TopicReplication::Fixed(1))
                .set("cleanup.policy", policy)
        })
        .collect();
    let results = admin
        .create_topics(
            &new_topics,
            &AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)),
        )
        .await
        .context("creating topics")?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((name, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %name, "topic created concurrently");
            }
            Err((name, code)) => crate::error::bail!(External, "creating topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Partition ids of `topic`.
///
/// # Errors
/// When metadata cannot be fetched or the topic has no partitions.
pub fn partition_ids<C: rdkafka::consumer::ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    topic: &str,
) -> crate::error::Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
        .with_context(|| format!("fetching metadata of {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    crate::error::ensure!(
        !partitions.is_empty(),
        External,
        "topic {topic} has no partitions"
    );
    Ok(partitions)
}

/// Create the change (history), state (compacted) and DLQ (history) topics of `kafka`
/// when missing: the topics every service of the pipeline expects.
///
/// # Errors
/// As [`ensure_topics`].
pub async fn ensure_pipeline_topics(
    kafka: &KafkaConfig,
    partitions: i32,
) -> crate::error::Result<()> {
    ensure_topics(
        kafka,
        &[
            (&kafka.changes_topic, Cleanup::Delete),
            (&kafka.state_topic, Cleanup::Compact),
            (&kafka.dlq_topic, Cleanup::Delete),
        ],
        partitions,
    )
    .await
}
