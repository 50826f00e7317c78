//! Schedules in words (`chime check`'s MEANING column, `chime next --cron` on stderr):
//! a snapshot of the wording over a table of expressions, and the warnings for
//! six-field texts that look like five-field habits and for `?`.

use chime::cron::describe::{describe, describe_in, warnings};

/// (expression, its description). Plain strings: a changed wording shows as a diff here.
const TABLE: &[(&str, &str)] = &[
    ("30 2 * * *", "at 02:30 every day"),
    ("0 0 * * *", "at 00:00 every day"),
    ("*/5 * * * *", "every 5 minutes"),
    ("* * * * *", "every minute"),
    ("0 * * * *", "at minute 0 of every hour"),
    ("15 */2 * * *", "at minute 15 of every 2nd hour"),
    ("0 9,17 * * *", "at 09:00 and 17:00 every day"),
    (
        "0 9-17 * * MON-FRI",
        "at minute 0 of hours 9 through 17 on Monday through Friday",
    ),
    (
        "*/15 9-17 * * 1-5",
        "every 15 minutes of hours 9 through 17 on Monday through Friday",
    ),
    ("0,30 * * * *", "at minutes 0 and 30 of every hour"),
    (
        "10-50/10 * * * *",
        "every 10 minutes from minute 10 through 50 of every hour",
    ),
    ("0/15 * * * * *", "every 15 seconds"),
    ("10/20 * * * * *", "every 20 seconds from second 10"),
    ("0 5/15 * * * *", "every 15 minutes from minute 5"),
    (
        "0 0 8-18/2 * * *",
        "at minute 0 of every 2nd hour from 8 through 18 every day",
    ),
    (
        "0,30 9-17/4 * * *",
        "at minutes 0 and 30 of every 4th hour from 9 through 17 every day",
    ),
    (
        "5,10-20/5 * * * *",
        "at minutes 5 and 10 through 20, every 5th of every hour",
    ),
    ("* 2 * * *", "every minute of hour 2 every day"),
    ("*/5 * * * * *", "every 5 seconds"),
    ("* * * * * *", "every second"),
    ("30 2 * * * *", "at second 30 of minute 2 of every hour"),
    ("0 30 2 * * *", "at 02:30 every day"),
    ("15 30 2 * * *", "at 02:30:15 every day"),
    ("0 */5 * * * *", "every 5 minutes"),
    ("0 0 1 * *", "at 00:00 on day 1 of the month"),
    ("0 0 1,15 * *", "at 00:00 on days 1 and 15 of the month"),
    ("0 0 L * *", "at 00:00 on the last day of the month"),
    (
        "0 0 L,15 * *",
        "at 00:00 on day 15 and the last day of the month",
    ),
    (
        "0 0 1,2,L * *",
        "at 00:00 on days 1 and 2 and the last day of the month",
    ),
    ("0 22 * * 5L", "at 22:00 on the last Friday of the month"),
    ("0 8 * * 1#2", "at 08:00 on the second Monday of the month"),
    ("0 0 * * 0", "at 00:00 on Sunday"),
    ("0 0 * * 7", "at 00:00 on Sunday"),
    (
        "0 0 * * sun,WED,5",
        "at 00:00 on Sunday, Wednesday or Friday",
    ),
    (
        "0 12 * JAN-MAR *",
        "at 12:00 every day in January through March",
    ),
    (
        "0 0 1 */3 *",
        "at 00:00 on day 1 of the month in every 3rd month",
    ),
    (
        "0 0 13 * 5",
        "at 00:00 on day 13 of the month, or on Friday",
    ),
    (
        "0 0 */2 * 5",
        "at 00:00 on every 2nd day of the month, if it is also Friday",
    ),
    ("0 0 ? * MON", "at 00:00 on Monday"),
    ("0 0 31 2 *", "at 00:00 on day 31 of the month in February"),
    ("@daily", "at 00:00 every day"),
    ("@midnight", "at 00:00 every day"),
    ("@hourly", "at minute 0 of every hour"),
    ("@weekly", "at 00:00 on Sunday"),
    ("@monthly", "at 00:00 on day 1 of the month"),
    ("@yearly", "at 00:00 on day 1 of the month in January"),
    ("@annually", "at 00:00 on day 1 of the month in January"),
    ("@every 5m", "every 5 minutes (epoch-aligned)"),
    ("@every 1h", "every hour (epoch-aligned)"),
    ("@every 1h30m", "every 1 hour 30 minutes (epoch-aligned)"),
    ("@reboot", "once, when the service starts"),
];

#[test]
fn wording_of_a_table_of_expressions() {
    let mut wrong = Vec::new();
    for (text, expected) in TABLE {
        let got = describe(text);
        if got != *expected {
            wrong.push(format!(
                "{text:?}\n  expected: {expected}\n  got:      {got}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_zone_is_named_for_calendar_schedules_only() {
    assert_eq!(
        describe_in("30 2 * * *", "Europe/Berlin"),
        "at 02:30 every day (Europe/Berlin)"
    );
    assert_eq!(
        describe_in("@every 5s", "Europe/Berlin"),
        "every 5 seconds (epoch-aligned)"
    );
}

#[test]
fn six_fields_that_look_like_five_are_warned_about() {
    let w = warnings("30 2 * * * *");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("fires at second 30 of minute 2 of every hour")
            && w[0].contains("(at 02:30 every day)")
            && w[0].contains("drop the last `*`: \"30 2 * * *\""),
        "{}",
        w[0]
    );
    let w = warnings("*/5 * * * * *");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("fires every 5 seconds")
            && w[0].contains("(every 5 minutes)")
            && w[0].contains("write the first field as `0/5`"),
        "{}",
        w[0]
    );
    // What a six-field expression is for: no warning.
    for fine in [
        "10/20 * * * * *",
        "0 30 2 * * *",
        "0/10 * * * * *",
        "0 */5 * * * *",
        "30 2 * * *",
        "@daily",
    ] {
        assert!(warnings(fine).is_empty(), "{fine}: {:?}", warnings(fine));
    }
}

#[test]
fn question_mark_is_warned_about() {
    let w = warnings("0 0 ? * MON");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("`?` is read as `*`") && w[0].contains("write `*`"),
        "{}",
        w[0]
    );
}
