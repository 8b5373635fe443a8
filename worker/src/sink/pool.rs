//! Database connections shared by the drain loops. A cluster has a queue per hash slot that
//! was written, so hundreds or thousands of queues, each with its own loop: far more than a
//! database takes connections (PostgreSQL allows 100 by default). A loop borrows a sink for
//! one transaction and gives it back, so it never holds one while waiting to retry.

use super::{Sink, SinkError};
use crate::event::Event;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

pub struct SinkPool {
    free: Mutex<Vec<Box<dyn Sink>>>,
    returned: Condvar,
}

impl SinkPool {
    /// A pool of these sinks (at least one).
    pub fn new(sinks: Vec<Box<dyn Sink>>) -> Arc<SinkPool> {
        assert!(!sinks.is_empty(), "a pool of no sinks would never write");
        Arc::new(SinkPool {
            free: Mutex::new(sinks),
            returned: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Box<dyn Sink>>> {
        // Only push and pop happen under the lock: a poisoned one still holds whole sinks.
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self) -> Box<dyn Sink> {
        let mut free = self.lock();
        loop {
            if let Some(sink) = free.pop() {
                return sink;
            }
            free = self.returned.wait(free).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn give_back(&self, sink: Box<dyn Sink>) {
        self.lock().push(sink);
        self.returned.notify_one();
    }

    /// A sink for one drain loop, drawing on the pool.
    pub fn handle(self: &Arc<Self>) -> Box<dyn Sink> {
        Box::new(Pooled(Arc::clone(self)))
    }
}

struct Pooled(Arc<SinkPool>);

impl Sink for Pooled {
    fn write(&mut self, events: &[&Event]) -> Result<(), SinkError> {
        let mut sink = self.0.take();
        let result = sink.write(events);
        self.0.give_back(sink);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Failure;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts how many writes run at the same time.
    struct Probe {
        busy: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }

    impl Sink for Probe {
        fn write(&mut self, _: &[&Event]) -> Result<(), SinkError> {
            let now = self.busy.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(2));
            self.busy.fetch_sub(1, Ordering::SeqCst);
            Err(SinkError {
                failure: Failure::Unavailable,
                message: "probe".into(),
            })
        }
    }

    #[test]
    fn no_more_writes_at_once_than_sinks_and_every_result_comes_back() {
        let (busy, most) = (Arc::default(), Arc::new(AtomicUsize::new(0)));
        let sinks: Vec<Box<dyn Sink>> = (0..3)
            .map(|_| {
                Box::new(Probe {
                    busy: Arc::clone(&busy),
                    most: Arc::clone(&most),
                }) as Box<dyn Sink>
            })
            .collect();
        let pool = SinkPool::new(sinks);
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let mut sink = pool.handle();
                std::thread::spawn(move || {
                    (0..20)
                        .map(|_| sink.write(&[]).unwrap_err().message)
                        .all(|m| m == "probe")
                })
            })
            .collect();
        assert!(threads.into_iter().all(|t| t.join().unwrap()));
        assert_eq!(most.load(Ordering::SeqCst), 3);
        assert_eq!(pool.lock().len(), 3, "every sink is back");
    }
}
