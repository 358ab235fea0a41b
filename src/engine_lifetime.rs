//! When the engine is really gone, and giving its memory back.
//!
//! Dropping mistralrs's runner only *asks* its engine thread to stop (`Request::Terminate`);
//! the thread finishes its current step and frees the model later. `unload()` waits for that,
//! so memory is back when it returns and a model loaded next does not briefly sit beside the
//! old one. Then it hands freed heap pages back to the system: glibc keeps most of the freed
//! model (hundreds of MiB in fragments under its mmap threshold) otherwise — measured 6 cycles
//! of load/generate/unload growing RSS 667 → 906 MiB without, 63 → 64 MiB with.
//!
//! The last reference to the model going away is not enough to wait for: the engine thread
//! frees the weights *after* dropping that reference (trimming then left RSS at 600 MiB). So on
//! Linux we also wait for the engine's thread to exit, found as the thread that starting the
//! runner created (mistralrs 0.8.1 starts two: the engine, and an interval logger that never
//! exits — one idle thread per load stays, which we cannot stop from outside).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Set when `unload()` starts, so generations cut short by it say so.
#[derive(Clone, Default)]
pub struct ClosedFlag(Arc<AtomicBool>);

impl ClosedFlag {
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Watches whether anything still holds the engine's pipeline (the model's weights).
pub struct EngineWatch<T: ?Sized>(Weak<T>);

impl<T: ?Sized> Clone for EngineWatch<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: ?Sized> EngineWatch<T> {
    pub fn new(held: &Arc<T>) -> Self {
        Self(Arc::downgrade(held))
    }

    /// Waits until the engine has dropped the model, at most until `deadline`. True if it has.
    pub fn wait_gone(&self, deadline: Instant) -> bool {
        while self.0.strong_count() > 0 {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

/// Counts generations in flight; when the last one ends, freed memory goes back to the
/// system. Without it, 64 concurrent streams left RSS 750-850 MiB above where it started
/// (freed, but kept by the allocator); with a trim at idle, back at the start (measured).
#[derive(Clone, Default)]
pub struct IdleTrim(Arc<AtomicUsize>);

/// One generation in flight; ending it (dropping this) may trim.
pub struct InFlight(Arc<AtomicUsize>);

impl IdleTrim {
    pub fn start(&self) -> InFlight {
        self.0.fetch_add(1, Ordering::SeqCst);
        InFlight(self.0.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.fetch_sub(1, Ordering::SeqCst) == 1 {
            // Off the runtime's two workers (a trim of a large heap takes milliseconds). The
            // engine frees a finished sequence just after answering it: trim again once that
            // is done, if nothing new started meanwhile.
            let count = self.0.clone();
            let runtime = crate::runtime::runtime();
            runtime.spawn_blocking(release_free_memory);
            runtime.spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if count.load(Ordering::SeqCst) == 0 {
                    let _ = tokio::task::spawn_blocking(release_free_memory).await;
                }
            });
        }
    }
}

/// The threads starting the engine created (Linux; elsewhere none are known).
#[derive(Clone)]
pub struct EngineThreads(Vec<u32>);

impl EngineThreads {
    /// Runs `start` and notes the threads it created (tokio's workers aside: they end with
    /// the engine thread that owns them). Threads another caller starts meanwhile are noted
    /// too; if one of those exits first, the wait ends early and only that trim comes too
    /// soon (the next idle trim returns the memory).
    pub fn created_by<R>(start: impl FnOnce() -> R) -> (R, Self) {
        let before = thread_ids();
        let out = start();
        let created = thread_ids()
            .into_iter()
            .filter(|t| !before.contains(t))
            .filter(|t| thread_name(*t).is_some_and(|n| !n.starts_with("tokio-runtime")))
            .collect();
        (out, Self(created))
    }

    /// Waits, at most until `deadline`, until one of the noted threads has exited (the engine's; the
    /// logger's never does). True if one has, or if none were noted.
    pub fn wait_one_exited(&self, deadline: Instant) -> bool {
        if self.0.is_empty() {
            return true;
        }
        loop {
            let alive = thread_ids();
            if self.0.iter().any(|t| !alive.contains(t)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn thread_ids() -> Vec<u32> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn thread_name(tid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .ok()
        .map(|n| n.trim_end().to_owned())
}

/// Caps glibc's malloc arenas at one per CPU (its default is eight per CPU), unless the user
/// set `MALLOC_ARENA_MAX`. Each thread that calls in (64 Python threads streaming at once)
/// otherwise gets its own arena, and freed memory stays in them: measured 64 concurrent
/// streams leaving RSS 150-250 MiB above the start even after a trim, 13-19 MiB with the cap;
/// decode speed was the same within noise (42-49 tok/s either way).
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return;
        }
        extern "C" {
            fn mallopt(
                param: std::os::raw::c_int,
                value: std::os::raw::c_int,
            ) -> std::os::raw::c_int;
        }
        const M_ARENA_MAX: std::os::raw::c_int = -8;
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = std::os::raw::c_int::try_from(cpus.max(2)).unwrap_or(64);
        // SAFETY: mallopt takes no pointers; M_ARENA_MAX only bounds future arena creation.
        unsafe {
            mallopt(M_ARENA_MAX, arenas);
        }
    }
}

/// Returns freed heap memory to the operating system where the allocator keeps it.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: glibc's malloc_trim takes no pointers and is safe to call from any thread.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_last_holder() {
        let held = Arc::new(vec![0u8; 16]);
        let watch = EngineWatch::new(&held);
        assert!(!watch.wait_gone(Instant::now() + Duration::from_millis(20)));
        let other = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(held);
        });
        assert!(watch.wait_gone(Instant::now() + Duration::from_secs(5)));
        other.join().unwrap();
    }

    #[test]
    fn notices_a_created_thread_exit() {
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let (handle, threads) =
            EngineThreads::created_by(|| std::thread::spawn(move || stop_rx.recv()));
        std::thread::sleep(Duration::from_millis(20));
        if cfg!(target_os = "linux") {
            assert_eq!(threads.0.len(), 1);
            assert!(!threads.wait_one_exited(Instant::now() + Duration::from_millis(20)));
        }
        stop_tx.send(()).unwrap();
        handle.join().unwrap().unwrap();
        assert!(threads.wait_one_exited(Instant::now() + Duration::from_secs(5)));
    }
}
