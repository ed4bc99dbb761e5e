//! What the audit pages: every mapped label and relationship type once, in config order
//! (as the backfill does). An entity belongs to the first target that matches it: a node
//! with two mapped labels is counted under the first, and a tombstone for it carries
//! every mapped label it had, so the processor deletes it from each collection.

use crate::capture::backfill::page::Target;
use crate::event::{EntityKind, EntityState};
use crate::mapping::MappingConfig;

/// The audited targets; at most 64 (a bit each).
#[derive(Debug, Clone)]
pub struct Targets {
    list: Vec<Target>,
}

impl Targets {
    /// The distinct targets of `mappings`.
    ///
    /// # Errors
    /// With more than 64 distinct labels and types.
    pub fn of(mappings: &[MappingConfig]) -> crate::error::Result<Self> {
        let mut list: Vec<Target> = Vec::new();
        for target in mappings.iter().filter_map(Target::of) {
            if !list.iter().any(|t| t.name() == target.name()) {
                list.push(target);
            }
        }
        crate::error::ensure!(
            list.len() <= 64,
            Invalid,
            "the audit handles at most 64 mapped labels and relationship types, got {}",
            list.len()
        );
        Ok(Targets { list })
    }

    /// The targets, in config order.
    pub fn list(&self) -> &[Target] {
        &self.list
    }

    /// Bits of the targets `labels` (a node's) match.
    pub fn of_labels(&self, labels: &[String]) -> u64 {
        self.bits(|t| matches!(t, Target::Label { label, .. } if labels.contains(label)))
    }

    /// Bits of the targets a state belongs to.
    pub fn of_state(&self, state: &EntityState) -> u64 {
        match (state.kind, &state.relationship) {
            (EntityKind::Node, _) => self.of_labels(&state.labels),
            (EntityKind::Relationship, Some(ends)) => self
                .bits(|t| matches!(t, Target::Type { rel_type, .. } if *rel_type == ends.rel_type)),
            (EntityKind::Relationship, None) => 0,
        }
    }

    fn bits(&self, matches: impl Fn(&Target) -> bool) -> u64 {
        self.list
            .iter()
            .enumerate()
            .filter(|(_, t)| matches(t))
            .fold(0, |bits, (i, _)| bits | 1 << i)
    }

    /// The first target of `bits` (the one an entity is counted under).
    pub fn primary(bits: u64) -> Option<usize> {
        (bits != 0).then(|| bits.trailing_zeros() as usize)
    }

    /// The labels of the label targets in `bits`.
    pub fn labels(&self, bits: u64) -> Vec<&str> {
        self.list
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .filter_map(|(_, t)| match t {
                Target::Label { label, .. } => Some(label.as_str()),
                Target::Type { .. } => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_belongs_to_its_first_mapped_label() {
        let config = crate::config::Config::from_toml(
            r#"
            [[mappings]]
            label = "Chunk"
            collection = "chunks"
            dimension = 2
            [[mappings]]
            label = "Doc"
            collection = "docs"
            dimension = 2
            [[mappings]]
            label = "Chunk"
            collection = "chunks_small"
            dimension = 2
            [[mappings]]
            relationship_type = "MENTIONS"
            collection = "mentions"
            dimension = 2
            "#,
        )
        .unwrap();
        let targets = Targets::of(&config.mappings).unwrap();
        let names: Vec<String> = targets.list().iter().map(Target::name).collect();
        assert_eq!(names, ["Chunk", "Doc", "[:MENTIONS]"]);
        let bits = targets.of_labels(&["Doc".into(), "Chunk".into(), "Other".into()]);
        assert_eq!(bits, 0b011);
        assert_eq!(Targets::primary(bits), Some(0));
        assert_eq!(targets.labels(bits), ["Chunk", "Doc"]);
        assert_eq!(Targets::primary(0), None);
    }
}
