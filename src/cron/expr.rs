//! Parsing cron fields into bit sets, and matching a local date and time against them.

use chrono::{Datelike, NaiveDate};

use super::CronError;

/// A parsed five- or six-field expression.
///
/// Each field is a bit set: bit `n` set means value `n` matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    pub(crate) seconds: u64,
    pub(crate) minutes: u64,
    pub(crate) hours: u32,
    /// Days of the month 1–31.
    pub(crate) days: u32,
    /// `L` in day-of-month: the last day of the month.
    pub(crate) last_day: bool,
    /// Months 1–12.
    pub(crate) months: u16,
    /// Weekdays 0–6, Sunday = 0.
    pub(crate) weekdays: u8,
    /// `5L`: the last such weekday of the month; bit = weekday.
    pub(crate) last_weekdays: u8,
    /// `1#2`: the n-th such weekday of the month; bit `weekday * 5 + (n - 1)`.
    pub(crate) nth_weekdays: u64,
    /// The day-of-month field starts with `*` (or `?`).
    pub(crate) dom_star: bool,
    /// The day-of-week field starts with `*` (or `?`).
    pub(crate) dow_star: bool,
    /// The minute or the hour field starts with `*`.
    wildcard: bool,
    /// Six fields whose seconds field is exactly `*`.
    star_seconds: bool,
}

#[derive(Clone, Copy)]
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: FieldSpec = FieldSpec {
    name: "seconds",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
// 7 is accepted as a second spelling of Sunday and folded onto 0 after parsing.
const DOW: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

const FIELDS_HELP: &str = "a cron expression has 5 fields (minute hour day-of-month month \
                           day-of-week), or 6 with a leading seconds field";

impl CronExpr {
    pub fn parse(text: &str) -> Result<CronExpr, CronError> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let (seconds_field, rest) = match fields.len() {
            5 => (None, &fields[..]),
            6 => (Some(fields[0]), &fields[1..]),
            0 => {
                return Err(CronError::new(format!(
                    "the schedule is empty; {FIELDS_HELP}"
                )));
            }
            n => {
                return Err(CronError::new(format!(
                    "`{text}` has {n} field{}; {FIELDS_HELP}",
                    if n == 1 { "" } else { "s" }
                )));
            }
        };
        let seconds = match seconds_field {
            Some(field) => parse_plain(field, SECOND)?,
            None => 1,
        };
        let minutes = parse_plain(rest[0], MINUTE)?;
        let hours = parse_plain(rest[1], HOUR)? as u32;
        let (days, last_day) = parse_dom(rest[2])?;
        let months = parse_plain(rest[3], MONTH)? as u16;
        let (weekdays, last_weekdays, nth_weekdays) = parse_dow(rest[4])?;
        let starts_star = |field: &str| field.starts_with('*') || field.starts_with('?');
        Ok(CronExpr {
            seconds,
            minutes,
            hours,
            days,
            last_day,
            months,
            weekdays,
            last_weekdays,
            nth_weekdays,
            dom_star: starts_star(rest[2]),
            dow_star: starts_star(rest[4]),
            wildcard: rest[0].starts_with('*') || rest[1].starts_with('*'),
            star_seconds: seconds_field == Some("*"),
        })
    }

    /// Debian cron's wildcard job: the minute or hour field starts with `*`.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    pub(crate) fn has_star_seconds(&self) -> bool {
        self.star_seconds
    }

    /// Whether the date matches the day-of-month, month and day-of-week fields.
    pub(crate) fn matches_date(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let day = date.day();
        let last = days_in_month(date.year(), date.month());
        let dom = self.days & (1 << day) != 0 || (self.last_day && day == last);
        let weekday = date.weekday().num_days_from_sunday();
        let dow = self.weekdays & (1 << weekday) != 0
            || (self.last_weekdays & (1 << weekday) != 0 && day + 7 > last)
            || self.nth_weekdays & (1u64 << (weekday * 5 + (day - 1) / 7)) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }
}

pub(crate) fn days_in_month(year: i32, month: u32) -> u32 {
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    NaiveDate::from_ymd_opt(next_year, next_month, 1)
        .and_then(|first| first.pred_opt())
        .map_or(31, |last| last.day())
}

/// A field with no special characters beyond lists, ranges and steps.
fn parse_plain(field: &str, spec: FieldSpec) -> Result<u64, CronError> {
    let mut bits = 0u64;
    for item in field.split(',') {
        bits |= parse_item(item, field, spec)?;
    }
    Ok(bits)
}

fn parse_dom(field: &str) -> Result<(u32, bool), CronError> {
    let mut bits = 0u64;
    let mut last = false;
    for item in field.split(',') {
        if item.eq_ignore_ascii_case("L") {
            last = true;
        } else if item == "?" {
            bits |= range_bits(DOM.min, DOM.max, 1);
        } else {
            bits |= parse_item(item, field, DOM)?;
        }
    }
    Ok((bits as u32, last))
}

fn parse_dow(field: &str) -> Result<(u8, u8, u64), CronError> {
    let mut bits = 0u64;
    let mut last = 0u8;
    let mut nth = 0u64;
    for item in field.split(',') {
        if item == "?" {
            bits |= range_bits(0, 6, 1);
        } else if let Some(day) = item.strip_suffix(['L', 'l']) {
            if day.is_empty() {
                return Err(CronError::new(format!(
                    "day-of-week `{field}`: `L` needs a weekday before it, e.g. `5L` for the \
                     last Friday of the month; for the last day of the month put `L` in \
                     day-of-month"
                )));
            }
            last |= 1 << (parse_value(day, field, DOW)? % 7);
        } else if let Some((day, n)) = item.split_once('#') {
            let weekday = parse_value(day, field, DOW)? % 7;
            let n: u32 = n
                .parse()
                .ok()
                .filter(|n| (1..=5).contains(n))
                .ok_or_else(|| {
                    CronError::new(format!(
                        "day-of-week `{field}`: in `{item}` the number after `#` must be 1 to 5 \
                     (e.g. `1#2` is the second Monday)"
                    ))
                })?;
            nth |= 1 << (weekday * 5 + n - 1);
        } else {
            bits |= parse_item(item, field, DOW)?;
        }
    }
    // Fold 7 onto 0: both mean Sunday.
    if bits & (1 << 7) != 0 {
        bits = (bits & !(1 << 7)) | 1;
    }
    Ok((bits as u8, last, nth))
}

/// One list item: `*`, `N`, `A-B`, each optionally followed by `/STEP`; or `A/STEP`,
/// meaning from A to the field's maximum.
fn parse_item(item: &str, field: &str, spec: FieldSpec) -> Result<u64, CronError> {
    let name = spec.name;
    if item.is_empty() {
        return Err(CronError::new(format!(
            "{name} field `{field}` has an empty list item; separate values with single commas"
        )));
    }
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => {
            let step: u32 = step.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                CronError::new(format!(
                    "{name} field `{field}`: the step in `{item}` must be a whole number above 0"
                ))
            })?;
            (base, Some(step))
        }
        None => (item, None),
    };
    let (low, high) = if base == "*" {
        (spec.min, spec.max)
    } else if let Some((a, b)) = base.split_once('-') {
        let low = parse_value(a, field, spec)?;
        let high = parse_value(b, field, spec)?;
        if low > high {
            return Err(CronError::new(format!(
                "{name} field `{field}`: the range `{base}` runs backwards; write it from low \
                 to high, or as two ranges joined by a comma"
            )));
        }
        (low, high)
    } else {
        let value = parse_value(base, field, spec)?;
        // `A/STEP` runs from A to the end of the field.
        if step.is_some() {
            (value, spec.max)
        } else {
            (value, value)
        }
    };
    Ok(range_bits(low, high, step.unwrap_or(1)))
}

fn range_bits(low: u32, high: u32, step: u32) -> u64 {
    (low..=high)
        .step_by(step as usize)
        .fold(0, |bits, v| bits | 1 << v)
}

fn parse_value(text: &str, field: &str, spec: FieldSpec) -> Result<u32, CronError> {
    let name = spec.name;
    if let Some(index) = spec
        .names
        .iter()
        .position(|candidate| candidate.eq_ignore_ascii_case(text))
    {
        return Ok(index as u32 + if spec.min == 1 { 1 } else { 0 });
    }
    let names_hint = if spec.names.is_empty() {
        String::new()
    } else {
        format!(
            " or a name {}–{}",
            spec.names[0],
            spec.names[spec.names.len() - 1]
        )
    };
    let value: u32 = text.parse().map_err(|_| {
        CronError::new(format!(
            "{name} field `{field}`: `{text}` is not a number{names_hint}; allowed are {}–{}",
            spec.min, spec.max
        ))
    })?;
    if value < spec.min || value > spec.max {
        return Err(CronError::new(format!(
            "{name} field `{field}`: {value} is out of range; allowed are {}–{}{names_hint}",
            spec.min, spec.max
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn fields_parse_into_bits() {
        let e = CronExpr::parse("*/15 9-17/4 1,15 JAN-mar mon-FRI").unwrap();
        assert_eq!(e.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(e.hours, 1 << 9 | 1 << 13 | 1 << 17);
        assert_eq!(e.days, 1 << 1 | 1 << 15);
        assert_eq!(e.months, 0b1110);
        assert_eq!(e.weekdays, 0b0111110);
        assert!(e.is_wildcard());
        assert!(!e.dom_star && !e.dow_star);
    }

    #[test]
    fn sunday_is_zero_and_seven() {
        let a = CronExpr::parse("0 0 * * 0").unwrap();
        let b = CronExpr::parse("0 0 * * 7").unwrap();
        let c = CronExpr::parse("0 0 * * SUN").unwrap();
        assert_eq!(a.weekdays, 1);
        assert_eq!(b.weekdays, 1);
        assert_eq!(c.weekdays, 1);
        assert_eq!(CronExpr::parse("0 0 * * 5-7").unwrap().weekdays, 0b1100001);
    }

    #[test]
    fn fixed_time_vs_wildcard() {
        assert!(!CronExpr::parse("30 1-2 * * *").unwrap().is_wildcard());
        assert!(!CronExpr::parse("23 0-20/2 * * *").unwrap().is_wildcard());
        assert!(CronExpr::parse("*/5 2 * * *").unwrap().is_wildcard());
        assert!(CronExpr::parse("0 * * * *").unwrap().is_wildcard());
        assert!(CronExpr::parse("0 */2 * * *").unwrap().is_wildcard());
    }

    #[test]
    fn step_from_a_start_value_runs_to_the_end() {
        assert_eq!(
            CronExpr::parse("50/5 * * * *").unwrap().minutes,
            1 << 50 | 1 << 55
        );
    }

    #[test]
    fn last_day_last_weekday_and_nth() {
        let e = CronExpr::parse("0 0 L * *").unwrap();
        assert!(e.matches_date(date(2024, 2, 29)));
        assert!(!e.matches_date(date(2023, 2, 28)) || e.matches_date(date(2023, 2, 28)));
        assert!(e.matches_date(date(2023, 2, 28)));
        assert!(!e.matches_date(date(2024, 2, 28)));
        // 5L: last Friday. November 2026 has Fridays 6, 13, 20, 27.
        let e = CronExpr::parse("0 0 * * 5L").unwrap();
        assert!(e.matches_date(date(2026, 11, 27)));
        assert!(!e.matches_date(date(2026, 11, 20)));
        // 1#2: second Monday. November 2026 Mondays: 2, 9, 16.
        let e = CronExpr::parse("0 0 * * 1#2").unwrap();
        assert!(e.matches_date(date(2026, 11, 9)));
        assert!(!e.matches_date(date(2026, 11, 2)) && !e.matches_date(date(2026, 11, 16)));
    }

    #[test]
    fn day_of_month_and_week_combine_like_vixie() {
        // Both restricted: either matches (the 13th, or any Friday).
        let e = CronExpr::parse("0 0 13 * 5").unwrap();
        assert!(e.matches_date(date(2026, 11, 13))); // a Friday and the 13th
        assert!(e.matches_date(date(2026, 11, 6))); // a Friday
        assert!(e.matches_date(date(2026, 10, 13))); // a Tuesday, the 13th
        assert!(!e.matches_date(date(2026, 11, 5)));
        // Day-of-month starts with `*` (a step): both must match.
        let e = CronExpr::parse("0 0 */2 * 5").unwrap();
        assert!(e.matches_date(date(2026, 11, 13))); // odd day, Friday
        assert!(!e.matches_date(date(2026, 11, 6))); // even day, Friday
        assert!(!e.matches_date(date(2026, 11, 3))); // odd day, Tuesday
        // Day-of-week starts with `*`: both must match.
        let e = CronExpr::parse("0 0 13 * */1").unwrap();
        assert!(e.matches_date(date(2026, 10, 13)));
        assert!(!e.matches_date(date(2026, 11, 6)));
    }

    #[test]
    fn errors_name_the_field_and_the_fix() {
        let cases = [
            ("* * * *", "4 fields"),
            (
                "60 * * * *",
                "minute field `60`: 60 is out of range; allowed are 0–59",
            ),
            ("* 24 * * *", "hour field"),
            ("* * 0 * *", "day-of-month field"),
            ("* * * 13 *", "month field"),
            ("* * * * 8", "day-of-week field"),
            ("* * * FOO *", "`FOO` is not a number or a name JAN–DEC"),
            ("*/0 * * * *", "must be a whole number above 0"),
            ("5-1 * * * *", "runs backwards"),
            ("1,,2 * * * *", "empty list item"),
            ("* * * * L", "`L` needs a weekday"),
            ("* * * * 1#6", "must be 1 to 5"),
            ("", "empty"),
        ];
        for (text, expected) in cases {
            let err = CronExpr::parse(text).expect_err(text);
            assert!(err.message.contains(expected), "{text}: {}", err.message);
        }
    }
}
