//! `scripts/setup-debian` run against stand-ins for `id`, `sudo`, `apt-get`, `rustc` and
//! `cargo` on a PATH of its own: it finds Rust where rustup puts it for the user who runs
//! it, refuses a Rust older than 1.95 before installing anything, runs only apt-get as
//! root (through sudo for a normal user), and says what to run when there is no sudo.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch HOME and a PATH holding only the tools the script needs, plus stand-ins
/// that log their arguments to `calls`.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new(uid: u32) -> Self {
        let sandbox = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(sandbox.bin()).unwrap();
        std::fs::create_dir_all(sandbox.home()).unwrap();
        for tool in ["awk", "sort", "env"] {
            let real = ["/usr/bin", "/bin"]
                .iter()
                .map(|d| Path::new(d).join(tool))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("{tool} not found"));
            std::os::unix::fs::symlink(real, sandbox.bin().join(tool)).unwrap();
        }
        sandbox.tool("id", &format!("echo {uid}"));
        sandbox.tool("apt-get", "");
        sandbox
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// A stand-in that logs `name args…` and then runs `body`.
    fn tool_in(&self, dir: &Path, name: &str, body: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        let log = self.dir.path().join("calls");
        std::fs::write(
            &path,
            format!(
                "#!/bin/bash\necho \"{name} $*\" >> {}\n{body}\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn tool(&self, name: &str, body: &str) {
        self.tool_in(&self.bin(), name, body);
    }

    /// rustc and cargo of `version` where rustup installs them: ~/.cargo/bin.
    fn rustup(&self, version: &str) {
        let dir = self.home().join(".cargo/bin");
        self.tool_in(
            &dir,
            "rustc",
            &format!("echo 'rustc {version} (abc 2026-01-01)'"),
        );
        self.tool_in(&dir, "cargo", "");
    }

    /// Runs the script; its exit code, stderr and the stand-ins' calls.
    fn run(&self) -> (Option<i32>, String, Vec<String>) {
        let out = Command::new("/bin/bash")
            .arg(effistream_testkit::repo().join("scripts/setup-debian"))
            .env_clear()
            .env("PATH", self.bin())
            .env("HOME", self.home())
            .output()
            .unwrap();
        let calls = std::fs::read_to_string(self.dir.path().join("calls")).unwrap_or_default();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            calls.lines().map(str::to_owned).collect(),
        )
    }
}

fn apt_calls(calls: &[String]) -> Vec<&String> {
    calls.iter().filter(|c| c.starts_with("apt-get")).collect()
}

#[test]
fn a_normal_user_installs_the_packages_through_sudo_with_rust_from_rustup() {
    let s = Sandbox::new(1000);
    s.rustup("1.95.0");
    // sudo runs its command (here: env, then the apt-get stand-in) and logs it.
    s.tool("sudo", "exec \"$@\"");
    let (code, stderr, calls) = s.run();
    assert_eq!(code, Some(0), "{stderr}\n{calls:?}");
    let sudo: Vec<_> = calls.iter().filter(|c| c.starts_with("sudo")).collect();
    assert_eq!(sudo.len(), 2, "{calls:?}");
    assert!(
        sudo[0].starts_with("sudo env DEBIAN_FRONTEND=noninteractive apt-get update"),
        "{calls:?}"
    );
    assert!(
        sudo[1].starts_with(
            "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential"
        ) && sudo[1].contains(" gstreamer1.0-libav ")
            && sudo[1].contains(" mosquitto "),
        "{calls:?}"
    );
    assert_eq!(apt_calls(&calls).len(), 2, "{calls:?}");
}

#[test]
fn root_installs_without_sudo() {
    let s = Sandbox::new(0);
    s.rustup("1.96.1");
    let (code, stderr, calls) = s.run();
    assert_eq!(code, Some(0), "{stderr}\n{calls:?}");
    assert!(!calls.iter().any(|c| c.starts_with("sudo")), "{calls:?}");
    let apt = apt_calls(&calls);
    assert_eq!(apt.len(), 2, "{calls:?}");
    assert!(apt[1].contains("install -y --no-install-recommends"));
}

#[test]
fn an_old_or_missing_rust_fails_before_installing_anything() {
    let s = Sandbox::new(0);
    s.rustup("1.80.1");
    let (code, stderr, calls) = s.run();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("rustc 1.80.1 is older than 1.95") && stderr.contains("rustup update"),
        "{stderr}"
    );
    assert!(apt_calls(&calls).is_empty(), "{calls:?}");

    let s = Sandbox::new(0);
    let (code, stderr, calls) = s.run();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("Rust not found") && stderr.contains("https://sh.rustup.rs"),
        "{stderr}"
    );
    assert!(apt_calls(&calls).is_empty(), "{calls:?}");
}

#[test]
fn without_sudo_it_says_what_to_run_as_root() {
    let s = Sandbox::new(1000);
    s.rustup("1.95.0");
    let (code, stderr, calls) = s.run();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("sudo is not installed")
            && stderr.contains(
                "apt-get update && apt-get install -y --no-install-recommends build-essential"
            ),
        "{stderr}"
    );
    assert!(apt_calls(&calls).is_empty(), "{calls:?}");
}
