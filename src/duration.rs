//! Human durations as schedule files write them: `500ms`, `90s`, `5m`, `1h30m`, `2d`.
//!
//! One parser serves `timeout`, `retry.delay`, `@every` and the command-line flags, so
//! every place accepts exactly the same spellings and reports the same errors.

use std::fmt;
use std::time::Duration;

/// Why a duration string was rejected. The message says how to write it instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(String);

const UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

const HOW: &str = "write a number with a unit, e.g. 500ms, 90s, 5m, 1h30m or 2d";

/// Parses a duration made of one or more `<number><unit>` parts, units in decreasing
/// order and each at most once (`1h30m`, not `30m1h`).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError(format!("empty duration: {HOW}")));
    }
    let mut total_ms: u64 = 0;
    let mut rest = s;
    let mut last_unit_index: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(DurationError(format!(
                "`{text}` is not a duration: expected a number at `{rest}`; {HOW}"
            )));
        }
        let (number, after) = rest.split_at(digits);
        let letters = after
            .bytes()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        let (unit, after) = after.split_at(letters);
        if unit.is_empty() {
            return Err(DurationError(format!(
                "`{text}` has no unit after `{number}`; {HOW}"
            )));
        }
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(DurationError(format!(
                "`{text}` has an unknown unit `{unit}`; units are ms, s, m, h and d"
            )));
        };
        if let Some(last) = last_unit_index
            && index >= last
        {
            return Err(DurationError(format!(
                "`{text}`: units must go from largest to smallest, each once (e.g. 1h30m)"
            )));
        }
        last_unit_index = Some(index);
        let value: u64 = number
            .parse()
            .map_err(|_| DurationError(format!("`{text}`: the number `{number}` is too large")))?;
        total_ms = value
            .checked_mul(UNITS[index].1)
            .and_then(|part| total_ms.checked_add(part))
            .ok_or_else(|| DurationError(format!("`{text}` is too long a duration")))?;
        rest = after;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Displays a duration in the same syntax [`parse_duration`] reads, largest units first.
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return f.write_str("0s");
        }
        for (name, size) in UNITS.iter().rev() {
            if ms >= *size {
                write!(f, "{}{}", ms / size, name)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_spelling() {
        let cases = [
            ("500ms", 500),
            ("90s", 90_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("2d", 172_800_000),
            ("1d2h3m4s5ms", 93_784_005),
            ("0s", 0),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_bad_spellings_with_a_hint() {
        for bad in ["", "5", "m", "5x", "30m1h", "1h1h", "-5s", "1.5h", "5 m"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(!err.to_string().is_empty(), "{bad}");
        }
        assert!(
            parse_duration("5")
                .unwrap_err()
                .to_string()
                .contains("no unit")
        );
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn display_round_trips() {
        for text in ["500ms", "90s", "1h30m", "2d", "1d2h3m4s5ms", "0s"] {
            let parsed = parse_duration(text).unwrap();
            let shown = HumanDuration(parsed).to_string();
            assert_eq!(parse_duration(&shown).unwrap(), parsed);
        }
        assert_eq!(HumanDuration(Duration::from_secs(90)).to_string(), "1m30s");
    }
}
