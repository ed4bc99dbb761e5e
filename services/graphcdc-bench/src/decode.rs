//! Decode and map cost per event: the same encoded records decoded by apache-avro's
//! generic value tree (the path before #15, still used for other writer schemas) and by
//! the schema-specific reader, then mapped to point writes.

use crate::workload::chunk;
use crate::Figure;
use graphcdc_core::codec::{Codec, Format};
use graphcdc_core::event::ChangeEvent;
use graphcdc_core::mapping::Mapper;
use std::time::Instant;

/// µs per event of decoding all `records`, through the generic value tree or the
/// schema-specific reader; best of three passes.
async fn per_event(codec: &Codec, records: &[Vec<u8>], generic: bool) -> anyhow::Result<f64> {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        for record in records {
            let event = if generic {
                codec.decode_change_generic(record).await?
            } else {
                codec.decode_change(record).await?
            };
            std::hint::black_box(event);
        }
        best = best.min(started.elapsed().as_secs_f64() * 1e6 / records.len() as f64);
    }
    Ok(best)
}

/// Figures for `n` chunk events (384-d vector, ~1 KB payload) as the pipeline writes them.
pub async fn run(n: usize, mapper: &Mapper, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    let codec = Codec::local();
    let mut records = Vec::with_capacity(n);
    for i in 0..n {
        records.push(
            codec
                .encode_change(&chunk(i, graphcdc_core::unix_ms()), Format::Avro)
                .await?,
        );
    }
    let generic = per_event(&codec, &records, true).await?;
    let specific = per_event(&codec, &records, false).await?;
    let events: Vec<ChangeEvent> = {
        let mut events = Vec::with_capacity(n);
        for r in &records {
            events.push(codec.decode_change(r).await?);
        }
        events
    };
    let started = Instant::now();
    for event in &events {
        std::hint::black_box(mapper.map(event)?);
    }
    let map = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!(
        "decode: generic {generic:.2} µs/event, schema-specific {specific:.2} µs/event; map {map:.2} µs/event"
    );
    figures.push(Figure {
        name: "8. decode + map per event (384-d, ~1 KB payload)".into(),
        value: format!(
            "decode {generic:.2} → {specific:.2} µs ({:.1} × faster); map {map:.2} µs; decode + map {:.2} → {:.2} µs",
            generic / specific.max(1e-9),
            generic + map,
            specific + map
        ),
        note: format!(
            "apache-avro generic value tree → schema-specific reader, best of 3 passes over {n} encoded events, one thread, before the broker runs"
        ),
    });
    Ok(())
}
