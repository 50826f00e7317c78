//! A schedule in words, for `chime check` (a column) and `chime next --cron` (stderr),
//! in the spirit of crontab.guru and `systemd-analyze calendar`: "at 02:30 every day",
//! "every 5 seconds", "at second 30 of minute 2 of every hour". Also the warnings for
//! texts that parse but are rarely meant (a five-field habit in six fields, `?`).
//!
//! It reads the text as written (after `@` macros are expanded), so a step stays a
//! step ("every 5 minutes") rather than becoming a list of twelve minutes. The text
//! has already been parsed by [`Schedule::parse`]: anything odd is shown as written.

use std::time::Duration;

use super::{MACROS, Schedule};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// `text` (a valid schedule) in words, without its zone.
pub fn describe(text: &str) -> String {
    let text = text.trim();
    let Ok(schedule) = Schedule::parse(text) else {
        return text.to_string();
    };
    match schedule {
        Schedule::Reboot => "once, when the service starts".to_string(),
        Schedule::Every(period) => format!("every {} (epoch-aligned)", duration_words(period)),
        Schedule::Cron(_) => {
            let expanded = text
                .strip_prefix('@')
                .and_then(|name| {
                    MACROS
                        .iter()
                        .find(|(m, _)| m[1..].eq_ignore_ascii_case(name))
                        .map(|(_, expansion)| *expansion)
                })
                .unwrap_or(text);
            describe_fields(&expanded.split_whitespace().collect::<Vec<_>>())
        }
    }
}

/// `text` in words with the zone it is evaluated in (`@every` and `@reboot` have none).
pub fn describe_in(text: &str, zone: &str) -> String {
    match Schedule::parse(text) {
        Ok(Schedule::Cron(_)) => format!("{} ({zone})", describe(text)),
        _ => describe(text),
    }
}

/// Warnings about a valid schedule text that probably does not mean what was meant.
pub fn warnings(text: &str) -> Vec<String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let mut out = Vec::new();
    if fields.len() == 6
        && !matches!(fields[0], "0" | "*")
        && fields[0]
            .split_once('/')
            .is_none_or(|(base, _)| base == "*")
        && fields[5] == "*"
    {
        let five = fields[..5].join(" ");
        // `A/n` (and `A-B/n`) is the way to write a seconds step on purpose: no warning.
        let silence = match fields[0].strip_prefix("*/") {
            Some(step) => {
                format!("; if you did mean seconds, write the first field as `0/{step}` to say so")
            }
            None => String::new(),
        };
        out.push(format!(
            "six fields: the first is seconds, so \"{text}\" fires {}; if you meant five \
             fields ({}), drop the last `*`: \"{five}\"{silence}",
            describe(text),
            describe(&five),
        ));
    }
    if fields.iter().any(|field| field.contains('?')) {
        out.push(
            "`?` is read as `*` (Debian cron has no `?`: when day-of-month and day-of-week \
             are both restricted, a day matching either fires); write `*`"
                .to_string(),
        );
    }
    out
}

fn duration_words(period: Duration) -> String {
    let mut ms = period.as_millis();
    let mut parts = Vec::new();
    for (unit, size) in [
        ("day", 86_400_000),
        ("hour", 3_600_000),
        ("minute", 60_000),
        ("second", 1_000),
        ("millisecond", 1),
    ] {
        let n = ms / size;
        ms %= size;
        if n > 0 {
            parts.push(plural(n, unit));
        }
    }
    if parts.len() == 1 && parts[0].starts_with("1 ") {
        // "every hour", not "every 1 hour".
        return parts[0][2..].to_string();
    }
    parts.join(" ")
}

fn plural(n: u128, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// "a, b and c".
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// One unit of the time of day: seconds, minutes or hours.
struct Unit {
    one: &'static str,
    many: &'static str,
}

const SECOND: Unit = Unit {
    one: "second",
    many: "seconds",
};
const MINUTE: Unit = Unit {
    one: "minute",
    many: "minutes",
};
const HOUR: Unit = Unit {
    one: "hour",
    many: "hours",
};

/// A value of a field: a number, or a name (months 1-based, weekdays Sunday = 0 or 7).
fn value(text: &str, names: &[&str], first: u32) -> Option<u32> {
    if let Some(index) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Some(index as u32 + first);
    }
    text.parse().ok()
}

/// One list item as written: its base (`*`, `N`, `A-B`) and its step, if any.
struct Item<'a> {
    base: &'a str,
    step: Option<&'a str>,
}

fn items(field: &str) -> Vec<Item<'_>> {
    field
        .split(',')
        .map(|item| match item.split_once('/') {
            Some((base, step)) => Item {
                base,
                step: Some(step),
            },
            None => Item {
                base: item,
                step: None,
            },
        })
        .collect()
}

fn is_single_number(field: &str) -> bool {
    !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit())
}

/// A value as the field shows it: a number, a month or a weekday.
fn show(text: &str, kind: Kind) -> String {
    match kind {
        Kind::Time => value(text, &[], 0).map_or(text.to_string(), |v| v.to_string()),
        Kind::Month => value(text, &MONTH_NAMES, 1)
            .and_then(|m| MONTHS.get(m.checked_sub(1)? as usize))
            .map_or(text.to_string(), |m| m.to_string()),
        Kind::Weekday => value(text, &WEEKDAY_NAMES, 0)
            .and_then(|d| WEEKDAYS.get(d as usize % 7))
            .map_or(text.to_string(), |d| d.to_string()),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Time,
    Month,
    Weekday,
}

/// A list item in words: "5", "9 through 17", "10 through 50 every 5th".
fn item_words(item: &Item, kind: Kind) -> String {
    let base = match item.base.split_once('-') {
        Some((a, b)) => format!("{} through {}", show(a, kind), show(b, kind)),
        None if item.base == "*" => "every one".to_string(),
        None if item.step.is_some() => format!("{} onwards", show(item.base, kind)),
        None => show(item.base, kind),
    };
    match item.step.and_then(|s| s.parse::<u32>().ok()) {
        Some(step) if item.base == "*" => format!("every {}", ordinal(step)),
        Some(step) => format!("{base}, every {}", ordinal(step)),
        None => base,
    }
}

/// A time field as the smallest unit named ("every 5 seconds", "at second 30").
fn lead(field: &str, unit: &Unit) -> String {
    let list = items(field);
    match list.as_slice() {
        [
            Item {
                base: "*",
                step: None,
            },
        ] => format!("every {}", unit.one),
        [
            Item {
                base: "*",
                step: Some(step),
            },
        ] => match step.parse::<u32>() {
            Ok(1) => format!("every {}", unit.one),
            Ok(n) => format!("every {n} {}", unit.many),
            Err(_) => format!("at {} {field}", unit.many),
        },
        [Item { base, step: None }] if !base.contains('-') => {
            format!("at {} {}", unit.one, show(base, Kind::Time))
        }
        [
            Item {
                base,
                step: Some(step),
            },
        ] if step.parse::<u32>().is_ok() => {
            let every = match step.parse::<u32>() {
                Ok(1) => format!("every {}", unit.one),
                _ => format!("every {step} {}", unit.many),
            };
            match base.split_once('-') {
                Some((a, b)) => format!("{every} from {} {a} through {b}", unit.one),
                None if *base == "0" => every,
                None => format!("{every} from {} {base}", unit.one),
            }
        }
        _ => format!("at {} {}", unit.many, words_of(&list, Kind::Time)),
    }
}

/// A time field under a smaller one ("of every hour", "of minute 2").
fn follow(field: &str, unit: &Unit) -> String {
    let list = items(field);
    match list.as_slice() {
        [
            Item {
                base: "*",
                step: None,
            },
        ] => format!("of every {}", unit.one),
        [
            Item {
                base: "*",
                step: Some(step),
            },
        ] => match step.parse::<u32>() {
            Ok(1) => format!("of every {}", unit.one),
            Ok(n) => format!("of every {} {}", ordinal(n), unit.one),
            Err(_) => format!("of {} {field}", unit.many),
        },
        [Item { base, step: None }] if !base.contains('-') => {
            format!("of {} {}", unit.one, show(base, Kind::Time))
        }
        [
            Item {
                base,
                step: Some(step),
            },
        ] if step.parse::<u32>().is_ok() => {
            let every = format!(
                "of every {} {}",
                ordinal(step.parse().unwrap_or(1)),
                unit.one
            );
            match base.split_once('-') {
                Some((a, b)) => format!("{every} from {a} through {b}"),
                None if *base == "0" => every,
                None => format!("{every} from {base}"),
            }
        }
        _ => format!("of {} {}", unit.many, words_of(&list, Kind::Time)),
    }
}

fn words_of(list: &[Item], kind: Kind) -> String {
    and_list(
        &list
            .iter()
            .map(|item| item_words(item, kind))
            .collect::<Vec<_>>(),
    )
}

/// Runs on to the end of its unit, so a larger `*` unit adds nothing: `*`, `*/n`, `A/n`.
fn covers_unit(field: &str) -> bool {
    field.starts_with('*')
        || (!field.contains(',')
            && field
                .split_once('/')
                .is_some_and(|(base, _)| !base.contains('-')))
}

/// Covers every value of its unit: `*` or `*/1`.
fn is_star(field: &str) -> bool {
    matches!(field, "*" | "*/1" | "?")
}

fn describe_fields(fields: &[&str]) -> String {
    let (seconds, rest) = match fields.len() {
        6 => (Some(fields[0]), &fields[1..]),
        _ => (None, fields),
    };
    let [minute, hour, dom, month, dow] = [rest[0], rest[1], rest[2], rest[3], rest[4]];
    let seconds = seconds.filter(|s| *s != "0");
    let hours: Vec<&str> = hour.split(',').collect();
    let clock = |h: &str| {
        let h = value(h, &[], 0).unwrap_or(0);
        let m = value(minute, &[], 0).unwrap_or(0);
        match seconds {
            Some(s) => format!("{h:02}:{m:02}:{:02}", value(s, &[], 0).unwrap_or(0)),
            None => format!("{h:02}:{m:02}"),
        }
    };
    let fixed_clock = is_single_number(minute)
        && seconds.is_none_or(is_single_number)
        && hours.len() <= 6
        && hours.iter().all(|h| is_single_number(h));
    let time = if fixed_clock {
        format!(
            "at {}",
            and_list(&hours.iter().map(|h| clock(h)).collect::<Vec<_>>())
        )
    } else {
        // From the smallest unit written up: "at second 30 of minute 2 of every hour".
        let mut units: Vec<(&str, &Unit)> = Vec::new();
        if let Some(s) = seconds {
            units.push((s, &SECOND));
        }
        units.push((minute, &MINUTE));
        units.push((hour, &HOUR));
        let mut parts = vec![lead(units[0].0, units[0].1)];
        // A unit covered whole (`*`, `*/n`) already spans the larger ones when they are `*`.
        let mut spans = covers_unit(units[0].0);
        for (field, unit) in &units[1..] {
            if is_star(field) {
                if !spans {
                    parts.push(follow(field, unit));
                    spans = true;
                }
            } else {
                parts.push(follow(field, unit));
                spans = covers_unit(field);
            }
        }
        parts.join(" ")
    };
    let days = days_words(dom, dow);
    let daily = !hour.starts_with('*') || fixed_clock;
    let mut out = time;
    match days {
        Some(days) => {
            out.push(' ');
            out.push_str(&days);
        }
        None if daily => out.push_str(" every day"),
        None => {}
    }
    if !is_star(month) {
        let list = items(month);
        out.push_str(" in ");
        match list.as_slice() {
            [
                Item {
                    base: "*",
                    step: Some(step),
                },
            ] => out.push_str(&format!(
                "every {} month",
                ordinal(step.parse().unwrap_or(1))
            )),
            _ => out.push_str(&words_of(&list, Kind::Month)),
        }
    }
    out
}

/// The day rule in words, or `None` for every day.
fn days_words(dom: &str, dow: &str) -> Option<String> {
    let dom_words = (!is_star(dom)).then(|| dom_words(dom));
    let dow_words = (!is_star(dow)).then(|| dow_words(dow));
    let dom_star = dom.starts_with('*') || dom.starts_with('?');
    let dow_star = dow.starts_with('*') || dow.starts_with('?');
    match (dom_words, dow_words) {
        (None, None) => None,
        (Some(d), None) => Some(d),
        (None, Some(w)) => Some(w),
        // Debian cron: both restricted, a day matching either fires.
        (Some(d), Some(w)) if !dom_star && !dow_star => Some(format!("{d}, or {w}")),
        (Some(d), Some(w)) => Some(format!(
            "{d}, if it is also {}",
            w.trim_start_matches("on ")
        )),
    }
}

fn dom_words(field: &str) -> String {
    let list = items(field);
    match list.as_slice() {
        [
            Item {
                base: "*",
                step: Some(step),
            },
        ] => format!(
            "on every {} day of the month",
            ordinal(step.parse().unwrap_or(1))
        ),
        [Item { base, step: None }] if base.eq_ignore_ascii_case("L") => {
            "on the last day of the month".to_string()
        }
        [Item { base, step: None }] if !base.contains('-') => {
            format!("on day {base} of the month")
        }
        _ => {
            let (last, days): (Vec<&Item>, Vec<&Item>) = list
                .iter()
                .partition(|item| item.base.eq_ignore_ascii_case("L"));
            let mut words: Vec<String> = match days.as_slice() {
                [] => Vec::new(),
                [Item { base, step: None }] if !base.contains('-') => vec![format!("day {base}")],
                _ => vec![format!(
                    "days {}",
                    and_list(
                        &days
                            .iter()
                            .map(|i| item_words(i, Kind::Time))
                            .collect::<Vec<_>>()
                    )
                )],
            };
            if !last.is_empty() {
                words.push("the last day".to_string());
            }
            format!("on {} of the month", and_list(&words))
        }
    }
}

fn dow_words(field: &str) -> String {
    let list = items(field);
    if let [
        Item {
            base: "*",
            step: Some(step),
        },
    ] = list.as_slice()
    {
        return format!(
            "on every {} day of the week from Sunday",
            ordinal(step.parse().unwrap_or(1))
        );
    }
    let words: Vec<String> = list
        .iter()
        .map(|item| {
            if let Some(day) = item.base.strip_suffix(['L', 'l']) {
                format!("the last {} of the month", show(day, Kind::Weekday))
            } else if let Some((day, n)) = item.base.split_once('#') {
                let nth = match n {
                    "1" => "first",
                    "2" => "second",
                    "3" => "third",
                    "4" => "fourth",
                    _ => "fifth",
                };
                format!("the {nth} {} of the month", show(day, Kind::Weekday))
            } else {
                item_words(item, Kind::Weekday)
            }
        })
        .collect();
    format!("on {}", or_list(&words))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals() {
        let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 23].map(ordinal).to_vec();
        assert_eq!(
            got,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd"
            ]
        );
    }
}
