//! Candle timestamps as whole UTC seconds.
//!
//! `Ts` is a plain `i64` so that the engine's hot path compares integers and the
//! JSON encoder formats RFC 3339 without going through chrono's generic
//! formatter: replay writes a timestamp per candle, a million times a second.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Seconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ts(pub i64);

// Howard Hinnant's days_from_civil / civil_from_days: exact for the proleptic
// Gregorian calendar, branch-light, no tables.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

impl Ts {
    /// Builds a timestamp from calendar fields, or `None` when a field is out of range.
    pub fn from_ymd_hms(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<Ts> {
        if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60 {
            return None;
        }
        let days = days_from_civil(y, mo, d);
        Some(Ts(days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s)))
    }

    pub fn now() -> Ts {
        Ts(chrono::Utc::now().timestamp())
    }

    /// Writes `YYYY-MM-DDTHH:MM:SSZ` into `buf` and returns it as text.
    pub fn format_into(self, buf: &mut [u8; 20]) -> &str {
        let days = self.0.div_euclid(86_400);
        let secs = self.0.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let y = y.clamp(0, 9999) as u32;
        let put2 = |b: &mut [u8], v: u32| {
            b[0] = b'0' + (v / 10) as u8;
            b[1] = b'0' + (v % 10) as u8;
        };
        put2(&mut buf[0..2], y / 100);
        put2(&mut buf[2..4], y % 100);
        buf[4] = b'-';
        put2(&mut buf[5..7], m);
        buf[7] = b'-';
        put2(&mut buf[8..10], d);
        buf[10] = b'T';
        put2(&mut buf[11..13], (secs / 3600) as u32);
        buf[13] = b':';
        put2(&mut buf[14..16], ((secs / 60) % 60) as u32);
        buf[16] = b':';
        put2(&mut buf[17..19], (secs % 60) as u32);
        buf[19] = b'Z';
        // Every byte written above is ASCII.
        std::str::from_utf8(buf).unwrap_or("0000-00-00T00:00:00Z")
    }

    /// Parses RFC 3339 (any offset, any fraction: the fraction is truncated).
    pub fn parse_rfc3339(s: &str) -> Option<Ts> {
        chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| Ts(t.timestamp()))
    }

    /// Weekday with Monday = 0.
    pub fn weekday(self) -> u32 {
        // 1970-01-01 was a Thursday (3).
        ((self.0.div_euclid(86_400) + 3).rem_euclid(7)) as u32
    }
}

impl fmt::Display for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 20];
        f.write_str(self.format_into(&mut buf))
    }
}

impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let mut buf = [0u8; 20];
            s.serialize_str(self.format_into(&mut buf))
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Ts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            Ts::parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom(format!("'{s}' is not an RFC 3339 time")))
        } else {
            i64::deserialize(d).map(Ts)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(Ts(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Ts(1_704_153_600 + 8 * 3600).to_string(), "2024-01-02T08:00:00Z");
        assert_eq!(
            Ts::from_ymd_hms(2000, 2, 29, 23, 59, 59).map(|t| t.to_string()).as_deref(),
            Some("2000-02-29T23:59:59Z")
        );
        assert_eq!(Ts::from_ymd_hms(2001, 2, 29, 0, 0, 0), None);
        assert_eq!(Ts(0).weekday(), 3);
    }

    proptest! {
        #[test]
        fn agrees_with_chrono(secs in -2_000_000_000i64..32_000_000_000i64) {
            let ours = Ts(secs).to_string();
            let theirs = chrono::DateTime::from_timestamp(secs, 0).map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            prop_assert_eq!(Some(ours.clone()), theirs);
            prop_assert_eq!(Ts::parse_rfc3339(&ours), Some(Ts(secs)));
        }
    }
}
