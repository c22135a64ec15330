//! The deployment files, read as a deployer would use them: the Kubernetes manifests
//! (`deploy/kubernetes/`) against the configuration they carry, and the container image
//! they pull (`Dockerfile`, `scripts/build-image`). `scripts/build-image` itself builds
//! and runs the image; it needs a Debian system download, so it runs outside the tests.

use std::collections::BTreeSet;

fn statefulset_mounts_weights() -> bool {
    let text = std::fs::read_to_string(
        effistream_testkit::repo().join("deploy/kubernetes/statefulset.yaml"),
    )
    .unwrap();
    text.contains("mountPath: /weights")
}

/// The lines of `text` indented under the line `key`, without the indentation (a YAML
/// block scalar).
fn yaml_block(text: &str, key: &str) -> String {
    let lines = text.lines().skip_while(|l| l.trim() != key).skip(1);
    let first = lines
        .clone()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let indent = first.len() - first.trim_start().len();
    assert!(indent > 0, "no block under {key}");
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The manifests run the image the Dockerfile (and scripts/build-image) builds, as its
/// user, probe start-up with /readyz, and give each pod the cores its workers use.
#[test]
fn the_kubernetes_manifests_run_the_dockerfiles_image_with_the_cores_its_workers_use() {
    let repo = effistream_testkit::repo();
    let read = |path: &str| std::fs::read_to_string(repo.join(path)).unwrap();
    let statefulset = read("deploy/kubernetes/statefulset.yaml");
    let dockerfile = read("Dockerfile");
    let build_image = read("scripts/build-image");
    let version = env!("CARGO_PKG_VERSION");

    // One image: the tag the manifests pull is the one both builds make.
    assert!(
        statefulset.contains(&format!("image: effistream:{version}\n")),
        "statefulset image is not effistream:{version}"
    );
    assert!(build_image.contains("image=localhost/effistream:$version"));
    assert!(dockerfile.contains("ENTRYPOINT [\"effistream\"]"));
    assert!(build_image.contains("--entrypoint '[\"effistream\"]'"));
    // Both builds install the same runtime packages.
    let dockerfile_packages: BTreeSet<&str> = dockerfile
        .split("FROM docker.io/library/debian:bookworm-slim")
        .nth(1)
        .expect("a Debian 12 runtime stage")
        .split("--no-install-recommends")
        .nth(1)
        .unwrap()
        .split("&&")
        .next()
        .unwrap()
        .split_whitespace()
        .filter(|w| *w != "\\")
        .collect();
    let script_packages: BTreeSet<&str> = build_image
        .split("RUNTIME_PACKAGES=(")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(dockerfile_packages, script_packages);
    assert!(dockerfile_packages.contains("gstreamer1.0-plugins-good"));
    // The same non-root user everywhere.
    assert!(dockerfile.contains("USER 10001:10001"));
    assert!(build_image.contains("--user 10001:10001"));
    assert!(statefulset.contains("runAsNonRoot: true"));
    assert!(statefulset.contains("runAsUser: 10001"));
    // Health: the image's check and liveness on /healthz, start-up on /readyz (which
    // waits for the model).
    assert!(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("/healthz"));
    assert!(yaml_block(&statefulset, "startupProbe:").contains("path: /readyz"));
    assert!(yaml_block(&statefulset, "livenessProbe:").contains("path: /healthz"));
    // CPU: request = limit = the compute threads of the ConfigMap's [workers].
    let configmap = read("deploy/kubernetes/configmap.yaml");
    let toml = yaml_block(&configmap, "effistream.toml: |");
    let workers: toml::Table = toml::from_str::<toml::Table>(&toml).unwrap()["workers"]
        .as_table()
        .unwrap()
        .clone();
    let threads = workers["count"].as_integer().unwrap() * workers["threads"].as_integer().unwrap();
    assert!(threads > 0, "threads = 0 would take every core of the node");
    let resources = yaml_block(&statefulset, "resources:");
    let cpu = format!("cpu: \"{threads}\"");
    for kind in ["requests:", "limits:"] {
        let line = resources
            .lines()
            .find(|l| l.trim_start().starts_with(kind))
            .unwrap_or_else(|| panic!("no {kind} in {resources}"));
        assert!(line.contains(&cpu), "{line}: want {cpu}");
    }
    // The weights claim the pods mount is described.
    let weights = read("deploy/kubernetes/weights.yaml");
    assert!(statefulset.contains("claimName: effistream-weights"));
    assert!(weights.contains("kind: PersistentVolumeClaim\nmetadata:\n  name: effistream-weights"));
}

#[test]
fn the_kubernetes_manifests_shard_the_configmap_cameras_by_pod_ordinal() {
    use effistream::config::Config;
    use effistream::shard::Shard;

    let dir = effistream_testkit::repo().join("deploy/kubernetes");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let configmap = read("configmap.yaml");
    let toml = yaml_block(&configmap, "effistream.toml: |");
    // The weights live on the pod's volume; validation wants the file to exist.
    let weights = tempfile::NamedTempFile::new().unwrap();
    let volume_path = "/weights/efficientnet_b1_pruned.safetensors";
    assert!(toml.contains(volume_path) && statefulset_mounts_weights());
    let toml = toml.replace(volume_path, &weights.path().display().to_string());
    let config = Config::from_toml_with_env(&toml, "configmap.yaml", |name| match name {
        "CAMERA_PASSWORD" | "MQTT_PASSWORD" => Ok("secret".into()),
        _ => Err(std::env::VarError::NotPresent),
    })
    .unwrap();
    assert_eq!(config.http.listen, "0.0.0.0:9464");
    assert!(config.http.enabled);

    let statefulset = read("statefulset.yaml");
    let field = |name: &str| -> String {
        let line = statefulset
            .lines()
            .map(str::trim)
            .skip_while(|l| *l != format!("- name: {name}"))
            .nth(1)
            .unwrap_or_else(|| panic!("no env {name}"));
        line.trim_start_matches("value:")
            .trim()
            .trim_matches('"')
            .to_owned()
    };
    let replicas: u32 = statefulset
        .lines()
        .find_map(|l| l.trim().strip_prefix("replicas: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        field("SHARDS"),
        replicas.to_string(),
        "SHARDS must equal replicas"
    );
    assert!(statefulset.contains("- --shard\n            - $(POD_INDEX)/$(SHARDS)"));
    assert!(statefulset.contains("metadata.labels['apps.kubernetes.io/pod-index']"));
    for probe in ["path: /healthz", "path: /readyz"] {
        assert!(statefulset.contains(probe), "{probe}");
    }
    assert!(read("service.yaml").contains("clusterIP: None"));

    // Every pod gets cameras, and together they run each camera once.
    let ids: Vec<&str> = config.enabled_cameras().map(|c| c.id.as_str()).collect();
    assert!(ids.len() >= 6);
    for index in 0..replicas {
        let shard = Shard {
            index,
            count: replicas,
        };
        assert!(ids.iter().any(|id| shard.takes(id)), "pod {index} idle");
    }
    for id in ids {
        let owners = (0..replicas).filter(|&index| {
            Shard {
                index,
                count: replicas,
            }
            .takes(id)
        });
        assert_eq!(owners.count(), 1, "{id}");
    }
}
