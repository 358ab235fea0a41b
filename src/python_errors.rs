//! Failures become the exception classes of `pcai_inference.errors` (one hierarchy, defined in
//! Python so users can read and subclass it).

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyType;

use crate::failure::Failure;

pub fn to_py_err(failure: Failure) -> PyErr {
    Python::attach(|py| {
        let class = py
            .import("pcai_inference.errors")
            .and_then(|m| m.getattr(failure.kind.class_name()))
            .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
        match class {
            Ok(cls) => PyErr::from_type(cls, failure.message),
            Err(_) => PyRuntimeError::new_err(failure.to_string()),
        }
    })
}

/// `?`-friendly conversion for results crossing into Python.
pub trait IntoPyResult<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, Failure> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py_err)
    }
}
