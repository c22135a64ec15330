//! Child processes run to their end within a time limit, with their output captured.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a process ended and what it printed.
pub struct Exited {
    /// `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `cmd` with stdin closed and stdout and stderr captured until it exits. One still
/// running after `limit` is killed, and the error says that it hung.
pub fn run_with_limit(cmd: &mut Command, limit: Duration) -> Result<Exited, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", cmd.get_program().to_string_lossy()))?;
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = r.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = pipe(Box::new(child.stdout.take().unwrap()));
    let err = pipe(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("hung: still running after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Exited {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed: started.elapsed(),
    })
}

impl Exited {
    /// The GLib CRITICAL and WARNING lines of its stdout and stderr (see [`glib_warnings`]).
    pub fn glib_warnings(&self) -> Vec<&str> {
        let mut lines = glib_warnings(&self.stdout);
        lines.extend(glib_warnings(&self.stderr));
        lines
    }
}

/// The lines of `text` that GLib's default log writer prints for a CRITICAL or a WARNING:
/// `(prog:pid): Domain-CRITICAL **: ...` and `(prog:pid): Domain-WARNING **: ...`, or
/// `** (prog:pid): CRITICAL **: ...` for a message without a domain (any domain: GStreamer,
/// GLib, GLib-GObject, GStreamer-Video...). Terminal colours and a `(recursed)` marker are
/// allowed. Nothing else counts: not gst-launch's own `WARNING: erroneous pipeline: ...`,
/// not GStreamer's debug log, not our `tracing` lines with ` WARN `.
pub fn glib_warnings(text: &str) -> Vec<&str> {
    text.lines().filter(|l| is_glib_warning(l)).collect()
}

fn is_glib_warning(line: &str) -> bool {
    let line = without_ansi_escapes(line);
    let line = line.trim_start();
    let (domainless, rest) = match line.strip_prefix("** ") {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    // `(prog:pid): `, the prefix GLib puts on warnings and criticals.
    let Some(rest) = rest.strip_prefix('(') else {
        return false;
    };
    let Some((prog_pid, rest)) = rest.split_once("): ") else {
        return false;
    };
    let pid = prog_pid.rsplit_once(':').map_or("", |(_, pid)| pid);
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    // `Domain-LEVEL **: ` or, without a domain, `LEVEL **: `.
    let Some((head, _)) = rest.split_once(" **: ") else {
        return false;
    };
    let head = head.strip_suffix(" (recursed)").unwrap_or(head);
    ["CRITICAL", "WARNING"].iter().any(|level| {
        head == *level
            || !domainless
                && head
                    .strip_suffix(level)
                    .and_then(|d| d.strip_suffix('-'))
                    .is_some_and(|domain| {
                        !domain.is_empty() && !domain.contains(char::is_whitespace)
                    })
    })
}

/// `line` without the terminal colour sequences (`ESC [ ... m`) GLib adds on a terminal.
fn without_ansi_escapes(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.contains('\x1b') {
        return line.into();
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // Up to and including the final byte of the sequence (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Panics, quoting them (the first 20) and what `what` printed (its first 100 lines), when
/// `text` has GLib CRITICAL or WARNING lines.
pub fn assert_no_glib_warnings(what: &str, text: &str) {
    const QUOTED: usize = 20;
    const SHOWN: usize = 100;
    let found: Vec<String> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| is_glib_warning(l))
        .map(|(i, l)| format!("line {}: {l}", i + 1))
        .collect();
    if found.is_empty() {
        return;
    }
    let more = match found.len().saturating_sub(QUOTED) {
        0 => String::new(),
        n => format!("\n... and {n} more"),
    };
    let total = text.lines().count();
    let shown: Vec<&str> = text.lines().take(SHOWN).collect();
    panic!(
        "{what} printed {} GLib warning or critical line(s):\n{}{more}\n--- {what} printed \
         ({total} lines{}):\n{}",
        found.len(),
        found[..found.len().min(QUOTED)].join("\n"),
        if total > SHOWN {
            format!(", the first {SHOWN} shown")
        } else {
            String::new()
        },
        shown.join("\n")
    );
}

/// [`Command::output`] that also asserts that the process printed no GLib CRITICAL or
/// WARNING line on stdout or stderr.
pub trait OutputChecked {
    fn output_checked(&mut self) -> std::process::Output;
}

impl OutputChecked for Command {
    fn output_checked(&mut self) -> std::process::Output {
        let output = self
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.get_program().to_string_lossy()));
        // Program and arguments only: the environment may hold a test's secrets.
        let what = std::iter::once(self.get_program())
            .chain(self.get_args())
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        assert_no_glib_warnings(&what, &String::from_utf8_lossy(&output.stdout));
        assert_no_glib_warnings(&what, &String::from_utf8_lossy(&output.stderr));
        output
    }
}
