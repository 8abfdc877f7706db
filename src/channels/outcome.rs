//! What came of an attempt to deliver updates: what a platform applied, or why not.

use std::time::Duration;

/// How long one attempt may take.
pub(super) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a platform did with one update it accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Applied {
    /// What the listing was set to: the update's quantity, or less when the platform had
    /// fewer units than the update took off (it was set to 0).
    pub(super) quantity: u64,
    /// The platform's own number after applying, when it said.
    pub(super) reported: Option<u64>,
}

/// Why an attempt did not acknowledge its updates.
#[derive(Debug)]
pub(super) enum Refused {
    /// A rate limit: nothing applied; wait this long before the next request.
    SlowDown(Duration, String),
    /// The platform refused the request, nothing applied.
    Rejected(String),
    /// No answer, or a server error: the platform may have applied the updates.
    InDoubt(String),
}
