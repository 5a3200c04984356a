//! Delivering a batch to a destination that refuses bad data per request, so
//! that only the events it really cannot take are given up on.
//!
//! [`deliver`] posts the whole batch; when the destination answers that the data
//! itself is bad (a status in [`Refusals::bad_data`], such as 400), it splits the
//! range in halves and posts each half again, down to single events. Events
//! still refused alone are returned in a partial [`SinkError`], which the driver
//! sends to the dead-letter file while counting the rest as delivered. Any other
//! failure (network errors, 5xx, 429, ...) ends delivery with that error, for the
//! driver to retry the whole batch. The sink says how to post a range of its
//! batch by implementing [`PostRange`].
//!
//! This is only for destinations where posting an event again is harmless
//! (InfluxDB rewrites a point identically, Loki drops exact duplicates): parts of
//! a refused request may already have been stored. It does not build request
//! bodies or send anything itself; the sink's [`PostRange::post`] does.

use std::ops::Range;

use super::SinkError;

/// What a destination's refusals look like, and how to name them.
#[derive(Debug, Clone, Copy)]
pub struct Refusals {
    /// The destination, as messages name it, e.g. `"InfluxDB"`.
    pub destination: &'static str,
    /// What an event becomes there, plural, e.g. `"points"`.
    pub items: &'static str,
    /// HTTP statuses that mean "this data can never be written", as opposed to
    /// "not now".
    pub bad_data: &'static [u16],
}

impl Refusals {
    /// Whether `err` is the destination refusing the data itself.
    pub fn is_bad_data(&self, err: &SinkError) -> bool {
        err.status
            .is_some_and(|status| self.bad_data.contains(&status))
    }
}

/// How a sink sends part of a batch it has prepared.
pub trait PostRange {
    /// Sends events `range` of the batch (indexes into it) in one request.
    fn post(&mut self, range: Range<usize>) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Posts events `0..len` of a batch with `batch`. On a bad-data answer the
/// range is split in halves, the first half posted first, down to single
/// events.
///
/// # Errors
///
/// The first error that is not bad data, as `post` returned it; else, when
/// some events were refused alone, a partial error listing them (index, the
/// destination's answer) under a message such as
/// `InfluxDB refused 1 of 4 points: HTTP 400: ...`.
pub async fn deliver(
    refusals: &Refusals,
    len: usize,
    batch: &mut impl PostRange,
) -> Result<(), SinkError> {
    let mut rejected: Vec<(usize, String)> = Vec::new();
    let whole = 0..len;
    let mut pending = vec![whole];
    while let Some(range) = pending.pop() {
        match batch.post(range.clone()).await {
            Ok(()) => {}
            Err(err) if refusals.is_bad_data(&err) && range.len() > 1 => {
                let middle = range.start + range.len() / 2;
                pending.push(middle..range.end);
                pending.push(range.start..middle);
            }
            Err(err) if refusals.is_bad_data(&err) && range.len() == 1 => {
                rejected.push((range.start, err.message));
            }
            // An empty range has nothing to isolate.
            Err(err) => return Err(err),
        }
    }
    match rejected.first() {
        None => Ok(()),
        Some((_, first)) => Err(SinkError::partial(
            format!(
                "{} refused {} of {len} {}: {first}",
                refusals.destination,
                rejected.len(),
                refusals.items
            ),
            rejected,
        )),
    }
}

#[cfg(test)]
// The tests compare lists of the ranges posted, some of one range.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    const REFUSALS: Refusals = Refusals {
        destination: "Store",
        items: "rows",
        bad_data: &[400, 413],
    };

    fn status(code: u16, message: &str) -> SinkError {
        SinkError {
            status: Some(code),
            ..SinkError::permanent(message)
        }
    }

    /// A destination that answers `answer` to the requests `refuses` picks by
    /// their range, and records the ranges posted.
    struct Stub<R, A> {
        refuses: R,
        answer: A,
        posted: Vec<Range<usize>>,
    }

    impl<R, A> PostRange for Stub<R, A>
    where
        R: Fn(&Range<usize>) -> bool + Send,
        A: Fn() -> SinkError + Send,
    {
        async fn post(&mut self, range: Range<usize>) -> Result<(), SinkError> {
            self.posted.push(range.clone());
            if (self.refuses)(&range) {
                Err((self.answer)())
            } else {
                Ok(())
            }
        }
    }

    /// Delivers `len` events to a [`Stub`]; returns the result and the ranges posted.
    async fn run(
        len: usize,
        refuses: impl Fn(&Range<usize>) -> bool + Send,
        answer: impl Fn() -> SinkError + Send,
    ) -> (Result<(), SinkError>, Vec<Range<usize>>) {
        let mut stub = Stub {
            refuses,
            answer,
            posted: Vec::new(),
        };
        let result = deliver(&REFUSALS, len, &mut stub).await;
        (result, stub.posted)
    }

    /// Refuses the requests that hold any of `bad`.
    fn holding(bad: &[usize]) -> impl Fn(&Range<usize>) -> bool + Send + use<'_> {
        move |range| bad.iter().any(|index| range.contains(index))
    }

    #[tokio::test]
    async fn an_accepted_batch_is_posted_once() {
        let (result, posted) = run(5, holding(&[]), || status(400, "no")).await;
        assert!(result.is_ok());
        assert_eq!(posted, [0..5]);
    }

    #[tokio::test]
    async fn a_refused_batch_is_halved_until_the_bad_events_are_alone() {
        let (result, posted) = run(4, holding(&[1]), || status(400, "HTTP 400: bad line")).await;
        assert_eq!(posted, [0..4, 0..2, 0..1, 1..2, 2..4]);
        let err = result.unwrap_err();
        assert!(!err.retryable);
        assert_eq!(err.message, "Store refused 1 of 4 rows: HTTP 400: bad line");
        assert_eq!(err.rejected, [(1, "HTTP 400: bad line".to_string())]);
    }

    #[tokio::test]
    async fn every_refused_event_is_listed_in_batch_order() {
        let (result, posted) = run(3, holding(&[0, 1, 2]), || status(413, "too big")).await;
        assert_eq!(posted, [0..3, 0..1, 1..3, 1..2, 2..3]);
        let err = result.unwrap_err();
        assert_eq!(err.message, "Store refused 3 of 3 rows: too big");
        let indexes: Vec<usize> = err.rejected.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, [0, 1, 2]);
    }

    #[tokio::test]
    async fn other_failures_end_delivery_as_they_are() {
        let (result, posted) = run(4, holding(&[3]), || SinkError::retryable("HTTP 503")).await;
        assert_eq!(posted, [0..4]);
        let err = result.unwrap_err();
        assert!(err.retryable && err.rejected.is_empty());
        assert_eq!(err.message, "HTTP 503");

        // A status outside `bad_data` is not split either.
        let (result, posted) = run(4, holding(&[3]), || status(422, "unprocessable")).await;
        assert_eq!(posted, [0..4]);
        assert_eq!(result.unwrap_err().message, "unprocessable");
    }

    #[tokio::test]
    async fn an_empty_batch_refused_as_bad_data_is_not_split() {
        let (result, posted) = run(0, holding(&[]), || status(400, "empty")).await;
        assert!(result.is_ok());
        assert_eq!(posted, [0..0]);
        let (result, posted) = run(0, |_| true, || status(400, "empty")).await;
        assert_eq!(posted, [0..0]);
        assert_eq!(result.unwrap_err().message, "empty");
    }
}
