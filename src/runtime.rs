//! The one tokio runtime of the process. The engine runs its own thread; this runtime only
//! carries our small tasks (submitting requests, waiting for the engine's final answer).

use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pcai-runtime")
            .enable_all()
            .build()
            .expect("cannot start the tokio runtime")
    })
}
