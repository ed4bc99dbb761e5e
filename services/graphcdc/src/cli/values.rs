//! Option values: a time (RFC 3339 or a duration ago), a duration, a ratio.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, as Unix ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct When(pub(crate) i64);

fn unix_ms(time: SystemTime) -> Result<i64, String> {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .map_err(|_| "before 1970".to_owned())
}

/// An RFC 3339 time (`Z`, no zone, or a `±HH:MM` offset), or a duration ago.
pub(crate) fn when(text: &str) -> Result<When, String> {
    when_at(text, SystemTime::now())
}

fn when_at(text: &str, now: SystemTime) -> Result<When, String> {
    let text = text.trim();
    if let Some(ms) = rfc3339_ms(text) {
        return ms.map(When);
    }
    match humantime::parse_duration(text) {
        Ok(ago) => now
            .checked_sub(ago)
            .ok_or_else(|| format!("{text} ago is before 1970"))
            .and_then(unix_ms)
            .map(When),
        Err(_) => Err(format!(
            "{text:?} is neither an RFC 3339 time (2026-11-22T10:00:00Z) nor a duration ago \
             (10s, 5m, 2h, 1d)"
        )),
    }
}

/// `None` when `text` does not look like a date; otherwise the time or why it is invalid.
fn rfc3339_ms(text: &str) -> Option<Result<i64, String>> {
    let looks_like_date = text.len() >= 10
        && text.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && text.as_bytes()[4] == b'-';
    if !looks_like_date {
        return None;
    }
    // humantime knows UTC only: take a `±HH:MM` offset off and apply it.
    let split = text
        .len()
        .checked_sub(6)
        .filter(|i| text.is_char_boundary(*i))
        .map(|i| text.split_at(i));
    let (local, offset_s) = match split {
        Some((local, zone))
            if zone.is_ascii()
                && local.contains(['T', 't', ' '])
                && (zone.starts_with('+') || zone.starts_with('-'))
                && zone.as_bytes()[3] == b':' =>
        {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let hours = zone[1..3].parse::<i64>();
            let minutes = zone[4..6].parse::<i64>();
            match (hours, minutes) {
                (Ok(h), Ok(m)) if h < 24 && m < 60 => (local, sign * (h * 3600 + m * 60)),
                _ => return Some(Err(format!("{text:?}: bad UTC offset {zone:?}"))),
            }
        }
        _ => (text, 0),
    };
    Some(
        humantime::parse_rfc3339_weak(local)
            .map_err(|e| format!("{text:?} is not an RFC 3339 time (2026-11-22T10:00:00Z): {e}"))
            .and_then(unix_ms)
            .map(|ms| ms - offset_s * 1000),
    )
}

/// A duration such as `10s`, `5m`, `1h 30m`, `250ms`.
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration such as 10s, 5m or 1h 30m: {e}"))
}

/// A share between 0 and 1 (`0.1` = 10 %); NaN, negative or above 1 is refused.
pub(crate) fn ratio(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|e| format!("{text:?} is not a number: {e}"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{text:?} is not a share between 0 and 1 (0.1 = 10 %)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let now_ms = 1_800_000_000_000;
        assert_eq!(
            when_at("2026-11-22T10:00:00Z", now),
            Ok(When(1_795_341_600_000))
        );
        assert_eq!(
            when_at("2026-11-22T12:00:00+02:00", now),
            Ok(When(1_795_341_600_000))
        );
        assert_eq!(
            when_at("2026-11-22T05:30:00-04:30", now),
            Ok(When(1_795_341_600_000))
        );
        assert_eq!(when_at("10s", now), Ok(When(now_ms - 10_000)));
        assert_eq!(when_at("5m", now), Ok(When(now_ms - 300_000)));
        assert_eq!(when_at("2h", now), Ok(When(now_ms - 7_200_000)));
        assert_eq!(when_at("1d", now), Ok(When(now_ms - 86_400_000)));
        for bad in [
            "yesterday",
            "2026-13-01T00:00:00Z",
            "10",
            "2026-11-22T10:00:00+2",
        ] {
            assert!(when_at(bad, now).is_err(), "{bad}");
        }
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("0s"), Ok(Duration::ZERO));
        assert_eq!(duration("1h 30m"), Ok(Duration::from_secs(5_400)));
        assert!(duration("soon").is_err());
    }
}
