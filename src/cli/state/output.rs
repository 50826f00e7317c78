//! Writing `chime status` quickly with 100,000 jobs (issue 14: ≤ 1 s): instants
//! formatted without allocating, and the lines rendered on every core in chunks that
//! are written out in order.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Serialize, Serializer};

/// An instant in UTC as RFC 3339 (`2026-12-01T18:07:12Z`, or with `.531` milliseconds),
/// exactly as `to_rfc3339_opts(…, true)` writes it, without a heap allocation for the
/// years 0–9999. Others (and leap seconds) are chrono's own text.
pub(super) enum Stamp {
    Short { bytes: [u8; 24], len: u8 },
    Other(String),
}

impl Stamp {
    /// Whole seconds.
    pub(super) fn secs(at: DateTime<Utc>) -> Stamp {
        Stamp::new(at, false)
    }

    /// With milliseconds.
    pub(super) fn millis(at: DateTime<Utc>) -> Stamp {
        Stamp::new(at, true)
    }

    fn new(at: DateTime<Utc>, millis: bool) -> Stamp {
        let nanos = at.nanosecond();
        if !(0..=9999).contains(&at.year()) || nanos >= 1_000_000_000 {
            let format = if millis {
                SecondsFormat::Millis
            } else {
                SecondsFormat::Secs
            };
            return Stamp::Other(at.to_rfc3339_opts(format, true));
        }
        let mut bytes = [0u8; 24];
        let mut put = |at: usize, value: u32, digits: usize| {
            let mut value = value;
            for i in (0..digits).rev() {
                bytes[at + i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, at.year() as u32, 4);
        put(5, at.month(), 2);
        put(8, at.day(), 2);
        put(11, at.hour(), 2);
        put(14, at.minute(), 2);
        put(17, at.second(), 2);
        let len = if millis {
            put(20, nanos / 1_000_000, 3);
            bytes[19] = b'.';
            24
        } else {
            20
        };
        for (at, byte) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
            bytes[at] = byte;
        }
        bytes[len - 1] = b'Z';
        Stamp::Short {
            bytes,
            len: len as u8,
        }
    }

    pub(super) fn as_str(&self) -> &str {
        match self {
            // Only ASCII digits and separators were written.
            Stamp::Short { bytes, len } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Stamp::Other(text) => text,
        }
    }
}

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Items per chunk rendered by one thread.
const CHUNK: usize = 2048;

/// Renders every item with `render` and writes the text to `out` in the items' order.
/// Chunks of items are rendered on as many threads as there are CPUs (this thread
/// writes); with one chunk or one CPU, or when no thread can be started, all of it
/// happens here.
pub(super) fn write_in_order<T: Sync>(
    out: &mut impl Write,
    items: &[T],
    render: impl Fn(&mut Vec<u8>, &T) + Sync,
) -> std::io::Result<()> {
    let chunks = items.len().div_ceil(CHUNK);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(chunks));
    let render_chunk = |index: usize| {
        let part = &items[index * CHUNK..((index + 1) * CHUNK).min(items.len())];
        // About what a JSON line of a job with a stored run takes.
        let mut text = Vec::with_capacity(part.len() * 640);
        for item in part {
            render(&mut text, item);
        }
        text
    };
    if threads <= 1 {
        for index in 0..chunks {
            out.write_all(&render_chunk(index))?;
        }
        return Ok(());
    }
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let (done, rendered) = mpsc::channel::<(usize, Vec<u8>)>();
        let mut started = 0;
        for _ in 0..threads {
            let done = done.clone();
            let work = || {
                let done = done;
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= chunks || done.send((index, render_chunk(index))).is_err() {
                        return;
                    }
                }
            };
            if std::thread::Builder::new()
                .spawn_scoped(scope, work)
                .is_ok()
            {
                started += 1;
            }
        }
        drop(done);
        // Written in order as they come; a chunk that comes early waits for those before.
        let mut early = std::collections::BTreeMap::new();
        let mut wanted = 0;
        for (index, text) in rendered.iter() {
            early.insert(index, text);
            while let Some(text) = early.remove(&wanted) {
                // On an error (`chime status | head`: a closed pipe) the receiver is
                // dropped on return, and the threads stop at their next chunk.
                out.write_all(&text)?;
                wanted += 1;
            }
        }
        // No thread started: the chunks nobody took are rendered here.
        if started == 0 {
            while wanted < chunks {
                out.write_all(&render_chunk(wanted))?;
                wanted += 1;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn stamps_are_chronos_rfc3339(ms in -70_000_000_000_000i64..300_000_000_000_000i64) {
            let at = Utc.timestamp_millis_opt(ms).single().expect("in range");
            let (secs, millis) = (Stamp::secs(at), Stamp::millis(at));
            prop_assert_eq!(secs.as_str(), at.to_rfc3339_opts(SecondsFormat::Secs, true));
            prop_assert_eq!(millis.as_str(), at.to_rfc3339_opts(SecondsFormat::Millis, true));
        }
    }

    #[test]
    fn stamps_at_the_edges() {
        for at in [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0)
                .single()
                .expect("valid"),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
                .single()
                .expect("valid"),
            Utc.timestamp_opt(1_800_000_000, 999_999_999)
                .single()
                .expect("valid"),
        ] {
            assert_eq!(
                Stamp::secs(at).as_str(),
                at.to_rfc3339_opts(SecondsFormat::Secs, true)
            );
            assert_eq!(
                Stamp::millis(at).as_str(),
                at.to_rfc3339_opts(SecondsFormat::Millis, true)
            );
        }
    }

    #[test]
    fn chunks_are_written_in_order() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 7 * CHUNK + 13] {
            let items: Vec<usize> = (0..len).collect();
            let mut out = Vec::new();
            write_in_order(&mut out, &items, |text, n| {
                text.extend_from_slice(format!("{n}\n").as_bytes());
            })
            .expect("written");
            let want: String = items.iter().map(|n| format!("{n}\n")).collect();
            assert_eq!(String::from_utf8(out).expect("UTF-8"), want, "{len} items");
        }
    }

    /// A pipe closed by its reader (`chime status | head`).
    struct Closed {
        left: usize,
    }

    impl Write for Closed {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.left == 0 {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            let n = bytes.len().min(self.left);
            self.left -= n;
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_output_ends_it_with_its_error() {
        let items: Vec<usize> = (0..20 * CHUNK).collect();
        let err = write_in_order(&mut Closed { left: 100 }, &items, |text, n| {
            text.extend_from_slice(format!("{n}\n").as_bytes());
        })
        .expect_err("the pipe is closed");
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    }
}
