//! Requests from workers to the control thread, for work a worker must not do itself (config
//! reload, storage queries for the admin API). A worker queues a command and awaits the
//! reply without blocking its core; the control thread is woken at once to run it.
//! Invariant: every queued command gets exactly one reply (an error if the control thread is
//! gone), so an admin request never hangs.

use std::sync::OnceLock;
use std::thread::Thread;

use crossbeam_queue::SegQueue;
use futures_channel::oneshot;

use crate::storage::requests::LogFilter;
use crate::storage::rollups::{GroupBy, Period};

#[derive(Debug)]
pub enum Command {
    Reload,
    Logs {
        filter: LogFilter,
        limit: i64,
        offset: i64,
    },
    DeleteLogs,
    Stats {
        period: Period,
        group: GroupBy,
        since_ms: Option<i64>,
        until_ms: Option<i64>,
    },
    Overview {
        since_ms: Option<i64>,
        until_ms: Option<i64>,
    },
    /// A key-pool change (`/admin/keys`).
    Keys(crate::keys::command::KeysCommand),
    /// An access token for a credential key newer than `refused` (the one a 401 answered),
    /// minted now unless one exists (`tokens::TokenRegistry::mint_now`).
    MintToken {
        key: crate::config::KeyId,
        refused: Option<u64>,
    },
    /// The fleet's key pool, read from Redis by the cluster thread (no reply awaited).
    ClusterPool(crate::keys::PoolState),
}

/// A JSON body, or an HTTP status with a message.
pub type Reply = Result<Vec<u8>, (u16, String)>;

#[derive(Default)]
pub struct Commands {
    queue: SegQueue<(Command, oneshot::Sender<Reply>)>,
    control: OnceLock<Thread>,
}

impl Commands {
    /// Runs `command` on the control thread and waits for its reply.
    pub async fn call(&self, command: Command) -> Reply {
        let (tx, rx) = oneshot::channel();
        self.queue.push((command, tx));
        if let Some(control) = self.control.get() {
            control.unpark();
        }
        rx.await
            .unwrap_or_else(|_| Err((503, "the control thread is not running".to_owned())))
    }

    /// Queues `command` for the control thread without waiting for its reply.
    pub fn post(&self, command: Command) {
        let (tx, _rx) = oneshot::channel();
        self.queue.push((command, tx));
        if let Some(control) = self.control.get() {
            control.unpark();
        }
    }

    /// Called once by the control thread so `call` can wake it.
    pub fn attach(&self) {
        let _ = self.control.set(std::thread::current());
    }

    /// Whether a command waits (the control thread stops pausing for it).
    pub fn pending(&self) -> bool {
        !self.queue.is_empty()
    }

    pub fn next(&self) -> Option<(Command, oneshot::Sender<Reply>)> {
        self.queue.pop()
    }
}
