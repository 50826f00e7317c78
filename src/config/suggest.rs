//! "Did you mean …?" for misspelt keys, time zones and enum values.

/// Edit distance (optimal string alignment: a swap of two neighbours costs one),
/// ignoring ASCII case.
pub(super) fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    // Three rows suffice: the one before the previous is needed for swaps.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a likely typo:
/// at most `max` edits, and fewer edits than half the word's length.
pub(super) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    max: usize,
) -> Option<&'a str> {
    let limit = max.min(word.chars().count().div_ceil(2).saturating_sub(1).max(1));
    candidates
        .into_iter()
        .map(|candidate| (distance(word, candidate), candidate))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("schedule", "schedule"), 0);
        assert_eq!(distance("shedule", "schedule"), 1);
        assert_eq!(distance("Schedule", "schedule"), 0);
        assert_eq!(distance("evn", "env"), 1);
        assert_eq!(distance("timout", "timeout"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn closest_only_when_plausible() {
        let keys = ["schedule", "command", "env", "enabled", "timeout"];
        assert_eq!(closest("shedule", keys, 2), Some("schedule"));
        assert_eq!(closest("comand", keys, 2), Some("command"));
        assert_eq!(closest("evn", keys, 2), Some("env"));
        assert_eq!(closest("TIMEOUT", keys, 2), Some("timeout"));
        assert_eq!(closest("foo", keys, 2), None);
        assert_eq!(closest("x", keys, 2), None);
        assert_eq!(
            closest("Europe/Berln", ["Europe/Berlin", "Europe/Bern"], 3),
            Some("Europe/Berlin")
        );
    }
}
