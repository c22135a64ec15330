//! effistream classifies live camera streams with timm's pruned EfficientNets
//! (`efficientnet_b1_pruned`, `efficientnet_b2_pruned`, `efficientnet_b3_pruned`) on plain
//! CPUs, in Rust, and publishes the results over MQTT.
//!
//! This crate is the engine shared by the `effistream` command and the GStreamer plugin:
//!
//! - [`model`]: the network in candle, its weights (safetensors, PyTorch `.pth` in the zip
//!   and legacy formats, the Hugging Face hub cache) and the ImageNet labels;
//! - [`preprocess`]: timm's eval transform for image files and raw RGB frames;
//! - [`engine`]: the batched inference service (fair per-stream submission, a batcher,
//!   worker threads);
//! - [`source`]: camera pipelines in GStreamer, watched and rebuilt when they fail;
//! - [`mqtt`]: the topics, payloads and JSON Schemas of the MQTT contract, the publisher
//!   and an embedded broker;
//! - [`config`] → [`plan`] → [`daemon`]: the configuration file as read, resolved once
//!   into the typed settings of every component (every rule checked in
//!   [`config::Config::resolve`]), and the daemon that runs them (`effistream run`);
//! - [`http`]: the daemon's HTTP server: Prometheus metrics and health probes;
//! - [`util`]: small infrastructure they share (reconnection backoff, joining threads by
//!   a deadline, warning throttles, listener addresses, masking secrets).
//!
//! # Quick start
//!
//! ```no_run
//! use effistream::model::{Classifier, Variant};
//! use effistream::preprocess::RgbImage;
//!
//! let variant = Variant::by_name("efficientnet_b1_pruned")?;
//! // `None` looks in $EFFISTREAM_WEIGHTS_DIR, then the Hugging Face cache, then downloads.
//! let classifier = Classifier::load(variant, None)?;
//! let image = RgbImage::open("cat.jpg".as_ref())?;
//! for class in &classifier.classify(&[image], 5)?[0].top {
//!     println!("{:.3} {}", class.score, class.label);
//! }
//! # Ok::<(), effistream::Error>(())
//! ```

pub mod config;
pub mod daemon;
pub mod engine;
pub mod error;
pub mod files;
pub mod hash;
pub mod http;
pub mod hub;
pub mod model;
pub mod mqtt;
pub mod plan;
pub mod preprocess;
pub mod pth;
pub mod shard;
pub mod snapshot;
pub mod source;
pub mod util;
pub mod video;

pub use error::{Error, Result};
