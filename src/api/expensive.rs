//! The expensive-read pool (SPEC.md section 11): `--expensive-reads-max` threads of their own,
//! apart from the HTTP runtime's, at a lower scheduling priority, so that a full chain walk or a
//! long `as_of` fold never takes a core from the cheap reads. Admission is a semaphore with one
//! permit per thread: a read that finds none is answered 429 `busy` at once, never queued.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tracing::warn;

type Job = Box<dyn FnOnce() + Send>;

/// Nice value of the pool's threads (the runtime's stay at 0): the kernel then runs a cheap
/// read's thread before a walk's whenever both are ready. Threads a walk starts inherit it.
const POOL_NICE: i32 = 10;

pub struct ExpensivePool {
    permits: Arc<Semaphore>,
    jobs: crossbeam_channel::Sender<Job>,
    max: usize,
}

impl ExpensivePool {
    /// Starts `max` (at least 1) pool threads.
    pub fn start(max: usize) -> std::io::Result<ExpensivePool> {
        let max = max.max(1);
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for _ in 0..max {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name("expensive-read".into())
                .spawn(move || {
                    lower_priority();
                    for job in queue {
                        // A read that panics loses its answer (the caller gets a 500), not the
                        // thread.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(ExpensivePool {
            permits: Arc::new(Semaphore::new(max)),
            jobs,
            max,
        })
    }

    /// How many expensive reads run at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Runs `read` on the pool and waits for it; `None` when every place is taken (the
    /// caller answers 429 `busy`), or when the read panicked (`Some(None)`).
    pub async fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> T + Send + 'static,
    ) -> Option<Option<T>> {
        let permit = Arc::clone(&self.permits).try_acquire_owned().ok()?;
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _permit = permit;
            let _ = answer.send(read());
        });
        if self.jobs.send(job).is_err() {
            return Some(None);
        }
        Some(answered.await.ok())
    }
}

/// Lowers the calling thread's scheduling priority (Linux: nice is per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority only reads its integer arguments; `who` 0 is the calling thread.
        let done = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, POOL_NICE) };
        if done != 0 {
            warn!(
                message = "Could not lower the priority of an expensive-read thread.",
                error = %std::io::Error::last_os_error()
            );
        }
    }
}
