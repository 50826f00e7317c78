//! Table tests for the time engine. Every expected instant below was worked out by hand
//! from Debian cron's rules and the zones' published transition dates (noted beside
//! each table), not taken from the engine's output.
//!
//! Each case runs with the zone in every form chime reads (chrono-tz, the system's TZif
//! file, the POSIX rule: see `zone_kinds`), and every form must give the same fires.

mod zone_kinds;

use chime::cron::Schedule;
use chrono::{DateTime, Utc};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("bad time {text}: {e}"))
        .with_timezone(&Utc)
}

/// Asserts that `expr` in `zone`, counting from `from`, fires exactly at `expected`,
/// whichever form the zone is read in.
#[track_caller]
fn fires(expr: &str, zone: &str, from: &str, expected: &[&str]) {
    let schedule = Schedule::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let want: Vec<DateTime<Utc>> = expected.iter().map(|t| at(t)).collect();
    for (kind, tz) in zone_kinds::kinds(zone) {
        let got: Vec<DateTime<Utc>> = schedule
            .fires_after(tz, at(from))
            .take(expected.len())
            .collect();
        assert_eq!(got, want, "`{expr}` in {kind} from {from}");
    }
}

#[test]
fn issue_example_berlin_spring_forward() {
    fires(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-03-28T12:00:00Z",
        &[
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00",
            "2026-03-31T02:30:00+02:00",
        ],
    );
}

// Europe/Berlin 2026: clocks go forward on 29 March at 01:00 UTC (02:00 CET → 03:00 CEST),
// back on 25 October at 01:00 UTC (03:00 CEST → 02:00 CET).
#[test]
fn berlin_spring_forward() {
    let z = "Europe/Berlin";
    // Fixed-time: every skipped time collapses into one fire at the end of the gap.
    fires(
        "0,30 2 * * *",
        z,
        "2026-03-28T12:00:00Z",
        &[
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:00:00Z",
            "2026-03-30T00:30:00Z",
        ],
    );
    fires(
        "30 1-2 * * *",
        z,
        "2026-03-29T00:00:00Z",
        &[
            "2026-03-29T00:30:00Z", // 01:30 CET
            "2026-03-29T01:00:00Z", // 02:30 skipped → 03:00 CEST
            "2026-03-29T23:30:00Z", // 01:30 CEST on the 30th
            "2026-03-30T00:30:00Z",
        ],
    );
    // A fixed job at the gap's end and inside the gap fires once there, not twice.
    fires(
        "30 2,3 * * *",
        z,
        "2026-03-29T00:00:00Z",
        &[
            "2026-03-29T01:00:00Z",
            "2026-03-29T01:30:00Z", // 03:30 CEST
            "2026-03-30T00:30:00Z",
        ],
    );
    // Wildcard jobs have no fires in the gap.
    fires(
        "*/30 * * * *",
        z,
        "2026-03-29T00:15:00Z",
        &[
            "2026-03-29T00:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T01:30:00Z",
        ],
    );
    fires(
        "15 * * * *",
        z,
        "2026-03-29T00:00:00Z",
        &["2026-03-29T00:15:00Z", "2026-03-29T01:15:00Z"],
    );
    fires(
        "* 2 * * *",
        z,
        "2026-03-29T00:00:00Z",
        &["2026-03-30T00:00:00Z", "2026-03-30T00:01:00Z"],
    );
}

#[test]
fn berlin_fall_back() {
    let z = "Europe/Berlin";
    // Fixed-time: only the first 02:30 (CEST).
    fires(
        "30 2 * * *",
        z,
        "2026-10-24T12:00:00Z",
        &["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
    );
    fires(
        "0 2 * * *",
        z,
        "2026-10-24T12:00:00Z",
        &["2026-10-25T00:00:00Z", "2026-10-26T01:00:00Z"],
    );
    // Starting inside the second pass: the repeated 02:30 is not fired again.
    fires(
        "30 2 * * *",
        z,
        "2026-10-25T01:10:00Z",
        &["2026-10-26T01:30:00Z"],
    );
    // Wildcard: both passes.
    fires(
        "30 * * * *",
        z,
        "2026-10-25T00:00:00Z",
        &[
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-25T02:30:00Z",
        ],
    );
    fires(
        "*/15 2 * * *",
        z,
        "2026-10-24T23:59:00Z",
        &[
            "2026-10-25T00:00:00Z",
            "2026-10-25T00:15:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T00:45:00Z",
            "2026-10-25T01:00:00Z",
            "2026-10-25T01:15:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-25T01:45:00Z",
            "2026-10-26T01:00:00Z",
        ],
    );
}

// America/New_York 2026: forward on 8 March at 07:00 UTC (02:00 EST → 03:00 EDT),
// back on 1 November at 06:00 UTC (02:00 EDT → 01:00 EST).
#[test]
fn new_york_both_directions() {
    let z = "America/New_York";
    fires(
        "30 2 * * *",
        z,
        "2026-03-07T12:00:00Z",
        &["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"],
    );
    fires(
        "*/20 * * * *",
        z,
        "2026-03-08T06:30:00Z",
        &[
            "2026-03-08T06:40:00Z",
            "2026-03-08T07:00:00Z",
            "2026-03-08T07:20:00Z",
        ],
    );
    fires(
        "30 1 * * *",
        z,
        "2026-10-31T12:00:00Z",
        &["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"],
    );
    fires(
        "0,30 * * * *",
        z,
        "2026-11-01T04:45:00Z",
        &[
            "2026-11-01T05:00:00Z",
            "2026-11-01T05:30:00Z",
            "2026-11-01T06:00:00Z",
            "2026-11-01T06:30:00Z",
            "2026-11-01T07:00:00Z",
        ],
    );
}

// Australia/Lord_Howe: a 30-minute shift. Standard +10:30, summer +11:00.
// 2026: back on 5 April at 02:00 summer time (15:00 UTC on the 4th) to 01:30;
// forward on 4 October at 02:00 standard time (15:30 UTC on the 3rd) to 02:30.
#[test]
fn lord_howe_half_hour_shifts() {
    let z = "Australia/Lord_Howe";
    fires(
        "15 2 * * *",
        z,
        "2026-10-03T00:00:00Z",
        &["2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"],
    );
    fires(
        "*/15 * * * *",
        z,
        "2026-10-03T15:00:00Z",
        &[
            "2026-10-03T15:15:00Z",
            "2026-10-03T15:30:00Z",
            "2026-10-03T15:45:00Z",
        ],
    );
    fires(
        "45 1 * * *",
        z,
        "2026-04-04T00:00:00Z",
        &["2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"],
    );
    fires(
        "*/15 * * * *",
        z,
        "2026-04-04T14:20:00Z",
        &[
            "2026-04-04T14:30:00Z",
            "2026-04-04T14:45:00Z",
            "2026-04-04T15:00:00Z",
            "2026-04-04T15:15:00Z",
            "2026-04-04T15:30:00Z",
        ],
    );
}

// America/Santiago: shifts at midnight. 2026: back on Sunday 5 April at 03:00 UTC
// (Saturday 24:00 -03 → 23:00 -04); forward on Sunday 6 September at 04:00 UTC
// (00:00 -04 → 01:00 -03, so that Sunday has no midnight).
#[test]
fn santiago_midnight_gap_and_repeat() {
    let z = "America/Santiago";
    fires(
        "0 0 * * *",
        z,
        "2026-09-05T12:00:00Z",
        &["2026-09-06T04:00:00Z", "2026-09-07T03:00:00Z"],
    );
    fires(
        "@daily",
        z,
        "2026-09-05T12:00:00Z",
        &["2026-09-06T04:00:00Z"],
    );
    fires(
        "30 0 * * *",
        z,
        "2026-09-05T12:00:00Z",
        &["2026-09-06T04:00:00Z", "2026-09-07T03:30:00Z"],
    );
    fires(
        "0 0 6 9 *",
        z,
        "2026-01-01T00:00:00Z",
        &["2026-09-06T04:00:00Z"],
    );
    fires(
        "@hourly",
        z,
        "2026-09-06T02:30:00Z",
        &[
            "2026-09-06T03:00:00Z",
            "2026-09-06T04:00:00Z",
            "2026-09-06T05:00:00Z",
        ],
    );
    fires(
        "30 23 * * *",
        z,
        "2026-04-04T12:00:00Z",
        &["2026-04-05T02:30:00Z", "2026-04-06T03:30:00Z"],
    );
    fires(
        "*/30 * * * *",
        z,
        "2026-04-05T01:50:00Z",
        &[
            "2026-04-05T02:00:00Z",
            "2026-04-05T02:30:00Z",
            "2026-04-05T03:00:00Z",
            "2026-04-05T03:30:00Z",
            "2026-04-05T04:00:00Z",
        ],
    );
}

#[test]
fn day_of_month_or_day_of_week() {
    // Both restricted: the 13th or any Friday. November 2026 starts on a Sunday.
    fires(
        "0 0 13 * 5",
        "UTC",
        "2026-11-01T00:00:00Z",
        &[
            "2026-11-06T00:00:00Z",
            "2026-11-13T00:00:00Z",
            "2026-11-20T00:00:00Z",
            "2026-11-27T00:00:00Z",
            "2026-12-04T00:00:00Z",
            "2026-12-11T00:00:00Z",
            "2026-12-13T00:00:00Z",
            "2026-12-18T00:00:00Z",
        ],
    );
    // Day-of-month starts with `*`: both must match (days 1, 11, 21, 31 that are Fridays).
    fires(
        "0 0 */10 * 5",
        "UTC",
        "2026-11-01T00:00:00Z",
        &["2026-12-11T00:00:00Z", "2027-01-01T00:00:00Z"],
    );
    // Day-of-week starts with `*`: the 1st of months that begin on Sun, Tue, Thu or Sat.
    fires(
        "0 0 1 * */2",
        "UTC",
        "2026-10-31T00:00:00Z",
        &[
            "2026-11-01T00:00:00Z",
            "2026-12-01T00:00:00Z",
            "2027-04-01T00:00:00Z",
        ],
    );
}

#[test]
fn last_day_last_weekday_nth_weekday() {
    fires(
        "0 12 L * *",
        "UTC",
        "2027-01-15T00:00:00Z",
        &[
            "2027-01-31T12:00:00Z",
            "2027-02-28T12:00:00Z",
            "2027-03-31T12:00:00Z",
        ],
    );
    fires(
        "0 0 L 2 *",
        "UTC",
        "2027-03-01T00:00:00Z",
        &["2028-02-29T00:00:00Z"],
    );
    fires(
        "0 9 * * 5L",
        "UTC",
        "2026-11-01T00:00:00Z",
        &[
            "2026-11-27T09:00:00Z",
            "2026-12-25T09:00:00Z",
            "2027-01-29T09:00:00Z",
        ],
    );
    fires(
        "0 9 * * 1#2",
        "UTC",
        "2026-11-01T00:00:00Z",
        &[
            "2026-11-09T09:00:00Z",
            "2026-12-14T09:00:00Z",
            "2027-01-11T09:00:00Z",
        ],
    );
}

#[test]
fn names_macros_seconds_and_sunday() {
    fires(
        "0 0 1 jan *",
        "UTC",
        "2026-11-25T00:00:00Z",
        &["2027-01-01T00:00:00Z"],
    );
    fires(
        "@yearly",
        "UTC",
        "2026-11-25T00:00:00Z",
        &["2027-01-01T00:00:00Z"],
    );
    fires(
        "@annually",
        "UTC",
        "2026-11-25T00:00:00Z",
        &["2027-01-01T00:00:00Z"],
    );
    fires(
        "@monthly",
        "UTC",
        "2026-11-25T00:00:00Z",
        &["2026-12-01T00:00:00Z"],
    );
    // 25 November 2026 is a Wednesday: next Sunday is the 29th.
    fires(
        "@weekly",
        "UTC",
        "2026-11-25T00:00:00Z",
        &["2026-11-29T00:00:00Z"],
    );
    fires(
        "0 0 * * 7",
        "UTC",
        "2026-11-25T00:00:00Z",
        &["2026-11-29T00:00:00Z"],
    );
    fires(
        "0 0 * * Sun",
        "UTC",
        "2026-11-25T00:00:00Z",
        &["2026-11-29T00:00:00Z"],
    );
    fires(
        "@midnight",
        "UTC",
        "2026-11-25T00:00:00Z",
        &["2026-11-26T00:00:00Z"],
    );
    fires(
        "*/20 * * * * *",
        "UTC",
        "2026-11-25T10:00:00Z",
        &[
            "2026-11-25T10:00:20Z",
            "2026-11-25T10:00:40Z",
            "2026-11-25T10:01:00Z",
        ],
    );
    fires(
        "0 30 9 * * MON-FRI",
        "UTC",
        "2026-11-27T10:00:00Z",
        &["2026-11-30T09:30:00Z"],
    );
    // Strictly after: a fire at exactly `from` is not returned.
    fires(
        "0 * * * *",
        "UTC",
        "2026-11-25T10:00:00Z",
        &["2026-11-25T11:00:00Z"],
    );
    fires(
        "0 * * * *",
        "UTC",
        "2026-11-25T09:59:59.999Z",
        &["2026-11-25T10:00:00Z"],
    );
}

#[test]
fn every_is_aligned_to_the_epoch() {
    fires(
        "@every 5m",
        "Europe/Berlin",
        "2026-11-25T10:02:03Z",
        &["2026-11-25T10:05:00Z", "2026-11-25T10:10:00Z"],
    );
    // 7 minutes = 420 s; fires at multiples of 420 s since 1970-01-01T00:00:00Z.
    let from = at("2026-11-25T10:02:03Z");
    let first = (from.timestamp() / 420 + 1) * 420;
    let expected: Vec<DateTime<Utc>> = (0..3)
        .map(|k| DateTime::from_timestamp(first + 420 * k, 0).unwrap())
        .collect();
    let got: Vec<_> = Schedule::parse("@every 7m")
        .unwrap()
        .fires_after(chrono_tz::UTC, from)
        .take(3)
        .collect();
    assert_eq!(got, expected);
    // Sub-second periods keep millisecond precision.
    fires(
        "@every 500ms",
        "UTC",
        "2026-11-25T10:00:00.200Z",
        &["2026-11-25T10:00:00.500Z", "2026-11-25T10:00:01Z"],
    );
}

#[test]
fn reboot_and_impossible_dates_never_fire_on_a_timer() {
    let utc = chrono_tz::UTC;
    let from = at("2026-11-25T00:00:00Z");
    assert_eq!(
        Schedule::parse("@reboot").unwrap().next_after(utc, from),
        None
    );
    assert_eq!(
        Schedule::parse("0 0 30 2 *").unwrap().next_after(utc, from),
        None
    );
    // Rare but real: only in leap years.
    let rare = Schedule::parse("0 0 29 2 *").unwrap().next_after(utc, from);
    assert_eq!(rare, Some(at("2028-02-29T00:00:00Z")));
}

/// The tables above run in every form of a zone; guard that none silently drops out.
#[test]
fn tables_cover_chrono_tz_tzif_and_posix_forms() {
    let forms = zone_kinds::kinds("Europe/Berlin");
    let expected = if zone_kinds::have_zoneinfo() { 3 } else { 2 };
    assert_eq!(forms.len(), expected, "{forms:?}");
}
