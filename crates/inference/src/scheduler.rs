//! Sharing one engine among concurrent requests: at most `workers` generate at once, at most
//! `queue` more wait, and anything beyond that is refused at once with [`Error::Busy`] (a full
//! queue never grows memory).

use std::sync::{Arc, Condvar, Mutex};

use crate::{Engine, Error, GenerateOutput, GenerateRequest, TokenEvent};

/// Limits of a [`Scheduler`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Requests generating at the same time.
    pub workers: usize,
    /// Requests allowed to wait for a worker.
    pub queue: usize,
}

#[derive(Debug, Default)]
struct Counts {
    running: usize,
    waiting: usize,
}

/// A bounded front for an engine.
#[derive(Debug)]
pub struct Scheduler<E: ?Sized> {
    engine: Arc<E>,
    limits: Limits,
    counts: Mutex<Counts>,
    freed: Condvar,
}

impl<E: Engine + ?Sized> Scheduler<E> {
    /// A scheduler over `engine`.
    pub fn new(engine: Arc<E>, limits: Limits) -> Self {
        let limits = Limits {
            workers: limits.workers.max(1),
            queue: limits.queue,
        };
        Scheduler {
            engine,
            limits,
            counts: Mutex::new(Counts::default()),
            freed: Condvar::new(),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// Generate when a worker is free; [`Error::Busy`] at once if the queue is full.
    pub fn generate(
        &self,
        request: &GenerateRequest,
        on_token: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<GenerateOutput, Error> {
        {
            let mut c = self
                .counts
                .lock()
                .map_err(|_| Error::Backend("scheduler lock poisoned".into()))?;
            if c.running >= self.limits.workers {
                if c.waiting >= self.limits.queue {
                    return Err(Error::Busy {
                        queued: c.waiting,
                        limit: self.limits.queue,
                    });
                }
                c.waiting += 1;
                while c.running >= self.limits.workers {
                    c = self
                        .freed
                        .wait(c)
                        .map_err(|_| Error::Backend("scheduler lock poisoned".into()))?;
                }
                c.waiting -= 1;
            }
            c.running += 1;
        }
        let result = self.engine.generate(request, on_token);
        if let Ok(mut c) = self.counts.lock() {
            c.running -= 1;
        }
        self.freed.notify_one();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TinyEngine;
    use std::sync::mpsc;

    #[test]
    fn a_full_queue_is_refused_with_busy_and_nothing_is_lost() {
        let sched = Arc::new(Scheduler::new(
            Arc::new(TinyEngine::new()),
            Limits {
                workers: 1,
                queue: 1,
            },
        ));
        // The first request holds the only worker until released.
        let (started_tx, started_rx) = mpsc::sync_channel(1);
        let (release_tx, release_rx) = mpsc::sync_channel::<()>(1);
        let s1 = Arc::clone(&sched);
        let first = std::thread::spawn(move || {
            let mut once = Some((started_tx, release_rx));
            s1.generate(&GenerateRequest::greedy(vec![1], 2), &mut |_| {
                if let Some((tx, rx)) = once.take() {
                    tx.send(()).unwrap();
                    rx.recv().unwrap();
                }
                true
            })
        });
        started_rx.recv().unwrap();
        // The second waits in the queue.
        let s2 = Arc::clone(&sched);
        let second = std::thread::spawn(move || {
            s2.generate(&GenerateRequest::greedy(vec![2], 2), &mut |_| true)
        });
        while sched.counts.lock().unwrap().waiting == 0 {
            std::thread::yield_now();
        }
        // The third finds the queue full.
        let third = sched.generate(&GenerateRequest::greedy(vec![3], 2), &mut |_| true);
        assert!(
            matches!(
                third,
                Err(Error::Busy {
                    queued: 1,
                    limit: 1
                })
            ),
            "{third:?}"
        );
        release_tx.send(()).unwrap();
        assert_eq!(first.join().unwrap().unwrap().tokens.len(), 2);
        assert_eq!(second.join().unwrap().unwrap().tokens.len(), 2);
        let c = sched.counts.lock().unwrap();
        assert_eq!((c.running, c.waiting), (0, 0));
    }
}
