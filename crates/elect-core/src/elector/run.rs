//! [`Elector::run`]: work that runs only while this candidate leads (client-go's `RunOrDie`,
//! Curator's `takeLeadership`).

use std::fmt;
use std::future::Future;

use tokio::time::{sleep_until, Instant};
use tracing::{info, warn};

use super::guard::LeaderGuard;
use super::Elector;
use crate::error::Error;

/// What [`Elector::run_with`] does when the work ends by itself (not cancelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AfterWork {
    /// Resign (hand over at once) and return from `run` with the work's outcome.
    Stop,
    /// Resign, so another candidate can lead, and run the work again at this candidate's next
    /// leadership.
    Resign,
    /// Run the work again at once, in the same leadership.
    Repeat,
}

/// The policy of [`Elector::run_with`]: what to do when the work returns `Ok` and when it
/// fails. The default stops on success (the work is done) and resigns on failure (another
/// candidate gets its turn; the work runs again at the next leadership here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunPolicy {
    /// After the work returned `Ok(())`.
    pub on_return: AfterWork,
    /// After the work returned an error.
    pub on_error: AfterWork,
}

impl Default for RunPolicy {
    fn default() -> Self {
        RunPolicy {
            on_return: AfterWork::Stop,
            on_error: AfterWork::Resign,
        }
    }
}

impl RunPolicy {
    /// Sets [`RunPolicy::on_return`].
    pub fn on_return(mut self, then: AfterWork) -> Self {
        self.on_return = then;
        self
    }

    /// Sets [`RunPolicy::on_error`].
    pub fn on_error(mut self, then: AfterWork) -> Self {
        self.on_error = then;
        self
    }
}

/// Why [`Elector::run`] returned with an error.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError<E> {
    /// The elector stopped (shut down, or an error its policy aborts on).
    Elector(Error),
    /// The work failed and the policy said [`AfterWork::Stop`].
    Work(E),
}

impl<E: fmt::Display> fmt::Display for RunError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Elector(e) => write!(f, "the elector stopped: {e}"),
            RunError::Work(e) => write!(f, "the leader's work failed: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for RunError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Elector(e) => Some(e),
            RunError::Work(e) => Some(e),
        }
    }
}

/// Resolves when `guard`'s leadership is over: ended by the elector, or its local deadline
/// passed (checked here too, so the work stops on time even if the campaign task is late).
pub(crate) async fn over(guard: &LeaderGuard) {
    let mut deadline = guard.deadline_watch();
    loop {
        let at = *deadline.borrow_and_update();
        tokio::select! {
            _ = guard.lost() => return,
            _ = sleep_until(at) => {
                if Instant::now() >= guard.deadline() {
                    return;
                }
            }
            changed = deadline.changed() => {
                if changed.is_err() {
                    // The driver is gone: its guard ends with it.
                    guard.lost().await;
                    return;
                }
            }
        }
    }
}

impl Elector {
    /// Runs `work` while this candidate leads, with the default [`RunPolicy`]: `work` gets the
    /// leadership's guard, is cancelled (dropped) when that leadership ends — at the local
    /// deadline at the latest — and is started again at the next leadership. Returns when the
    /// work returns `Ok(())` (after resigning), or with the error that stopped the elector.
    /// A failed work resigns and runs again at the next leadership here.
    ///
    /// Stamp the guard's term on every write the work makes (a fencing token): a cancelled
    /// future can have writes in flight.
    ///
    /// ```
    /// use std::time::Duration;
    /// use elect_core::{Elector, ElectionName, MemoryStore};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
    /// let elector = Elector::builder(MemoryStore::new(), ElectionName::new("compactor")?).start()?;
    /// elector
    ///     .run(|guard| async move {
    ///         for batch in 0..3 {
    ///             println!("compacting batch {batch} with fencing token {}", guard.term());
    ///             tokio::time::sleep(Duration::from_millis(100)).await;
    ///         }
    ///         Ok::<(), std::io::Error>(())
    ///     })
    ///     .await
    ///     .unwrap();
    /// elector.shutdown().await?;
    /// # Ok::<(), elect_core::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn run<F, Fut, E>(&self, work: F) -> Result<(), RunError<E>>
    where
        F: FnMut(LeaderGuard) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: fmt::Display,
    {
        self.run_with(RunPolicy::default(), work).await
    }

    /// [`run`](Self::run) with a [`RunPolicy`] of your own. Cancellation safe: dropping the
    /// returned future drops the work.
    pub async fn run_with<F, Fut, E>(
        &self,
        policy: RunPolicy,
        mut work: F,
    ) -> Result<(), RunError<E>>
    where
        F: FnMut(LeaderGuard) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: fmt::Display,
    {
        loop {
            let guard = self.leading().await.map_err(RunError::Elector)?;
            let term = guard.term();
            // In one leadership: run, and run again while the policy says Repeat.
            let outcome = loop {
                let outcome = tokio::select! {
                    biased;
                    _ = over(&guard) => None,
                    outcome = work(guard.clone()) => Some(outcome),
                };
                let then = match &outcome {
                    None => break None,
                    Some(Ok(())) => policy.on_return,
                    Some(Err(e)) => {
                        warn!(%term, error = %e, "the leader's work failed");
                        policy.on_error
                    }
                };
                if then != AfterWork::Repeat || !guard.is_leading() {
                    break outcome.map(|o| (o, then));
                }
            };
            let Some((outcome, then)) = outcome else {
                info!(%term, "leadership ended; the work was cancelled");
                continue;
            };
            if guard.is_leading() {
                // Hand over at once rather than sit on a lease nobody works for. A release that
                // failed leaves the lease to expire; a stopped elector shows at `leading()`.
                if let Err(e) = self.resign().await {
                    warn!(%term, error = %e, "resigning after the work ended failed");
                }
            }
            match (then, outcome) {
                (AfterWork::Stop, Ok(())) => return Ok(()),
                (AfterWork::Stop, Err(e)) => return Err(RunError::Work(e)),
                _ => {}
            }
        }
    }
}
