//! Property tests: the engine against a brute-force model of Debian cron's rules.
//!
//! Expressions are generated from sets the test knows (so matching is decided here,
//! not by the parser under test), in zones with DST, around their transitions. The
//! model walks every minute and decides from the rules alone which are fires:
//! - a wildcard job fires at every instant whose local time matches;
//! - a fixed-time job fires at an instant whose local time matches and has not
//!   happened before (first pass of a repeat), and once at the first instant after a
//!   gap when any skipped local time matches.
//!
//! The engine's fires must be exactly the model's: strictly increasing, each one a
//! match, none skipped. Zones are taken in each form chime reads (chrono-tz, a TZif
//! file, a POSIX rule; see `zone_kinds`); the model reads the same zone's offsets.

mod zone_kinds;

use std::collections::BTreeSet;

use chime::cron::Schedule;
use chime::zone::Zone;
use chrono::{DateTime, Datelike, NaiveDateTime, TimeZone, Timelike, Utc};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Field {
    Star,
    Step(u32),
    List(Vec<u32>),
    Range(u32, u32),
}

impl Field {
    fn render(&self) -> String {
        match self {
            Field::Star => "*".into(),
            Field::Step(n) => format!("*/{n}"),
            Field::List(values) => values
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            Field::Range(a, b) => format!("{a}-{b}"),
        }
    }

    fn set(&self, min: u32, max: u32) -> BTreeSet<u32> {
        match self {
            Field::Star => (min..=max).collect(),
            Field::Step(n) => (min..=max).step_by(*n as usize).collect(),
            Field::List(values) => values.iter().copied().collect(),
            Field::Range(a, b) => (*a..=*b).collect(),
        }
    }

    fn starts_star(&self) -> bool {
        matches!(self, Field::Star | Field::Step(_))
    }
}

fn field(min: u32, max: u32) -> impl Strategy<Value = Field> {
    prop_oneof![
        2 => Just(Field::Star),
        1 => (2..=(max - min).max(2)).prop_map(Field::Step),
        3 => proptest::collection::vec(min..=max, 1..4).prop_map(Field::List),
        1 => (min..=max, min..=max).prop_map(|(a, b)| Field::Range(a.min(b), a.max(b))),
    ]
}

#[derive(Debug, Clone)]
struct Spec {
    minute: Field,
    hour: Field,
    dom: Field,
    month: Field,
    dow: Field,
}

impl Spec {
    fn render(&self) -> String {
        [&self.minute, &self.hour, &self.dom, &self.month, &self.dow]
            .map(Field::render)
            .join(" ")
    }

    fn wildcard(&self) -> bool {
        self.minute.starts_star() || self.hour.starts_star()
    }

    fn matches(&self, local: NaiveDateTime) -> bool {
        let day_of_month = self.dom.set(1, 31).contains(&local.day());
        let weekday = local.weekday().num_days_from_sunday();
        let day_of_week = self.dow.set(0, 6).contains(&weekday);
        let day = if self.dom.starts_star() || self.dow.starts_star() {
            day_of_month && day_of_week
        } else {
            day_of_month || day_of_week
        };
        local.second() == 0
            && self.minute.set(0, 59).contains(&local.minute())
            && self.hour.set(0, 23).contains(&local.hour())
            && self.month.set(1, 12).contains(&local.month())
            && day
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        field(0, 59),
        field(0, 23),
        prop_oneof![3 => Just(Field::Star), 1 => field(1, 31)],
        prop_oneof![4 => Just(Field::Star), 1 => field(1, 12)],
        prop_oneof![3 => Just(Field::Star), 1 => field(0, 6)],
    )
        .prop_map(|(minute, hour, dom, month, dow)| Spec {
            minute,
            hour,
            dom,
            month,
            dow,
        })
}

const ZONES: &[&str] = &[
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "UTC",
];

/// Local wall-clock time of an instant.
fn local(tz: Zone, instant: i64) -> NaiveDateTime {
    let utc = DateTime::from_timestamp(instant, 0).unwrap();
    tz.local(utc).naive_local()
}

/// The model: all fires in `(from, to]`, minute by minute.
fn model_fires(spec: &Spec, tz: Zone, from: i64, to: i64) -> Vec<i64> {
    let mut fires = Vec::new();
    // The furthest local time lived through so far (fixed-time jobs fire once per local
    // time). Starting inside a repeated hour, the first pass already happened.
    let mut lived = (0..=30 * 60)
        .map(|m| local(tz, from - m * 60))
        .max()
        .unwrap();
    let mut previous_local = local(tz, from);
    let mut t = from - from.rem_euclid(60) + 60;
    while t <= to {
        let now = local(tz, t);
        let step_forward = now - previous_local > chrono::TimeDelta::minutes(1);
        let fire = if spec.wildcard() {
            spec.matches(now)
        } else if step_forward {
            // A gap: local minutes (previous_local, now] were skipped or reached now.
            let mut skipped = previous_local + chrono::TimeDelta::minutes(1);
            let mut any = false;
            while skipped <= now {
                any |= spec.matches(skipped) && skipped > lived;
                skipped += chrono::TimeDelta::minutes(1);
            }
            any
        } else {
            spec.matches(now) && now > lived
        };
        if fire {
            fires.push(t);
        }
        lived = lived.max(now);
        previous_local = now;
        t += 60;
    }
    fires
}

/// Start times near a DST transition of each zone, so the interesting cases come up.
fn start() -> impl Strategy<Value = i64> {
    let anchors = [
        "2026-03-29T01:00:00Z", // Berlin forward
        "2026-10-25T01:00:00Z", // Berlin back
        "2026-03-08T07:00:00Z", // New York forward
        "2026-11-01T06:00:00Z", // New York back
        "2026-04-04T15:00:00Z", // Lord Howe back
        "2026-10-03T15:30:00Z", // Lord Howe forward
        "2026-04-05T03:00:00Z", // Santiago back
        "2026-09-06T04:00:00Z", // Santiago forward
        "2018-11-04T03:00:00Z", // Sao Paulo forward at midnight (historic)
        "2019-02-17T02:00:00Z", // Sao Paulo back
    ];
    let anchors: Vec<i64> = anchors
        .iter()
        .map(|a| DateTime::parse_from_rfc3339(a).unwrap().timestamp())
        .collect();
    (proptest::sample::select(anchors), -30 * 3600i64..6 * 3600)
        .prop_map(|(anchor, shift)| anchor + shift)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_the_brute_force_model(
        spec in spec(),
        zone in proptest::sample::select(ZONES),
        kind in 0usize..3,
        from in start(),
    ) {
        let kinds = zone_kinds::kinds(zone);
        let (zone, tz) = kinds[kind % kinds.len()].clone();
        let expr = spec.render();
        let schedule = Schedule::parse(&expr).unwrap();
        let to = from + 3 * 86_400;
        let start = DateTime::from_timestamp(from, 0).unwrap();
        let engine: Vec<i64> = schedule
            .fires_after(tz, start)
            .map(|f| f.timestamp())
            .take_while(|&f| f <= to)
            .collect();
        // Strictly increasing.
        prop_assert!(engine.windows(2).all(|w| w[0] < w[1]), "{expr}: {engine:?}");
        let model = model_fires(&spec, tz, from, to);
        prop_assert_eq!(engine, model, "`{}` in {} from {}", expr, zone, start);
    }

    #[test]
    fn every_fire_is_strictly_after_and_never_repeats(
        spec in spec(),
        zone in proptest::sample::select(ZONES),
        kind in 0usize..3,
        from in start(),
    ) {
        let kinds = zone_kinds::kinds(zone);
        let tz = kinds[kind % kinds.len()].1;
        let schedule = Schedule::parse(&spec.render()).unwrap();
        let start = DateTime::from_timestamp(from, 0).unwrap();
        let mut last = start;
        for fire in schedule.fires_after(tz, start).take(20) {
            prop_assert!(fire > last);
            prop_assert_eq!(fire.timestamp_subsec_nanos(), 0);
            last = fire;
        }
    }

    /// A zone read from the system's TZif file fires exactly as the same zone compiled
    /// into chrono-tz, history included (Sao Paulo's 2018 midnight gap).
    #[test]
    fn tzif_file_zone_fires_as_chrono_tz_does(
        spec in spec(),
        zone in proptest::sample::select(ZONES),
        from in start(),
    ) {
        let Some(file) = zone_kinds::tzif(zone) else {
            return Ok(());
        };
        let iana: Zone = zone.parse().unwrap();
        let schedule = Schedule::parse(&spec.render()).unwrap();
        let start = DateTime::from_timestamp(from, 0).unwrap();
        let a: Vec<_> = schedule.fires_after(iana, start).take(30).collect();
        let b: Vec<_> = schedule.fires_after(file, start).take(30).collect();
        prop_assert_eq!(a, b, "`{}` in {} from {}", spec.render(), zone, start);
    }
}

#[test]
fn model_sanity_on_a_known_case() {
    // Guards the model itself: Berlin's 02:30 on the spring-forward day maps to 03:00.
    let spec = Spec {
        minute: Field::List(vec![30]),
        hour: Field::List(vec![2]),
        dom: Field::Star,
        month: Field::Star,
        dow: Field::Star,
    };
    let tz: Zone = "Europe/Berlin".parse().unwrap();
    let from = Utc
        .with_ymd_and_hms(2026, 3, 28, 12, 0, 0)
        .unwrap()
        .timestamp();
    let to = from + 86_400;
    let expected = Utc
        .with_ymd_and_hms(2026, 3, 29, 1, 0, 0)
        .unwrap()
        .timestamp();
    assert_eq!(model_fires(&spec, tz, from, to), vec![expected]);
}
