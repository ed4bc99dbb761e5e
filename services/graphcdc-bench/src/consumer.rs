//! The broker's side of the ceiling: a bare consumer reading a topic from the same
//! broker, with the processor's client settings, and doing nothing with the records (no
//! decode, no sink, no commits). Its rate bounds what any consumer of that broker can do
//! on this machine.

use anyhow::Context;
use graphcdc_core::config::Config;
use graphcdc_core::kafka;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;
use std::time::{Duration, Instant};

/// Records per second of a fresh consumer group reading `total` records of the change
/// topic of `config` from the start, timed from the first record to the last.
pub async fn bare_consumer_rate(config: &Config, total: usize) -> anyhow::Result<f64> {
    let k = &config.kafka;
    let mut client = kafka::client_config(k);
    client
        .set("group.id", format!("{}-bare", k.group_id))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    // The processor's fetch default (a bench config may override it in properties).
    kafka::set_defaults(&mut client, k, &[("fetch.wait.max.ms", "50")]);
    let consumer: BaseConsumer = client.create().context("bare consumer")?;
    consumer.subscribe(&[&k.changes_topic])?;
    let (count, bytes, elapsed) = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(600);
        let (mut count, mut bytes) = (0usize, 0usize);
        let mut first: Option<Instant> = None;
        while count < total && Instant::now() < deadline {
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message?;
            first.get_or_insert_with(Instant::now);
            bytes += message.payload().map_or(0, <[u8]>::len);
            count += 1;
        }
        anyhow::Ok((count, bytes, first.map_or(Duration::ZERO, |t| t.elapsed())))
    })
    .await??;
    anyhow::ensure!(
        count == total,
        "bare consumer read {count} of {total} records"
    );
    let rate = crate::per_s(count, elapsed);
    println!(
        "bare consumer: {rate:.0} records/s ({:.1} MB/s)",
        bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
    );
    Ok(rate)
}
