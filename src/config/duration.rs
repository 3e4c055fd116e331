//! Go-style durations (`15m`, `1h30m`, `900s`, `250ms`) as Kratos writes them, so existing
//! configuration files carry over. Negative durations make no sense for lifespans, so they are
//! refused rather than clamped.
use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

const NANOS_PER_UNIT: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3600 * 1_000_000_000),
];

/// Go caps durations at `i64::MAX` nanoseconds (about 292 years); so do we.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Parses `15m`, `1h30m`, `1.5h`, `900s`, `250ms`, `0`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("invalid duration: empty (use for example 15m, 1h30m or 900s)".into());
    }
    if trimmed.starts_with('-') {
        return Err(format!(
            "invalid duration {trimmed:?}: must not be negative"
        ));
    }
    let body = trimmed.strip_prefix('+').unwrap_or(trimmed);
    // Go accepts a bare zero without a unit.
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = body;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (nanos, remaining) =
            parse_component(rest).map_err(|why| format!("invalid duration {trimmed:?}: {why}"))?;
        total = total
            .checked_add(nanos)
            .filter(|sum| *sum <= MAX_NANOS)
            .ok_or_else(|| format!("invalid duration {trimmed:?}: too large"))?;
        rest = remaining;
    }
    let nanos =
        u64::try_from(total).map_err(|_| format!("invalid duration {trimmed:?}: too large"))?;
    Ok(Duration::from_nanos(nanos))
}

/// Parses one `<number>[.<fraction>]<unit>` component and returns its length in nanoseconds.
fn parse_component(text: &str) -> Result<(u128, &str), String> {
    let int_len = text.bytes().take_while(u8::is_ascii_digit).count();
    let (int_part, after_int) = text.split_at(int_len);
    let (frac_part, after_number) = match after_int.strip_prefix('.') {
        Some(after_dot) => {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            after_dot.split_at(frac_len)
        }
        None => ("", after_int),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err("expected a number".into());
    }
    let unit_len = after_number
        .char_indices()
        .find(|(_, c)| c.is_ascii_digit() || *c == '.')
        .map_or(after_number.len(), |(index, _)| index);
    let (unit, remaining) = after_number.split_at(unit_len);
    if unit.is_empty() {
        return Err("missing unit (use ns, us, ms, s, m or h)".into());
    }
    let scale = NANOS_PER_UNIT
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, scale)| *scale)
        .ok_or_else(|| format!("unknown unit {unit:?} (use ns, us, ms, s, m or h)"))?;
    let whole: u128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().map_err(|_| "too large".to_string())?
    };
    let mut nanos = whole
        .checked_mul(scale)
        .ok_or_else(|| "too large".to_string())?;
    nanos = nanos
        .checked_add(fraction_nanos(frac_part, scale))
        .ok_or_else(|| "too large".to_string())?;
    if nanos > MAX_NANOS {
        return Err("too large".into());
    }
    Ok((nanos, remaining))
}

/// The fraction's share of one unit, truncated to whole nanoseconds (as Go does).
fn fraction_nanos(digits: &str, scale: u128) -> u128 {
    let mut value: u128 = 0;
    let mut divisor: u128 = 1;
    // More than 18 digits cannot change the result for units up to one hour.
    for digit in digits.bytes().take(18) {
        value = value * 10 + u128::from(digit - b'0');
        divisor *= 10;
    }
    value * scale / divisor
}

/// Shortest form that parses back to the same value: `15m`, `1h30m`, `900ms`, `0s`.
pub fn format(duration: &Duration) -> String {
    let mut nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, scale) in [
        ("h", 3600 * 1_000_000_000u128),
        ("m", 60 * 1_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        let count = nanos / scale;
        if count > 0 {
            out.push_str(&count.to_string());
            out.push_str(unit);
            nanos -= count * scale;
        }
    }
    out
}

pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(duration))
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("900s"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2us"), Ok(Duration::from_micros(2)));
        assert_eq!(parse("1m30s500ms"), Ok(Duration::from_millis(90_500)));
    }

    #[test]
    fn refuses_bad_durations_with_clear_messages() {
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(parse("-5m").unwrap_err().contains("negative"));
        assert!(parse("15 minutes").unwrap_err().contains("unknown unit"));
        assert!(parse("15").unwrap_err().contains("missing unit"));
        assert!(parse("5d").unwrap_err().contains("unknown unit"));
        assert!(parse("h").unwrap_err().contains("expected a number"));
        assert!(
            parse("99999999999999999999999h")
                .unwrap_err()
                .contains("too large")
        );
        assert!(parse("3000000h").unwrap_err().contains("too large"));
    }

    #[test]
    fn formats_round_trip() {
        for text in ["15m", "1h30m", "900ms", "0s", "24h", "1m30s500ms", "1ns"] {
            let parsed = parse(text).unwrap();
            assert_eq!(format(&parsed), text);
            assert_eq!(parse(&format(&parsed)), Ok(parsed));
        }
        assert_eq!(format(&Duration::from_secs(900)), "15m");
    }
}
