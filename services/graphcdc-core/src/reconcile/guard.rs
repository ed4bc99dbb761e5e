//! What keeps the reconciler from destroying a healthy sink.
//!
//! - **The state topic must keep every key.** Orphans are points the state topic does not
//!   know; if the broker drops state records by age or size, every entity left unchanged
//!   for that long looks deleted and would be deleted from the sink. At the first check the
//!   reconciler reads the topic's configuration (DescribeConfigs) and refuses to run unless
//!   `cleanup.policy` is `compact` alone (retention settings do not apply to a compact-only
//!   topic), or `compact,delete` with `retention.ms=-1` (and `retention.bytes` -1 or not
//!   reported: Kafka's default is -1). A broker that does not report `cleanup.policy`
//!   (tansu reports only the settings a topic was created or altered with) is refused too:
//!   the error names what is unknown. `--allow-non-compacted-state` runs anyway.
//! - **A budget per collection and time window.** Repairs may delete (orphans) or rewrite at
//!   the same version (content mismatches, which the processor's strict fence can never
//!   undo) at most a share of each collection's live points per window, counted across
//!   the checks of a continuous run, not per check: an aged-out slice of the state topic,
//!   or a mapping that differs from the processor's, is stopped before it erases or
//!   rewrites the sink slice by slice. `--force` lifts it.
//! - **Ratios are validated** at start: NaN, negative or above 1 is refused, naming the
//!   option.

use crate::error::Context;
use crate::kafka;
use crate::kafka::KafkaConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Check that `value` of the option `option` is a share: a number in [0, 1].
///
/// # Errors
/// Names the option and the value when it is NaN, negative or above 1.
pub fn validate_ratio(option: &str, value: f64) -> crate::error::Result<()> {
    crate::error::ensure!(
        (0.0..=1.0).contains(&value),
        Invalid,
        "{option} must be a share between 0 and 1 (0.1 = 10 %), got {value}"
    );
    Ok(())
}

/// Why the state topic's configuration does not prove that it keeps every key; `None`
/// when it does. `configs` holds what the broker reported (name → value).
pub fn state_topic_problem(topic: &str, configs: &BTreeMap<String, String>) -> Option<String> {
    let Some(policy) = configs.get("cleanup.policy") else {
        return Some(format!(
            "the broker did not report cleanup.policy of state topic {topic}, so it cannot be \
             verified that the topic keeps the latest record of every key"
        ));
    };
    let policies: Vec<&str> = policy.split(',').map(str::trim).collect();
    if !policies.contains(&"compact") {
        return Some(format!(
            "state topic {topic} has cleanup.policy={policy}: the broker deletes records by \
             age or size, and every entity unchanged for that long would look deleted"
        ));
    }
    if !policies.contains(&"delete") {
        return None;
    }
    match configs.get("retention.ms").map(String::as_str) {
        Some("-1") => {}
        Some(ms) => {
            return Some(format!(
                "state topic {topic} has cleanup.policy={policy} with retention.ms={ms}: \
                 records older than that are deleted even when they are a key's latest"
            ))
        }
        None => {
            return Some(format!(
                "state topic {topic} has cleanup.policy={policy} and the broker did not report \
                 retention.ms, so it cannot be verified that no record is deleted by age"
            ))
        }
    }
    match configs.get("retention.bytes").map(String::as_str) {
        None | Some("-1") => None,
        Some(bytes) => Some(format!(
            "state topic {topic} has cleanup.policy={policy} with retention.bytes={bytes}: \
             the oldest records are deleted once a partition is larger than that"
        )),
    }
}

/// Read the state topic's configuration and refuse unless it keeps every key
/// ([`state_topic_problem`]).
///
/// # Errors
/// A [`StateTopicRefusal`] when the configuration does not keep every key (or the broker
/// answers without saying), other errors when it cannot be read; the messages name the
/// reason and `--allow-non-compacted-state`.
pub async fn verify_state_topic(kafka_config: &KafkaConfig) -> crate::error::Result<()> {
    let topic = &kafka_config.state_topic;
    let override_hint = "fix the topic (kafka-configs --alter --entity-type topics \
         --entity-name <topic> --add-config cleanup.policy=compact), or pass \
         --allow-non-compacted-state to reconcile anyway (repairs may then delete live points)";
    let admin: AdminClient<DefaultClientContext> = kafka::client_config(kafka_config)
        .create()
        .context("creating admin client")?;
    let options = AdminOptions::new().request_timeout(Some(kafka::ADMIN_TIMEOUT));
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
        .await
        .map_err(|e| {
            crate::error::err!(
                External,
                "cannot read the configuration of state topic {topic} (DescribeConfigs: {e}); \
                 {override_hint}"
            )
        })?;
    let resource = match described.into_iter().next() {
        Some(Ok(resource)) => resource,
        Some(Err(code)) => {
            return Err(StateTopicRefusal(format!(
                "the broker refused to describe state topic {topic} ({code}); {override_hint}"
            ))
            .into())
        }
        None => {
            return Err(StateTopicRefusal(format!(
                "the broker described nothing for state topic {topic}; {override_hint}"
            ))
            .into())
        }
    };
    let configs: BTreeMap<String, String> = resource
        .entries
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    match state_topic_problem(topic, &configs) {
        None => Ok(()),
        Some(problem) => Err(StateTopicRefusal(format!("{problem}; {override_hint}")).into()),
    }
}

/// The state topic's configuration does not keep every key: the reconciler does not run.
#[derive(Debug, thiserror::Error)]
#[error("refusing to reconcile: {0}")]
pub struct StateTopicRefusal(pub String);

/// A topic to fix before running: a config error.
impl From<StateTopicRefusal> for crate::error::Error {
    fn from(e: StateTopicRefusal) -> Self {
        crate::error::Error::service(crate::error::ErrorKind::Config, e)
    }
}

/// A window as text: `24h`, `90m`, `45s`.
fn window_text(window: Duration) -> String {
    match window.as_secs() {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// What a repair spends from the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Spend {
    /// A point deleted (an orphan tombstoned).
    Delete,
    /// A live point rewritten at the same version (a content mismatch).
    Rewrite,
}

impl Spend {
    /// Words for refusals.
    pub fn describe(self) -> &'static str {
        match self {
            Spend::Delete => "delete",
            Spend::Rewrite => "rewrite at the same version",
        }
    }

    /// The option that sets this budget's share.
    pub fn option(self) -> &'static str {
        match self {
            Spend::Delete => "--max-delete-ratio",
            Spend::Rewrite => "--max-rewrite-ratio",
        }
    }
}

/// Why a repair was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "repair refused: it would {what} {planned} of {live} live points of collection \
     {collection} ({spent} already in the last {window}; {percent:.1} % > {limit:.1} %, \
     {option}); check the state topic and the mapping, or pass --force",
    what = spend.describe(),
    window = window_text(*window),
    option = spend.option()
)]
pub struct SafetyRefusal {
    pub spend: Spend,
    pub collection: String,
    /// Points this repair would delete or rewrite in that collection.
    pub planned: u64,
    /// Points already spent in the window.
    pub spent: u64,
    /// Live points of the collection (plus those already deleted in the window).
    pub live: u64,
    pub percent: f64,
    pub limit: f64,
    pub window: Duration,
}

/// The operator's decision (`--force`, or a smaller repair): a config error.
impl From<SafetyRefusal> for crate::error::Error {
    fn from(e: SafetyRefusal) -> Self {
        crate::error::Error::service(crate::error::ErrorKind::Config, e)
    }
}

/// Deletes and same-version rewrites per collection within a sliding window.
#[derive(Debug, Default)]
pub struct Budget {
    spent: HashMap<(String, Spend), VecDeque<(Instant, u64)>>,
}

impl Budget {
    /// Points of `collection` spent as `spend` since `now - window`.
    pub fn spent(&mut self, collection: &str, spend: Spend, window: Duration, now: Instant) -> u64 {
        let Some(entries) = self.spent.get_mut(&(collection.to_owned(), spend)) else {
            return 0;
        };
        while entries
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= window)
        {
            entries.pop_front();
        }
        entries.iter().map(|(_, n)| n).sum()
    }

    /// Whether spending `planned` more of `collection` (with `live` live points now) stays
    /// within `ratio` of it over `window`; the refusal otherwise.
    ///
    /// # Errors
    /// The [`SafetyRefusal`] naming the collection and the figures.
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &mut self,
        collection: &str,
        spend: Spend,
        planned: u64,
        live: u64,
        ratio: f64,
        window: Duration,
        now: Instant,
    ) -> Result<(), SafetyRefusal> {
        if planned == 0 {
            return Ok(());
        }
        let spent = self.spent(collection, spend, window, now);
        // Deleted points left the live count: measure against the size before them.
        let base = match spend {
            Spend::Delete => live + spent,
            Spend::Rewrite => live,
        };
        let total = spent + planned;
        if total as f64 <= ratio * base as f64 {
            return Ok(());
        }
        Err(SafetyRefusal {
            spend,
            collection: collection.to_owned(),
            planned,
            spent,
            live: base,
            percent: 100.0 * total as f64 / base.max(1) as f64,
            limit: 100.0 * ratio,
            window,
        })
    }

    /// Record `n` points of `collection` spent as `spend` at `now`.
    pub fn record(&mut self, collection: &str, spend: Spend, n: u64, now: Instant) {
        if n > 0 {
            self.spent
                .entry((collection.to_owned(), spend))
                .or_default()
                .push_back((now, n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn ratios_outside_zero_to_one_are_refused_by_name() {
        for bad in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
            let e = validate_ratio("--max-delete-ratio", bad).unwrap_err();
            assert!(e.to_string().contains("--max-delete-ratio"), "{e}");
        }
        for good in [0.0, 0.1, 1.0] {
            validate_ratio("--max-delete-ratio", good).unwrap();
        }
    }

    #[test]
    fn the_budget_is_cumulative_per_collection_and_window() {
        let mut budget = Budget::default();
        let t0 = Instant::now();
        // 10 % of 100: 6 now, then 4 more fit, then one more does not.
        budget
            .check("a", Spend::Delete, 6, 100, 0.1, HOUR, t0)
            .unwrap();
        budget.record("a", Spend::Delete, 6, t0);
        // The sink shrank by the 6 deleted: the base stays 100.
        budget
            .check("a", Spend::Delete, 4, 94, 0.1, HOUR, t0)
            .unwrap();
        budget.record("a", Spend::Delete, 4, t0);
        let refused = budget
            .check("a", Spend::Delete, 1, 90, 0.1, HOUR, t0)
            .unwrap_err();
        assert_eq!((refused.planned, refused.spent, refused.live), (1, 10, 100));
        assert!(refused.to_string().contains("collection a"), "{refused}");
        // Another collection and another kind of spend have their own budget.
        budget
            .check("b", Spend::Delete, 1, 10, 0.1, HOUR, t0)
            .unwrap();
        budget
            .check("a", Spend::Rewrite, 9, 90, 0.1, HOUR, t0)
            .unwrap();
        // A small collection cannot be wiped while the total stays small.
        assert!(budget
            .check("b", Spend::Delete, 2, 10, 0.1, HOUR, t0)
            .is_err());
        // Once the window has passed, the budget is whole again.
        let later = t0 + HOUR;
        assert_eq!(budget.spent("a", Spend::Delete, HOUR, later), 0);
        budget
            .check("a", Spend::Delete, 9, 90, 0.1, HOUR, later)
            .unwrap();
    }

    #[test]
    fn only_a_topic_that_keeps_every_key_passes() {
        let configs = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let ok = [
            configs(&[("cleanup.policy", "compact")]),
            configs(&[("cleanup.policy", "compact"), ("retention.ms", "604800000")]),
            configs(&[("cleanup.policy", "compact,delete"), ("retention.ms", "-1")]),
            configs(&[
                ("cleanup.policy", "delete, compact"),
                ("retention.ms", "-1"),
                ("retention.bytes", "-1"),
            ]),
        ];
        for c in &ok {
            assert_eq!(state_topic_problem("s", c), None, "{c:?}");
        }
        let refused = [
            (configs(&[]), "did not report cleanup.policy"),
            (
                configs(&[("cleanup.policy", "delete")]),
                "cleanup.policy=delete",
            ),
            (
                configs(&[
                    ("cleanup.policy", "compact,delete"),
                    ("retention.ms", "1000"),
                ]),
                "retention.ms=1000",
            ),
            (
                configs(&[("cleanup.policy", "compact,delete")]),
                "did not report retention.ms",
            ),
            (
                configs(&[
                    ("cleanup.policy", "compact,delete"),
                    ("retention.ms", "-1"),
                    ("retention.bytes", "1000"),
                ]),
                "retention.bytes=1000",
            ),
        ];
        for (c, reason) in &refused {
            let problem = state_topic_problem("s", c).unwrap();
            assert!(problem.contains(reason), "{problem}");
        }
    }
}
