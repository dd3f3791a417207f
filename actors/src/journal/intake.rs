//! The queue between the handles and the writer: a mutex-guarded list and a condition
//! variable, with the writer's state beside it, so that a handle wakes the writer only when
//! the writer is waiting for that append (docs/adr/0019-write-ahead-journal.md, "Waking the
//! writer").
//!
//! A channel wakes its receiver on every send. While a commit gathers, that was one futex
//! wake and one context switch per append, for nothing: the writer only went back to wait
//! for the rest of its interval. Here an append wakes the writer when it is idle (the
//! append starts a commit) or when it brings the gathered bytes to the budget (the commit
//! is to be written now); every other append is a push under the lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::writer::{lock, Command};
use super::{JournalError, MAX_QUEUED_APPENDS};

/// What the writer is doing, as the handles need to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriterState {
    /// Writing, syncing or checkpointing: it looks at the queue again when done, so nothing
    /// needs to wake it.
    Busy,
    /// Waiting for any command.
    Idle,
    /// Waiting for its commit's interval to end, or for the bytes to reach the budget.
    Gathering,
}

struct Queue {
    commands: VecDeque<Command>,
    /// Appends in `commands`: at most [`MAX_QUEUED_APPENDS`].
    appends: usize,
    /// The frames' bytes in `commands`.
    bytes: usize,
    state: WriterState,
    closed: bool,
}

/// What the writer gets from [`Intake::next`].
pub(super) enum Taken {
    /// Commands to run, in the order they were sent. Hand the deque back to the next
    /// [`Intake::next`], which reuses its room.
    Commands(VecDeque<Command>),
    /// The intake is closed and empty: the writer is done.
    Closed,
}

pub(super) struct Intake {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// A copy of the queue's `closed`, for health checks that take no lock.
    closed: AtomicBool,
    /// A commit is written as soon as it gathers this many bytes.
    commit_bytes: usize,
}

impl Intake {
    pub fn new(commit_bytes: usize) -> Intake {
        Intake {
            queue: Mutex::new(Queue {
                commands: VecDeque::new(),
                appends: 0,
                bytes: 0,
                state: WriterState::Busy,
                closed: false,
            }),
            wake: Condvar::new(),
            closed: AtomicBool::new(false),
            commit_bytes: commit_bytes.max(1),
        }
    }

    /// Queues an append built by `make` once the queue has room. `make` runs under the
    /// queue's lock, so records are queued in the order `make` numbers them.
    pub fn append<T>(
        &self,
        bytes: usize,
        make: impl FnOnce() -> (Command, T),
    ) -> Result<T, JournalError> {
        let mut queue = lock(&self.queue);
        if queue.closed {
            return Err(JournalError::Stopped);
        }
        if queue.appends >= MAX_QUEUED_APPENDS {
            return Err(JournalError::Overloaded);
        }
        let (command, made) = make();
        queue.commands.push_back(command);
        queue.appends += 1;
        queue.bytes += bytes;
        let wake = match queue.state {
            WriterState::Idle => true,
            WriterState::Gathering => queue.bytes >= self.commit_bytes,
            WriterState::Busy => false,
        };
        self.notify(queue, wake);
        Ok(made)
    }

    /// Queues a command that is not an append (a checkpoint): the writer runs it after the
    /// commit it is gathering, if any.
    pub fn send(&self, command: Command) -> Result<(), JournalError> {
        let mut queue = lock(&self.queue);
        if queue.closed {
            return Err(JournalError::Stopped);
        }
        queue.commands.push_back(command);
        let wake = queue.state == WriterState::Idle;
        self.notify(queue, wake);
        Ok(())
    }

    /// Takes no more commands; the writer runs those queued, then ends.
    pub fn close(&self) {
        let mut queue = lock(&self.queue);
        queue.closed = true;
        self.closed.store(true, Ordering::Release);
        self.notify(queue, true);
    }

    /// Closes the intake and drops what it holds: the writer is gone, and every append
    /// waiting in it learns so from its dropped sender.
    pub fn abandon(&self) {
        let mut queue = lock(&self.queue);
        queue.closed = true;
        self.closed.store(true, Ordering::Release);
        let commands = std::mem::take(&mut queue.commands);
        queue.appends = 0;
        queue.bytes = 0;
        drop(queue);
        drop(commands);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Wakes the writer after the lock is released, so that it does not wake only to wait
    /// for the lock.
    fn notify(&self, queue: MutexGuard<'_, Queue>, wake: bool) {
        drop(queue);
        if wake {
            self.wake.notify_one();
        }
    }

    /// For the writer: waits for a command; if the first queued is an append, waits on
    /// until `gather_until(its send time)` or until the queued bytes reach the budget; then
    /// takes everything queued. The writer is `Busy` from then until its next call.
    pub fn next(
        &self,
        spare: VecDeque<Command>,
        gather_until: impl Fn(Instant) -> Instant,
    ) -> Taken {
        let mut queue = lock(&self.queue);
        while queue.commands.is_empty() {
            if queue.closed {
                return Taken::Closed;
            }
            queue.state = WriterState::Idle;
            queue = self
                .wake
                .wait(queue)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let first_append = queue.commands.iter().find_map(|command| match command {
            Command::Append(pending) => Some(pending.sent),
            Command::Checkpoint(_) => None,
        });
        if let Some(sent) = first_append {
            let deadline = gather_until(sent);
            while queue.bytes < self.commit_bytes && !queue.closed {
                let now = Instant::now();
                let Some(wait) = deadline
                    .checked_duration_since(now)
                    .filter(|w| !w.is_zero())
                else {
                    break;
                };
                queue.state = WriterState::Gathering;
                queue = self
                    .wake
                    .wait_timeout(queue, wait)
                    .map(|(queue, _)| queue)
                    .unwrap_or_else(|poisoned| poisoned.into_inner().0);
            }
        }
        queue.state = WriterState::Busy;
        let mut spare = spare;
        spare.clear();
        if queue.bytes <= self.commit_bytes {
            queue.appends = 0;
            queue.bytes = 0;
            return Taken::Commands(std::mem::replace(&mut queue.commands, spare));
        }
        // More than a commit's worth waited (the writer was slow): a commit takes the
        // shortest run that reaches the budget, as one gathered from an empty queue would.
        let mut bytes = 0;
        let mut take = 0;
        for command in &queue.commands {
            take += 1;
            if let Command::Append(pending) = command {
                bytes += pending.frame.len();
                if bytes >= self.commit_bytes {
                    break;
                }
            }
        }
        let rest = queue.commands.split_off(take);
        let taken = std::mem::replace(&mut queue.commands, rest);
        queue.bytes -= bytes;
        queue.appends -= taken
            .iter()
            .filter(|command| matches!(command, Command::Append(_)))
            .count();
        drop(spare);
        Taken::Commands(taken)
    }
}
