//! One canonical form of a property map for every capture path: the JSON text the
//! trigger writes with `apoc.convert.toJson(apoc.map.removeKeys(properties(n),
//! $cdcExcludeProps))`, rebuilt here from the Bolt values the backfill reads, so that a
//! backfilled entity and the same entity captured live carry equal properties (and the
//! mapper gives them equal content hashes).
//!
//! `apoc.convert.toJson` is Jackson's `writeValueAsString` on APOC's `OBJECT_MAPPER`
//! (`apoc/util/JsonUtil.java`), which registers three serializers
//! (`apoc/export/util/`): `TemporalSerializer` writes `value.toString()` of the
//! `java.time` value, `DurationValueSerializer` writes `DurationValue.toString()`
//! (= `prettyPrint()` in `org/neo4j/values/storable/DurationValue.java`),
//! `PointSerializer` writes an object. Everything else is plain Jackson. Per type
//! (`deploy/neo4j/README.md`, "One serialization for the trigger and the backfill",
//! lists the same with its sources):
//!
//! | Neo4j type | Java value | JSON |
//! |---|---|---|
//! | Integer, Float, Boolean, String | `Long`, `Double`, … | number, bool, string; NaN and ±Infinity as the strings `"NaN"`, `"Infinity"`, `"-Infinity"` (Jackson's default `WRITE_NAN_AS_STRINGS`) |
//! | List | array | array |
//! | ByteArray | `byte[]` | base64 string, standard alphabet, padded (Jackson's default `MIME_NO_LINEFEEDS`) |
//! | Date | `LocalDate` | `2024-05-01` (years outside 0..=9999: `+10000-01-01`, `-0001-01-01`) |
//! | LocalTime | `LocalTime` | `10:00`, `10:00:05`, `10:00:05.120` (seconds only when not zero, fraction in groups of 3 digits) |
//! | Time | `OffsetTime` | local time + offset: `10:00Z`, `10:00+02:00` |
//! | LocalDateTime | `LocalDateTime` | date `T` local time: `2024-05-01T10:00` |
//! | DateTime (offset) | `ZonedDateTime` (zone = offset) | `2024-05-01T10:00Z`, `2024-05-01T10:00:05.5+02:00` |
//! | DateTime (zone id) | `ZonedDateTime` | `2024-05-01T10:00+02:00[Europe/Paris]` |
//! | Duration | `DurationValue` | `P1Y2M3DT4H5M6.5S`, `PT0S`, `PT-1.5S` |
//! | Point | `Point` | `{"crs":"wgs-84","latitude":y,"longitude":x,"height":null}` / `{"crs":"cartesian","x":x,"y":y,"z":null}` |
//!
//! A point is a JSON object, which the event contract cannot carry (its properties are
//! scalars and lists): the relay marks such an outbox entry failed, and the backfill
//! skips such an entity and counts it; leave point properties out with
//! `capture.exclude_properties` (and `$cdcExcludeProps`) to capture those entities.

use neo4rs::BoltType;
use serde_json::{json, Map, Value};

/// The JSON of one property value, as `apoc.convert.toJson` writes it.
///
/// # Errors
/// For values that are never stored as properties (nodes, maps, paths) or temporal
/// values out of range.
pub fn value(bolt: &BoltType) -> crate::error::Result<Value> {
    Ok(match bolt {
        BoltType::Null(_) => Value::Null,
        BoltType::Boolean(b) => Value::Bool(b.value),
        BoltType::Integer(n) => Value::from(n.value),
        BoltType::Float(x) => double(x.value),
        BoltType::String(s) => Value::String(s.value.clone()),
        BoltType::List(items) => Value::Array(
            items
                .value
                .iter()
                .map(value)
                .collect::<crate::error::Result<_>>()?,
        ),
        BoltType::Bytes(b) => Value::String(base64(&b.value)),
        BoltType::Date(d) => {
            let date: chrono::NaiveDate = d.try_into()?;
            Value::String(java_date(date))
        }
        BoltType::LocalTime(t) => {
            let time: chrono::NaiveTime = t.into();
            Value::String(java_time(time))
        }
        BoltType::Time(t) => {
            let (time, offset): (chrono::NaiveTime, chrono::FixedOffset) = t.into();
            Value::String(format!(
                "{}{}",
                java_time(time),
                java_offset(offset.local_minus_utc())
            ))
        }
        BoltType::LocalDateTime(t) => {
            let local: chrono::NaiveDateTime = t.try_into()?;
            Value::String(java_local_date_time(local))
        }
        BoltType::DateTime(t) => {
            let at: chrono::DateTime<chrono::FixedOffset> = t.try_into()?;
            Value::String(format!(
                "{}{}",
                java_local_date_time(at.naive_local()),
                java_offset(at.offset().local_minus_utc())
            ))
        }
        BoltType::DateTimeZoneId(t) => {
            let local: chrono::NaiveDateTime = t.try_into()?;
            let at: chrono::DateTime<chrono::FixedOffset> = t.try_into()?;
            Value::String(format!(
                "{}{}[{}]",
                java_local_date_time(local),
                java_offset(at.offset().local_minus_utc()),
                t.tz_id()
            ))
        }
        BoltType::Duration(d) => {
            let [months, days, seconds, nanos] = duration_fields(d)?;
            Value::String(java_duration(months, days, seconds, nanos))
        }
        BoltType::Point2D(p) => point(p.sr_id.value, p.x.value, p.y.value, None),
        BoltType::Point3D(p) => point(p.sr_id.value, p.x.value, p.y.value, Some(p.z.value)),
        other => crate::error::bail!("not a property value: {other:?}"),
    })
}

/// The canonical JSON text of a property map without `exclude`: what the trigger
/// stores in the outbox entry's `properties`.
///
/// # Errors
/// As [`value`], naming the property.
pub fn properties_json(
    props: &neo4rs::BoltMap,
    exclude: &[String],
) -> crate::error::Result<String> {
    let mut out = Map::new();
    for (name, v) in &props.value {
        if exclude.contains(&name.value) {
            continue;
        }
        let v = value(v).map_err(|e| e.context(format!("property {:?}", name.value)))?;
        out.insert(name.value.clone(), v);
    }
    Ok(Value::Object(out).to_string())
}

fn double(x: f64) -> Value {
    match serde_json::Number::from_f64(x) {
        Some(n) => Value::Number(n),
        None if x.is_nan() => Value::String("NaN".into()),
        None if x > 0.0 => Value::String("Infinity".into()),
        None => Value::String("-Infinity".into()),
    }
}

/// `PointSerializer`: cartesian CRSs get x/y/z, geographic ones latitude (= y),
/// longitude (= x), height; a 2D point writes `null` for the third (Jackson writes
/// null bean fields).
fn point(srid: i64, x: f64, y: f64, z: Option<f64>) -> Value {
    let crs = match srid {
        7203 => "cartesian",
        9157 => "cartesian-3d",
        4326 => "wgs-84",
        4979 => "wgs-84-3d",
        _ => "unknown",
    };
    if crs.starts_with("cartesian") {
        json!({"crs": crs, "x": x, "y": y, "z": z})
    } else {
        json!({"crs": crs, "latitude": y, "longitude": x, "height": z})
    }
}

/// Months, days, seconds, nanoseconds of a Bolt duration. neo4rs keeps the fields
/// private and exposes them only through `Debug` (its serde view folds months and days
/// into seconds), so they are read from there.
fn duration_fields(d: &neo4rs::BoltDuration) -> crate::error::Result<[i64; 4]> {
    let text = format!("{d:?}");
    let numbers: Vec<i64> = text
        .split("value: ")
        .skip(1)
        .map(|rest| {
            let end = rest
                .find(|c: char| !(c == '-' || c.is_ascii_digit()))
                .unwrap_or(rest.len());
            rest[..end].parse::<i64>()
        })
        .collect::<Result<_, _>>()?;
    numbers
        .try_into()
        .map_err(|_| crate::error::err!("unexpected duration {text}"))
}

/// `java.time.LocalDate.toString()`.
pub fn java_date(date: chrono::NaiveDate) -> String {
    use chrono::Datelike;
    let year = date.year();
    let year = if year.abs() < 1000 {
        if year < 0 {
            format!("-{:04}", -year)
        } else {
            format!("{year:04}")
        }
    } else if year > 9999 {
        format!("+{year}")
    } else {
        year.to_string()
    };
    format!("{year}-{:02}-{:02}", date.month(), date.day())
}

/// `java.time.LocalTime.toString()`: seconds only when seconds or nanos are not zero,
/// the fraction as 3, 6 or 9 digits.
pub fn java_time(time: chrono::NaiveTime) -> String {
    use chrono::Timelike;
    let mut out = format!("{:02}:{:02}", time.hour(), time.minute());
    let (second, nano) = (time.second(), time.nanosecond());
    if second > 0 || nano > 0 {
        out.push_str(&format!(":{second:02}"));
        if nano > 0 {
            if nano % 1_000_000 == 0 {
                out.push_str(&format!(".{:03}", nano / 1_000_000));
            } else if nano % 1000 == 0 {
                out.push_str(&format!(".{:06}", nano / 1000));
            } else {
                out.push_str(&format!(".{nano:09}"));
            }
        }
    }
    out
}

/// `java.time.LocalDateTime.toString()`.
pub fn java_local_date_time(at: chrono::NaiveDateTime) -> String {
    format!("{}T{}", java_date(at.date()), java_time(at.time()))
}

/// `java.time.ZoneOffset.getId()`: `Z`, `+02:00`, `-03:30`, `+01:00:30`.
pub fn java_offset(seconds: i32) -> String {
    if seconds == 0 {
        return "Z".into();
    }
    let sign = if seconds < 0 { '-' } else { '+' };
    let abs = seconds.unsigned_abs();
    let (h, m, s) = (abs / 3600, abs / 60 % 60, abs % 60);
    if s == 0 {
        format!("{sign}{h:02}:{m:02}")
    } else {
        format!("{sign}{h:02}:{m:02}:{s:02}")
    }
}

/// `DurationValue.prettyPrint()` (Neo4j), line by line.
pub fn java_duration(months: i64, days: i64, seconds: i64, nanos: i64) -> String {
    let mut out = String::from("P");
    let append = |out: &mut String, quantity: i64, unit: char| {
        if quantity != 0 {
            out.push_str(&format!("{quantity}{unit}"));
        }
    };
    append(&mut out, months / 12, 'Y');
    append(&mut out, months % 12, 'M');
    append(&mut out, days, 'D');
    if seconds != 0 || nanos != 0 {
        let negative = seconds < 0;
        let (mut s, mut n) = (seconds, nanos);
        if negative && nanos != 0 {
            s += 1;
            n -= 1_000_000_000;
        }
        out.push('T');
        append(&mut out, s / 3600, 'H');
        s %= 3600;
        append(&mut out, s / 60, 'M');
        s %= 60;
        if s != 0 {
            if negative && s >= 0 && n != 0 {
                out.push('-');
            }
            out.push_str(&s.to_string());
            if n != 0 {
                fraction(&mut out, n);
            }
            out.push('S');
        } else if n != 0 {
            if negative {
                out.push('-');
            }
            out.push('0');
            fraction(&mut out, n);
            out.push('S');
        }
    }
    if out.len() == 1 {
        out.push_str("T0S");
    }
    out
}

/// `DurationValue.nanos`: the digits of the fraction, trailing zeros dropped.
fn fraction(out: &mut String, nanos: i64) {
    out.push('.');
    let mut n = nanos.abs();
    let mut m = 1_000_000_000;
    while m > 1 && n > 0 {
        m /= 10;
        out.push_str(&(n / m).to_string());
        n %= m;
    }
}

/// Base64, standard alphabet, with padding (Jackson's default variant for `byte[]`).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
