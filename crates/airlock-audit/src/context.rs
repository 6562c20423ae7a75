//! The request a piece of work is done for: set around each client request by the HTTP
//! layer, read where an upstream request is sent.

use std::future::Future;
use std::net::IpAddr;

use crate::Audit;

tokio::task_local! {
    static CURRENT: Context;
}

/// Who asked: the client address and request id, and the trail to write to.
#[derive(Debug, Clone)]
pub struct Context {
    pub client: IpAddr,
    pub request_id: String,
    pub audit: Audit,
}

impl Context {
    /// Runs `future` with this context current (also across `.await`s; a spawned task
    /// needs its own `scope`).
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, future)
    }

    /// The context of the running task, if it has one.
    pub fn current() -> Option<Context> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `future` in the current context, if any: for work handed to another task.
    pub fn carry<F: Future>(future: F) -> impl Future<Output = F::Output> {
        let current = Self::current();
        async move {
            match current {
                Some(context) => context.scope(future).await,
                None => future.await,
            }
        }
    }
}
