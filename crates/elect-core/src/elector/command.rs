//! What an [`Elector`](super::Elector)(super::Elector) handle asks of the task that drives it.

use tokio::sync::oneshot;

use crate::error::Result;

/// A request from an [`Elector`](super::Elector) handle to the task that drives it.
#[derive(Debug)]
#[non_exhaustive]
pub enum ElectorCommand {
    /// Stop leading now and hand over; answer once done.
    Resign(Reply),
    /// Stop leading, hand over, and stop campaigning; answer once done.
    Shutdown(Reply),
}

/// Where the driving task answers an [`ElectorCommand`].
#[derive(Debug)]
pub struct Reply(pub(crate) oneshot::Sender<Result<()>>);

impl Reply {
    /// Answers the caller of [`Elector::resign`](super::Elector::resign) or [`Elector::shutdown`](super::Elector::shutdown).
    pub fn send(self, result: Result<()>) {
        let _ = self.0.send(result);
    }
}
