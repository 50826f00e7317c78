//! The search for the next fire of a cron expression in a time zone.
//!
//! Time is handled in whole seconds. A *naive* second counts local wall-clock time as if
//! it were UTC (so `naive = instant + offset`). The search walks forward through
//! stretches of constant UTC offset. Inside one stretch local time is just the instant
//! shifted, so the next match is found on the naive clock; at each offset change it
//! applies Debian cron's rules:
//! - forward shift (a gap of local times that never happen): a fixed-time job that
//!   matches a time in the gap fires once, at the first instant after the gap; a
//!   wildcard job has no fires in it;
//! - backward shift (local times repeat): a fixed-time job only fires the first time a
//!   local time happens, so it skips every local time already passed; a wildcard job
//!   fires in both passes.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike};
use chrono_tz::Tz;

use super::expr::CronExpr;
use crate::zone::{RulesZone, Zone};

/// The one thing the search asks of a zone: its UTC offset (seconds) at an instant.
/// The search is generic over it so the IANA path compiles to direct chrono-tz calls,
/// with the zone's kind matched once per search rather than once per probe.
trait Offsets: Copy {
    fn offset_at(self, instant: i64) -> Option<i64>;
}

impl Offsets for Tz {
    fn offset_at(self, instant: i64) -> Option<i64> {
        let utc = DateTime::from_timestamp(instant, 0)?.naive_utc();
        Some(i64::from(
            self.offset_from_utc_datetime(&utc).fix().local_minus_utc(),
        ))
    }
}

impl Offsets for &RulesZone {
    fn offset_at(self, instant: i64) -> Option<i64> {
        RulesZone::offset_at(self, instant).map(i64::from)
    }
}

/// Offset changes are found by probing the zone at this step. No zone in the tz
/// database shifts and shifts back within six hours, so none is missed. (A POSIX rule
/// could describe a shorter summer time; no real zone does, and such a zone would only
/// lose its shortest stretches.)
const PROBE_STEP: i64 = 6 * 3600;

/// How far ahead a search goes before deciding the expression never fires. The
/// Gregorian calendar repeats every 400 years, weekdays included.
const HORIZON_YEARS: i32 = 401;

/// The first fire at or after the instant `start` (Unix seconds).
pub(super) fn next_fire(expr: &CronExpr, zone: Zone, start: i64) -> Option<i64> {
    match zone {
        Zone::Iana(tz) => next_fire_in(expr, tz, start),
        Zone::Rules(rules) => next_fire_in(expr, rules, start),
    }
}

fn next_fire_in(expr: &CronExpr, tz: impl Offsets, start: i64) -> Option<i64> {
    let fixed = !expr.is_wildcard();
    let mut segment_start = start;
    let mut offset = offset_at(tz, start)?;
    // The end (exclusive, naive) of the local times already lived through before
    // `start`: a fixed-time job must not fire again at any of them.
    let mut passed = start + offset;
    if fixed {
        // Just after a backward shift, local times up to the pre-shift clock were
        // already lived through once.
        if let Some((shift, _)) = next_shift(tz, start - 30 * 3600, start) {
            let before = offset_at(tz, shift - 1)?;
            passed = passed.max(shift + before);
        }
    }
    let horizon = naive_from_secs(start + offset)?.year() + HORIZON_YEARS;
    loop {
        let from = if fixed {
            (segment_start + offset).max(passed)
        } else {
            segment_start + offset
        };
        let candidate = next_match(expr, from, horizon)?;
        let instant = candidate - offset;
        let Some((shift, new_offset)) = next_shift(tz, segment_start, instant) else {
            return Some(instant);
        };
        // No match in this stretch: the candidate lies at or past its end.
        passed = passed.max(shift + offset);
        if new_offset > offset {
            // Forward shift: naive [shift + offset, shift + new_offset) never happens.
            if fixed && candidate < shift + new_offset {
                return Some(shift);
            }
            passed = passed.max(shift + new_offset);
        }
        segment_start = shift;
        offset = new_offset;
    }
}

fn offset_at(tz: impl Offsets, instant: i64) -> Option<i64> {
    tz.offset_at(instant)
}

/// The first offset change in `(from, to]`: the instant it takes effect and the new offset.
fn next_shift(tz: impl Offsets, from: i64, to: i64) -> Option<(i64, i64)> {
    let offset = offset_at(tz, from)?;
    let mut low = from;
    while low < to {
        let high = (low + PROBE_STEP).min(to);
        if offset_at(tz, high)? != offset {
            // The change lies in (low, high]: bisect to the exact second.
            let (mut lo, mut hi) = (low, high);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if offset_at(tz, mid)? == offset {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            return Some((hi, offset_at(tz, hi)?));
        }
        low = high;
    }
    None
}

fn naive_from_secs(secs: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(secs, 0).map(|dt| dt.naive_utc())
}

fn naive_secs(dt: NaiveDateTime) -> i64 {
    dt.and_utc().timestamp()
}

/// The lowest set bit at or above `from`, if any.
fn next_bit(bits: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = bits >> from;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

/// The first naive second at or after `from` that matches every field.
fn next_match(expr: &CronExpr, from: i64, horizon_year: i32) -> Option<i64> {
    let mut t = naive_from_secs(from)?;
    loop {
        if t.year() > horizon_year {
            return None;
        }
        let date = t.date();
        if expr.months & (1 << date.month()) == 0 {
            let next_month = next_bit(u64::from(expr.months), date.month() + 1);
            let first = match next_month {
                Some(month) => NaiveDate::from_ymd_opt(date.year(), month, 1)?,
                None => NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)?,
            };
            t = first.and_hms_opt(0, 0, 0)?;
            continue;
        }
        if !expr.matches_date(date) {
            t = date.succ_opt()?.and_hms_opt(0, 0, 0)?;
            continue;
        }
        let Some(hour) = next_bit(u64::from(expr.hours), t.hour()) else {
            t = date.succ_opt()?.and_hms_opt(0, 0, 0)?;
            continue;
        };
        if hour != t.hour() {
            t = date.and_hms_opt(hour, 0, 0)?;
        }
        let Some(minute) = next_bit(expr.minutes, t.minute()) else {
            t = next_hour(t)?;
            continue;
        };
        if minute != t.minute() {
            t = date.and_hms_opt(hour, minute, 0)?;
        }
        let Some(second) = next_bit(expr.seconds, t.second()) else {
            t = next_minute(t)?;
            continue;
        };
        return Some(naive_secs(date.and_hms_opt(hour, minute, second)?));
    }
}

fn next_hour(t: NaiveDateTime) -> Option<NaiveDateTime> {
    let top = t.date().and_hms_opt(t.hour(), 0, 0)?;
    top.checked_add_signed(chrono::TimeDelta::hours(1))
}

fn next_minute(t: NaiveDateTime) -> Option<NaiveDateTime> {
    let top = t.date().and_hms_opt(t.hour(), t.minute(), 0)?;
    top.checked_add_signed(chrono::TimeDelta::minutes(1))
}
