//! The classes of `pcai_inference._core`. Inputs are made owned before the GIL is released;
//! every engine call runs without the GIL; every failure becomes a `PcaiError` subclass.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::codec::Codec;
use crate::device::{compiled_features, parse_device, resolve_device};
use crate::failure::{catch_engine_panic, Failure, FailureKind, Outcome};
use crate::generation::{Finished, Generation, Step};
use crate::model::{FolderOptions, LoadOptions, LoadedModel, DEFAULT_MAX_BATCH, MAX_BATCH_LIMIT};
use crate::output_constraint::OutputConstraint;
use crate::params::GenerationParams;
use crate::python_errors::IntoPyResult;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock was already turned into an exception; the data is
    // still consistent enough to read or to report the failure again.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn not_loaded() -> Failure {
    Failure::new(
        FailureKind::ModelNotLoaded,
        "no model is loaded (it was never loaded or has been unloaded); call load_model() first",
    )
}

/// A loaded model in the engine.
#[pyclass(frozen, name = "NativeModel", module = "pcai_inference._core")]
pub struct NativeModel {
    model: Mutex<Option<Arc<LoadedModel>>>,
}

/// A model dropped without `unload()` (its backend garbage-collected) is freed the same way,
/// on a thread of its own so that the drop, which may hold the GIL, does not wait.
impl Drop for NativeModel {
    fn drop(&mut self) {
        let model = self
            .model
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(model) = model {
            let _ = std::thread::Builder::new()
                .name("pcai-unload".into())
                .spawn(move || model.close());
        }
    }
}

impl NativeModel {
    fn get(&self) -> PyResult<Arc<LoadedModel>> {
        lock(&self.model).clone().ok_or_else(not_loaded).py()
    }
}

/// Checks the options every loader takes.
fn load_options(
    device: &str,
    chat_template: Option<String>,
    max_context: Option<usize>,
    tokenizer: Option<PathBuf>,
    max_batch: Option<usize>,
) -> PyResult<LoadOptions> {
    let device = parse_device(device).py()?;
    if max_context == Some(0) {
        return Err(Failure::invalid("max_context must be at least 1 token")).py();
    }
    let max_batch = max_batch.unwrap_or(DEFAULT_MAX_BATCH);
    if !(1..=MAX_BATCH_LIMIT).contains(&max_batch) {
        return Err(Failure::invalid(format!(
            "max_batch must be between 1 and {MAX_BATCH_LIMIT}, got {max_batch}"
        )))
        .py();
    }
    Ok(LoadOptions {
        device,
        chat_template,
        max_context,
        tokenizer,
        max_batch,
    })
}

/// Runs a loader without the GIL, with engine panics turned into errors.
fn load_detached(
    py: Python<'_>,
    load: impl FnOnce() -> Outcome<LoadedModel> + Send,
) -> PyResult<NativeModel> {
    crate::logging_bridge::refresh_level(py);
    let model = py
        .detach(|| catch_engine_panic(FailureKind::ModelFormat, "loading the model", load))
        .py()?;
    Ok(NativeModel {
        model: Mutex::new(Some(Arc::new(model))),
    })
}

/// The grammar of a request: at most one of a JSON schema (as JSON text), a regex, a Lark grammar.
fn output_constraint(
    json_schema: Option<String>,
    regex: Option<String>,
    grammar: Option<String>,
) -> Outcome<Option<OutputConstraint>> {
    let given = [json_schema.is_some(), regex.is_some(), grammar.is_some()];
    if given.iter().filter(|&&g| g).count() > 1 {
        return Err(Failure::invalid(
            "give at most one of response_format, regex and grammar",
        ));
    }
    if let Some(schema) = json_schema {
        let schema = serde_json::from_str(&schema)
            .map_err(|e| Failure::invalid(format!("the JSON schema is not valid JSON: {e}")))?;
        return Ok(Some(OutputConstraint::JsonSchema(schema)));
    }
    Ok(regex
        .map(OutputConstraint::Regex)
        .or(grammar.map(OutputConstraint::Lark)))
}

fn finished_dict<'py>(py: Python<'py>, f: &Finished) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("finish_reason", f.reason.as_str())?;
    d.set_item("tokens_generated", f.tokens_generated)?;
    d.set_item("token_ids", f.token_ids.clone())?;
    d.set_item("prompt_tokens", f.prompt_tokens)?;
    d.set_item("prompt_seconds", f.prompt_seconds)?;
    d.set_item("decode_seconds", f.decode_seconds)?;
    d.set_item("total_seconds", f.total_seconds)?;
    let logprobs = f.token_logprobs.as_ref();
    d.set_item(
        "token_logprobs",
        logprobs.map(|l| l.iter().map(|t| t.logprob).collect::<Vec<_>>()),
    )?;
    d.set_item(
        "top_logprobs",
        logprobs.map(|l| l.iter().map(|t| t.top.clone()).collect::<Vec<_>>()),
    )?;
    Ok(d)
}

#[pymethods]
impl NativeModel {
    /// Loads a local GGUF file.
    #[staticmethod]
    #[pyo3(signature = (path, device = "auto", chat_template = None, max_context = None, tokenizer = None, max_batch = None))]
    fn load_gguf(
        py: Python<'_>,
        path: PathBuf,
        device: &str,
        chat_template: Option<String>,
        max_context: Option<usize>,
        tokenizer: Option<PathBuf>,
        max_batch: Option<usize>,
    ) -> PyResult<Self> {
        let options = load_options(device, chat_template, max_context, tokenizer, max_batch)?;
        load_detached(py, move || LoadedModel::load_gguf(&path, options))
    }

    /// Loads a local Hugging Face SafeTensors folder.
    #[staticmethod]
    #[pyo3(signature = (path, device = "auto", chat_template = None, max_context = None, tokenizer = None, dtype = "auto", isq = None, max_batch = None))]
    #[allow(clippy::too_many_arguments)]
    fn load_folder(
        py: Python<'_>,
        path: PathBuf,
        device: &str,
        chat_template: Option<String>,
        max_context: Option<usize>,
        tokenizer: Option<PathBuf>,
        dtype: &str,
        isq: Option<String>,
        max_batch: Option<usize>,
    ) -> PyResult<Self> {
        let options = load_options(device, chat_template, max_context, tokenizer, max_batch)?;
        let folder = FolderOptions::new(dtype.to_ascii_lowercase(), isq);
        load_detached(py, move || LoadedModel::load_folder(&path, options, folder))
    }

    /// What the model reads: `text`, and `image` for vision models.
    #[getter]
    fn input_modalities(&self) -> PyResult<Vec<String>> {
        Ok(self
            .get()?
            .input_modalities
            .iter()
            .map(|m| m.to_string())
            .collect())
    }

    #[getter]
    fn device(&self) -> PyResult<String> {
        Ok(self.get()?.device.clone())
    }

    #[getter]
    fn max_batch(&self) -> PyResult<usize> {
        Ok(self.get()?.max_batch())
    }

    #[getter]
    fn context_window(&self) -> PyResult<usize> {
        Ok(self.get()?.context_window)
    }

    #[getter]
    fn model_path(&self) -> PyResult<PathBuf> {
        Ok(self.get()?.model_path.clone())
    }

    #[getter]
    fn architecture(&self) -> PyResult<Option<String>> {
        Ok(self.get()?.architecture.clone())
    }

    #[getter]
    fn eog_ids(&self) -> PyResult<Vec<u32>> {
        Ok(self.get()?.eog_ids().to_vec())
    }

    #[getter]
    fn is_loaded(&self) -> bool {
        lock(&self.model).is_some()
    }

    /// The model's tokenizer (shared, not copied).
    #[getter]
    fn tokenizer(&self) -> PyResult<NativeTokenizer> {
        let model = self.get()?;
        let codec = model.codec().clone();
        Ok(NativeTokenizer {
            bos_id: codec.bos_id(),
            codec,
            eog_ids: model.eog_ids().to_vec(),
        })
    }

    /// Where the chat template comes from: `given`, `model` or `fallback`.
    #[getter]
    fn chat_template_origin(&self) -> PyResult<&'static str> {
        Ok(self.get()?.chat_template.origin().as_str())
    }

    /// The chat template's source text.
    #[getter]
    fn chat_template(&self) -> PyResult<String> {
        Ok(self.get()?.chat_template.source().to_string())
    }

    /// Token ids of chat messages (a JSON list) rendered with the model's chat template.
    fn chat_prompt(&self, py: Python<'_>, messages_json: String) -> PyResult<Vec<u32>> {
        let model = self.get()?;
        py.detach(|| {
            let messages: serde_json::Value = serde_json::from_str(&messages_json)
                .map_err(|e| Failure::invalid(format!("messages are not valid JSON: {e}")))?;
            model.chat_prompt(&messages)
        })
        .py()
    }

    /// Starts a generation and returns its reader at once. The prompt is `prompt_ids`, or, with
    /// `messages_json`, chat messages whose image parts take `images` in order: each
    /// `(bytes, width, height)`, raw RGB rows when `width` is set, else an encoded image; and
    /// whose audio parts take `audios`: `(bytes, sample_rate, channels)`, float32 samples when
    /// `sample_rate` is set, else an encoded sound.
    #[pyo3(signature = (prompt_ids, *, max_tokens, temperature, top_p, top_k, min_p, stop, seed,
                        repetition_penalty, presence_penalty, frequency_penalty, logit_bias,
                        logprobs = false, top_logprobs = 0, json_schema = None, regex = None,
                        grammar = None, messages_json = None, images = Vec::new(), audios = Vec::new(),
                        max_image_pixels = crate::media::DEFAULT_MAX_IMAGE_PIXELS))]
    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        py: Python<'_>,
        prompt_ids: Vec<u32>,
        max_tokens: usize,
        temperature: f64,
        top_p: f64,
        top_k: usize,
        min_p: f64,
        stop: Vec<String>,
        seed: Option<u64>,
        repetition_penalty: f32,
        presence_penalty: f32,
        frequency_penalty: f32,
        logit_bias: Vec<(u32, f32)>,
        logprobs: bool,
        top_logprobs: usize,
        json_schema: Option<String>,
        regex: Option<String>,
        grammar: Option<String>,
        messages_json: Option<String>,
        images: Vec<(Vec<u8>, u32, u32)>,
        audios: Vec<(Vec<u8>, u32, u16)>,
        max_image_pixels: u64,
    ) -> PyResult<NativeGeneration> {
        let model = self.get()?;
        crate::logging_bridge::refresh_level(py);
        let params = GenerationParams {
            max_tokens,
            temperature,
            top_p,
            top_k,
            min_p,
            stop,
            seed,
            repetition_penalty,
            presence_penalty,
            frequency_penalty,
            logit_bias,
            logprobs,
            top_logprobs,
            constraint: output_constraint(json_schema, regex, grammar).py()?,
        };
        let generation = py
            .detach(|| match messages_json {
                None => model.start(prompt_ids, params),
                Some(json) => {
                    let messages: serde_json::Value = serde_json::from_str(&json).map_err(|e| {
                        Failure::invalid(format!("messages are not valid JSON: {e}"))
                    })?;
                    let images = images
                        .into_iter()
                        .enumerate()
                        .map(|(i, (bytes, width, height))| {
                            let what = format!("image {}", i + 1);
                            if width == 0 {
                                crate::media::decode_image(&what, &bytes, max_image_pixels)
                            } else {
                                crate::media::rgb_image(
                                    &what,
                                    bytes,
                                    width,
                                    height,
                                    max_image_pixels,
                                )
                            }
                        })
                        .collect::<Outcome<Vec<_>>>()?;
                    let audios = audios
                        .into_iter()
                        .enumerate()
                        .map(|(i, (bytes, sample_rate, channels))| {
                            let what = format!("audio {}", i + 1);
                            if sample_rate == 0 {
                                crate::media::decode_audio(&what, &bytes)
                            } else {
                                crate::media::raw_audio(&what, &bytes, sample_rate, channels)
                            }
                        })
                        .collect::<Outcome<Vec<_>>>()?;
                    model.start_multimodal(&messages, images, audios, params)
                }
            })
            .py()?;
        Ok(NativeGeneration {
            inner: Mutex::new(generation),
        })
    }

    /// Stops the engine and frees the model; returns once its memory is freed. Generations
    /// still running end with `ModelClosedError`.
    fn unload(&self, py: Python<'_>) {
        let model = lock(&self.model).take();
        if let Some(model) = model {
            py.detach(move || model.close());
        }
    }
}

/// One running generation.
#[pyclass(frozen, name = "NativeGeneration", module = "pcai_inference._core")]
pub struct NativeGeneration {
    inner: Mutex<Generation>,
}

#[pymethods]
impl NativeGeneration {
    /// Waits up to `timeout` seconds. Returns None if nothing arrived, `(text, None)` for new
    /// text, and `(text, figures)` at the end.
    fn next<'py>(
        &self,
        py: Python<'py>,
        timeout: f64,
    ) -> PyResult<Option<(String, Option<Bound<'py, PyDict>>)>> {
        let timeout = Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
        let step = py.detach(|| lock(&self.inner).next_step(timeout)).py()?;
        Ok(match step {
            Step::Pending => None,
            Step::Text(t) => Some((t, None)),
            Step::Done(t, f) => Some((t, Some(finished_dict(py, &f)?))),
        })
    }

    /// Stops the generation. Returns the figures if it was still running, else None.
    fn cancel<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let finished = py.detach(|| lock(&self.inner).cancel());
        finished.map(|f| finished_dict(py, &f)).transpose()
    }

    /// After the end, waits up to `timeout` seconds for the engine to release the sequence;
    /// returns how many tokens it sampled for this request in total, or None if still running.
    fn wait_engine_release(&self, py: Python<'_>, timeout: f64) -> Option<usize> {
        let timeout = Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
        py.detach(|| lock(&self.inner).wait_engine_release(timeout))
    }

    #[getter]
    fn done(&self) -> bool {
        lock(&self.inner).is_done()
    }
}

/// The features this build was compiled with (`cuda`, `metal`, ...).
#[pyfunction]
pub fn build_features() -> Vec<&'static str> {
    compiled_features()
}

/// The device a spec (`"auto"`, `"cpu"`, `"cuda:N"`, `"metal"`) resolves to on this machine;
/// raises `DeviceError` when this build or machine cannot use it.
#[pyfunction]
pub fn resolve_device_name(py: Python<'_>, spec: &str) -> PyResult<String> {
    let request = parse_device(spec).py()?;
    py.detach(|| resolve_device(request).map(|(_, name)| name))
        .py()
}

/// CPU instruction sets the kernels were compiled for, and whether this CPU has them.
#[pyfunction]
pub fn cpu_kernels() -> Vec<(&'static str, bool, bool)> {
    crate::cpu::kernel_features()
}

/// The engine patches this build carries, each `crate version/patch file`.
#[pyfunction]
pub fn engine_patches() -> Vec<&'static str> {
    crate::engine_patches()
}

/// The tokenizer of a GGUF file, loaded without the model's weights.
#[pyclass(frozen, name = "NativeTokenizer", module = "pcai_inference._core")]
pub struct NativeTokenizer {
    codec: Codec,
    eog_ids: Vec<u32>,
    bos_id: Option<u32>,
}

#[pymethods]
impl NativeTokenizer {
    #[staticmethod]
    fn from_gguf(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let (codec, vocab) = py
            .detach(|| {
                catch_engine_panic(FailureKind::ModelFormat, "reading the tokenizer", || {
                    Codec::from_gguf_file(&path)
                })
            })
            .py()?;
        Ok(Self {
            codec,
            eog_ids: vocab.end_of_generation_ids(),
            bos_id: vocab.bos_id,
        })
    }

    #[pyo3(signature = (text, add_special_tokens = true, parse_special = false))]
    fn tokenize(
        &self,
        py: Python<'_>,
        text: String,
        add_special_tokens: bool,
        parse_special: bool,
    ) -> PyResult<Vec<u32>> {
        py.detach(|| {
            self.codec
                .tokenize(&text, add_special_tokens, parse_special)
        })
        .py()
    }

    #[pyo3(signature = (ids, skip_special_tokens = false))]
    fn detokenize(
        &self,
        py: Python<'_>,
        ids: Vec<u32>,
        skip_special_tokens: bool,
    ) -> PyResult<String> {
        py.detach(|| self.codec.detokenize(&ids, skip_special_tokens))
            .py()
    }

    #[getter]
    fn vocab_size(&self) -> u32 {
        self.codec.vocab_size()
    }

    #[getter]
    fn eog_ids(&self) -> Vec<u32> {
        self.eog_ids.clone()
    }

    #[getter]
    fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// The tokenizer in Hugging Face `tokenizer.json` form.
    fn to_json(&self) -> PyResult<String> {
        self.codec
            .tokenizer()
            .to_string(false)
            .map_err(|e| Failure::invalid(format!("cannot serialize the tokenizer: {e}")))
            .py()
    }
}
