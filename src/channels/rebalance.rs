//! The live rebalancer of exclusive allocations: while a show that lists a SKU is live, it
//! moves unsold units from a platform that will not sell its allotment by the show's end to
//! one that will run out before it, judged by each platform's pace over the last minutes.
//!
//! The rule (`decide`) is pure; `Pace` keeps each platform's recent takes from the durable
//! facts (in the book, on every node); only the delivering node moves, as journaled facts.

/// Takes are counted in buckets of this many milliseconds…
const BUCKET_MS: u64 = 10_000;
/// …over this many buckets: a platform's pace is its takes of the last five minutes.
const BUCKETS: usize = 30;
/// No move in a show's first five minutes: too little to judge a pace by.
pub(super) const SHOW_WARM_UP_MS: u64 = 5 * 60_000;

/// One platform's recent takes of one SKU, by time bucket.
#[derive(Clone, Debug, Default)]
pub(super) struct Pace {
    /// The bucket number (time / `BUCKET_MS`) of `buckets[0]`'s slot's latest use.
    newest: u64,
    buckets: [u64; BUCKETS],
}

impl Pace {
    pub(super) fn add(&mut self, at_ms: u64, units: u64) {
        let bucket = at_ms / BUCKET_MS;
        self.advance(bucket);
        if bucket + (BUCKETS as u64) <= self.newest {
            return;
        }
        let slot = (bucket % BUCKETS as u64) as usize;
        self.buckets[slot] = self.buckets[slot].saturating_add(units);
    }

    /// Clears the slots of the buckets between the newest seen and `bucket`.
    fn advance(&mut self, bucket: u64) {
        if bucket <= self.newest {
            return;
        }
        let stale = (bucket - self.newest).min(BUCKETS as u64);
        for step in 1..=stale {
            self.buckets[((self.newest + step) % BUCKETS as u64) as usize] = 0;
        }
        self.newest = bucket;
    }

    /// Units per millisecond over the last `span_ms` (at most five minutes) before `now_ms`.
    pub(super) fn per_ms(&self, now_ms: u64, span_ms: u64) -> f64 {
        let span_ms = span_ms.clamp(BUCKET_MS, BUCKET_MS * BUCKETS as u64);
        let now_bucket = now_ms / BUCKET_MS;
        let first = (now_ms.saturating_sub(span_ms)) / BUCKET_MS;
        let units: u64 = (first..=now_bucket)
            .filter(|bucket| bucket + (BUCKETS as u64) > self.newest && *bucket <= self.newest)
            .map(|bucket| self.buckets[(bucket % BUCKETS as u64) as usize])
            .sum();
        units as f64 / span_ms as f64
    }
}

/// What the rule knows of one platform with a share.
#[derive(Clone, Debug, PartialEq)]
pub struct Outlook {
    /// Its allotment less what it took.
    pub unsold: u64,
    /// Units per millisecond lately.
    pub per_ms: f64,
}

/// A move the rule asks for: from one outlook's platform to another's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub from: usize,
    pub to: usize,
    pub qty: u64,
}

/// From the platform that will have the most left at the show's end (`left_ms` from now) at
/// its pace, to the one that will run out the most before it: half of what the first will
/// not sell, the second will lack and the floor allows (paces move; the next round moves
/// more if they hold).
pub fn decide(outlooks: &[Outlook], left_ms: u64, floor: u64) -> Option<Decision> {
    let leftover = |outlook: &Outlook| outlook.unsold as f64 - outlook.per_ms * left_ms as f64;
    let indexed = || outlooks.iter().enumerate();
    let (from, slow) = indexed().max_by(|a, b| leftover(a.1).total_cmp(&leftover(b.1)))?;
    let (to, fast) = indexed().min_by(|a, b| leftover(a.1).total_cmp(&leftover(b.1)))?;
    let spare = leftover(slow).floor();
    let short = (-leftover(fast)).ceil();
    if from == to || spare < 1.0 || short < 1.0 {
        return None;
    }
    let movable = (spare.min(short) as u64).min(slow.unsold.saturating_sub(floor));
    let qty = movable.div_ceil(2);
    (0 < qty).then_some(Decision { from, to, qty })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_go_from_the_platform_that_will_not_sell_them_to_the_one_that_runs_out() {
        // 10 minutes left: A sells 1/min with 50 unsold (40 spare), B 10/min with 30 (70
        // short): 40 could move, less A's floor of 15 → 35, half of it this round → 18.
        let minute = 60_000.0;
        let outlooks = [
            Outlook {
                unsold: 50,
                per_ms: 1.0 / minute,
            },
            Outlook {
                unsold: 30,
                per_ms: 10.0 / minute,
            },
        ];
        let decided = decide(&outlooks, 600_000, 15);
        assert_eq!(
            decided,
            Some(Decision {
                from: 0,
                to: 1,
                qty: 18
            })
        );
        // Both on pace to sell what they hold: nothing moves.
        let even = [
            Outlook {
                unsold: 10,
                per_ms: 1.0 / minute,
            },
            Outlook {
                unsold: 100,
                per_ms: 10.0 / minute,
            },
        ];
        assert_eq!(decide(&even, 600_000, 0), None);
    }

    #[test]
    fn a_pace_counts_the_last_minutes_only() {
        let mut pace = Pace::default();
        pace.add(0, 100);
        pace.add(400_000, 30);
        pace.add(410_000, 30);
        // Over the last five minutes before 420 s: the 60 taken at 400-410 s, not the 100.
        let per_minute = pace.per_ms(420_000, 300_000) * 60_000.0;
        assert!((per_minute - 12.0).abs() < 0.01, "{per_minute}");
    }
}
