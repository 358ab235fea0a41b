//! The failures we report, independent of Python. `python_errors` maps each kind to the
//! exception class of the same name in `pcai_inference.errors`.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    ModelNotFound,
    ModelFormat,
    Device,
    InvalidRequest,
    InvalidImage,
    ModelNotLoaded,
    ModelClosed,
    UnsupportedModel,
    Generation,
}

impl FailureKind {
    /// The name of the Python exception class for this kind.
    pub fn class_name(self) -> &'static str {
        match self {
            Self::ModelNotFound => "ModelNotFoundError",
            Self::ModelFormat => "ModelFormatError",
            Self::Device => "DeviceError",
            Self::InvalidRequest => "InvalidRequestError",
            Self::InvalidImage => "InvalidImageError",
            Self::ModelNotLoaded => "ModelNotLoadedError",
            Self::ModelClosed => "ModelClosedError",
            Self::UnsupportedModel => "UnsupportedModelError",
            Self::Generation => "GenerationError",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(FailureKind::InvalidRequest, message)
    }

    pub fn generation(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Generation, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.class_name(), self.message)
    }
}

impl std::error::Error for Failure {}

/// Runs `f`, turning a panic inside the engine into a `Failure` of `kind`.
pub fn catch_engine_panic<T>(
    kind: FailureKind,
    context: &str,
    f: impl FnOnce() -> Result<T, Failure>,
) -> Result<T, Failure> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let detail = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(Failure::new(
                kind,
                format!("{context}: the engine failed internally ({detail})"),
            ))
        }
    }
}

pub type Outcome<T> = Result<T, Failure>;
