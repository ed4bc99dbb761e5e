//! What the reconciler does when things go wrong around it: the continuous mode rides out a
//! failing sink (counted, retried, never exiting), and repairs that would rewrite many
//! live points at the same version are refused by a budget that spans checks.

use super::{counts, expected_counts, live_keys, populated, repair_options};
use crate::support::{Call, FaultySink};
use graphcdc_core::mapping::Mapper;
use graphcdc_core::reconcile::guard::{SafetyRefusal, Spend};
use graphcdc_core::reconcile::repair::RepairMode;
use graphcdc_core::reconcile::{ReconcileOptions, Reconciler};
use graphcdc_core::sink::SinkError;
use graphcdc_core::sink::VectorSink;
use graphcdc_core::stats::DriftGauges;
use graphcdc_demo::drift::{self, DriftPlan};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Poll `done` until it holds; panics naming `what` after a minute.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_continuous_reconciler_counts_sink_failures_and_carries_on() {
    let (h, sink, _model) = populated("continuous-faults").await;
    let failing = Arc::new(AtomicBool::new(true));
    let fault = failing.clone();
    let faulty: Arc<dyn VectorSink> = Arc::new(FaultySink::new(sink, move |call: Call<'_>| {
        (matches!(call, Call::Scan) && fault.load(Ordering::SeqCst))
            .then(|| SinkError::Unavailable("injected: sink down".into()))
    }));
    let gauges = Arc::new(DriftGauges::default());
    let mut reconciler = Reconciler::new(h.config.clone(), faulty, gauges.clone()).unwrap();
    let options = ReconcileOptions {
        grace: Duration::ZERO,
        repair: None,
        settle_timeout: Duration::ZERO,
    };
    let shutdown = CancellationToken::new();
    let ended = AtomicBool::new(false);
    // Polled in this task (its future is not provably Send for tokio::spawn).
    let run = async {
        let result = reconciler
            .run_continuous(&options, Duration::from_millis(200), shutdown.clone())
            .await;
        ended.store(true, Ordering::SeqCst);
        result
    };
    let drive = async {
        until("two failed checks", || gauges.failures.get() >= 2).await;
        assert!(gauges.consecutive_failures.get() >= 2.0);
        assert_eq!(
            gauges.checks.get(),
            0,
            "no check completed while the sink was down"
        );
        assert!(
            !ended.load(Ordering::SeqCst),
            "a failing sink does not end the loop"
        );

        failing.store(false, Ordering::SeqCst);
        until("a check after the sink came back", || {
            gauges.checks.get() >= 1
        })
        .await;
        assert_eq!(
            gauges.consecutive_failures.get(),
            0.0,
            "reset by a good check"
        );
        assert!(
            gauges.failures.get() >= 2,
            "the failure counter keeps its total"
        );
        assert!(!ended.load(Ordering::SeqCst));
        shutdown.cancel();
    };
    let (result, ()) = tokio::join!(run, drive);
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_version_rewrites_are_refused_once_the_window_budget_is_spent() {
    let (h, sink, model) = populated("rewrite-budget").await;
    let live = live_keys(&model);
    let mapper = Mapper::new(h.config.mappings.clone(), 1 << 20);
    let mut reconciler = Reconciler::new(
        h.config.clone(),
        sink.clone(),
        Arc::new(DriftGauges::default()),
    )
    .unwrap();
    let options = repair_options(RepairMode::Sink); // max_rewrite_ratio 0.1 over 24 h
    let share = live.len().div_ceil(16); // about 6 % of the live points each time
    let mismatch = |n| DriftPlan {
        mismatched: n,
        ..DriftPlan::default()
    };

    // First: 6 % rewritten at the same version, within the budget.
    drift::inject(
        sink.as_ref(),
        &mapper,
        &h.config.mappings[0],
        &live,
        mismatch(share),
    )
    .await
    .unwrap();
    let first = reconciler.check(Duration::ZERO).await.unwrap();
    assert_eq!(counts(&first), expected_counts(0, 0, 0, share as u64, 0));
    let outcome = reconciler.repair(&first, &options).await.unwrap();
    assert_eq!((outcome.rewrites, outcome.repaired), (share, share));
    assert!(reconciler.check(Duration::ZERO).await.unwrap().is_clean());

    // Second, in the same window: another 6 % would make 12 % > 10 %: refused.
    let rest = &live[share..];
    drift::inject(
        sink.as_ref(),
        &mapper,
        &h.config.mappings[0],
        rest,
        mismatch(share),
    )
    .await
    .unwrap();
    let second = reconciler.check(Duration::ZERO).await.unwrap();
    assert_eq!(counts(&second), expected_counts(0, 0, 0, share as u64, 0));
    let error = reconciler.repair(&second, &options).await.unwrap_err();
    let refusal = error
        .downcast_ref::<SafetyRefusal>()
        .unwrap_or_else(|| panic!("a safety refusal, got {error:#}"));
    assert_eq!(refusal.spend, Spend::Rewrite);
    assert_eq!(
        (refusal.planned, refusal.spent),
        (share as u64, share as u64)
    );
    let unchanged = reconciler.check(Duration::ZERO).await.unwrap();
    assert_eq!(counts(&unchanged), counts(&second), "nothing rewritten");

    // An operator who checked the plan forces it.
    let mut forced = options.clone();
    forced.force = true;
    let outcome = reconciler.repair(&unchanged, &forced).await.unwrap();
    assert_eq!(outcome.rewrites, share);
    assert!(reconciler.check(Duration::ZERO).await.unwrap().is_clean());
}
