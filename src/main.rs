//! The `effistream` command.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use effistream::model::{Classifier, Variant};
use effistream::preprocess::RgbImage;
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    name = "effistream",
    version,
    about = "Classify camera streams with timm's pruned EfficientNets and publish the results over MQTT"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Classify image files (JPEG, PNG) and print the top-k classes of each.
    Classify(ClassifyArgs),
    /// List the model variants with their input size, preprocessing and hub id.
    Models,
}

#[derive(Debug, clap::Args)]
struct ClassifyArgs {
    /// Model variant (see `effistream models`).
    #[arg(long, default_value = "efficientnet_b1_pruned")]
    model: String,
    /// Weights file: timm safetensors or a PyTorch .pth/.bin (zip or legacy format). Without
    /// it: $EFFISTREAM_WEIGHTS_DIR/<model>.{safetensors,pth,bin}, then the Hugging Face
    /// cache, then a download of timm/<model> from the hub (unless HF_HUB_OFFLINE=1).
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Number of classes to print per image.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    top_k: u16,
    /// Print one JSON object per image and line instead of text.
    #[arg(long)]
    json: bool,
    /// With --json, add the raw logits of every class.
    #[arg(long, requires = "json")]
    logits: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    batch: u16,
    /// Image files.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,effistream=info".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Classify(args) => classify(args),
        Command::Models => models(),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    image: &'a str,
    model: &'a str,
    top: &'a [effistream::model::ClassScore],
    #[serde(skip_serializing_if = "Option::is_none")]
    logits: Option<&'a [f32]>,
}

fn classify(args: ClassifyArgs) -> anyhow::Result<ExitCode> {
    let variant = Variant::by_name(&args.model)?;
    let classifier = Classifier::load(variant, args.weights.as_deref())?;
    let top_k = usize::from(args.top_k).min(classifier.num_classes());
    let mut stdout = std::io::stdout().lock();
    let mut failed = 0usize;
    let mut done = 0usize;
    let started = Instant::now();
    for chunk in args.images.chunks(usize::from(args.batch)) {
        let mut names = Vec::with_capacity(chunk.len());
        let mut images = Vec::with_capacity(chunk.len());
        for path in chunk {
            match RgbImage::open(path) {
                Ok(image) => {
                    names.push(path.display().to_string());
                    images.push(image);
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    failed += 1;
                }
            }
        }
        let predictions = classifier.classify(&images, top_k)?;
        for (name, prediction) in names.iter().zip(&predictions) {
            if args.json {
                let line = JsonLine {
                    image: name,
                    model: variant.name,
                    top: &prediction.top,
                    logits: args.logits.then_some(prediction.logits.as_slice()),
                };
                serde_json::to_writer(&mut stdout, &line)?;
                writeln!(stdout)?;
            } else {
                writeln!(stdout, "{name}")?;
                for class in &prediction.top {
                    writeln!(
                        stdout,
                        "  {:>6.2}%  {:>4}  {}",
                        class.score * 100.0,
                        class.class_id,
                        class.label
                    )?;
                }
            }
        }
        stdout.flush().context("writing results")?;
        done += predictions.len();
    }
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        images = done,
        failed,
        seconds = format!("{secs:.2}"),
        images_per_s = format!("{:.1}", done as f64 / secs),
        "Classified."
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn models() -> anyhow::Result<ExitCode> {
    println!(
        "{:<24} {:>5} {:>6} {:>8}  {:<16} {:<8} hub id",
        "model", "input", "resize", "crop_pct", "mean/std", "act"
    );
    for v in Variant::all() {
        let norm = if v.mean == [0.5; 3] {
            "0.5/0.5"
        } else {
            "imagenet"
        };
        println!(
            "{:<24} {:>5} {:>6} {:>8}  {:<16} {:<8} {}",
            v.name,
            v.input_size,
            v.resize_size(),
            v.crop_pct,
            norm,
            v.activation.name(),
            v.hub_id
        );
    }
    Ok(ExitCode::SUCCESS)
}
