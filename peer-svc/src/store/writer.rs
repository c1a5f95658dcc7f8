//! The store's writer: one thread that commits every grouped insert, so
//! SQLite's blocking work runs beside the async workers instead of on them
//! (as the checkpointer and the console already do). Callers queue their
//! messages and wait on a oneshot; the thread takes whatever is queued
//! when it is free, commits it in one transaction (group commit) and
//! answers each caller only once its messages are durable.

use std::{
    sync::{Arc, Mutex, mpsc},
    thread::JoinHandle,
};

use chat_proto::v1::ChatMessage;
use rusqlite::Connection;

use super::{StoreError, history::insert_each};

/// Where a group commit answers one caller: for each of its messages,
/// whether it was new.
type Answer = tokio::sync::oneshot::Sender<Result<Vec<bool>, StoreError>>;

/// Most messages committed in one transaction: bounds how long one commit
/// holds the connection (reads wait for it) under a burst.
const MAX_GROUP: usize = 4096;

/// The writer thread and its queue.
#[derive(Debug)]
pub(crate) struct Writer {
    queue: Option<mpsc::Sender<(Vec<ChatMessage>, Answer)>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread, writing through `conn`.
    pub(crate) fn start(conn: Arc<Mutex<Connection>>) -> Result<Self, StoreError> {
        let (queue, jobs) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_until_closed(&conn, &jobs))
            .map_err(|e| StoreError::Batch(format!("cannot start the store writer: {e}")))?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Queues `messages` for the next group commit; the answer comes once
    /// they are committed.
    pub(crate) async fn insert(&self, messages: Vec<ChatMessage>) -> Result<Vec<bool>, StoreError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let queue = self.queue.as_ref().expect("writer open until dropped");
        if queue.send((messages, done)).is_err() {
            return Err(StoreError::Batch("the store writer has stopped".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Batch("the store writer has stopped".into())))
    }
}

/// The thread: one group commit per turn, until every sender is gone.
fn write_until_closed(conn: &Mutex<Connection>, jobs: &mpsc::Receiver<(Vec<ChatMessage>, Answer)>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        let mut count = group[0].0.len();
        while count < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => {
                    count += job.0.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        commit(conn, group);
    }
}

/// Commits a group in one transaction and answers each caller in it.
fn commit(conn: &Mutex<Connection>, group: Vec<(Vec<ChatMessage>, Answer)>) {
    let sizes: Vec<usize> = group.iter().map(|(m, _)| m.len()).collect();
    let (batches, answers): (Vec<_>, Vec<_>) = group.into_iter().unzip();
    let messages: Vec<ChatMessage> = batches.into_iter().flatten().collect();
    let outcome = insert_each(&mut conn.lock().expect("store lock"), &messages);
    match outcome {
        Ok(new) => {
            let mut new = new.into_iter();
            for (answer, size) in answers.into_iter().zip(sizes) {
                let _ = answer.send(Ok(new.by_ref().take(size).collect()));
            }
        }
        Err(e) => {
            for answer in answers {
                let _ = answer.send(Err(StoreError::Batch(e.to_string())));
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once what is queued is written.
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
