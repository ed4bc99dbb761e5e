//! Unit tests of replay bounds, progress and alias swaps.

use super::alias::*;
use super::progress::rate_and_eta;
use super::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

#[test]
fn offsets_parse_as_one_for_all_or_per_partition() {
    assert_eq!(
        OffsetSpec::parse("--from-offset", "120").unwrap(),
        OffsetSpec::All(120)
    );
    assert_eq!(
        OffsetSpec::parse("--from-offset", " 0:120, 1:95,3:0 ").unwrap(),
        OffsetSpec::PerPartition(BTreeMap::from([(0, 120), (1, 95), (3, 0)]))
    );
    let each = OffsetSpec::parse("--to-offset", "2:7").unwrap();
    assert_eq!(each.get(2), Some(7));
    assert_eq!(each.get(0), None, "unlisted");
    assert_eq!(OffsetSpec::All(5).get(9), Some(5));
}

#[test]
fn bad_offsets_name_the_flag_and_the_input() {
    for (text, wanted) in [
        ("", "empty"),
        ("abc", "offset \"abc\""),
        ("-1", "offset \"-1\""),
        ("0:1,2", "\"2\" in \"0:1,2\" is not PARTITION:OFFSET"),
        ("0:1,", "\"\" in \"0:1,\" is not PARTITION:OFFSET"),
        ("x:1", "partition \"x\""),
        ("-2:1", "partition \"-2\""),
        ("0:y", "offset \"y\""),
        ("0:-5", "offset \"-5\""),
        ("1:2,1:3", "partition 1 is given twice"),
    ] {
        let err = OffsetSpec::parse("--from-offset", text)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--from-offset: "), "{text:?}: {err}");
        assert!(err.contains(wanted), "{text:?}: {err}");
    }
    let err = OffsetSpec::parse("--to-offset", "q")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("--to-offset: "), "{err}");
}

#[test]
fn listed_partitions_must_exist() {
    let spec = OffsetSpec::parse("--from-offset", "0:1,7:2").unwrap();
    let err = spec
        .check("--from-offset", "t.changes", &[0, 1, 2, 3])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "--from-offset: topic t.changes has no partition 7 (it has 0, 1, 2, 3)"
    );
    assert!(OffsetSpec::All(99)
        .check("--from-offset", "t", &[0])
        .is_ok());
}

#[test]
fn eta_follows_the_rate_so_far() {
    assert_eq!(rate_and_eta(0, 100, Duration::from_secs(3)), (0.0, None));
    let (per_s, eta) = rate_and_eta(250, 1_000, Duration::from_secs(5));
    assert!((per_s - 50.0).abs() < 1e-9);
    assert_eq!(eta, Some(Duration::from_secs(15)));
    assert_eq!(
        rate_and_eta(1_000, 1_000, Duration::from_secs(5)).1,
        Some(Duration::ZERO)
    );
}

#[test]
fn server_aliases_are_the_collection_names() {
    assert_eq!(
        server_aliases(&["docs"], "docs", "v2").unwrap(),
        [("docs".to_owned(), "docs_v2".to_owned())]
    );
    assert_eq!(
        server_aliases(&["a", "b"], "{collection}", "v2").unwrap(),
        [
            ("a".to_owned(), "a_v2".to_owned()),
            ("b".to_owned(), "b_v2".to_owned())
        ]
    );
    let err = server_aliases(&["a", "b"], "a", "v2")
        .unwrap_err()
        .to_string();
    assert!(err.contains("{collection}"), "{err}");
    let err = server_aliases(&["docs"], "live", "v2")
        .unwrap_err()
        .to_string();
    assert!(err.contains("point ids"), "{err}");
}

#[cfg(unix)]
#[test]
fn a_reader_never_sees_the_alias_missing_while_it_is_swapped() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b"] {
        std::fs::create_dir(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join(name).join("marker"), name).unwrap();
    }
    let alias = dir.path().join("live");
    assert_eq!(swap_symlink(&alias, Path::new("a")).unwrap(), None);

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (alias, stop, reads) = (alias.clone(), stop.clone(), reads.clone());
        std::thread::spawn(move || {
            let mut missing = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match std::fs::read_link(&alias) {
                    Ok(_) => {}
                    Err(e) => missing.push(format!("read_link: {e}")),
                }
                match std::fs::read_to_string(alias.join("marker")) {
                    Ok(m) => assert!(m == "a" || m == "b", "{m}"),
                    Err(e) => missing.push(format!("open: {e}")),
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
            missing
        })
    };
    let mut swaps = 0;
    while swaps < 200 || (reads.load(Ordering::Relaxed) < 200 && swaps < 100_000) {
        let target = if swaps % 2 == 0 { "b" } else { "a" };
        let before = swap_symlink(&alias, Path::new(target)).unwrap();
        assert_eq!(
            before.as_deref(),
            Some(Path::new(if target == "a" { "b" } else { "a" }))
        );
        swaps += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let missing = reader.join().unwrap();
    assert!(
        missing.is_empty(),
        "{} of {} reads missed the alias over {swaps} swaps: {:?}",
        missing.len(),
        reads.load(Ordering::Relaxed),
        &missing[..missing.len().min(5)]
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".swap"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[cfg(unix)]
#[test]
fn a_swap_removes_the_old_store_unless_kept() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, c] = ["a", "b", "c"].map(|n| dir.path().join(n));
    for d in [&a, &b, &c] {
        std::fs::create_dir(d).unwrap();
    }
    let alias = dir.path().join("live");
    let first = swap_directory_alias(&alias, &a, false).unwrap();
    assert_eq!(first.previous, None);
    assert!(!first.removed);
    assert_eq!(
        std::fs::read_link(&alias).unwrap(),
        Path::new("a"),
        "relative"
    );

    let kept = swap_directory_alias(&alias, &b, true).unwrap();
    assert!(!kept.removed);
    assert!(a.is_dir(), "--keep-old keeps the previous store");
    assert_eq!(
        std::fs::canonicalize(&alias).unwrap(),
        std::fs::canonicalize(&b).unwrap()
    );

    let replaced = swap_directory_alias(&alias, &c, false).unwrap();
    assert!(replaced.removed);
    assert!(!b.exists(), "the previous store is removed");
    assert!(a.is_dir(), "older stores are not touched");

    // Swapping to the target it already has removes nothing.
    let same = swap_directory_alias(&alias, &c, false).unwrap();
    assert!(!same.removed);
    assert!(c.is_dir());

    // A real directory at the alias path is refused, untouched.
    let err = check_directory_alias(&a, &c).unwrap_err().to_string();
    assert!(err.contains("not a symlink"), "{err}");
    assert!(swap_directory_alias(&a, &c, false).is_err());
    assert!(a.is_dir());
    let err = check_directory_alias(&alias, &c).unwrap_err().to_string();
    assert!(err.contains("already points at"), "{err}");
}
