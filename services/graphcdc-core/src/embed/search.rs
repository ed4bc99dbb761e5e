//! Semantic search over what the pipeline wrote: the query is embedded by the
//! collection's own model, then the sink's nearest points are read back with their
//! payload (`graphcdc search`, the demo's last step).

use super::Embeddings;
use crate::sink::{StoredPoint, VectorSink};

/// The `limit` live points of `collection` nearest to `query`, nearest first.
///
/// # Errors
/// When the collection does not embed, the model fails, or the sink cannot be read.
pub async fn nearest(
    sink: &dyn VectorSink,
    embeddings: &Embeddings,
    collection: &str,
    vector_name: &str,
    query: &str,
    limit: usize,
) -> crate::error::Result<Vec<StoredPoint>> {
    let vector = embeddings.embed_query(collection, query).await?;
    let ids = sink
        .nearest(collection, vector_name, &vector, limit)
        .await?;
    let mut points = Vec::with_capacity(ids.len());
    for id in ids {
        // Tombstones carry no vector, so a vector search never returns them.
        if let Some(point) = sink.get(collection, id).await?.filter(|p| !p.deleted) {
            points.push(point);
        }
    }
    Ok(points)
}
