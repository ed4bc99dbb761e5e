//! The canonical form per Neo4j type, against what `apoc.convert.toJson` writes
//! (Java `toString()` of the `java.time` value, Neo4j's `DurationValue.prettyPrint()`,
//! APOC's `PointSerializer`, Jackson's base64 for `byte[]`).

use super::*;
use chrono::{FixedOffset, NaiveDate, NaiveTime, TimeZone};
use neo4rs::{BoltDuration, BoltInteger, BoltMap, BoltPoint2D, BoltPoint3D, BoltType};

fn text(v: BoltType) -> String {
    match value(&v).unwrap() {
        Value::String(s) => s,
        other => panic!("not a string: {other}"),
    }
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn time(h: u32, m: u32, s: u32, nano: u32) -> NaiveTime {
    NaiveTime::from_hms_nano_opt(h, m, s, nano).unwrap()
}

#[test]
fn dates_print_as_java_local_date() {
    assert_eq!(text(date(2024, 5, 1).into()), "2024-05-01");
    assert_eq!(text(date(999, 1, 2).into()), "0999-01-02");
    assert_eq!(text(date(12024, 5, 1).into()), "+12024-05-01");
    assert_eq!(text(date(-1, 5, 1).into()), "-0001-05-01");
}

#[test]
fn times_drop_zero_seconds_and_group_the_fraction_by_three() {
    assert_eq!(text(time(10, 0, 0, 0).into()), "10:00");
    assert_eq!(text(time(10, 0, 5, 0).into()), "10:00:05");
    assert_eq!(text(time(10, 0, 0, 120_000_000).into()), "10:00:00.120");
    assert_eq!(text(time(10, 0, 5, 123_400).into()), "10:00:05.000123400");
    assert_eq!(text(time(10, 0, 5, 123_000).into()), "10:00:05.000123");
    let utc = FixedOffset::east_opt(0).unwrap();
    let plus2 = FixedOffset::east_opt(7200).unwrap();
    assert_eq!(text((time(10, 0, 0, 0), utc).into()), "10:00Z");
    assert_eq!(text((time(10, 30, 1, 0), plus2).into()), "10:30:01+02:00");
}

#[test]
fn local_date_times_join_date_and_time_with_t() {
    let at = date(2024, 5, 1).and_time(time(10, 0, 0, 0));
    assert_eq!(text(at.into()), "2024-05-01T10:00");
    let at = date(2024, 5, 1).and_time(time(23, 59, 59, 500_000_000));
    assert_eq!(text(at.into()), "2024-05-01T23:59:59.500");
}

#[test]
fn date_times_end_in_z_for_utc_and_carry_the_zone_id() {
    let utc = FixedOffset::east_opt(0).unwrap();
    let at = utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap();
    assert_eq!(
        text(at.into()),
        "2024-05-01T10:00Z",
        "not +00:00 (neo4rs/rfc3339)"
    );
    let minus = FixedOffset::west_opt(3 * 3600 + 1800).unwrap();
    let at = minus.with_ymd_and_hms(2024, 5, 1, 10, 0, 7).unwrap();
    assert_eq!(text(at.into()), "2024-05-01T10:00:07-03:30");
    let local = date(2024, 7, 1).and_time(time(10, 0, 0, 0));
    assert_eq!(
        text((local, "Europe/Paris").into()),
        "2024-07-01T10:00+02:00[Europe/Paris]"
    );
    assert_eq!(java_offset(3600 + 30), "+01:00:30");
}

fn duration(months: i64, days: i64, seconds: i64, nanos: i64) -> String {
    text(BoltType::Duration(BoltDuration::new(
        BoltInteger::new(months),
        BoltInteger::new(days),
        BoltInteger::new(seconds),
        BoltInteger::new(nanos),
    )))
}

#[test]
fn durations_print_as_neo4j_duration_value() {
    assert_eq!(duration(0, 0, 0, 0), "PT0S");
    assert_eq!(duration(14, 3, 4 * 3600 + 5 * 60 + 6, 0), "P1Y2M3DT4H5M6S");
    assert_eq!(duration(0, 0, 90, 500_000_000), "PT1M30.5S");
    assert_eq!(duration(0, 0, 0, 1), "PT0.000000001S");
    assert_eq!(duration(0, 0, -2, 500_000_000), "PT-1.5S");
    assert_eq!(duration(0, 0, -1, 500_000_000), "PT-0.5S");
    assert_eq!(duration(-1, -2, -3600, 0), "P-1M-2DT-1H");
}

#[test]
fn bytes_are_base64_and_lists_are_arrays() {
    assert_eq!(text(vec![0u8, 1, 2, 250].into()), "AAEC+g==");
    assert_eq!(text(b"ab".as_slice().into()), "YWI=");
    assert_eq!(text(b"abc".as_slice().into()), "YWJj");
    assert_eq!(text(Vec::<u8>::new().into()), "");
    let list = BoltType::from(vec![1.5f64, 2.0]);
    assert_eq!(value(&list).unwrap(), json!([1.5, 2.0]));
    assert_eq!(value(&BoltType::from(f64::NAN)).unwrap(), json!("NaN"));
    assert_eq!(
        value(&BoltType::from(f64::NEG_INFINITY)).unwrap(),
        json!("-Infinity")
    );
}

#[test]
fn points_are_objects_as_apoc_point_serializer_writes_them() {
    let wgs = BoltType::Point2D(BoltPoint2D {
        sr_id: BoltInteger::new(4326),
        x: neo4rs::BoltFloat::new(13.4),
        y: neo4rs::BoltFloat::new(52.5),
    });
    assert_eq!(
        value(&wgs).unwrap(),
        json!({"crs": "wgs-84", "latitude": 52.5, "longitude": 13.4, "height": null})
    );
    let cartesian = BoltType::Point3D(BoltPoint3D {
        sr_id: BoltInteger::new(9157),
        x: neo4rs::BoltFloat::new(1.0),
        y: neo4rs::BoltFloat::new(2.0),
        z: neo4rs::BoltFloat::new(3.0),
    });
    assert_eq!(
        value(&cartesian).unwrap(),
        json!({"crs": "cartesian-3d", "x": 1.0, "y": 2.0, "z": 3.0})
    );
}

#[test]
fn the_exclude_list_is_applied_and_the_json_parses_like_the_relays() {
    let mut props = BoltMap::default();
    props.put("text".into(), "hi".into());
    props.put("embedding".into(), vec![0.5f64, 1.0].into());
    props.put("secret".into(), "x".into());
    let utc = FixedOffset::east_opt(0).unwrap();
    props.put(
        "at".into(),
        utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap().into(),
    );
    let json = properties_json(&props, &["secret".into()]).unwrap();
    let parsed = crate::capture::parse_properties(&json).unwrap();
    assert!(!parsed.contains_key("secret"));
    assert_eq!(
        parsed["at"],
        crate::event::PropertyValue::String("2024-05-01T10:00Z".into())
    );
    // What the trigger would have stored for the same node parses to the same map.
    let trigger = r#"{"text":"hi","embedding":[0.5,1.0],"at":"2024-05-01T10:00Z"}"#;
    assert_eq!(crate::capture::parse_properties(trigger).unwrap(), parsed);
}
