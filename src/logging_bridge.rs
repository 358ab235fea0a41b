//! Engine `tracing` events go to Python's `logging` (logger `pcai_inference.engine`), never to
//! stderr directly. An event is forwarded only when that logger is enabled for its level (the
//! level is read from Python whenever a model is loaded or a request starts, so the GIL is not
//! taken for events nobody wants). `PCAI_LOG` (an env-filter string such as `debug` or
//! `mistralrs_core=info`) narrows the forwarded events further by target.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

/// The effective level of the `pcai_inference.engine` logger, as Python numbers it.
static PYTHON_LEVEL: AtomicU32 = AtomicU32::new(30);

/// Reads the Python logger's effective level; call with the GIL, before engine work.
pub fn refresh_level(py: Python<'_>) {
    let level = py
        .import("logging")
        .and_then(|m| m.call_method1("getLogger", ("pcai_inference.engine",)))
        .and_then(|l| l.call_method0("getEffectiveLevel"))
        .and_then(|v| v.extract::<u32>());
    if let Ok(level) = level {
        PYTHON_LEVEL.store(level, Ordering::Relaxed);
    }
}

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

fn python_level(level: &Level) -> u32 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

struct PythonLogging;

impl<S: Subscriber> Layer<S> for PythonLogging {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut visitor = MessageVisitor(String::new());
        event.record(&mut visitor);
        let level = python_level(meta.level());
        let target = meta.target().to_string();
        // During interpreter shutdown there is no Python to log to; drop the event then.
        let _ = Python::try_attach(|py| -> PyResult<()> {
            let logger = py
                .import("logging")?
                .call_method1("getLogger", ("pcai_inference.engine",))?;
            if logger.call_method1("isEnabledFor", (level,))?.is_truthy()? {
                logger.call_method1("log", (level, "%s: %s", target, visitor.0))?;
            }
            Ok(())
        });
    }
}

/// Installs the bridge once per process, and routes panic messages through it too.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let by_target = std::env::var("PCAI_LOG")
            .ok()
            .and_then(|s| EnvFilter::try_new(s).ok());
        let by_python_level =
            filter_fn(|meta| python_level(meta.level()) >= PYTHON_LEVEL.load(Ordering::Relaxed));
        let _ = tracing_subscriber::registry()
            .with(
                PythonLogging
                    .with_filter(by_python_level)
                    .with_filter(by_target),
            )
            .try_init();
        // Panics of the engine are caught and raised as exceptions; their message belongs in
        // the log, not on stderr. Other extensions' panics keep the previous hook.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = info.location().is_some_and(|l| {
                let f = l.file();
                f.contains("mistralrs") || f.contains("candle") || f.starts_with("src/")
            });
            if ours {
                tracing::error!(target: "pcai_inference::panic", "{info}");
            } else {
                previous(info);
            }
        }));
    });
}
