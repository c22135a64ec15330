//! Weights from the Hugging Face hub, against a hub on 127.0.0.1 that speaks the hub's
//! file protocol (`effistream_testkit::hub`): resolve URLs, relative and CDN redirects,
//! `X-Repo-Commit`/`X-Linked-Etag`/`X-Linked-Size`, ranges, private repositories; and its
//! faults. `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE` and `HF_TOKEN` are
//! honoured by `classify` and `run`; a failed download leaves nothing a later run trusts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use effistream::hub::{Hub, HubError};
use effistream_testkit::daemon::{Daemon, config, hermetic_command, serial};
use effistream_testkit::hub::{Fault, HubServer, sha256_hex};
use effistream_testkit::mosquitto::{Mosquitto, Subscriber};
use effistream_testkit::process::OutputChecked;

const LITE0_REPO: &str = "timm/tf_efficientnet_lite0.in1k";

fn hub_at(server: &HubServer, cache: &Path, token: Option<&str>) -> Hub {
    Hub {
        endpoint: server.endpoint(),
        cache: cache.to_owned(),
        offline: false,
        token: token.map(str::to_owned),
    }
}

/// Deterministic bytes that are not all alike.
fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] ^ seed)
        .collect()
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            } else {
                out.push(
                    path.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_download_follows_the_hub_protocol_into_the_standard_cache_layout() {
    let server = HubServer::start();
    let weights = bytes(700_000, 1);
    let config_json = br#"{"architecture": "efficientnet_b1_pruned"}"#.to_vec();
    server.add_file("timm/x.in1k", "model.safetensors", weights.clone());
    server.add_file("timm/x.in1k", "config.json", config_json.clone());
    let commit = server.commit("timm/x.in1k");
    let cache = tempfile::tempdir().unwrap();
    let hub = hub_at(&server, cache.path(), None);

    let path = hub.download("timm/x.in1k", "model.safetensors").unwrap();
    let repo = cache.path().join("models--timm--x.in1k");
    let sha = sha256_hex(&weights);
    assert_eq!(
        path,
        repo.join("snapshots")
            .join(&commit)
            .join("model.safetensors")
    );
    // huggingface_hub's layout: a relative symlink to the blob named by its etag.
    assert_eq!(
        std::fs::read_link(&path).unwrap(),
        Path::new("../../blobs").join(&sha)
    );
    assert_eq!(std::fs::read(&path).unwrap(), weights);
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        commit
    );
    assert_eq!(hub.cached("timm/x.in1k", "model.safetensors"), Some(path));
    // HEAD on the resolve URL, then the bytes from the CDN it redirects to, in one piece.
    let requests = server.requests();
    let summary: Vec<(String, String, Option<String>)> = requests
        .iter()
        .map(|r| (r.method.clone(), r.path.clone(), r.range.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "HEAD".to_owned(),
                "/timm/x.in1k/resolve/main/model.safetensors".to_owned(),
                None
            ),
            ("GET".to_owned(), format!("/cdn/{sha}"), None),
        ]
    );

    // A small (non-LFS) file comes from the resolve URL itself.
    let path = hub.download("timm/x.in1k", "config.json").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), config_json);
    assert!(
        std::fs::read_link(&path)
            .unwrap()
            .starts_with("../../blobs")
    );

    // A renamed repository: the hub's relative redirect is followed.
    server.rename("olduser/x.in1k", "timm/x.in1k");
    let path = hub.download("olduser/x.in1k", "model.safetensors").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), weights);
    assert!(path.starts_with(cache.path().join("models--olduser--x.in1k")));

    // Nothing left over: no partial file, no lock held open as a file of the repo.
    assert!(
        !files_under(cache.path())
            .iter()
            .any(|f| f.ends_with(".incomplete")),
        "{:?}",
        files_under(cache.path())
    );
}

/// Each failure: one error naming the URL and the reason; no blob, no snapshot, no ref; the
/// cache lookup a later run does finds nothing.
#[test]
fn failed_downloads_give_one_clear_error_and_leave_nothing_a_later_run_would_trust() {
    let server = HubServer::start();
    let weights = bytes(500_000, 2);
    let sha = sha256_hex(&weights);
    server.add_file("timm/y.in1k", "model.safetensors", weights.clone());
    let cases: [(Fault, &str, &[&str]); 5] = [
        (
            Fault::Status(500),
            "timm/y.in1k",
            &["resolve/main/model.safetensors", "500", "nothing was saved"],
        ),
        (
            Fault::Status(503),
            "timm/y.in1k",
            &["503", "try again later"],
        ),
        (
            Fault::CloseBeforeAnswer,
            "timm/y.in1k",
            &["resolve/main/model.safetensors", "cannot reach the hub"],
        ),
        (
            Fault::NotAHub,
            "timm/y.in1k",
            &[
                "X-Repo-Commit",
                "does not speak the Hugging Face hub",
                "HF_ENDPOINT",
            ],
        ),
        (
            Fault::None,
            "timm/nothing-here",
            &["not found (404)", "no such repository", "HF_TOKEN"],
        ),
    ];
    for (fault, repo, expected) in cases {
        let cache = tempfile::tempdir().unwrap();
        let hub = hub_at(&server, cache.path(), None);
        server.set_fault(fault);
        let error = hub.download(repo, "model.safetensors").unwrap_err();
        let message = error.to_string();
        for part in expected {
            assert!(
                message.contains(part),
                "{fault:?}: `{part}` not in: {message}"
            );
        }
        assert!(!message.contains('\n'), "{message}");
        assert_eq!(hub.cached(repo, "model.safetensors"), None, "{fault:?}");
        let left: Vec<String> = files_under(cache.path())
            .into_iter()
            .filter(|f| !f.starts_with(".locks"))
            .collect();
        assert!(left.is_empty(), "{fault:?} left {left:?}");
    }
    server.set_fault(Fault::None);

    // A file the repository lacks.
    let cache = tempfile::tempdir().unwrap();
    let hub = hub_at(&server, cache.path(), None);
    let message = hub
        .download("timm/y.in1k", "pytorch_model.bin")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("not found (404): no file pytorch_model.bin"),
        "{message}"
    );

    // A body cut short: an error with the counts; the partial file is not a blob and not
    // linked, and the next download resumes it with a Range request.
    let cache = tempfile::tempdir().unwrap();
    let hub = hub_at(&server, cache.path(), None);
    server.set_fault(Fault::TruncateAfter(200_000));
    let error = hub
        .download("timm/y.in1k", "model.safetensors")
        .unwrap_err();
    assert!(
        matches!(
            error,
            HubError::Truncated {
                got: 200_000,
                expected: 500_000,
                ..
            }
        ),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("stopped after 200000 of 500000 bytes")
            && message.contains("never used as weights"),
        "{message}"
    );
    assert_eq!(hub.cached("timm/y.in1k", "model.safetensors"), None);
    let repo = cache.path().join("models--timm--y.in1k");
    assert_eq!(
        files_under(&repo),
        vec![format!("blobs/{sha}.incomplete")],
        "only the partial file"
    );
    server.set_fault(Fault::None);
    server.clear_requests();
    let path = hub.download("timm/y.in1k", "model.safetensors").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), weights);
    let ranges: Vec<Option<String>> = server
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/cdn/"))
        .map(|r| r.range.clone())
        .collect();
    assert_eq!(ranges, vec![Some("bytes=200000-".to_owned())]);

    // A well-framed answer that is shorter than the hub announced: the same.
    let cache = tempfile::tempdir().unwrap();
    let hub = hub_at(&server, cache.path(), None);
    server.set_fault(Fault::ShortBody(100_000));
    let message = hub
        .download("timm/y.in1k", "model.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("stopped after 100000 of 500000 bytes (the answer ended early)"),
        "{message}"
    );
    assert_eq!(hub.cached("timm/y.in1k", "model.safetensors"), None);
    assert_eq!(
        files_under(&cache.path().join("models--timm--y.in1k")),
        vec![format!("blobs/{sha}.incomplete")]
    );
    server.set_fault(Fault::None);
    let path = hub.download("timm/y.in1k", "model.safetensors").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), weights);

    // A corrupted body of the right size: the SHA-256 check deletes it.
    let cache = tempfile::tempdir().unwrap();
    let hub = hub_at(&server, cache.path(), None);
    server.set_fault(Fault::Corrupt);
    let message = hub
        .download("timm/y.in1k", "model.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("SHA-256") && message.contains(&sha) && message.contains("deleted"),
        "{message}"
    );
    let left: Vec<String> = files_under(cache.path())
        .into_iter()
        .filter(|f| !f.starts_with(".locks"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    server.set_fault(Fault::None);
}

#[test]
fn private_repositories_need_a_token_and_the_token_never_reaches_the_cdn() {
    let server = HubServer::start();
    let weights = bytes(100_000, 3);
    server.add_file("me/private.in1k", "model.safetensors", weights.clone());
    server.make_private("me/private.in1k", "hf_test_token");
    let cache = tempfile::tempdir().unwrap();

    let message = hub_at(&server, cache.path(), None)
        .download("me/private.in1k", "model.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("refused access (401)") && message.contains("set HF_TOKEN"),
        "{message}"
    );
    let message = hub_at(&server, cache.path(), Some("hf_wrong"))
        .download("me/private.in1k", "model.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("refused access (401)") && message.contains("has no access"),
        "{message}"
    );
    assert!(!message.contains("hf_wrong"), "{message}");

    server.clear_requests();
    let path = hub_at(&server, cache.path(), Some("hf_test_token"))
        .download("me/private.in1k", "model.safetensors")
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), weights);
    for request in server.requests() {
        let expected = (!request.path.starts_with("/cdn/")).then_some("Bearer hf_test_token");
        assert_eq!(
            request.authorization.as_deref(),
            expected,
            "{}",
            request.path
        );
    }
}

/// The real EfficientNet-Lite0 weights as the hub serves timm's models: model.safetensors.
fn lite0_safetensors(dir: &Path) -> Vec<u8> {
    let file = effistream::model::WeightsFile::load(&effistream_testkit::lite0_weights()).unwrap();
    let tensors: std::collections::HashMap<String, candle_core::Tensor> =
        file.tensors.into_iter().collect();
    let path = dir.join("lite0.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    std::fs::read(path).unwrap()
}

/// `effistream classify` without weights, as a new user runs it.
fn classify(env: &[(&str, &Path)], extra_env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = hermetic_command();
    cmd.env("RUST_LOG", "info").env_remove("HF_HUB_OFFLINE");
    for (name, value) in env {
        cmd.env(name, value);
    }
    for (name, value) in extra_env {
        cmd.env(name, value);
    }
    cmd.args(["classify", "--json", "--model", "tf_efficientnet_lite0"])
        .arg(effistream_testkit::photo("coffee.png"))
        .output_checked()
}

fn top_label(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().next().unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    json["top"][0]["label"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn classify_downloads_from_hf_endpoint_with_hf_token_then_works_offline_from_the_cache() {
    let server = HubServer::start();
    let assets = tempfile::tempdir().unwrap();
    let weights = lite0_safetensors(assets.path());
    server.add_file(LITE0_REPO, "model.safetensors", weights.clone());
    server.make_private(LITE0_REPO, "hf_lite0");
    let home = tempfile::tempdir().unwrap();
    let endpoint = server.endpoint();
    let env: [(&str, &Path); 2] = [
        ("HF_HOME", home.path()),
        ("HF_ENDPOINT", Path::new(&endpoint)),
    ];

    // A failing hub: exit status 1, one error line, nothing in the cache.
    server.set_fault(Fault::Status(500));
    let output = classify(&env, &[("HF_TOKEN", "hf_lite0")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("error"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&format!(
            "{endpoint}/{LITE0_REPO}/resolve/main/model.safetensors"
        )) && errors[0].contains("500")
            && errors[0].contains("--weights FILE"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let hub_dir = home.path().join("hub");
    assert!(
        files_under(&hub_dir)
            .iter()
            .all(|f| f.starts_with(".locks")),
        "{:?}",
        files_under(&hub_dir)
    );
    server.set_fault(Fault::None);

    // Private without HF_TOKEN: refused, and the message says to set it.
    let output = classify(&env, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("401") && stderr.contains("set HF_TOKEN"),
        "{stderr}"
    );

    // With HF_TOKEN: downloaded into $HF_HOME/hub, progress logged (stderr is no
    // terminal here), and the right answer.
    let output = classify(&env, &[("HF_TOKEN", "hf_lite0")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(top_label(&output), "espresso", "{stderr}");
    assert!(stderr.contains("Downloading from the hub"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{endpoint}/{LITE0_REPO}/resolve/main/model.safetensors"
        )),
        "{stderr}"
    );
    for percent in ["percent=25", "percent=50", "percent=75"] {
        assert!(stderr.contains(percent), "{percent} missing: {stderr}");
    }
    assert!(stderr.contains("Downloaded."), "{stderr}");
    assert!(
        !stderr.contains("hf_lite0"),
        "the token was printed: {stderr}"
    );
    let snapshot = hub_dir
        .join("models--timm--tf_efficientnet_lite0.in1k/snapshots")
        .join(server.commit(LITE0_REPO))
        .join("model.safetensors");
    assert_eq!(std::fs::read(&snapshot).unwrap(), weights);

    // Offline the next time: the cache answers, no request reaches the hub.
    server.clear_requests();
    server.set_fault(Fault::Status(500));
    let output = classify(&env, &[("HF_HUB_OFFLINE", "1")]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(top_label(&output), "espresso");
    // Online too: a cached file is used without asking the hub.
    let output = classify(&env, &[]);
    assert!(output.status.success());
    assert_eq!(top_label(&output), "espresso");
    assert!(server.requests().is_empty(), "{:?}", server.requests());
}

#[test]
fn run_downloads_into_hf_hub_cache_and_classifies() {
    let _serial = serial();
    let server = HubServer::start();
    let assets = tempfile::tempdir().unwrap();
    server.add_file(
        LITE0_REPO,
        "model.safetensors",
        lite0_safetensors(assets.path()),
    );
    let broker = Mosquitto::new();
    let subscriber = Subscriber::connect(broker.port(), &["effistream/cam/classification"]);
    let weights_line = format!(
        "weights = \"{}\"\n",
        effistream_testkit::lite0_weights().display()
    );
    let toml = config(&[("cam", "test://ball", 5.0)], broker.port(), "");
    assert!(toml.contains(&weights_line));
    let toml = toml.replace(&weights_line, "");
    let cache = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let endpoint = server.endpoint();
    let cache_dir = cache.path().join("hub-cache");
    let mut daemon = Daemon::start_with_env(
        &toml,
        &[
            ("HF_ENDPOINT", &endpoint),
            // HF_HUB_CACHE wins over HF_HOME.
            ("HF_HUB_CACHE", cache_dir.to_str().unwrap()),
            ("HF_HOME", home.path().to_str().unwrap()),
            ("HF_HUB_OFFLINE", "0"),
            ("EFFISTREAM_WEIGHTS_DIR", ""),
        ],
    );
    daemon.wait_log("Downloaded.", Duration::from_secs(60));
    let message = subscriber
        .recv(Duration::from_secs(60))
        .expect("a classification after the download");
    assert_eq!(message.json()["camera"], "cam");
    let snapshot: PathBuf = cache_dir
        .join("models--timm--tf_efficientnet_lite0.in1k/snapshots")
        .join(server.commit(LITE0_REPO))
        .join("model.safetensors");
    assert!(snapshot.is_file(), "{}", daemon.log());
    assert!(
        files_under(home.path()).is_empty(),
        "HF_HOME used despite HF_HUB_CACHE"
    );
    daemon.terminate();
    daemon.assert_no_glib_warnings();
}

/// `[model] hub_id = "user/repo"`: the daemon downloads a user's repository as timm's
/// `push_to_hf_hub` leaves it (model.safetensors + config.json, here the fine-tuned
/// fixture), takes the architecture, classes, labels and eval transform from its
/// config.json, and publishes timm's label names.
#[test]
fn run_downloads_a_users_hub_id_with_its_config_json() {
    let _serial = serial();
    let server = HubServer::start();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("model");
    let fixture = effistream_testkit::finetuned::write_folder(&folder);
    for file in ["model.safetensors", "config.json"] {
        server.add_file("me/cats", file, std::fs::read(folder.join(file)).unwrap());
    }
    let broker = Mosquitto::new();
    let subscriber = Subscriber::connect(broker.port(), &["effistream/sofa/classification"]);
    let toml = format!(
        "stats_interval_s = 0\n[http]\nenabled = false\n\n\
         [[camera]]\nid = \"sofa\"\npipeline = \"filesrc location={} ! pngdec ! imagefreeze\"\nfps = 5.0\n\n\
         [model]\nhub_id = \"me/cats\"\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nclient_id = \"effistream-hubid-{}\"\nqos = 1\n",
        fixture.images[0].display(),
        broker.port(),
        std::process::id()
    );
    let cache = tempfile::tempdir().unwrap();
    let endpoint = server.endpoint();
    let mut daemon = Daemon::start_with_env(
        &toml,
        &[
            ("HF_ENDPOINT", &endpoint),
            ("HF_HOME", cache.path().to_str().unwrap()),
            ("HF_HUB_OFFLINE", "0"),
            ("EFFISTREAM_WEIGHTS_DIR", ""),
        ],
    );
    let message = subscriber
        .recv(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no classification; log:\n{}", daemon.log()));
    let payload = message.json();
    assert_eq!(payload["model"], "efficientnet_b1_pruned", "{payload}");
    assert_eq!(payload["top"][0]["label"], "cat", "{payload}");
    let labels: Vec<&str> = payload["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), 3, "{payload}");
    let snapshot = cache
        .path()
        .join("hub/models--me--cats/snapshots")
        .join(server.commit("me/cats"));
    for file in ["model.safetensors", "config.json"] {
        assert!(
            snapshot.join(file).is_file(),
            "{file}; log:\n{}",
            daemon.log()
        );
    }
    daemon.terminate();
    daemon.assert_no_glib_warnings();
}
