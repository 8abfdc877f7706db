//! Time as the server sees it: a millisecond timestamp and the clock that produces it.
//!
//! The ledger and the alert rules never read the time themselves; they take `now` as an
//! argument. The server asks a [`Clock`] for it, so tests inject a [`ManualClock`] and run a
//! three-hour show in milliseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Milliseconds since the Unix epoch, UTC.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis)
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The instant `duration` later, saturating at the end of time.
    pub fn saturating_add(self, duration: Duration) -> Self {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// The instant `duration` earlier, saturating at the start of time.
    pub fn saturating_sub(self, duration: Duration) -> Self {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_sub(millis))
    }

    /// How long after `earlier` this instant is; zero when it is not later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The machine's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that runs `factor` times faster than the machine's from the moment it is made:
/// `--demo` shows three hours in five minutes with it.
#[derive(Clone, Copy, Debug)]
pub struct ScaledClock {
    origin: Timestamp,
    started: tokio::time::Instant,
    factor: u32,
}

impl ScaledClock {
    pub fn new(factor: u32) -> Self {
        ScaledClock {
            origin: SystemClock.now(),
            started: tokio::time::Instant::now(),
            factor: factor.max(1),
        }
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> Timestamp {
        let elapsed = self.started.elapsed() * self.factor;
        self.origin.saturating_add(elapsed)
    }
}

/// A clock that only moves when told to: tests and simulations share it with the server.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    /// Shared so that every clone, including the one the server holds, sees each advance.
    millis: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            millis: Arc::new(AtomicU64::new(start.0)),
        }
    }

    pub fn advance(&self, duration: Duration) {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        self.millis.fetch_add(millis, Ordering::SeqCst);
    }

    pub fn set(&self, now: Timestamp) {
        self.millis.store(now.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.millis.load(Ordering::SeqCst))
    }
}

/// A clock that never reads earlier than the newest time it was shown: a cluster node's,
/// shown the time of each fact of the log it applies, so that a node whose wall clock is
/// behind the last leader's does not take time back when it leads (locks expiring late,
/// windows stretching, alert time standing still). Ahead, it keeps its own.
pub struct FloorClock {
    wall: Arc<dyn Clock>,
    floor: AtomicU64,
}

impl FloorClock {
    pub fn new(wall: Arc<dyn Clock>) -> Self {
        FloorClock {
            wall,
            floor: AtomicU64::new(0),
        }
    }

    /// The log holds a fact of time `at`.
    pub fn saw(&self, at: Timestamp) {
        self.floor.fetch_max(at.0, Ordering::AcqRel);
    }

    /// How far the newest time shown is ahead of the wall clock; zero when it is not.
    pub fn wall_behind(&self) -> Duration {
        Timestamp(self.floor.load(Ordering::Acquire)).saturating_since(self.wall.now())
    }
}

impl Clock for FloorClock {
    fn now(&self) -> Timestamp {
        self.wall
            .now()
            .max(Timestamp(self.floor.load(Ordering::Acquire)))
    }
}

/// A time as the API writes it: RFC 3339 in UTC with exactly three decimals
/// (`2026-11-25T20:00:00.000Z`). Formatted by hand into a stack buffer, without allocating:
/// every order answer carries two or three of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rfc3339(pub Timestamp);

impl Rfc3339 {
    /// The formatted bytes and how many of them are used (24 until the year 10000).
    fn format(self) -> ([u8; 32], usize) {
        let millis = self.0.as_millis();
        let days = millis / 86_400_000;
        let millis_of_day = millis % 86_400_000;
        let (year, month, day) = civil_from_days(days);
        let mut buffer = [0u8; 32];
        let mut length = 0;
        let mut push = |value: u64, digits: u32| {
            for index in (0..digits).rev() {
                buffer[length] = b'0' + ((value / 10u64.pow(index)) % 10) as u8;
                length += 1;
            }
        };
        let year_digits = if year < 10_000 { 4 } else { year.ilog10() + 1 };
        push(year, year_digits);
        let mut separated = |separator: u8, value: u64, digits: u32, buffer: &mut [u8; 32]| {
            buffer[length] = separator;
            length += 1;
            for index in (0..digits).rev() {
                buffer[length] = b'0' + ((value / 10u64.pow(index)) % 10) as u8;
                length += 1;
            }
        };
        separated(b'-', month, 2, &mut buffer);
        separated(b'-', day, 2, &mut buffer);
        separated(b'T', millis_of_day / 3_600_000, 2, &mut buffer);
        separated(b':', millis_of_day / 60_000 % 60, 2, &mut buffer);
        separated(b':', millis_of_day / 1000 % 60, 2, &mut buffer);
        separated(b'.', millis_of_day % 1000, 3, &mut buffer);
        buffer[length] = b'Z';
        (buffer, length + 1)
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (buffer, length) = self.format();
        f.write_str(std::str::from_utf8(&buffer[..length]).map_err(|_| std::fmt::Error)?)
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (buffer, length) = self.format();
        let text = std::str::from_utf8(&buffer[..length])
            .map_err(|_| serde::ser::Error::custom("unformattable time"))?;
        serializer.serialize_str(text)
    }
}

pub fn rfc3339(timestamp: Timestamp) -> Rfc3339 {
    Rfc3339(timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_clock_never_reads_before_the_newest_time_it_was_shown() {
        // Goal: a node whose wall clock is 90 s behind the log's newest fact reads the
        // fact's time until its own clock passes it, then its own; shown an older time, it
        // keeps the newer.
        let wall = ManualClock::new(Timestamp::from_millis(1_000_000));
        let clock = FloorClock::new(Arc::new(wall.clone()));
        assert_eq!(clock.now(), Timestamp::from_millis(1_000_000));
        clock.saw(Timestamp::from_millis(1_090_000));
        clock.saw(Timestamp::from_millis(1_050_000));
        assert_eq!(clock.now(), Timestamp::from_millis(1_090_000));
        assert_eq!(clock.wall_behind(), Duration::from_secs(90));
        wall.advance(Duration::from_secs(60));
        assert_eq!(clock.now(), Timestamp::from_millis(1_090_000));
        wall.advance(Duration::from_secs(40));
        assert_eq!(clock.now(), Timestamp::from_millis(1_100_000));
        assert_eq!(clock.wall_behind(), Duration::ZERO);
    }
}
