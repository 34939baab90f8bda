//! The forex week: closed from Friday 17:00 to Sunday 17:00 New York time.
//!
//! New York's offset follows the US rule in force since 2007: daylight time
//! (UTC-4) from the second Sunday of March, 02:00 local, to the first Sunday of
//! November, 02:00 local; standard time (UTC-5) otherwise. Written out here
//! rather than pulling in a time-zone database for one zone.

use crate::time::Ts;

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// The n-th Sunday (1-based) of a month, as a day timestamp (00:00 UTC).
fn nth_sunday(year: i64, month: u32, n: i64) -> i64 {
    let first = Ts::from_ymd_hms(year, month, 1, 0, 0, 0).map_or(0, |t| t.0);
    let wd = i64::from(Ts(first).weekday()); // Monday = 0, Sunday = 6
    first + ((6 - wd).rem_euclid(7) + 7 * (n - 1)) * DAY
}

/// New York's offset from UTC at `t`, in seconds (-4 h or -5 h).
pub fn new_york_offset(t: Ts) -> i64 {
    let year = chrono::DateTime::from_timestamp(t.0, 0).map_or(1970, |d| i64::from(chrono::Datelike::year(&d)));
    // 02:00 local standard time = 07:00 UTC; 02:00 local daylight time = 06:00 UTC.
    let start = nth_sunday(year, 3, 2) + 7 * HOUR;
    let end = nth_sunday(year, 11, 1) + 6 * HOUR;
    if t.0 >= start && t.0 < end { -4 * HOUR } else { -5 * HOUR }
}

/// Whether the FX market trades at `t`.
pub fn is_open(t: Ts) -> bool {
    let local = t.0 + new_york_offset(t);
    let wd = Ts(local).weekday(); // Monday = 0
    let hour = local.rem_euclid(DAY) / HOUR;
    !matches!((wd, hour), (4, 17..) | (5, _) | (6, ..=16))
}

/// `t` if the market is open then, else the moment it reopens (Sunday 17:00 New York).
pub fn next_open(t: Ts) -> Ts {
    if is_open(t) {
        return t;
    }
    let offset = new_york_offset(t);
    let local = t.0 + offset;
    let wd = i64::from(Ts(local).weekday());
    let sunday = local.div_euclid(DAY) * DAY + (6 - wd) * DAY;
    let guess = sunday + 17 * HOUR - offset;
    // The reopen may fall on a daylight-saving switch day: use its own offset.
    Ts(sunday + 17 * HOUR - new_york_offset(Ts(guess)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i64, mo: u32, d: u32, h: u32, mi: u32) -> Ts {
        Ts::from_ymd_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn the_week_closes_friday_17_00_new_york_in_summer_and_winter() {
        // Summer (EDT, UTC-4): Friday 2024-07-12 17:00 NY = 21:00 UTC.
        assert!(is_open(utc(2024, 7, 12, 20, 59)));
        assert!(!is_open(utc(2024, 7, 12, 21, 0)));
        assert!(!is_open(utc(2024, 7, 13, 12, 0)));
        assert!(!is_open(utc(2024, 7, 14, 20, 59)));
        assert!(is_open(utc(2024, 7, 14, 21, 0)));
        // Winter (EST, UTC-5): Friday 2024-01-12 17:00 NY = 22:00 UTC.
        assert!(is_open(utc(2024, 1, 12, 21, 30)));
        assert!(!is_open(utc(2024, 1, 12, 22, 0)));
        assert!(is_open(utc(2024, 1, 14, 22, 0)));
        assert!(is_open(utc(2024, 1, 17, 3, 0)), "midweek is open");
    }

    #[test]
    fn offsets_switch_on_the_us_dates() {
        // 2024: DST from 2024-03-10 07:00 UTC to 2024-11-03 06:00 UTC.
        assert_eq!(new_york_offset(utc(2024, 3, 10, 6, 59)), -5 * HOUR);
        assert_eq!(new_york_offset(utc(2024, 3, 10, 7, 0)), -4 * HOUR);
        assert_eq!(new_york_offset(utc(2024, 11, 3, 5, 59)), -4 * HOUR);
        assert_eq!(new_york_offset(utc(2024, 11, 3, 6, 0)), -5 * HOUR);
    }

    #[test]
    fn next_open_is_sunday_17_00_new_york() {
        assert_eq!(next_open(utc(2024, 7, 12, 22, 0)), utc(2024, 7, 14, 21, 0));
        assert_eq!(next_open(utc(2024, 1, 13, 9, 0)), utc(2024, 1, 14, 22, 0));
        // The weekend the clocks go forward: closed in EST, reopens in EDT.
        assert_eq!(next_open(utc(2024, 3, 8, 23, 0)), utc(2024, 3, 10, 21, 0));
        let open = utc(2024, 7, 10, 12, 0);
        assert_eq!(next_open(open), open);
    }
}
