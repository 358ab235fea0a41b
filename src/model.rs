//! A loaded model: the engine runner, our tokenizer handle and what we need to build requests.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use either::Either;
use indexmap::IndexMap;
use mistralrs::core::AudioInput;
use mistralrs::core::{
    AutoDeviceMapParams, DefaultSchedulerMethod, DeviceMapSetting, GGUFLoaderBuilder,
    GGUFSpecificConfig, IsqType, Loader, MistralRsBuilder, ModelCategory, ModelDType,
    MultimodalLoaderBuilder, MultimodalLoaderType, MultimodalPromptPrefixer,
    MultimodalSpecificConfig, NormalLoaderBuilder, NormalSpecificConfig, TokenSource,
};
use mistralrs::{
    parse_isq_value, Device, MessageContent, MistralRs, NormalRequest, Request, RequestLike,
    Response, SchedulerConfig,
};

use crate::chat_template::ChatTemplate;
use crate::codec::Codec;
use crate::device::{resolve_device, DeviceRequest};
use crate::engine_lifetime::{
    release_free_memory, ClosedFlag, EngineThreads, EngineWatch, IdleTrim,
};
use crate::failure::{Failure, FailureKind, Outcome};
use crate::generation::Generation;
use crate::gguf_content;
use crate::gguf_header::{
    check_model_metadata, is_supported_architecture, read_gguf_header, unsupported_layout,
    GgufSummary, SUPPORTED_ARCHITECTURES,
};
use crate::gguf_tokenizer::GgufVocab;
use crate::output_constraint::GrammarTokens;
use crate::params::{check_context, GenerationParams};
use crate::request::{EnginePrompt, PcaiRequest, TapEvent, TokenTap};
use crate::runtime::runtime;
use crate::safetensors_folder::{
    inspect_folder, max_images_per_request, uses_multimodal_loader, FolderModel, ImageGeometry,
};

/// Sequences one engine step may run when the caller does not choose (`LoadOptions::max_batch`).
///
/// Eight, by measurement (`bench/run.py`, Gemma 3 270M, 2 cores, our engine patches): with it,
/// 4, 8 and 16 concurrent requests with different prompts got 2.5x, 2.9x and 3.0x the tokens/s
/// they got with `max_batch = 1` (16 rows a step add 2 % over 8, for twice the K/V buffers), a
/// request arriving while 7 others decode got its first token in 0.05 s instead of 4.0 s, and a
/// single request decoded no slower. With quantized weights each request gets exactly what it
/// gets alone.
pub const DEFAULT_MAX_BATCH: usize = 8;

/// The most sequences one engine step may run: far more would only queue inside the engine.
pub const MAX_BATCH_LIMIT: usize = 256;

pub struct LoadOptions {
    pub device: DeviceRequest,
    /// A Jinja chat template (the template text); overrides the model's own.
    pub chat_template: Option<String>,
    /// At most this many tokens (prompt and generated) per request; `None`: the model's window.
    pub max_context: Option<usize>,
    /// A Hugging Face `tokenizer.json` that replaces the model's own tokenizer.
    pub tokenizer: Option<PathBuf>,
    /// At most this many sequences in one engine step; further requests wait their turn.
    pub max_batch: usize,
}

/// Reads a `tokenizer.json` given in place of the model's own, before the long load.
fn read_tokenizer_file(path: &Path) -> Outcome<Arc<tokenizers::Tokenizer>> {
    if !path.is_file() {
        return Err(Failure::new(
            FailureKind::ModelNotFound,
            format!("tokenizer file {} does not exist", path.display()),
        ));
    }
    tokenizers::Tokenizer::from_file(path)
        .map(Arc::new)
        .map_err(|e| {
            format_failure(
                path,
                &format!("is not a Hugging Face tokenizer.json ({e}); give the tokenizer.json of a model, or leave tokenizer out"),
            )
        })
}

/// The model's end-of-generation ids followed by any others the engine knows.
fn merge_ids(mut ids: Vec<u32>, more: impl IntoIterator<Item = u32>) -> Vec<u32> {
    for id in more {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// The tokens one request may use: the model's window, or less when the user asks.
fn context_window(max_context: Option<usize>, model_window: usize) -> usize {
    max_context.map_or(model_window, |n| n.min(model_window))
}

/// The engine's runner and what we keep to admit requests to it and to stop it.
struct Engine {
    runner: Arc<MistralRs>,
    /// Whether the engine thread still holds the model (it frees it after `runner` drops).
    watch: EngineWatch<EngineInner>,
    threads: EngineThreads,
    closed: ClosedFlag,
    /// Admission to the engine: the engine's own queue holds up to `max_batch` more requests
    /// than it runs, so a freed place is filled at the next step.
    slots: Arc<tokio::sync::Semaphore>,
    /// At most this many sequences in one engine step.
    max_batch: usize,
    /// Generations submitted and not yet ended; see `IdleTrim`.
    in_flight: IdleTrim,
    /// Compiles requests' grammars before they are submitted.
    grammar: GrammarTokens,
}

pub struct LoadedModel {
    engine: Engine,
    codec: Codec,
    /// End-of-generation ids; the first is the one we force to end a sequence early.
    eog_ids: Vec<u32>,
    pub context_window: usize,
    pub device: String,
    pub model_path: PathBuf,
    pub architecture: Option<String>,
    pub chat_template: ChatTemplate,
    /// What the model reads: `text`, and `image` / `audio` for models that take them.
    pub input_modalities: Vec<&'static str>,
    /// Writes a model's image placeholders into message text, for the processors that take
    /// only a message's text (Qwen-VL, LLaVA, ...); a no-op where the chat template places
    /// images (Gemma 3).
    prefixer: Option<Arc<dyn MultimodalPromptPrefixer>>,
    image_geometry: ImageGeometry,
}

/// Checks a local GGUF path the way a user needs it explained.
fn check_gguf_path(path: &Path) -> Outcome<GgufSummary> {
    if !path.exists() {
        return Err(Failure::new(
            FailureKind::ModelNotFound,
            format!("no model file at {}; check the path", path.display()),
        ));
    }
    if path.is_dir() {
        let has_gguf = std::fs::read_dir(path)
            .map(|d| {
                d.flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "gguf"))
            })
            .unwrap_or(false);
        let hint = if has_gguf {
            "it holds .gguf files: pass the path of one of them"
        } else {
            "it holds no .gguf model file"
        };
        return Err(Failure::new(
            FailureKind::ModelFormat,
            format!("{} is a folder, not a model file: {hint}", path.display()),
        ));
    }
    let unusable = |why: String| {
        Failure::new(
            FailureKind::ModelFormat,
            format!("{} is not a usable GGUF model: {why}", path.display()),
        )
    };
    let summary = read_gguf_header(path).map_err(unusable)?;
    if let Some(architecture) = &summary.architecture {
        if !is_supported_architecture(architecture) {
            return Err(Failure::new(
                FailureKind::UnsupportedModel,
                format!(
                    "{}: the GGUF architecture `{architecture}` is not one this engine runs \
                     (it runs {}); use a GGUF model of one of those architectures",
                    path.display(),
                    SUPPORTED_ARCHITECTURES.join(", ")
                ),
            ));
        }
    }
    check_model_metadata(&summary).map_err(unusable)?;
    if let Some(why) = unsupported_layout(&summary) {
        return Err(Failure::new(
            FailureKind::UnsupportedModel,
            format!("{}: {why}", path.display()),
        ));
    }
    Ok(summary)
}

type EngineInner = tokio::sync::Mutex<dyn mistralrs::core::Pipeline + Send + Sync>;
type EnginePipeline = Arc<EngineInner>;

fn format_failure(path: &Path, why: &str) -> Failure {
    Failure::new(
        FailureKind::ModelFormat,
        format!("{}: {why}", path.display()),
    )
}

fn load_failure(path: &Path, e: impl std::fmt::Display) -> Failure {
    Failure::new(
        FailureKind::ModelFormat,
        format!("the engine could not load {}: {e:#}", path.display()),
    )
}

/// The tokenizer a GGUF load hands the engine, which shares it with us.
enum GgufTokenizer {
    /// Given by the caller (`LoadOptions::tokenizer`).
    Given(Box<tokenizers::Tokenizer>),
    /// Ours, converted from the file's vocabulary on a thread of its own while the engine reads
    /// the weights (each takes a few tenths of a second for a 262,144-token vocabulary).
    FromVocab(GgufVocab),
}

/// Starts converting the vocabulary on its own thread; the function returned joins it.
fn tokenizer_built_meanwhile(
    vocab: GgufVocab,
) -> impl FnOnce() -> anyhow::Result<tokenizers::Tokenizer> + Send + 'static {
    let handle = std::thread::Builder::new()
        .name("pcai-tokenizer".into())
        .spawn(move || Codec::tokenizer_from_vocab(&vocab));
    move || match handle {
        Ok(handle) => handle
            .join()
            .map_err(|_| anyhow::anyhow!("building the tokenizer failed unexpectedly"))?
            .map_err(anyhow::Error::msg),
        Err(e) => Err(anyhow::anyhow!(
            "could not start a thread to build the tokenizer: {e}"
        )),
    }
}

/// Loads a GGUF file with the engine's GGUF loader (Gemma 3 through our engine patch, which
/// reads it natively), handing it our tokenizer where we have one, so that the engine and we
/// share one, and the context limit for the models whose tables are sized by it.
fn load_engine_gguf(
    path: &Path,
    device: &Device,
    tokenizer: Option<GgufTokenizer>,
    max_context: Option<usize>,
    dtype: ModelDType,
) -> Outcome<EnginePipeline> {
    let dir = path
        .parent()
        .unwrap_or(Path::new("."))
        .to_string_lossy()
        .into_owned();
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut builder = GGUFLoaderBuilder::new(
        None,
        None,
        dir,
        vec![file],
        GGUFSpecificConfig { topology: None },
        false,
        None,
    );
    match tokenizer {
        Some(GgufTokenizer::Given(tokenizer)) => builder = builder.with_tokenizer(*tokenizer),
        Some(GgufTokenizer::FromVocab(vocab)) => {
            builder = builder.with_tokenizer_from(tokenizer_built_meanwhile(vocab));
        }
        None => {}
    }
    if let Some(n) = max_context {
        builder = builder.with_max_seq_len(n);
    }
    let loader = builder.build();
    load_local(
        &*loader,
        path,
        device,
        dtype,
        AutoDeviceMapParams::default_text(),
        None,
    )
}

/// Runs an engine loader on local files (no hub, no token), silently, with automatic device
/// mapping.
fn load_local(
    loader: &dyn Loader,
    path: &Path,
    device: &Device,
    dtype: ModelDType,
    mapping: AutoDeviceMapParams,
    isq: Option<IsqType>,
) -> Outcome<EnginePipeline> {
    loader
        .load_model_from_hf(
            None,
            TokenSource::None,
            &dtype,
            device,
            true,
            DeviceMapSetting::Auto(mapping),
            isq,
            None,
        )
        .map_err(|e| load_failure(path, e))
}

/// The engine's scheduler and request loop around a loaded pipeline.
///
/// Up to `max_batch` sequences run in one step (our engine patches make batched decode exact and
/// the scheduler keep to the limit). For models that take images or audio the prefix cache
/// stays off: on a cache hit mistralrs 0.8.1 hands logits processors a shortened context for
/// media prompts (the output was right, the token count we read from it was not), and such
/// prompts rarely share long prefixes.
fn start_engine(pipeline: EnginePipeline, takes_media: bool, max_batch: usize) -> Engine {
    let scheduler = SchedulerConfig::DefaultScheduler {
        method: DefaultSchedulerMethod::Fixed(NonZeroUsize::new(max_batch).expect("non-zero")),
    };
    let watch = EngineWatch::new(&pipeline);
    let grammar = {
        let metadata = pipeline.blocking_lock().get_metadata();
        GrammarTokens::new(metadata.tokens(), metadata.eos_tok.clone())
    };
    let (runner, threads) = EngineThreads::created_by(|| {
        runtime().block_on(
            MistralRsBuilder::new(pipeline, scheduler, false, None)
                .with_no_kv_cache(false)
                .with_no_prefix_cache(takes_media)
                .with_prefix_cache_n(16)
                .build(),
        )
    });
    Engine {
        runner,
        watch,
        threads,
        closed: ClosedFlag::default(),
        slots: Arc::new(tokio::sync::Semaphore::new(2 * max_batch)),
        max_batch,
        in_flight: IdleTrim::default(),
        grammar,
    }
}

/// Loads a Hugging Face SafeTensors folder with the engine's loader for its architecture.
fn load_folder_pipeline(
    model: &FolderModel,
    device: &Device,
    options: &FolderOptions,
) -> Outcome<EnginePipeline> {
    let dir = model.dir.to_string_lossy().into_owned();
    let tokenizer_json = options.tokenizer_json.clone();
    let isq = options
        .isq
        .as_deref()
        .map(|q| parse_isq_value(q, Some(device)))
        .transpose()
        .map_err(|e| Failure::invalid(format!("isq: {e}")))?;
    let dtype = match options.dtype.as_str() {
        // The engine's "auto" picks F16 on the CPU, which is slow there and breaks models such
        // as Gemma 3 (greedy output ended at once, empty); F32 is the CPU's native type.
        "auto" if device.is_cpu() => ModelDType::F32,
        "auto" => ModelDType::Auto,
        "f32" => ModelDType::F32,
        "f16" => ModelDType::F16,
        "bf16" => ModelDType::BF16,
        other => {
            return Err(Failure::invalid(format!(
                "dtype must be auto, f32, f16 or bf16, got {other:?}"
            )))
        }
    };
    let multimodal =
        model.takes_images || model.takes_audio || uses_multimodal_loader(&model.architecture);
    let loader = if multimodal {
        // Gemma 3 by name (its text-only class too); others by the engine's detection from
        // `config.json`'s architectures.
        let kind =
            uses_multimodal_loader(&model.architecture).then_some(MultimodalLoaderType::Gemma3);
        MultimodalLoaderBuilder::new(
            MultimodalSpecificConfig::default(),
            None,
            tokenizer_json,
            Some(dir),
            None,
        )
        .build(kind)
    } else {
        NormalLoaderBuilder::new(
            NormalSpecificConfig::default(),
            None,
            tokenizer_json,
            Some(dir),
            false,
            None,
        )
        .build(None)
        .map_err(|e| load_failure(&model.dir, e))?
    };
    let mapping = if multimodal {
        AutoDeviceMapParams::default_multimodal()
    } else {
        AutoDeviceMapParams::default_text()
    };
    load_local(&*loader, &model.dir, device, dtype, mapping, isq)
}

/// Options that only SafeTensors folders take.
pub struct FolderOptions {
    /// `auto`, `f32`, `f16` or `bf16`.
    pub dtype: String,
    /// In-situ quantization at load, e.g. `Q4K` or `Q8_0`.
    pub isq: Option<String>,
    /// Set by `load_folder` from `LoadOptions::tokenizer`.
    tokenizer_json: Option<String>,
}

impl FolderOptions {
    pub fn new(dtype: String, isq: Option<String>) -> Self {
        Self {
            dtype,
            isq,
            tokenizer_json: None,
        }
    }
}

impl LoadedModel {
    /// At most this many sequences run in one engine step.
    pub fn max_batch(&self) -> usize {
        self.engine.max_batch
    }

    /// Loads a local Hugging Face SafeTensors folder. Blocking, like `load_gguf`.
    pub fn load_folder(
        dir: &Path,
        options: LoadOptions,
        mut folder: FolderOptions,
    ) -> Outcome<Self> {
        let model = inspect_folder(dir)?;
        if let Some(path) = &options.tokenizer {
            read_tokenizer_file(path)?;
            folder.tokenizer_json = Some(path.to_string_lossy().into_owned());
        }
        let dir = dir.canonicalize().map_err(|e| {
            Failure::new(
                FailureKind::ModelNotFound,
                format!("{}: {e}", dir.display()),
            )
        })?;
        let model = FolderModel {
            dir: dir.clone(),
            ..model
        };
        let (device, device_name) = resolve_device(options.device)?;
        let started = std::time::Instant::now();
        let chat_template = ChatTemplate::choose(
            options.chat_template,
            model.chat_template.clone(),
            model.bos_token.clone(),
            model.eos_token.clone(),
        )
        .map_err(Failure::invalid)?;
        let pipeline = load_folder_pipeline(&model, &device, &folder)?;
        tracing::info!(
            "the engine loaded the model after {:.2?}",
            started.elapsed()
        );
        let (tokenizer, metadata, category) = {
            let p = pipeline.blocking_lock();
            (p.tokenizer(), p.get_metadata(), p.category())
        };
        let tokenizer =
            tokenizer.ok_or_else(|| format_failure(&dir, "the engine has no tokenizer for it"))?;
        let token_id = |t: &Option<String>| t.as_deref().and_then(|t| tokenizer.token_to_id(t));
        let bos = token_id(&model.bos_token).filter(|_| model.add_bos);
        let eog_ids = merge_ids(
            model.eos_ids.clone(),
            token_id(&model.eos_token)
                .into_iter()
                .chain(metadata.eos_tok.iter().copied()),
        );
        if eog_ids.is_empty() {
            return Err(format_failure(&dir, "names no end-of-sequence token"));
        }
        let context_window = context_window(options.max_context, metadata.max_seq_len);
        // The engine's audio model (Voxtral) keeps the audio of the last prompt it prefilled in
        // one model-wide cache that every decode step reads: two requests in flight would read
        // each other's audio. Requests to it run one at a time.
        let max_batch = if model.takes_audio {
            1
        } else {
            options.max_batch
        };
        let engine = start_engine(pipeline, model.takes_images || model.takes_audio, max_batch);
        // Loading and the engine's first run free more than they keep (files' metadata,
        // tokenizer tables being built, the first run's activations).
        release_free_memory();
        Ok(Self {
            engine,
            codec: Codec::new(tokenizer, bos),
            eog_ids,
            context_window,
            device: device_name,
            model_path: dir,
            input_modalities: std::iter::once("text")
                .chain(model.takes_images.then_some("image"))
                .chain(model.takes_audio.then_some("audio"))
                .collect(),
            image_geometry: model.image_geometry,
            prefixer: match category {
                ModelCategory::Multimodal { prefixer } => Some(prefixer),
                _ => None,
            },
            architecture: Some(model.architecture),
            chat_template,
        })
    }

    /// Loads a local GGUF file. Blocking; call without the GIL, and inside `catch_engine_panic`
    /// (the engine panics on some files).
    pub fn load_gguf(path: &Path, options: LoadOptions) -> Outcome<Self> {
        let summary = check_gguf_path(path)?;
        let path = path.canonicalize().map_err(|e| {
            Failure::new(
                FailureKind::ModelNotFound,
                format!("{}: {e}", path.display()),
            )
        })?;
        let (device, device_name) = resolve_device(options.device)?;
        let tokenizer_override = options
            .tokenizer
            .as_deref()
            .map(read_tokenizer_file)
            .transpose()?;
        let started = std::time::Instant::now();
        let content = gguf_content::read_content(&path).map_err(|e| {
            Failure::new(FailureKind::ModelFormat, format!("{}: {e}", path.display()))
        })?;
        let vocab = gguf_content::read_vocab(&content).map_err(|e| {
            Failure::new(FailureKind::ModelFormat, format!("{}: {e}", path.display()))
        })?;
        let model_template = gguf_content::chat_template(&content);
        drop(content);
        let token_text = |id: Option<u32>| id.map(|i| vocab.tokens[i as usize].clone());
        let chat_template = ChatTemplate::choose(
            options.chat_template,
            model_template,
            token_text(vocab.bos_id),
            token_text(vocab.eos_id),
        )
        .map_err(Failure::invalid)?;
        let architecture = summary.architecture.clone().unwrap_or_default();
        tracing::info!("read the GGUF metadata in {:.2?}", started.elapsed());

        let bos = vocab.bos_id.filter(|_| vocab.add_bos);
        let vocab_eog_ids = vocab.end_of_generation_ids();
        // Without a tokenizer given, ids run over the file's tokens (ours or the engine's
        // conversion of them): counting the tokenizer's vocabulary would copy it.
        let our_vocab_size = (tokenizer_override.is_none()).then_some(vocab.tokens.len() as u32);
        // One tokenizer for the engine and us: the one given, else our conversion of the GGUF
        // vocabulary; the engine converts only the kinds we do not (its Gemma 3 ids differ from
        // llama.cpp's, so Gemma 3 needs ours).
        let gemma3 = architecture == "gemma3";
        let tokenizer = match tokenizer_override {
            Some(t) => Some(GgufTokenizer::Given(Box::new(Arc::unwrap_or_clone(t)))),
            None => match vocab.check_convertible() {
                Ok(()) => Some(GgufTokenizer::FromVocab(vocab)),
                Err(why) if gemma3 => return Err(format_failure(&path, &why)),
                Err(why) => {
                    tracing::warn!("using the engine's tokenizer: {why}");
                    None
                }
            },
        };
        // F32 activations on the CPU, as llama.cpp computes (the engine's automatic choice
        // would be a 16-bit type: less exact, and slower where the CPU has no 16-bit arithmetic);
        // Gemma 3 in F32 on every device, as before.
        let dtype = if gemma3 || device.is_cpu() {
            ModelDType::F32
        } else {
            ModelDType::Auto
        };
        let pipeline = load_engine_gguf(&path, &device, tokenizer, options.max_context, dtype)?;
        tracing::info!(
            "the engine loaded the model after {:.2?}",
            started.elapsed()
        );

        let (engine_tokenizer, metadata) = {
            let p = pipeline.blocking_lock();
            (p.tokenizer(), p.get_metadata())
        };
        let engine_tokenizer = engine_tokenizer
            .ok_or_else(|| format_failure(&path, "the engine has no tokenizer for this file"))?;
        let codec = match our_vocab_size {
            Some(n) => Codec::with_vocab_size(engine_tokenizer, bos, n),
            None => Codec::new(engine_tokenizer, bos),
        };
        tracing::info!("tokenizer ready after {:.2?}", started.elapsed());
        let eog_ids = merge_ids(vocab_eog_ids, metadata.eos_tok.iter().copied());
        if eog_ids.is_empty() {
            return Err(Failure::new(
                FailureKind::ModelFormat,
                format!("{} names no end-of-sequence token", path.display()),
            ));
        }
        let context_window = context_window(options.max_context, metadata.max_seq_len);
        let engine = start_engine(pipeline, false, options.max_batch);
        // Loading and the engine's first run free more than they keep (files' metadata,
        // tokenizer tables being built, the first run's activations).
        release_free_memory();

        Ok(Self {
            engine,
            codec,
            eog_ids,
            context_window,
            device: device_name,
            model_path: path,
            architecture: summary.architecture,
            chat_template,
            input_modalities: vec!["text"],
            prefixer: None,
            image_geometry: ImageGeometry::Any,
        })
    }

    /// Stops the engine and waits (at most a minute) until it has freed the model, then
    /// returns the freed memory to the system. Generations still running end with
    /// `ModelClosed`. Blocking; call without the GIL.
    pub fn close(self: Arc<Self>) {
        self.engine.closed.set();
        let watch = self.engine.watch.clone();
        let threads = self.engine.threads.clone();
        drop(self);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        if !(watch.wait_gone(deadline) && threads.wait_one_exited(deadline)) {
            tracing::warn!("the engine had not freed the model a minute after unload()");
        }
        release_free_memory();
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    pub fn eog_ids(&self) -> &[u32] {
        &self.eog_ids
    }

    /// Renders chat messages (a JSON list) with the chat template and tokenizes them.
    pub fn chat_prompt(&self, messages: &serde_json::Value) -> Outcome<Vec<u32>> {
        let pieces = self
            .chat_template
            .render_pieces(messages)
            .map_err(Failure::invalid)?;
        self.codec.tokenize_pieces(&pieces)
    }

    fn sender(&self) -> Outcome<tokio::sync::mpsc::Sender<Request>> {
        self.engine
            .runner
            .get_sender(None)
            .map_err(|_| engine_gone())
    }

    /// Submits a generation and returns its reader at once.
    pub fn start(&self, prompt_ids: Vec<u32>, mut params: GenerationParams) -> Outcome<Generation> {
        params.validate().map_err(Failure::invalid)?;
        check_context(prompt_ids.len(), self.context_window).map_err(Failure::invalid)?;
        // Generation ends with finish reason `length` where the window ends (as llama.cpp's
        // n_ctx does); the engine's position tables go no further.
        params.max_tokens = params
            .max_tokens
            .min(self.context_window - prompt_ids.len());
        self.codec
            .check_ids(prompt_ids.iter().copied(), "prompt token id")?;
        let prompt = EnginePrompt::Tokens(prompt_ids.clone());
        self.submit(prompt, &prompt_ids, params)
    }

    /// Starts generating from chat messages with images: the engine's processor applies the
    /// model's chat template and expands each image into the model's image tokens.
    /// `messages` is a JSON list of `{role, content}` with content a string or a list of parts
    /// (`{"type": "text", "text": ...}`, `{"type": "image"}`), images in order of appearance.
    pub fn start_multimodal(
        &self,
        messages: &serde_json::Value,
        images: Vec<image::DynamicImage>,
        audios: Vec<AudioInput>,
        mut params: GenerationParams,
    ) -> Outcome<Generation> {
        params.validate().map_err(Failure::invalid)?;
        let media = [
            (!images.is_empty(), "image", "images"),
            (!audios.is_empty(), "audio", "audio"),
        ];
        for (given, kind, plural) in media {
            if given && !self.input_modalities.contains(&kind) {
                return Err(Failure::invalid(format!(
                    "this model reads {} only; it cannot take {plural}",
                    self.input_modalities.join(" and ")
                )));
            }
        }
        let most = self
            .architecture
            .as_deref()
            .and_then(max_images_per_request);
        if let Some(most) = most.filter(|most| images.len() > *most) {
            return Err(Failure::invalid(format!(
                "this model takes at most {most} image per request ({} given): the engine's \
                 processor for it reads only one image",
                images.len()
            )));
        }
        for (i, image) in images.iter().enumerate() {
            if let Some(why) = self.image_geometry.refuse(image.width(), image.height()) {
                return Err(Failure::new(
                    FailureKind::InvalidImage,
                    format!("image {} {why}", i + 1),
                ));
            }
        }
        // The prompt's length is known only once the engine has expanded the images.
        params.max_tokens = params.max_tokens.min(self.context_window);
        let mut messages = engine_messages(messages)?;
        if let Some(prefixer) = &self.prefixer {
            place_media(&mut messages, prefixer.as_ref());
        }
        let prompt = EnginePrompt::Multimodal {
            messages,
            images,
            audios,
        };
        self.submit(prompt, &[], params)
    }

    /// Hands a request to the engine; `prompt_ids` are the prompt's ids where we know them.
    fn submit(
        &self,
        prompt: EnginePrompt,
        prompt_ids: &[u32],
        params: GenerationParams,
    ) -> Outcome<Generation> {
        self.codec.check_ids(
            params.logit_bias.iter().map(|(id, _)| *id),
            "logit_bias names token id",
        )?;
        if let Some(constraint) = &params.constraint {
            self.engine.grammar.check(constraint)?;
        }
        let seed = params.seed.unwrap_or_else(fresh_seed);
        let (events_tx, events_rx) = std::sync::mpsc::channel();
        let known_len = matches!(prompt, EnginePrompt::Tokens(_)).then_some(prompt_ids.len());
        let tap = Arc::new(TokenTap::new(
            &params,
            seed,
            known_len,
            self.eog_ids[0],
            events_tx.clone(),
        ));
        let mut req = PcaiRequest::new(prompt, &params, self.eog_ids.clone(), tap.clone());
        let (resp_tx, mut resp_rx) = tokio::sync::mpsc::channel(4);
        let engine_request = Request::Normal(Box::new(NormalRequest {
            messages: req.take_messages(),
            sampling_params: req.take_sampling_params(),
            response: resp_tx,
            return_logprobs: req.return_logprobs(),
            is_streaming: false,
            id: self.engine.runner.next_request_id(),
            constraint: req.take_constraint(),
            suffix: None,
            tools: None,
            tool_choice: None,
            logits_processors: req.take_logits_processors(),
            return_raw_logits: false,
            web_search_options: None,
            model_id: None,
            truncate_sequence: false,
        }));
        let sender = self.sender()?;
        let slots = self.engine.slots.clone();
        let closed = self.engine.closed.clone();
        let queued_tap = tap.clone();
        let running = self.engine.in_flight.start();
        runtime().spawn(async move {
            let _running = running;
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            // Cancelled while queued: nothing to run.
            if queued_tap.stop_requested() {
                let _ = events_tx.send(TapEvent::EngineDone {
                    reason: "canceled".into(),
                });
                return;
            }
            if sender.send(engine_request).await.is_err() {
                let _ = events_tx.send(TapEvent::EngineFailed(engine_gone_or_closed(&closed)));
                return;
            }
            let event = match resp_rx.recv().await {
                Some(Response::CompletionDone(r)) => TapEvent::EngineDone {
                    reason: r
                        .choices
                        .first()
                        .map(|c| c.finish_reason.clone())
                        .unwrap_or_default(),
                },
                Some(Response::Done(r)) => TapEvent::EngineDone {
                    reason: r
                        .choices
                        .first()
                        .map(|c| c.finish_reason.clone())
                        .unwrap_or_default(),
                },
                Some(Response::ValidationError(e)) => {
                    engine_failed(FailureKind::InvalidRequest, e.to_string())
                }
                Some(Response::InternalError(e)) => {
                    engine_failed(FailureKind::Generation, e.to_string())
                }
                Some(Response::CompletionModelError(msg, _))
                | Some(Response::ModelError(msg, _)) => engine_failed(FailureKind::Generation, msg),
                Some(_) => engine_failed(
                    FailureKind::Generation,
                    "the engine sent an unexpected response".into(),
                ),
                None => TapEvent::EngineFailed(engine_gone_or_closed(&closed)),
            };
            let _ = events_tx.send(event);
        });
        Ok(Generation::new(
            events_rx,
            tap,
            self.codec.tokenizer().clone(),
            self.eog_ids.clone(),
            prompt_ids,
            params,
        ))
    }
}

/// Chat messages in the engine's shape: each a map of `role` and `content`, the content a string
/// or a list of part objects.
fn engine_messages(value: &serde_json::Value) -> Outcome<Vec<IndexMap<String, MessageContent>>> {
    let bad = |why: &str| Failure::invalid(format!("chat messages: {why}"));
    let list = value.as_array().ok_or_else(|| bad("expected a list"))?;
    list.iter()
        .map(|message| {
            let fields = message
                .as_object()
                .ok_or_else(|| bad("each message must be an object"))?;
            fields
                .iter()
                .map(|(key, value)| {
                    let content = match value {
                        serde_json::Value::String(text) => Either::Left(text.clone()),
                        serde_json::Value::Array(parts) => Either::Right(
                            parts
                                .iter()
                                .map(|part| {
                                    part.as_object()
                                        .map(|p| {
                                            p.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
                                        })
                                        .ok_or_else(|| bad("each content part must be an object"))
                                })
                                .collect::<Outcome<Vec<_>>>()?,
                        ),
                        _ => return Err(bad(&format!("{key} must be a string or a list"))),
                    };
                    Ok((key.clone(), content))
                })
                .collect()
        })
        .collect()
}

/// Lets the model's prefixer write image and audio placeholders into the first text part of
/// each message that holds media (indices count across the whole request, per kind).
fn place_media(
    messages: &mut [IndexMap<String, MessageContent>],
    prefixer: &dyn MultimodalPromptPrefixer,
) {
    let is_type = |part: &IndexMap<String, serde_json::Value>, kind: &str| {
        part.get("type").and_then(|t| t.as_str()) == Some(kind)
    };
    let (mut next_image, mut next_audio) = (0, 0);
    for message in messages {
        let Some(Either::Right(parts)) = message.get_mut("content") else {
            continue;
        };
        let take = |next: &mut usize, kind: &str| {
            let count = parts.iter().filter(|p| is_type(p, kind)).count();
            let indices: Vec<usize> = (*next..*next + count).collect();
            *next += count;
            indices
        };
        let images = take(&mut next_image, "image");
        let audios = take(&mut next_audio, "audio");
        if images.is_empty() && audios.is_empty() {
            continue;
        }
        if !parts.iter().any(|p| is_type(p, "text")) {
            let mut empty = IndexMap::new();
            empty.insert("type".to_string(), serde_json::Value::from("text"));
            empty.insert("text".to_string(), serde_json::Value::from(""));
            parts.push(empty);
        }
        if let Some(serde_json::Value::String(text)) = parts
            .iter_mut()
            .find(|p| is_type(p, "text"))
            .and_then(|p| p.get_mut("text"))
        {
            if !images.is_empty() {
                *text = prefixer.prefix_image(images, text);
            }
            if !audios.is_empty() {
                *text = prefixer.prefix_audio(audios, text);
            }
        }
    }
}

/// A failure the engine reported for a request.
fn engine_failed(kind: FailureKind, message: String) -> TapEvent {
    TapEvent::EngineFailed(Failure::new(kind, format!("the engine failed: {message}")))
}

/// Why the engine stopped answering: `unload()`, or a failure inside it.
fn engine_gone_or_closed(closed: &ClosedFlag) -> Failure {
    if closed.is_set() {
        Failure::new(
            FailureKind::ModelClosed,
            "the model was unloaded while this generation ran; load it again to generate",
        )
    } else {
        let gone = engine_gone();
        Failure::new(gone.kind, format!("the engine failed: {}", gone.message))
    }
}

fn engine_gone() -> Failure {
    Failure::generation(
        "the engine has stopped (it failed earlier or the model was unloaded); load the model again",
    )
}

fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
