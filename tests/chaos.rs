//! Chaos against a private real broker: the network between the clients and the broker
//! is cut by a TCP proxy, and the broker is restarted mid-stream. Every point is compared
//! with the model afterwards: 0 lost, 0 stale, 0 extra.

mod support;

use graphcdc_core::codec::Format;
use graphcdc_core::stats::Stats;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{churn, free_port, start_tansu, Harness, Model};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

const CATCH_UP: Duration = Duration::from_secs(180);

/// Forwards `port` → `target`; `cut` resets every connection and refuses new ones
/// until `restore`.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    cuts: broadcast::Sender<()>,
}

impl Proxy {
    async fn start(port: u16, target: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (cuts, _) = broadcast::channel(4);
        let (up2, cuts2) = (up.clone(), cuts.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: connection reset
                }
                let mut cut = cuts2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.recv() => {}
                    }
                });
            }
        });
        Proxy { port, up, cuts }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let _ = self.cuts.send(());
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Publish the first half of a 4,000-event stream and start a processor; returns once
/// it is consuming (the fault then hits mid-stream).
async fn start_mid_stream(
    h: &Harness,
    seed: u64,
) -> (
    Vec<graphcdc_core::event::ChangeEvent>,
    Model,
    std::sync::Arc<dyn graphcdc_core::sink::VectorSink>,
    support::RunningProcessor,
) {
    let events = churn(300, 4_000, seed);
    let model = Model::of(&events);
    h.publisher(Format::Avro)
        .publish_all(&events[..2_000])
        .await
        .unwrap();
    let sink = h.open_sink();
    let running = h.start_processor(sink.clone()).await;
    wait_consumed(&running.stats, 500).await;
    (events, model, sink, running)
}

/// Publish the `rest` of the stream after the fault, let the processor catch up, stop
/// it, compare the store with the model, stop the private broker.
async fn finish(
    h: &Harness,
    running: support::RunningProcessor,
    sink: &dyn graphcdc_core::sink::VectorSink,
    rest: &[graphcdc_core::event::ChangeEvent],
    model: &Model,
    mut broker: Child,
) {
    h.publisher(Format::Avro).publish_all(rest).await.unwrap();
    h.wait_caught_up(CATCH_UP).await;
    running.stop().await;
    let cmp = model.compare(sink).await;
    assert!(cmp.is_exact(), "0 lost, 0 stale, 0 extra: {cmp:?}");
    broker.kill().unwrap();
    broker.wait().unwrap();
}

async fn wait_consumed(stats: &Stats, at_least: u64) {
    let deadline = Instant::now() + CATCH_UP;
    while Stats::get(&stats.consumed) < at_least {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_cut_between_processor_and_broker_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (listen, advertised) = (free_port(), free_port());
    let broker = start_tansu(dir.path(), listen, advertised);
    let proxy = Proxy::start(advertised, listen).await;
    let h = Harness::on_broker("netcut", &format!("127.0.0.1:{}", proxy.port), "").await;
    let (events, model, sink, running) = start_mid_stream(&h, 17).await;
    // Longer than the session timeout (6 s): the member loses its assignment too.
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(8)).await;
    proxy.restore();
    finish(&h, running, sink.as_ref(), &events[2_000..], &model, broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = start_tansu(dir.path(), port, port);
    let h = Harness::on_broker("restart", &format!("127.0.0.1:{port}"), "").await;
    let (events, model, sink, running) = start_mid_stream(&h, 23).await;
    // SIGTERM, then start again on the same data: tansu's sqlite storage keeps it all.
    Command::new("kill")
        .arg(broker.id().to_string())
        .status()
        .unwrap();
    broker.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker = start_tansu(dir.path(), port, port);
    finish(&h, running, sink.as_ref(), &events[2_000..], &model, broker).await;
}

/// Freezes the broker (SIGSTOP) for longer than the session timeout (6 s), so the group
/// coordinator stops answering heartbeats, then thaws it (SIGCONT). The member must
/// own every partition again within [`REJOIN_BOUND`] of the thaw, and the stream must
/// end with nothing lost or stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_coordinator_is_survived_and_the_member_rejoins() {
    const REJOIN_BOUND: Duration = Duration::from_secs(30);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = start_tansu(dir.path(), port, port);
    let h = Harness::on_broker("freeze", &format!("127.0.0.1:{port}"), "").await;
    let (events, model, sink, running) = start_mid_stream(&h, 29).await;
    let signal = |name: &str| {
        let status = Command::new("kill")
            .args([name, &broker.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name}");
    };
    let rebalances_before = Stats::get(&running.stats.rebalances);
    signal("-STOP");
    tokio::time::sleep(Duration::from_secs(10)).await;
    signal("-CONT");
    let thawed = Instant::now();
    // The rest of the stream is published while the member rejoins.
    let publishing = {
        let publisher = h.publisher(Format::Avro);
        let rest = events[2_000..].to_vec();
        tokio::spawn(async move { publisher.publish_all(&rest).await })
    };
    // The coordinator expires the silent member once it answers again: wait for that
    // revocation, then for every partition to be owned again.
    let revoked = || Stats::get(&running.stats.rebalances) > rebalances_before;
    let assigned = || running.health.assigned_partitions();
    while !revoked() || assigned() < support::PARTITIONS as usize {
        assert!(
            thawed.elapsed() < REJOIN_BOUND,
            "{:?} after the thaw: revoked {}, {} of {} partitions owned",
            thawed.elapsed(),
            revoked(),
            assigned(),
            support::PARTITIONS
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "freeze: revoked and every partition assigned again {:?} after the thaw",
        thawed.elapsed()
    );
    publishing.await.unwrap().unwrap();
    finish(&h, running, sink.as_ref(), &[], &model, broker).await;
}
