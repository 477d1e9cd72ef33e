//! Recording believed-leadership intervals from electors' events, and checking them.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::elector::{Event, StepDown};
use crate::name::CandidateId;
use crate::term::Term;

/// One candidate's believed leadership: from `Elected` to `SteppedDown` (monotonic clock).
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// Who believed it led.
    pub candidate: CandidateId,
    /// The term it led in.
    pub term: Term,
    /// When it began to believe.
    pub start: Instant,
    /// When it stopped believing; `None` while it still leads.
    pub end: Option<Instant>,
    /// Why it stopped.
    pub reason: Option<StepDown>,
}

/// Collects [`Interval`]s from the event streams of many electors and checks the invariants
/// across them. Clones share the record.
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Record>>,
    changes: watch::Sender<u64>,
    /// Times in reports are shown relative to this instant.
    origin: Instant,
}

#[derive(Debug, Default)]
struct Record {
    intervals: Vec<Interval>,
    problems: Vec<String>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty record.
    pub fn new() -> Self {
        Recorder {
            inner: Arc::default(),
            changes: watch::channel(0).0,
            origin: Instant::now(),
        }
    }

    /// Records `candidate`'s events until its stream ends. Subscribe before the elector starts
    /// ([`ElectorBuilder::events`](crate::ElectorBuilder::events)) so no event is missed.
    pub fn track(&self, candidate: CandidateId, mut events: broadcast::Receiver<Event>) {
        let recorder = self.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => recorder.on_event(&candidate, event),
                    Err(broadcast::error::RecvError::Closed) => return,
                    Err(broadcast::error::RecvError::Lagged(n)) => recorder.problem(format!(
                        "{candidate}: {n} events were lost; the record is incomplete"
                    )),
                }
            }
        });
    }

    fn on_event(&self, candidate: &CandidateId, event: Event) {
        let mut record = self.lock();
        match event {
            Event::Elected { term, at } => {
                if record
                    .intervals
                    .iter()
                    .any(|i| &i.candidate == candidate && i.end.is_none())
                {
                    record.problems.push(format!(
                        "{candidate} elected in term {term} while already leading"
                    ));
                }
                record.intervals.push(Interval {
                    candidate: candidate.clone(),
                    term,
                    start: at,
                    end: None,
                    reason: None,
                });
            }
            Event::SteppedDown { term, at, reason } => {
                match record
                    .intervals
                    .iter_mut()
                    .find(|i| &i.candidate == candidate && i.end.is_none())
                {
                    Some(open) if open.term == term => {
                        open.end = Some(at);
                        open.reason = Some(reason);
                    }
                    _ => record.problems.push(format!(
                        "{candidate} stepped down from term {term} it was not leading in"
                    )),
                }
            }
            _ => {}
        }
        drop(record);
        self.changes.send_modify(|n| *n += 1);
    }

    fn problem(&self, message: String) {
        self.lock().problems.push(message);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every interval so far, in the order they began.
    pub fn intervals(&self) -> Vec<Interval> {
        let mut all = self.lock().intervals.clone();
        all.sort_by_key(|i| i.start);
        all
    }

    /// The candidate leading now, by the record.
    pub fn current(&self) -> Option<Interval> {
        self.lock()
            .intervals
            .iter()
            .find(|i| i.end.is_none())
            .cloned()
    }

    /// How many intervals have begun so far: a mark for [`elected_since`](Self::elected_since).
    pub fn mark(&self) -> usize {
        self.lock().intervals.len()
    }

    /// Waits up to `within` for an interval recorded after `mark` (of a candidate other than
    /// `except`, if given) and returns it. Marks rather than instants, because under a paused
    /// clock many events share one instant.
    pub async fn elected_since(
        &self,
        mark: usize,
        except: Option<&CandidateId>,
        within: Duration,
    ) -> Option<Interval> {
        let mut changes = self.changes.subscribe();
        let deadline = Instant::now() + within;
        loop {
            let found = self
                .lock()
                .intervals
                .iter()
                .skip(mark)
                .find(|i| Some(&i.candidate) != except)
                .cloned();
            if found.is_some() {
                return found;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// `at` as milliseconds since the recorder was made, for reports.
    fn ms(&self, at: Instant) -> String {
        format!(
            "{:.3} ms",
            at.duration_since(self.origin).as_secs_f64() * 1e3
        )
    }

    /// One line per interval, for reports.
    fn describe(&self, intervals: &[Interval]) -> String {
        let mut out = String::new();
        for i in intervals {
            let end = match i.end {
                Some(end) => self.ms(end),
                None => "still leading".into(),
            };
            let _ = writeln!(
                out,
                "  {} term {}: {} .. {} ({:?})",
                i.candidate,
                i.term,
                self.ms(i.start),
                end,
                i.reason
            );
        }
        out
    }

    /// Panics unless the record is complete, no two candidates believed they led at the same
    /// instant, and every leadership's term is above the term of the leadership before it
    /// (a leadership never re-enters a term; an elector takes a new term every time it leads).
    /// Times are reported in milliseconds since the recorder was made.
    pub fn check(&self) {
        let record = self.lock();
        assert!(
            record.problems.is_empty(),
            "inconsistent event streams:\n{}",
            record.problems.join("\n")
        );
        drop(record);
        let intervals = self.intervals();
        let mut report = String::new();
        let mut latest_end: Option<(Instant, usize)> = None;
        for (n, i) in intervals.iter().enumerate() {
            if let Some((end, m)) = latest_end {
                if end > i.start {
                    let _ = writeln!(
                        report,
                        "OVERLAP of {:.3} ms: {} (term {}) believed it led until {} while {} (term {}) led from {}",
                        (end - i.start).as_secs_f64() * 1e3,
                        intervals[m].candidate,
                        intervals[m].term,
                        self.ms(end),
                        i.candidate,
                        i.term,
                        self.ms(i.start)
                    );
                }
            }
            if n > 0 {
                let prev = &intervals[n - 1];
                if i.term == prev.term {
                    let _ = writeln!(
                        report,
                        "TERM REUSED: {} led in term {} from {}, the term {} led in before",
                        i.candidate,
                        i.term,
                        self.ms(i.start),
                        prev.candidate
                    );
                } else if i.term < prev.term {
                    let _ = writeln!(
                        report,
                        "TERM REGRESSION: {} led in term {} from {}, after {} led in term {}",
                        i.candidate,
                        i.term,
                        self.ms(i.start),
                        prev.candidate,
                        prev.term
                    );
                }
            }
            let end = i.end.unwrap_or_else(|| Instant::now().max(i.start));
            if latest_end.is_none_or(|(e, _)| end > e) {
                latest_end = Some((end, n));
            }
        }
        assert!(
            report.is_empty(),
            "leadership invariants broken:\n{report}\nall leaderships (ms since the check began):\n{}",
            self.describe(&intervals)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::CandidateId;

    fn recorded(intervals: &[(&str, u64, u64, u64)]) -> Recorder {
        let recorder = Recorder::new();
        let origin = recorder.origin;
        let ms = |n: u64| origin + Duration::from_millis(n);
        recorder.lock().intervals = intervals
            .iter()
            .map(|&(who, term, start, end)| Interval {
                candidate: CandidateId::new(who).unwrap(),
                term: Term(term),
                start: ms(start),
                end: Some(ms(end)),
                reason: Some(StepDown::Resigned),
            })
            .collect();
        recorder
    }

    fn verdict(recorder: &Recorder) -> String {
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| recorder.check()))
            .expect_err("the check must fail");
        panic.downcast_ref::<String>().cloned().unwrap_or_default()
    }

    /// Issue 14, item 18: equal terms were labelled "TERM REGRESSION" and times were printed
    /// as raw `Instant { tv_sec … }`.
    #[test]
    fn verdicts_name_the_fault_and_show_milliseconds() {
        recorded(&[("a", 1, 0, 10), ("b", 2, 20, 30)]).check();
        let reused = verdict(&recorded(&[("a", 5, 0, 10), ("b", 5, 20, 30)]));
        assert!(reused.contains("TERM REUSED"), "{reused}");
        assert!(!reused.contains("REGRESSION"), "{reused}");
        let back = verdict(&recorded(&[("a", 5, 0, 10), ("b", 4, 20, 30)]));
        assert!(back.contains("TERM REGRESSION"), "{back}");
        let overlap = verdict(&recorded(&[("a", 1, 0, 25), ("b", 2, 20, 30)]));
        assert!(overlap.contains("OVERLAP of 5.000 ms"), "{overlap}");
        assert!(overlap.contains("20.000 ms"), "{overlap}");
        for text in [reused, back, overlap] {
            assert!(!text.contains("tv_sec"), "{text}");
        }
    }
}
