//! `graphcdc search "…"`: the nearest points of a collection to a query, embedded by the
//! collection's own model.

use super::refuse;
use super::short;
use crate::cli::{OutputFormat, SearchArgs};
use graphcdc_core::config::Config;
use graphcdc_core::embed::{search, Embeddings};

/// `graphcdc search QUERY`.
pub(crate) async fn run(config: &Config, args: SearchArgs) -> anyhow::Result<()> {
    let SearchArgs {
        query,
        collection,
        limit,
        format,
    } = args;
    let query = query.as_str();
    let mapping = match &collection {
        Some(name) => config.mappings.iter().find(|m| &m.collection == name),
        None => config.mappings.iter().find(|m| m.embedding.is_some()),
    };
    let Some(mapping) = mapping.filter(|m| m.embedding.is_some()) else {
        refuse!(
            "search: {} has no [mappings.embedding] (the query is embedded with the \
             collection's own model)",
            collection.map_or("no mapping".to_owned(), |c| format!("collection {c:?}"))
        );
    };
    let embeddings = Embeddings::from_mappings(std::slice::from_ref(mapping)).await?;
    let sink = graphcdc_core::sink::open(&config.sink)?;
    let points = search::nearest(
        sink.as_ref(),
        &embeddings,
        &mapping.collection,
        &mapping.vector_name,
        query,
        limit.max(1),
    )
    .await?;
    match format {
        OutputFormat::Json => {
            let rows: Vec<_> = points
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "key": p.key,
                        "version": p.version,
                        "payload": p.payload,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        OutputFormat::Table => {
            println!("{} nearest to {query:?}:", mapping.collection);
            for (rank, p) in points.iter().enumerate() {
                let payload = p
                    .payload
                    .as_ref()
                    .map(|fields| serde_json::Value::Object(fields.clone()).to_string())
                    .unwrap_or_default();
                println!(
                    "{:>3}. {} v{}  {}",
                    rank + 1,
                    p.key,
                    p.version,
                    short(&payload, 100)
                );
            }
        }
    }
    Ok(())
}
