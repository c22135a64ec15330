//! The inference engines of `effnetclassify`: a private one per element, or one per
//! `engine` name shared by every element that names it, so that their frames are batched
//! together.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use effistream::engine::{Engine, EngineSettings, threads_per_worker};
use effistream::model::{ModelSource, Variant, own};

use crate::registry::Registry;

/// Largest `top-k` property value.
pub(super) const MAX_TOP_K: u32 = 100;
/// Classes the engine ranks per frame; each element keeps its own `top-k` of them.
pub(super) const ENGINE_TOP_K: usize = MAX_TOP_K as usize;
/// Longest wait for a worker to finish its batch when the last element stops.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The element properties an engine is built from (into the library's `EngineSettings`,
/// as the daemon's `Plan` holds one); elements sharing an engine must agree on all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EngineProperties {
    pub model: String,
    /// Canonical when the file exists, so that two spellings of one path agree.
    pub weights: Option<PathBuf>,
    pub batch_size: u32,
    pub batch_timeout_ms: u32,
    pub threads: u32,
    /// Frames older than this when their batch forms are not inferred: nobody waits for
    /// them any more.
    pub max_frame_age: Duration,
}

impl fmt::Display for EngineProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "model={}", self.model)?;
        match &self.weights {
            Some(path) => write!(f, " weights={}", path.display())?,
            None => f.write_str(" weights=(looked up)")?,
        }
        write!(
            f,
            " batch-size={} batch-timeout-ms={} threads={}",
            self.batch_size, self.batch_timeout_ms, self.threads
        )
    }
}

/// A running engine; shut down when the last element using it lets it go.
pub(super) struct SharedEngine {
    settings: EngineProperties,
    engine: Option<Engine>,
}

impl SharedEngine {
    /// Loads the model and starts the engine (warm-up included). The error is the
    /// library's one-line message.
    fn start(settings: EngineProperties) -> Result<Self, gst::ErrorMessage> {
        Variant::by_name(&settings.model)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{e}")))?;
        // The default model name counts as not given: a checkpoint's config.json names
        // the architecture (one that names another is refused with both names).
        let source = ModelSource {
            name: (settings.model != own::DEFAULT_MODEL).then(|| settings.model.clone()),
            weights: settings.weights.clone(),
            labels: None,
            hub_id: None,
        };
        let classifier = own::load(&source).map_err(|e| {
            let message = match e {
                // The library's message names the command line's --weights.
                effistream::Error::NoWeights { variant, tried } => format!(
                    "no weights for {variant}: {tried}. Set the weights property to a timm \
                     model.safetensors, a timm checkpoint folder or a PyTorch .pth, or put \
                     {variant}.safetensors in $EFFISTREAM_WEIGHTS_DIR"
                ),
                e => e.to_string(),
            };
            gst::error_msg!(gst::ResourceError::OpenRead, ("{message}"))
        })?;
        // 0: every core, as the element's one worker is latency-bound.
        let threads = threads_per_worker(settings.threads as usize, 1);
        let engine = Engine::start(
            Arc::new(classifier),
            EngineSettings {
                max_batch: settings.batch_size as usize,
                max_wait: Duration::from_millis(settings.batch_timeout_ms.into()),
                max_frame_age: settings.max_frame_age,
                workers: 1,
                threads,
                top_k: ENGINE_TOP_K,
                threshold: 0.0,
                model_id: None,
            },
        )
        .map_err(|e| gst::error_msg!(gst::LibraryError::Init, ("{e}")))?;
        Ok(Self {
            settings,
            engine: Some(engine),
        })
    }

    pub fn engine(&self) -> &Engine {
        self.engine
            .as_ref()
            .expect("the engine is only taken out when dropped")
    }
}

impl Drop for SharedEngine {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.shutdown(SHUTDOWN_TIMEOUT);
        }
    }
}

static ENGINES: Registry<SharedEngine> = Registry::new();

/// The engine named `name` (started with `settings` if it does not run yet), or a private
/// engine when `name` is empty. An engine of that name running with other settings is
/// refused with a message that names both.
pub(super) fn acquire(
    name: &str,
    settings: EngineProperties,
) -> Result<Arc<SharedEngine>, gst::ErrorMessage> {
    if name.is_empty() {
        return SharedEngine::start(settings).map(Arc::new);
    }
    ENGINES.get_or_create(
        name,
        |running| {
            if running.settings == settings {
                Ok(())
            } else {
                Err(gst::error_msg!(
                    gst::LibraryError::Settings,
                    (
                        "engine {name:?} already runs with {}; this element asks for {settings}. Elements sharing an engine need the same model, weights, batch-size, batch-timeout-ms and threads",
                        running.settings
                    )
                ))
            }
        },
        || SharedEngine::start(settings.clone()),
    )
}
