//! Seeded fuzzing of the parsers of untrusted input, on stable Rust: PyTorch checkpoints
//! (zip and legacy), safetensors files (through [`WeightsFile::from_bytes`], as the model
//! loads them), TOML configurations (parsed, substituted, resolved into a plan, printed
//! back) and camera URIs and MQTT broker URLs.
//!
//! Each case takes a valid input built here or shipped with the repository and mutates it,
//! structurally (pickle opcodes swapped, duplicated, dropped or given boundary arguments;
//! zip central-directory and local-header fields edited; safetensors header JSON edited;
//! TOML values, keys, tables and lines edited; characters inserted into URIs) and byte by
//! byte (bit flips, bytes set to boundary values, truncations, splices, duplicated or
//! removed chunks, integers of 2, 4 or 8 bytes set to huge values). Every case must:
//!
//! * **not panic** (`catch_unwind`);
//! * **not hang**: a watchdog thread ends the process when one case runs longer than
//!   [`HANG_LIMIT`], printing the case's seed and input;
//! * **allocate at most a bound derived from the input's size**: the test binary's
//!   `#[global_allocator]` counts the bytes live on each thread, and the peak over one
//!   parse, minus what was live before it, must be at most `c × input size + constant`
//!   (see each target's `bound` for `c` and the constant, and why). A single request past
//!   [`HARD_LIMIT`] is refused, which aborts the process, after printing the seed;
//! * keep the target's properties (the reader's tensors fit its own budget, a parsed
//!   configuration prints back to one that parses to the same text, a password in a URI
//!   never appears in an error message).
//!
//! Environment:
//!
//! * `EFFISTREAM_FUZZ_SECONDS` (default 40): the time all targets get together, split
//!   between them by weight; each target prints how many cases it ran;
//! * `EFFISTREAM_FUZZ_BASE` (default a fixed number): the base seed of a run, from which
//!   each target's sequence of case seeds derives (so a run is reproducible);
//! * `EFFISTREAM_FUZZ_SEED=0x…`: replays one case (printed with every failure) in every
//!   target named by the test filter, e.g.
//!   `EFFISTREAM_FUZZ_SEED=0x1234 cargo test --release --test fuzz pth_zip -- --nocapture`.
//!
//! Inputs that once failed, or that reach limits random mutations cannot, are kept as
//! `regression_*` tests, each naming what it caught.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Cursor, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use effistream::config::{CameraConfig, Config, MqttConfig, ReconnectConfig, parse_mqtt_url};
use effistream::model::WeightsFile;
use effistream::pth::read_pth_bytes;
use effistream_testkit::rng::Rng;

// ---------------------------------------------------------------------------------------
// The counting allocator
// ---------------------------------------------------------------------------------------

/// Counts the bytes live on each thread (allocated minus freed there) and their peak.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    /// While a case runs: live bytes before it, and its hard limit (0 = not armed).
    static ARMED: Cell<(isize, usize)> = const { Cell::new((0, 0)) };
    /// The case running on this thread: target index and seed.
    static CASE: Cell<(usize, u64)> = const { Cell::new((usize::MAX, 0)) };
}

/// No single case may have more than this live at once: a request past it is refused
/// (the process aborts) after the seed is printed, rather than the machine swapping.
const HARD_LIMIT: usize = 1 << 30;

fn note_alloc(size: usize) -> bool {
    let size = size as isize;
    let refused = ARMED
        .try_with(|armed| {
            let (base, limit) = armed.get();
            limit != 0
                && LIVE
                    .try_with(|live| live.get() - base + size > limit as isize)
                    .unwrap_or(false)
        })
        .unwrap_or(false);
    if refused {
        let (target, seed) = CASE.try_with(Cell::get).unwrap_or((usize::MAX, 0));
        let mut msg = Msg::new();
        msg.push(b"\nfuzz: refused an allocation of ");
        msg.push_dec(size as u64);
        msg.push(b" bytes (hard limit ");
        msg.push_dec(HARD_LIMIT as u64);
        msg.push(b")");
        msg.push_case(target, seed);
        msg.write_stderr();
        return false;
    }
    let _ = LIVE.try_with(|live| {
        let now = live.get() + size;
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
    true
}

fn note_free(size: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get() - size as isize));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !note_alloc(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            note_free(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !note_alloc(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            note_free(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Old and new blocks may both exist while the data is copied.
        if !note_alloc(new_size) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            note_free(new_size);
        } else {
            note_free(layout.size());
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the most bytes it had live at once on this thread.
fn measure<T>(target: usize, seed: u64, f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    CASE.with(|c| c.set((target, seed)));
    ARMED.with(|a| a.set((base, HARD_LIMIT)));
    let out = f();
    ARMED.with(|a| a.set((0, 0)));
    CASE.with(|c| c.set((usize::MAX, 0)));
    let peak = PEAK.with(Cell::get);
    (out, (peak - base).max(0) as usize)
}

/// A message built without allocating (for the allocator and the abort handler).
struct Msg {
    buf: [u8; 512],
    len: usize,
}

impl Msg {
    fn new() -> Self {
        Msg {
            buf: [0; 512],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_dec(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    fn push_hex(&mut self, v: u64) {
        let mut digits = [0u8; 16];
        for (i, d) in digits.iter_mut().enumerate() {
            let nibble = (v >> (60 - 4 * i)) & 0xf;
            *d = b"0123456789abcdef"[nibble as usize];
        }
        self.push(b"0x");
        self.push(&digits);
    }

    fn push_case(&mut self, target: usize, seed: u64) {
        match TARGET_NAMES.get(target) {
            Some(name) => {
                self.push(b" in target ");
                self.push(name.as_bytes());
                self.push(b", case seed ");
                self.push_hex(seed);
                self.push(b"; replay with EFFISTREAM_FUZZ_SEED=");
                self.push_hex(seed);
                self.push(b" cargo test --release --test fuzz ");
                self.push(name.as_bytes());
                self.push(b" -- --nocapture\n");
            }
            None => self.push(b" outside a fuzz case\n"),
        }
    }

    fn write_stderr(&self) {
        // SAFETY: writes bytes of a live buffer to fd 2; async-signal-safe.
        unsafe {
            libc::write(2, self.buf.as_ptr().cast(), self.len);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Cases in progress, for the watchdog and for an abort (stack overflow, refused allocation)
// ---------------------------------------------------------------------------------------

const TARGET_NAMES: [&str; 5] = ["pth_zip", "pth_legacy", "safetensors", "config", "uri"];

/// Per target: whether a case runs, its seed, and when it started (ms since [`epoch`]).
struct Slot {
    active: AtomicBool,
    seed: AtomicU64,
    started_ms: AtomicU64,
}

static SLOTS: [Slot; 5] = [const {
    Slot {
        active: AtomicBool::new(false),
        seed: AtomicU64::new(0),
        started_ms: AtomicU64::new(0),
    }
}; 5];

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

extern "C" fn on_abort(_: libc::c_int) {
    for (i, slot) in SLOTS.iter().enumerate() {
        if slot.active.load(Ordering::SeqCst) {
            let mut msg = Msg::new();
            msg.push(b"\nfuzz: the process aborts during a case");
            msg.push_case(i, slot.seed.load(Ordering::SeqCst));
            msg.write_stderr();
        }
    }
}

fn install_abort_handler() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // SAFETY: installs a handler that only reads atomics and calls write(2).
        unsafe {
            libc::signal(libc::SIGABRT, on_abort as *const () as libc::sighandler_t);
        }
    });
}

/// One case longer than this is a hang (inputs are at most [`MAX_INPUT`] bytes; every
/// parser here reads them in milliseconds, so even a loaded CI machine stays far below).
const HANG_LIMIT: Duration = Duration::from_secs(10);

/// Mutated inputs longer than this are cut (they only get slower, not more interesting).
const MAX_INPUT: usize = 256 << 10;

// ---------------------------------------------------------------------------------------
// Byte mutations, shared by every target
// ---------------------------------------------------------------------------------------

/// Integers that break length and count fields.
const INTERESTING: [u64; 20] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    1 << 40,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 1,
];

fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let len = data.len();
    match rng.below(11) {
        0 if len > 0 => {
            let at = rng.below(len);
            data[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            data[at] = *rng.pick(&[0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff]);
        }
        2 => data.truncate(rng.below(len + 1)),
        3 => {
            // Splice a chunk of another (or the same) input in, inserted or overwriting.
            let other = rng.pick(corpus);
            if !other.is_empty() {
                let n = rng.chunk(other.len());
                let from = rng.below(other.len() - n + 1);
                let chunk = other[from..from + n].to_vec();
                let at = rng.below(len + 1);
                if rng.chance(50) {
                    data.splice(at..at, chunk);
                } else {
                    let end = (at + n).min(len);
                    data.splice(at..end, chunk);
                }
            }
        }
        4 if len > 0 => {
            let n = rng.chunk(len);
            let from = rng.below(len - n + 1);
            let chunk = data[from..from + n].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, chunk);
        }
        5 if len > 0 => {
            let n = rng.chunk(len);
            let from = rng.below(len - n + 1);
            data.drain(from..from + n);
        }
        6 | 7 if len > 0 => {
            // An integer field of 1, 2, 4 or 8 bytes set to a boundary value, or moved by
            // a small amount, little- or big-endian.
            let width = *rng.pick(&[1usize, 2, 4, 8]);
            if len >= width {
                let at = rng.below(len - width + 1);
                let field = &mut data[at..at + width];
                let big_endian = rng.chance(20);
                let mut buf = [0u8; 8];
                let value = if rng.chance(60) {
                    *rng.pick(&INTERESTING)
                } else {
                    if big_endian {
                        buf[8 - width..].copy_from_slice(field);
                    } else {
                        buf[..width].copy_from_slice(field);
                    }
                    let old = if big_endian {
                        u64::from_be_bytes(buf)
                    } else {
                        u64::from_le_bytes(buf)
                    };
                    let delta = 1 + rng.below(16) as u64;
                    if rng.chance(50) {
                        old.wrapping_add(delta)
                    } else {
                        old.wrapping_sub(delta)
                    }
                };
                if big_endian {
                    field.copy_from_slice(&value.to_be_bytes()[8 - width..]);
                } else {
                    field.copy_from_slice(&value.to_le_bytes()[..width]);
                }
            }
        }
        8 => {
            let n = rng.chunk(32);
            let at = rng.below(len + 1);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            data.splice(at..at, bytes);
        }
        9 if len > 0 => {
            let n = rng.chunk(len);
            let from = rng.below(len - n + 1);
            for b in &mut data[from..from + n] {
                *b = rng.next() as u8;
            }
        }
        _ => {
            // Append a chunk of the input to itself (trailing garbage).
            if len > 0 {
                let n = rng.chunk(len);
                let from = rng.below(len - n + 1);
                let chunk = data[from..from + n].to_vec();
                data.extend(chunk);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pickle-aware mutations
// ---------------------------------------------------------------------------------------

/// Opcodes without an argument.
const PICKLE_BARE: &[u8] = b"(.012NRabd}el]st)uQ\x81\x85\x86\x87\x88\x89\x8f\x90\x91\x92\x93\x94";
/// Every opcode the reader knows, plus a few it does not.
const PICKLE_ALL: &[u8] =
    b"(.012NRabd}el]st)uQ\x81\x85\x86\x87\x88\x89\x8f\x90\x91\x92\x93\x94KhqUCMJjrXTBGc\x80\x8a\x8b\x8c\x8d\x8e\x95\x96IFLSVgpiPo\x97\x98\x00";

/// The length of the opcode at `data[pos]` with its argument, if it can be read.
fn pickle_op_len(data: &[u8], pos: usize) -> Option<usize> {
    let op = *data.get(pos)?;
    let arg = |n: usize| data.get(pos + 1..pos + 1 + n);
    let le = |n: usize| -> Option<usize> {
        let bytes = arg(n)?;
        let mut buf = [0u8; 8];
        buf[..n].copy_from_slice(bytes);
        usize::try_from(u64::from_le_bytes(buf)).ok()
    };
    let with_len = |n: usize| -> Option<usize> { Some(1 + n + le(n)?) };
    let len = match op {
        _ if PICKLE_BARE.contains(&op) => 1,
        b'K' | b'h' | b'q' | 0x80 => 2,
        b'M' => 3,
        b'J' | b'j' | b'r' => 5,
        b'G' | 0x95 => 9,
        b'U' | b'C' | 0x8c | 0x8a => with_len(1)?,
        b'X' | b'T' | b'B' | 0x8b => with_len(4)?,
        0x8d | 0x8e | 0x96 => with_len(8)?,
        b'c' => {
            let rest = data.get(pos + 1..)?;
            let first = rest.iter().position(|&b| b == b'\n')?;
            let second = rest[first + 1..].iter().position(|&b| b == b'\n')?;
            1 + first + 1 + second + 1
        }
        _ => return None,
    };
    (pos + len <= data.len()).then_some(len)
}

/// The opcodes (position, length) of the pickles starting at `start`, through `count`
/// `STOP`s; also the position after the last one read.
fn pickle_ops(data: &[u8], start: usize, count: usize) -> (Vec<(usize, usize)>, usize) {
    let mut ops = Vec::new();
    let mut pos = start;
    let mut stops = 0;
    while stops < count {
        let Some(len) = pickle_op_len(data, pos) else {
            break;
        };
        ops.push((pos, len));
        if data[pos] == b'.' {
            stops += 1;
        }
        pos += len;
    }
    (ops, pos)
}

/// Strings a pickle of a checkpoint is made of, to put in place of others.
const PICKLE_WORDS: &[&str] = &[
    "storage",
    "cpu",
    "cuda:0",
    "0",
    "1",
    "little",
    "big",
    "state_dict",
    "model",
    "torch",
    "torch._utils",
    "_rebuild_tensor_v2",
    "_rebuild_tensor_v3",
    "_rebuild_parameter",
    "torch._tensor",
    "_rebuild_from_type_v2",
    "FloatStorage",
    "HalfStorage",
    "LongStorage",
    "UntypedStorage",
    "collections",
    "OrderedDict",
    "weight",
    "num_batches_tracked",
    "",
];

fn unicode_op(s: &str) -> Vec<u8> {
    let mut out = vec![b'X'];
    out.extend((s.len() as u32).to_le_bytes());
    out.extend(s.as_bytes());
    out
}

/// Snippets of opcodes to insert: the constructs the machine models, and hostile ones.
fn pickle_snippet(rng: &mut Rng) -> Vec<u8> {
    let huge = rng.pick(&INTERESTING).to_le_bytes();
    match rng.below(12) {
        0 => b"(".to_vec(),
        1 => b"]q\x00(K\x01K\x02e".to_vec(),
        2 => b"h\x00".to_vec(),
        3 => b"2".to_vec(),
        4 => b"ctorch._utils\n_rebuild_tensor_v2\n".to_vec(),
        5 => b"ccollections\nOrderedDict\n)R".to_vec(),
        6 => {
            let mut s = vec![0x95];
            s.extend(huge);
            s
        }
        7 => {
            let mut s = vec![0x8b];
            s.extend(&huge[..4]);
            s
        }
        8 => {
            let mut s = vec![b'X'];
            s.extend(&huge[..4]);
            s
        }
        9 => b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ\xff\xff\xff\x7ftQ"
            .to_vec(),
        10 => {
            let mut s = vec![b'J'];
            s.extend(&huge[..4]);
            s
        }
        _ => unicode_op(rng.pick::<&str>(PICKLE_WORDS)),
    }
}

/// One structural edit of the pickle opcodes in `data[start..]` (through `count` pickles).
/// Returns false when there was nothing to edit.
fn mutate_pickle(rng: &mut Rng, data: &mut Vec<u8>, start: usize, count: usize) -> bool {
    let (ops, _) = pickle_ops(data, start, count);
    if ops.is_empty() {
        return false;
    }
    let (pos, len) = *rng.pick(&ops);
    match rng.below(9) {
        0 => {
            // Another opcode without an argument in place of one without an argument.
            if len == 1 {
                data[pos] = *rng.pick(PICKLE_BARE);
            } else {
                data[pos] = *rng.pick(PICKLE_ALL);
            }
        }
        1 => data[pos] = *rng.pick(PICKLE_ALL),
        2 => {
            data.drain(pos..pos + len);
        }
        3 => {
            let op = data[pos..pos + len].to_vec();
            let times = if rng.chance(90) { 1 } else { 1 + rng.below(64) };
            for _ in 0..times {
                data.splice(pos..pos, op.iter().copied());
            }
        }
        4 => {
            // Move an opcode elsewhere.
            let op: Vec<u8> = data.drain(pos..pos + len).collect();
            let (to, _) = *rng.pick(&ops);
            let to = to.min(data.len());
            data.splice(to..to, op);
        }
        5 if len > 1 => {
            // The argument's first bytes (an integer, or a length) set to a boundary value.
            let width = (len - 1).min(*rng.pick(&[1usize, 2, 4, 8]));
            let value = rng.pick(&INTERESTING).to_le_bytes();
            data[pos + 1..pos + 1 + width].copy_from_slice(&value[..width]);
        }
        6 => {
            // A string opcode replaced by one of the words checkpoints are made of.
            if matches!(data[pos], b'X' | 0x8c | b'U' | b'T' | 0x8d) {
                data.splice(pos..pos + len, unicode_op(rng.pick::<&str>(PICKLE_WORDS)));
            } else {
                let snippet = pickle_snippet(rng);
                data.splice(pos..pos, snippet);
            }
        }
        7 => {
            let snippet = pickle_snippet(rng);
            data.splice(pos..pos, snippet);
        }
        _ => {
            // Swap two opcodes.
            let (other, other_len) = *rng.pick(&ops);
            if other != pos {
                let (a, b) = if pos < other {
                    ((pos, len), (other, other_len))
                } else {
                    ((other, other_len), (pos, len))
                };
                let first = data[a.0..a.0 + a.1].to_vec();
                let second = data[b.0..b.0 + b.1].to_vec();
                data.splice(b.0..b.0 + b.1, first);
                data.splice(a.0..a.0 + a.1, second);
            }
        }
    }
    true
}

// ---------------------------------------------------------------------------------------
// Zip-aware mutations
// ---------------------------------------------------------------------------------------

type Entries = Vec<(String, Vec<u8>)>;

fn unzip(bytes: &[u8]) -> Entries {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).expect("seed is a zip");
    (0..archive.len())
        .map(|i| {
            let mut entry = archive.by_index(i).unwrap();
            let name = entry.name().unwrap().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            (name, data)
        })
        .collect()
}

/// Writes `entries` as a zip with valid CRCs (None if the writer refuses, e.g. two
/// entries of one name).
fn zip_entries(entries: &Entries, deflate: bool) -> Option<Vec<u8>> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, data) in entries {
        writer.start_file(name.as_str(), options).ok()?;
        writer.write_all(data).ok()?;
    }
    Some(writer.finish().ok()?.into_inner())
}

/// Edits the entries of a checkpoint and zips them again, so that the damage gets past the
/// zip reader's CRC check to the checkpoint reader.
fn mutate_entries(rng: &mut Rng, entries: &mut Entries, corpus: &[Vec<u8>]) {
    let n = entries.len();
    if n == 0 {
        return;
    }
    let pkl = entries
        .iter()
        .position(|(name, _)| name.ends_with("data.pkl"));
    match rng.below(8) {
        0..=2 => {
            if let Some(i) = pkl {
                let data = &mut entries[i].1;
                let start = usize::from(data.first() == Some(&0x80)) * 2;
                for _ in 0..1 + rng.below(3) {
                    if !mutate_pickle(rng, data, start, 1) {
                        mutate_bytes(rng, data, corpus);
                    }
                }
            }
        }
        3 => {
            // A storage's bytes cut, extended or damaged.
            let i = rng.below(n);
            let data = &mut entries[i].1;
            match rng.below(3) {
                0 => data.truncate(rng.below(data.len() + 1)),
                1 => data.extend(std::iter::repeat_n(0u8, rng.chunk(64))),
                _ => mutate_bytes(rng, data, corpus),
            }
        }
        4 => {
            entries.remove(rng.below(n));
        }
        5 => {
            // Renamed: into another folder, to another storage key, or to a name of
            // another entry (the writer refuses duplicates; then the original is kept).
            let i = rng.below(n);
            let names = [
                "archive/data.pkl",
                "archive/data/0",
                "archive/data/1",
                "other/data.pkl",
                "data.pkl",
                "archive/byteorder",
                "archive/data/../data.pkl",
                "/archive/data.pkl",
            ];
            entries[i].0 = if rng.chance(50) {
                (*rng.pick(&names)).to_owned()
            } else {
                let mut name = entries[i].0.clone();
                name.insert(rng.below(name.len() + 1), *rng.pick(&['/', 'x', '0', '.']));
                name
            };
        }
        6 => {
            let i = rng.below(n);
            let (name, data) = entries[i].clone();
            entries.push((format!("{name}{}", rng.below(3)), data));
        }
        _ => {
            let order = *rng.pick(&["little", "big", "", "littl", "LITTLE\n", "little\0"]);
            match entries
                .iter_mut()
                .find(|(name, _)| name.ends_with("byteorder"))
            {
                Some(entry) => entry.1 = order.as_bytes().to_vec(),
                None => {
                    let prefix = entries[pkl.unwrap_or(0)]
                        .0
                        .trim_end_matches("data.pkl")
                        .to_owned();
                    entries.push((format!("{prefix}byteorder"), order.as_bytes().to_vec()));
                }
            }
        }
    }
}

/// Edits one field of a zip record (local header, central directory entry, end of
/// central directory, zip64 records) in place.
fn mutate_zip_record(rng: &mut Rng, data: &mut [u8]) -> bool {
    /// A record's signature and its integer fields as (offset, width).
    type Record = (&'static [u8; 4], &'static [(usize, usize)]);
    const RECORDS: [Record; 5] = [
        (
            b"PK\x03\x04",
            &[
                (4, 2),
                (6, 2),
                (8, 2),
                (14, 4),
                (18, 4),
                (22, 4),
                (26, 2),
                (28, 2),
            ],
        ),
        (
            b"PK\x01\x02",
            &[
                (6, 2),
                (8, 2),
                (10, 2),
                (16, 4),
                (20, 4),
                (24, 4),
                (28, 2),
                (30, 2),
                (32, 2),
                (34, 2),
                (42, 4),
            ],
        ),
        (
            b"PK\x05\x06",
            &[(4, 2), (6, 2), (8, 2), (10, 2), (12, 4), (16, 4), (20, 2)],
        ),
        (
            b"PK\x06\x06",
            &[(4, 8), (24, 4), (28, 4), (32, 8), (40, 8), (48, 8), (56, 8)],
        ),
        (b"PK\x06\x07", &[(4, 4), (8, 8), (16, 4)]),
    ];
    let mut found = Vec::new();
    for (sig, fields) in RECORDS {
        let mut at = 0;
        while let Some(i) = data[at..].windows(4).position(|w| w == sig) {
            found.push((at + i, fields));
            at += i + 1;
        }
    }
    if found.is_empty() {
        return false;
    }
    let (at, fields) = *rng.pick(&found);
    let (offset, width) = *rng.pick(fields);
    let Some(field) = data.get_mut(at + offset..at + offset + width) else {
        return false;
    };
    let mut buf = [0u8; 8];
    buf[..width].copy_from_slice(field);
    let old = u64::from_le_bytes(buf);
    let value = match rng.below(3) {
        0 => *rng.pick(&INTERESTING),
        1 => old.wrapping_add(1 + rng.below(64) as u64),
        _ => old.wrapping_sub(1 + rng.below(64) as u64),
    };
    field.copy_from_slice(&value.to_le_bytes()[..width]);
    true
}

// ---------------------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------------------

fn torch_fixtures(suffix: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    names.sort();
    assert!(names.len() >= 8, "fixtures missing in {}", dir.display());
    names.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// The torch-written zip checkpoints, the same stored and deflated by us, and as
/// entries to repack.
fn zip_corpus() -> (Vec<Vec<u8>>, Vec<Entries>) {
    let mut files = torch_fixtures(".zip.pth");
    let entries: Vec<Entries> = files.iter().map(|f| unzip(f)).collect();
    for e in entries.iter().take(4) {
        files.push(zip_entries(e, true).unwrap());
    }
    (files, entries)
}

fn safetensors_corpus() -> Vec<Vec<u8>> {
    use safetensors::Dtype;
    use safetensors::tensor::TensorView;
    let mut rng = Rng(7);
    let mut bytes = |n: usize| -> Vec<u8> { (0..n).map(|_| rng.next() as u8).collect() };
    let sets: Vec<Vec<(&str, Dtype, Vec<usize>)>> = vec![
        vec![
            ("conv_stem.weight", Dtype::F32, vec![4, 3, 3, 3]),
            ("bn1.weight", Dtype::F32, vec![4]),
            ("bn1.num_batches_tracked", Dtype::I64, vec![]),
        ],
        vec![
            ("classifier.weight", Dtype::F16, vec![10, 8]),
            ("classifier.bias", Dtype::F16, vec![10]),
        ],
        vec![
            ("a", Dtype::BF16, vec![2, 3]),
            ("b", Dtype::F64, vec![3]),
            ("empty", Dtype::F32, vec![0, 5]),
            ("scalar", Dtype::F32, vec![]),
        ],
        vec![("ints", Dtype::I32, vec![4])],
    ];
    let mut out = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        let buffers: Vec<Vec<u8>> = set
            .iter()
            .map(|(_, dtype, shape)| bytes(shape.iter().product::<usize>() * (dtype.bitsize() / 8)))
            .collect();
        let views: Vec<(&str, TensorView<'_>)> = set
            .iter()
            .zip(&buffers)
            .map(|((name, dtype, shape), data)| {
                (*name, TensorView::new(*dtype, shape.clone(), data).unwrap())
            })
            .collect();
        let metadata = (i % 2 == 0)
            .then(|| std::collections::HashMap::from([("format".to_owned(), "pt".to_owned())]));
        out.push(safetensors::serialize(views, metadata).unwrap());
    }
    out
}

fn config_corpus() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("config/effistream.toml")];
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root.join("config/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    examples.sort();
    files.extend(examples);
    let mut out: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(out.len() >= 5);
    // Small configurations of the kinds the tests write.
    for text in [
        "[[camera]]\nid = \"door\"\nuri = \"test://ball?width=320&height=240\"\n\n[mqtt]\nurl = \"mqtt://broker.lan\"\n",
        "shard = \"1/3\"\n[[camera]]\nid = \"a\"\nuri = \"rtsp://user:${CAMERA_PASSWORD}@cam.lan/live\"\nregions = [{ id = \"gate\", box = [0.1, 0.2, 0.5, 0.9] }]\n[mqtt]\nurl = \"mqtts://[::1]:8883\"\nusername = \"u\"\npassword = \"${MQTT_PASSWORD:-x}\"\n[batch]\nmax_size = 8\nmax_wait_ms = 20\n",
        "[[camera]]\nid = \"p\"\npipeline = \"videotestsrc ! videoconvert\"\nfps = 2.5\n[http]\nenabled = true\nlisten = \"127.0.0.1:0\"\n[homeassistant]\nenabled = true\n",
    ] {
        out.push(text.as_bytes().to_vec());
    }
    out
}

fn uri_corpus() -> Vec<Vec<u8>> {
    [
        "rtsp://user:s3cretPW@cam.lan:554/stream1",
        "rtsp://192.168.1.10/h264?channel=1&subtype=0",
        "rtsps://[fe80::1]:322/live",
        "http://cam.lan/mjpeg",
        "https://admin:s3cretPW@cam.example.com:8443/video.m3u8",
        "file:///var/lib/clips/door%20cam.mp4",
        "file:///tmp/a.mkv",
        "v4l2:///dev/video0",
        "test://ball?width=320&height=240",
        "test://smpte",
        "mqtt://broker.lan",
        "mqtt://broker.lan:1883",
        "mqtts://[::1]:8883",
        "mqtt://10.0.0.1:65535",
        "mqtts://user:s3cretPW@broker.example.com",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

// ---------------------------------------------------------------------------------------
// Structured text mutations
// ---------------------------------------------------------------------------------------

/// Values that TOML keys get in place of theirs.
const TOML_VALUES: &[&str] = &[
    "0",
    "-1",
    "1",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "1e308",
    "-1e308",
    "5e-324",
    "nan",
    "inf",
    "-inf",
    "0.0",
    "-0.0",
    "true",
    "false",
    "\"\"",
    "\" \"",
    "\"x\"",
    "\"${X}\"",
    "\"${UNSET}\"",
    "\"${UNSET:-d}\"",
    "\"$$\"",
    "\"${\"",
    "\"${X:-\"",
    "\"$\"",
    "\"\\u0000\"",
    "\"a\\nb\"",
    "\"/\"",
    "\"+/#\"",
    "\"é𝄞\"",
    "'''\nmulti\nline'''",
    "[]",
    "[1, 2]",
    "[0.0, 0.0, 1.0, 1.0]",
    "[1.0, 0.0, 0.0, 1.0]",
    "[nan, 0, 1, 1]",
    "{}",
    "{ id = \"r\", box = [0, 0, 1, 1] }",
    "1979-05-27T07:32:00Z",
    "\"embedded\"",
    "\"mqtt://\"",
    "\"test://ball?width=99999999999&height=1\"",
    "\"rtsp://u:p@[::1\"",
    "\"file:relative\"",
    "\"127.0.0.1:99999\"",
    "\"0/0\"",
    "\"1/0\"",
    "\"18446744073709551615/18446744073709551615\"",
];

const TOML_SNIPPETS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "=",
    "\"",
    "'",
    "\n",
    "#",
    ".",
    ",",
    "$",
    "${",
    "\\",
    "\\u",
    "\0",
    "\r",
    "\t",
    "é",
    "\u{feff}",
    "[[camera]]\n",
    "[camera]\n",
    "[mqtt]\n",
    "[x]\n",
    "a.b.c = 1\n",
    "id = \"door\"\n",
    "uri = \"test://ball\"\n",
    "enabled = false\n",
    "regions = [{ id = \"r\", box = [0.0, 0.0, 1.0, 1.0] }]\n",
];

/// Keys of `text`'s `key = value` lines, with their line index.
fn toml_key_lines(lines: &[String]) -> Vec<usize> {
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start();
            !t.starts_with('#') && !t.starts_with('[') && t.contains('=')
        })
        .map(|(i, _)| i)
        .collect()
}

fn mutate_toml(rng: &mut Rng, text: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let s = String::from_utf8_lossy(text).into_owned();
    let mut lines: Vec<String> = s.split('\n').map(str::to_owned).collect();
    let keyed = toml_key_lines(&lines);
    match rng.below(10) {
        0..=2 if !keyed.is_empty() => {
            // A value replaced by a boundary value, or uncommented first.
            let i = *rng.pick(&keyed);
            let line = lines[i].trim_start().trim_start_matches('#').trim_start();
            if let Some((key, _)) = line.split_once('=') {
                lines[i] = format!("{}= {}", key, rng.pick(TOML_VALUES));
            }
        }
        3 => {
            // A commented-out example line uncommented.
            let commented: Vec<usize> = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.trim_start().starts_with('#'))
                .map(|(i, _)| i)
                .collect();
            if !commented.is_empty() {
                let i = *rng.pick(&commented);
                lines[i] = lines[i].trim_start().trim_start_matches('#').to_owned();
            }
        }
        4 if !lines.is_empty() => {
            let i = rng.below(lines.len());
            let copy = lines[i].clone();
            lines.insert(rng.below(lines.len() + 1), copy);
        }
        5 if !lines.is_empty() => {
            lines.remove(rng.below(lines.len()));
        }
        6 if !lines.is_empty() => {
            let a = rng.below(lines.len());
            let b = rng.below(lines.len());
            lines.swap(a, b);
        }
        7 if !keyed.is_empty() => {
            // A key renamed, dotted, or moved into a table.
            let i = *rng.pick(&keyed);
            let at = rng.below(lines[i].find('=').unwrap_or(0) + 1);
            let ins = *rng.pick(&["x", ".", ".a", "\"", " ", "-", "_"]);
            let mut at = at.min(lines[i].len());
            while !lines[i].is_char_boundary(at) {
                at -= 1;
            }
            lines[i].insert_str(at, ins);
        }
        8 => {
            // Deep nesting: arrays or inline tables, to look for unbounded recursion.
            let max = if rng.chance(20) { 5000 } else { 64 };
            let depth = 1 + rng.below(max);
            let (open, close) = if rng.chance(50) {
                ("[", "]")
            } else {
                ("{a=", "}")
            };
            let value = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            let key = if keyed.is_empty() {
                "stats_interval_s".to_owned()
            } else {
                let i = *rng.pick(&keyed);
                lines[i].split('=').next().unwrap_or("x").to_owned()
            };
            lines.insert(rng.below(lines.len() + 1), format!("{key}= {value}"));
        }
        _ => {
            // A piece of TOML syntax inserted anywhere.
            let joined = lines.join("\n");
            let mut at = rng.below(joined.len() + 1);
            while !joined.is_char_boundary(at) {
                at -= 1;
            }
            let mut out = joined;
            out.insert_str(at, rng.pick::<&str>(TOML_SNIPPETS));
            lines = vec![out];
        }
    }
    *text = lines.join("\n").into_bytes();
    if rng.chance(15) {
        mutate_bytes(rng, text, corpus);
    }
}

const URI_SNIPPETS: &[&str] = &[
    "%",
    "%2F",
    "%2f",
    "%00",
    "%ff",
    "%zz",
    "%25",
    "@",
    "@@",
    ":",
    "::",
    "[",
    "]",
    "[::1]",
    "/",
    "//",
    "\\",
    "?",
    "#",
    "&",
    "=",
    " ",
    "\t",
    "\n",
    "\0",
    "é",
    "𝄞",
    "xn--",
    "xn--a",
    "..",
    "/../",
    "${X}",
    "$",
    ":0",
    ":65536",
    ":99999999999999999999",
    ":-1",
    "user:pw@",
    "[::ffff:1.2.3.4]",
    "0x7f.1",
    "4294967296",
    "%5B",
    "\u{feff}",
    "\u{202e}",
    "\u{2028}",
    "rtsp://",
    "file://",
    "test://",
    "mqtt://",
    "width=",
    "height=",
    "&width=7681",
    "?width=16&height=16",
    ";",
    "%C0%AF",
];

fn mutate_uri(rng: &mut Rng, text: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let s = String::from_utf8_lossy(text).into_owned();
    let mut chars: Vec<char> = s.chars().collect();
    match rng.below(8) {
        0..=3 => {
            let at = rng.below(chars.len() + 1);
            let ins: Vec<char> = rng.pick(URI_SNIPPETS).chars().collect();
            chars.splice(at..at, ins);
        }
        4 if !chars.is_empty() => {
            let n = rng.chunk(chars.len());
            let from = rng.below(chars.len() - n + 1);
            chars.drain(from..from + n);
        }
        5 if !chars.is_empty() => {
            let n = rng.chunk(chars.len());
            let from = rng.below(chars.len() - n + 1);
            let chunk: Vec<char> = chars[from..from + n].to_vec();
            let times = if rng.chance(90) {
                1
            } else {
                1 + rng.below(2000)
            };
            let at = rng.below(chars.len() + 1);
            for _ in 0..times {
                chars.splice(at..at, chunk.iter().copied());
            }
        }
        6 if !chars.is_empty() => {
            let i = rng.below(chars.len());
            chars[i] = if chars[i].is_ascii_lowercase() {
                chars[i].to_ascii_uppercase()
            } else {
                *rng.pick(&['a', '0', '.', '-', '_', '~', '!', '\''])
            };
        }
        _ => {
            mutate_bytes(rng, text, corpus);
            return;
        }
    }
    *text = chars.into_iter().collect::<String>().into_bytes();
}

// ---------------------------------------------------------------------------------------
// Safetensors-aware mutations
// ---------------------------------------------------------------------------------------

fn mutate_safetensors(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    if rng.chance(30) || data.len() < 8 {
        mutate_bytes(rng, data, corpus);
        return;
    }
    let n = u64::from_le_bytes(data[..8].try_into().unwrap());
    let Some(header_end) = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_add(8))
        .filter(|&end| end <= data.len())
    else {
        mutate_bytes(rng, data, corpus);
        return;
    };
    let body = data[header_end..].to_vec();
    let header_text = data[8..header_end].to_vec();
    let mut header: serde_json::Value = match serde_json::from_slice(&header_text) {
        Ok(v) => v,
        Err(_) => {
            mutate_bytes(rng, data, corpus);
            return;
        }
    };
    let mut new_header = None;
    if let Some(map) = header.as_object_mut() {
        let names: Vec<String> = map
            .iter()
            .filter(|(k, v)| *k != "__metadata__" && v.is_object())
            .map(|(k, _)| k.clone())
            .collect();
        let name = if names.is_empty() {
            None
        } else {
            Some(rng.pick(&names).clone())
        };
        let big = |rng: &mut Rng| -> serde_json::Value {
            match rng.below(8) {
                0 => serde_json::json!(-1),
                1 => serde_json::json!(1.5),
                2 => serde_json::json!("3"),
                3 => serde_json::Value::Null,
                _ => serde_json::json!(*rng.pick(&INTERESTING)),
            }
        };
        match (rng.below(9), name) {
            (0, Some(name)) => {
                let dtype = *rng.pick(&[
                    "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL",
                    "F8_E4M3", "F8_E5M2", "C64", "U64", "F4", "X", "",
                ]);
                map[&name]["dtype"] = serde_json::json!(dtype);
            }
            (1, Some(name)) => {
                let entry = &mut map[&name];
                if let Some(shape) = entry["shape"].as_array_mut() {
                    match rng.below(4) {
                        0 => shape.push(serde_json::json!(rng.pick(&INTERESTING))),
                        1 => {
                            shape.pop();
                        }
                        2 if !shape.is_empty() => {
                            let i = rng.below(shape.len());
                            shape[i] = big(rng);
                        }
                        _ => shape.insert(0, serde_json::json!(rng.below(3))),
                    }
                } else {
                    entry["shape"] = big(rng);
                }
            }
            (2, Some(name)) => {
                let entry = &mut map[&name];
                if let Some(offsets) = entry["data_offsets"].as_array_mut() {
                    match rng.below(5) {
                        0 if offsets.len() == 2 => offsets.swap(0, 1),
                        1 => offsets.push(serde_json::json!(0)),
                        2 => {
                            offsets.pop();
                        }
                        _ if !offsets.is_empty() => {
                            let i = rng.below(offsets.len());
                            offsets[i] = if rng.chance(50) {
                                big(rng)
                            } else {
                                let old = offsets[i].as_u64().unwrap_or(0);
                                serde_json::json!(
                                    old.saturating_add(rng.below(9) as u64).saturating_sub(4)
                                )
                            };
                        }
                        _ => {}
                    }
                }
            }
            (3, Some(name)) => {
                map.remove(&name);
            }
            (4, Some(name)) => {
                // The same tensor under another name: two tensors on one byte range.
                let entry = map[&name].clone();
                let other = *rng.pick(&["x", "", "a.num_batches_tracked", "conv_stem.weight"]);
                map.insert(other.to_owned(), entry);
            }
            (5, _) => {
                let meta = match rng.below(4) {
                    0 => serde_json::json!({"format": 1}),
                    1 => serde_json::json!(["pt"]),
                    2 => serde_json::json!({"format": {"nested": "x"}}),
                    _ => serde_json::json!("pt"),
                };
                map.insert("__metadata__".to_owned(), meta);
            }
            (6, Some(name)) => {
                let field = *rng.pick(&["dtype", "shape", "data_offsets"]);
                if let Some(obj) = map[&name].as_object_mut() {
                    if rng.chance(50) {
                        obj.remove(field);
                    } else {
                        obj.insert("extra".to_owned(), serde_json::json!(1));
                    }
                }
            }
            (7, _) => {
                new_header = Some(
                    rng.pick(&["[]", "{}", "1", "null", "{\"a\":{}}", "{\"a\":1,\"a\":2}"])
                        .as_bytes()
                        .to_vec(),
                );
            }
            _ => {
                // Text-level damage to the JSON (duplicate keys, broken numbers, ...).
                let mut text = serde_json::to_vec(&header).unwrap();
                mutate_bytes(rng, &mut text, corpus);
                new_header = Some(text);
            }
        }
    }
    let header_bytes = new_header.unwrap_or_else(|| serde_json::to_vec(&header).unwrap());
    let mut len = header_bytes.len() as u64;
    if rng.chance(10) {
        len = match rng.below(3) {
            0 => *rng.pick(&INTERESTING),
            1 => len + 1 + rng.below(8) as u64,
            _ => len.saturating_sub(1 + rng.below(8) as u64),
        };
    }
    let mut out = len.to_le_bytes().to_vec();
    out.extend(header_bytes);
    out.extend(body);
    if rng.chance(20) {
        match rng.below(2) {
            0 => out.truncate(rng.below(out.len() + 1)),
            _ => out.extend(std::iter::repeat_n(0u8, rng.chunk(64))),
        }
    }
    *data = out;
}

// ---------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------

/// What a case's parse ended with (properties that failed are errors).
enum Outcome {
    Accepted,
    Refused,
}

struct Target {
    index: usize,
    corpus: Vec<Vec<u8>>,
    zip_entries: Vec<Entries>,
    /// Share of `EFFISTREAM_FUZZ_SECONDS`.
    weight: f64,
    mutate: fn(&mut Rng, &Target) -> Vec<u8>,
    run: fn(&[u8]) -> Result<Outcome, String>,
    /// Most bytes one parse of `n` input bytes may have live at once.
    bound: fn(usize) -> usize,
    /// Inputs are text (printed escaped) rather than bytes (printed as hex).
    text: bool,
}

impl Target {
    fn name(&self) -> &'static str {
        TARGET_NAMES[self.index]
    }

    /// The input of case `seed`: a corpus item with 1 to 4 mutations.
    fn input(&self, seed: u64) -> Vec<u8> {
        let mut rng = Rng(seed);
        let mut out = (self.mutate)(&mut rng, self);
        out.truncate(MAX_INPUT);
        out
    }
}

const MIB: usize = 1 << 20;

/// The reader's tensor budget: all storages and tensors together stay within
/// `4 × input + 16 MiB` (`src/pth/select.rs`, `Budget`).
fn pth_budget(n: usize) -> usize {
    4 * n + 16 * MIB
}

/// `.pth` bound: the tensor budget, plus the pickle machine, which allocates per opcode
/// byte at most one heap object (≤ 40 bytes, doubled by `Vec` growth) and one stack slot
/// (24 bytes, doubled), ≈ 128 bytes per input byte; memo entries cost less per byte
/// (BINPUT is 2 bytes). `data.pkl` is read into memory (≤ its share of the budget), and
/// the zip directory costs ≈ 4 × its size. `c = 256` covers the machine twice over; the
/// constant adds 2 MiB for fixed structures (hash maps, the zip reader's buffers).
fn pth_bound(n: usize) -> usize {
    256 * n + pth_budget(n) + 2 * MIB
}

fn run_pth(bytes: &[u8]) -> Result<Outcome, String> {
    match read_pth_bytes(bytes) {
        Ok(tensors) => {
            let total: usize = tensors.iter().map(|t| t.data.len()).sum();
            if total > pth_budget(bytes.len()) {
                return Err(format!(
                    "{total} bytes of tensors from a {}-byte file, past the reader's budget",
                    bytes.len()
                ));
            }
            for t in &tensors {
                let numel: usize = t.shape.iter().product();
                if numel * t.dtype.size_in_bytes() != t.data.len() {
                    return Err(format!(
                        "tensor `{}` of shape {:?} has {} bytes of {}",
                        t.name,
                        t.shape,
                        t.data.len(),
                        t.dtype.name()
                    ));
                }
            }
            drop(tensors);
            // The same bytes as the model loads them (f16/bf16 become f32).
            let _ = WeightsFile::from_bytes(Path::new("fuzz.pth"), bytes);
            Ok(Outcome::Accepted)
        }
        Err(e) => refused(&e),
    }
}

/// `.pth` zip cases: half repacked after entry-level edits (valid CRCs), half with raw edits
/// of the zip's records or bytes.
fn mutate_pth_zip(rng: &mut Rng, t: &Target) -> Vec<u8> {
    let which = rng.below(t.corpus.len());
    let mut data = if which < t.zip_entries.len() && rng.chance(50) {
        let mut entries = t.zip_entries[which].clone();
        for _ in 0..1 + rng.below(2) {
            mutate_entries(rng, &mut entries, &t.corpus);
        }
        match zip_entries(&entries, rng.chance(25)) {
            Some(bytes) => bytes,
            None => t.corpus[which].clone(),
        }
    } else {
        t.corpus[which].clone()
    };
    for _ in 0..rng.below(3) {
        if rng.chance(50) {
            if !mutate_zip_record(rng, &mut data) {
                mutate_bytes(rng, &mut data, &t.corpus);
            }
        } else {
            mutate_bytes(rng, &mut data, &t.corpus);
        }
    }
    data
}

/// Legacy cases: pickle edits across the five pickles, the data section's counts, bytes.
fn mutate_pth_legacy(rng: &mut Rng, t: &Target) -> Vec<u8> {
    let mut data = rng.pick(&t.corpus).clone();
    for _ in 0..1 + rng.below(3) {
        match rng.below(10) {
            0..=4 => {
                if !mutate_pickle(rng, &mut data, 0, 5) {
                    mutate_bytes(rng, &mut data, &t.corpus);
                }
            }
            5 | 6 => {
                // An element count of the data section set to a boundary value.
                let (_, end) = pickle_ops(&data, 0, 5);
                if end + 8 <= data.len() {
                    let v = if rng.chance(50) {
                        *rng.pick(&INTERESTING)
                    } else {
                        u64::from_le_bytes(data[end..end + 8].try_into().unwrap())
                            .wrapping_add(rng.below(5) as u64)
                            .wrapping_sub(2)
                    };
                    data[end..end + 8].copy_from_slice(&v.to_le_bytes());
                } else {
                    mutate_bytes(rng, &mut data, &t.corpus);
                }
            }
            _ => mutate_bytes(rng, &mut data, &t.corpus),
        }
    }
    data
}

/// Safetensors bound: the header's JSON becomes a map whose shapes hold 8-byte integers
/// for (at least) 2-byte `1,` items, doubled by `Vec` growth (8 per byte), plus per-tensor
/// entries; the data is then copied into candle tensors and f16/bf16 converted to f32
/// (the f16 copy and its f32 result: 3 × the data, plus the f32 tensors kept: 2 ×). So
/// `c = 16` covers both with room; the constant adds 1 MiB of fixed structures.
fn safetensors_bound(n: usize) -> usize {
    16 * n + MIB
}

fn run_weights(bytes: &[u8]) -> Result<Outcome, String> {
    match WeightsFile::from_bytes(Path::new("fuzz.safetensors"), bytes) {
        Ok(file) => {
            // Every tensor came from the file: at most 2 × its bytes once in f32.
            let total: usize = file.tensors.iter().map(|(_, t)| t.elem_count() * 4).sum();
            if total > 2 * bytes.len() {
                return Err(format!(
                    "{total} bytes of f32 tensors from a {}-byte file",
                    bytes.len()
                ));
            }
            Ok(Outcome::Accepted)
        }
        Err(e) => refused(&e),
    }
}

fn mutate_with(f: fn(&mut Rng, &mut Vec<u8>, &[Vec<u8>])) -> impl Fn(&mut Rng, &Target) -> Vec<u8> {
    move |rng, t| {
        let mut data = rng.pick(&t.corpus).clone();
        for _ in 0..1 + rng.below(3) {
            f(rng, &mut data, &t.corpus);
        }
        data
    }
}

/// Config bound: `toml` keeps tables in `BTreeMap`s; a dotted key `a.b.c` makes a new
/// table every 2 bytes, whose first node takes ≈ 600 bytes (11 slots of a 24-byte key and a
/// 32-byte value): ≈ 300 bytes per input byte, the worst case of the parse; the
/// configuration, plan and printed copy are far smaller per byte. `c = 1024` leaves 3 ×
/// room; the constant covers the fixed-size configuration, plan and error text (1 MiB).
fn config_bound(n: usize) -> usize {
    1024 * n + MIB
}

/// A refusal is fine when its message stays on one line.
fn refused(error: &dyn std::fmt::Display) -> Result<Outcome, String> {
    let msg = error.to_string();
    if msg.contains('\n') {
        return Err(format!("error message spans lines: {msg:?}"));
    }
    Ok(Outcome::Refused)
}

fn config_vars(name: &str) -> Result<String, std::env::VarError> {
    match name {
        "CAMERA_PASSWORD" => Ok("s3cret".to_owned()),
        "MQTT_PASSWORD" => Ok("hunter2".to_owned()),
        "X" => Ok("${X}$$".to_owned()),
        "EMPTY" => Ok(String::new()),
        "EFFISTREAM_CA_FILE" | "EFFISTREAM_CERT_FILE" | "EFFISTREAM_KEY_FILE" => {
            Ok(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml").to_owned())
        }
        _ => Err(std::env::VarError::NotPresent),
    }
}

fn run_config(bytes: &[u8]) -> Result<Outcome, String> {
    let text = String::from_utf8_lossy(bytes);
    match Config::from_toml_with_env(&text, "fuzz.toml", config_vars) {
        Ok(config) => {
            // Printed back, the configuration reads as itself (and prints the same text).
            let printed = config
                .to_toml()
                .map_err(|e| format!("accepted but cannot be printed: {e}"))?;
            let again = Config::from_toml_with_env(&printed, "printed.toml", config_vars)
                .map_err(|e| format!("printed back, it is refused: {e}\n{printed}"))?;
            let printed_again = again
                .to_toml()
                .map_err(|e| format!("reprinting fails: {e}"))?;
            if printed_again != printed {
                return Err(format!(
                    "printed twice, the text changes:\n{printed}\n---\n{printed_again}"
                ));
            }
            let _ = config.redacted().to_toml();
            let _ = config.warnings();
            Ok(Outcome::Accepted)
        }
        Err(e) => {
            let msg = e.to_string();
            for secret in ["s3cret", "hunter2"] {
                if msg.contains(secret) && !text.contains(secret) {
                    return Err(format!("a substituted secret shows in the error: {msg}"));
                }
            }
            refused(&msg)
        }
    }
}

/// URI bound: one input byte becomes up to 6 in a message that quotes the value with
/// Rust's escaping (`\u{1b}`) and 3 in the `url` crate's percent-encoding (`%1B`), each
/// doubled by `String` growth, and the camera, MQTT and redaction paths each hold copies
/// (the fuzzer has seen 17 bytes per input byte). `c = 64`, plus 64 KiB for the fixed
/// messages and settings.
fn uri_bound(n: usize) -> usize {
    64 * n + (64 << 10)
}

fn run_uri(bytes: &[u8]) -> Result<Outcome, String> {
    let uri = String::from_utf8_lossy(bytes).into_owned();
    // The password as URL syntax delimits it: the authority runs from `://` to the first
    // `/`, `?` or `#`; its userinfo ends at its last `@`; the password follows the first
    // `:` of the userinfo. (Mutations also move the seed's password into paths and user
    // names, where it is not a password; short ones could match any text.)
    let password = uri.split_once("://").and_then(|(_, rest)| {
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let userinfo = &authority[..authority.rfind('@')?];
        let (_, password) = userinfo.split_once(':')?;
        (password.len() >= 6).then(|| password.to_owned())
    });
    // A message shows the value at most once, masked; the password may also occur
    // elsewhere in the URI (mutations copy it into paths), so it must occur in the
    // message fewer times than in the URI.
    let shown = |text: &str| password.as_deref().map_or(0, |p| text.matches(p).count());
    let in_uri = shown(&uri);
    let leak = |what: &str, msg: &str| -> Result<(), String> {
        if in_uri > 0 && shown(msg) >= in_uri {
            Err(format!(
                "{what}: the URI's password shows in the error: {msg}"
            ))
        } else {
            Ok(())
        }
    };
    let camera = CameraConfig::new("cam", uri.clone());
    let source = camera.source();
    if let Err(e) = &source {
        leak("camera source", e)?;
    }
    if let Err(e) = camera.resolve("fuzz.toml", &ReconnectConfig::default()) {
        let msg = e.to_string();
        // The key's value is shown redacted; the password must not be part of it.
        leak("camera resolve", &msg)?;
    }
    let mqtt = parse_mqtt_url(&uri);
    if let Err(e) = &mqtt {
        leak("mqtt url", e)?;
    }
    let config = MqttConfig {
        url: uri.clone(),
        ..MqttConfig::default()
    };
    if let Err(e) = config.resolve("fuzz.toml") {
        leak("mqtt resolve", &e.to_string())?;
    }
    let redacted = effistream::config::redact_secrets(&uri);
    if (source.is_ok() || mqtt.is_ok()) && in_uri > 0 && shown(&redacted) >= in_uri {
        return Err(format!(
            "an accepted URI keeps its password when redacted: {redacted}"
        ));
    }
    Ok(if source.is_ok() || mqtt.is_ok() {
        Outcome::Accepted
    } else {
        Outcome::Refused
    })
}

fn target(name: &str) -> Target {
    let index = TARGET_NAMES.iter().position(|n| *n == name).unwrap();
    let base = Target {
        index,
        corpus: Vec::new(),
        zip_entries: Vec::new(),
        weight: 0.0,
        mutate: |_, _| Vec::new(),
        run: run_uri,
        bound: uri_bound,
        text: false,
    };
    match name {
        "pth_zip" => {
            let (corpus, zip_entries) = zip_corpus();
            Target {
                corpus,
                zip_entries,
                weight: 0.3,
                mutate: mutate_pth_zip,
                run: run_pth,
                bound: pth_bound,
                ..base
            }
        }
        "pth_legacy" => Target {
            corpus: torch_fixtures(".legacy.pth"),
            weight: 0.2,
            mutate: mutate_pth_legacy,
            run: run_pth,
            bound: pth_bound,
            ..base
        },
        "safetensors" => Target {
            corpus: safetensors_corpus(),
            weight: 0.2,
            mutate: |rng, t| mutate_with(mutate_safetensors)(rng, t),
            run: run_weights,
            bound: safetensors_bound,
            ..base
        },
        "config" => Target {
            corpus: config_corpus(),
            weight: 0.2,
            mutate: |rng, t| mutate_with(mutate_toml)(rng, t),
            run: run_config,
            bound: config_bound,
            text: true,
            ..base
        },
        _ => Target {
            corpus: uri_corpus(),
            weight: 0.1,
            mutate: |rng, t| mutate_with(mutate_uri)(rng, t),
            run: run_uri,
            bound: uri_bound,
            text: true,
            ..base
        },
    }
}

// ---------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------

enum Failure {
    Panic(String),
    Allocation { peak: usize, bound: usize },
    Property(String),
}

fn show_input(input: &[u8], text: bool) -> String {
    if text {
        return format!("{:?}", String::from_utf8_lossy(input));
    }
    let mut out = String::new();
    for (i, row) in input.chunks(32).enumerate() {
        out.push_str(&format!("{:06x}  ", i * 32));
        for b in row {
            out.push_str(&format!("{b:02x}"));
        }
        out.push('\n');
    }
    out
}

fn report(t: &Target, seed: u64, input: &[u8], what: &str) -> String {
    format!(
        "fuzz {name}: {what}\n  case seed {seed:#018x}; replay with EFFISTREAM_FUZZ_SEED={seed:#018x} cargo test --release --test fuzz {name} -- --nocapture\n  input ({} bytes):\n{}",
        input.len(),
        show_input(input, t.text),
        name = t.name()
    )
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_owned()
    }
}

/// Runs one input through the target with every check; returns the outcome and the peak.
fn check(t: &Target, seed: u64, input: &[u8]) -> Result<(Outcome, usize), Failure> {
    let slot = &SLOTS[t.index];
    slot.seed.store(seed, Ordering::SeqCst);
    slot.started_ms
        .store(epoch().elapsed().as_millis() as u64, Ordering::SeqCst);
    slot.active.store(true, Ordering::SeqCst);
    let (result, peak) = measure(t.index, seed, || {
        catch_unwind(AssertUnwindSafe(|| (t.run)(input)))
    });
    slot.active.store(false, Ordering::SeqCst);
    let bound = (t.bound)(input.len());
    let outcome = match result {
        Err(payload) => return Err(Failure::Panic(panic_message(payload.as_ref()))),
        Ok(Err(msg)) => return Err(Failure::Property(msg)),
        Ok(Ok(outcome)) => outcome,
    };
    if peak > bound {
        return Err(Failure::Allocation { peak, bound });
    }
    Ok((outcome, peak))
}

fn describe(f: &Failure, n: usize) -> String {
    match f {
        Failure::Panic(msg) => format!("panicked: {msg}"),
        Failure::Allocation { peak, bound } => format!(
            "allocated {peak} bytes at once for a {n}-byte input, more than its bound of {bound}"
        ),
        Failure::Property(msg) => format!("property failed: {msg}"),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

fn budget_seconds() -> f64 {
    match std::env::var("EFFISTREAM_FUZZ_SECONDS") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("EFFISTREAM_FUZZ_SECONDS={v} is not a number")),
        Err(_) => 40.0,
    }
}

/// A target's run must do real work: at least this many cases, whatever the budget.
const MIN_CASES: u64 = 500;

/// Watches one target's cases; ends the process if one runs past [`HANG_LIMIT`].
fn watchdog(t: Arc<Target>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let slot = &SLOTS[t.index];
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            if !slot.active.load(Ordering::SeqCst) {
                continue;
            }
            let started = slot.started_ms.load(Ordering::SeqCst);
            let now = epoch().elapsed().as_millis() as u64;
            if now.saturating_sub(started) > HANG_LIMIT.as_millis() as u64
                && slot.active.load(Ordering::SeqCst)
            {
                let seed = slot.seed.load(Ordering::SeqCst);
                let input = t.input(seed);
                eprintln!(
                    "{}",
                    report(
                        &t,
                        seed,
                        &input,
                        &format!("hangs: one case has run for more than {HANG_LIMIT:?}")
                    )
                );
                std::process::exit(101);
            }
        }
    })
}

fn fuzz(name: &str) {
    install_abort_handler();
    let t = Arc::new(target(name));
    // The seeds themselves pass every check.
    for (i, input) in t.corpus.iter().enumerate() {
        if let Err(f) = check(&t, 0, input) {
            panic!("fuzz {name}: seed input {i}: {}", describe(&f, input.len()));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let dog = watchdog(t.clone(), stop.clone());

    if let Some(seed) = env_u64("EFFISTREAM_FUZZ_SEED") {
        let input = t.input(seed);
        let result = check(&t, seed, &input);
        stop.store(true, Ordering::SeqCst);
        dog.join().unwrap();
        match result {
            Ok((outcome, peak)) => println!(
                "{}",
                report(
                    &t,
                    seed,
                    &input,
                    &format!(
                        "passes ({}, peak {peak} bytes)",
                        match outcome {
                            Outcome::Accepted => "accepted",
                            Outcome::Refused => "refused",
                        }
                    )
                )
            ),
            Err(f) => panic!("{}", report(&t, seed, &input, &describe(&f, input.len()))),
        }
        return;
    }

    let base = env_u64("EFFISTREAM_FUZZ_BASE").unwrap_or(0x0eff_1575_ea00_0016);
    let budget = Duration::from_secs_f64(budget_seconds() * t.weight);
    let mut seeds = Rng(base ^ (t.index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let start = Instant::now();
    let (mut cases, mut accepted) = (0u64, 0u64);
    let mut worst = (0.0f64, 0usize, 0usize);
    let mut failures = Vec::new();
    while (start.elapsed() < budget || cases < MIN_CASES) && failures.len() < 5 {
        let seed = seeds.next();
        let input = t.input(seed);
        cases += 1;
        match check(&t, seed, &input) {
            Ok((outcome, peak)) => {
                if matches!(outcome, Outcome::Accepted) {
                    accepted += 1;
                }
                let share = peak as f64 / (t.bound)(input.len()) as f64;
                if share > worst.0 {
                    worst = (share, peak, input.len());
                }
            }
            Err(f) => {
                let text = report(&t, seed, &input, &describe(&f, input.len()));
                eprintln!("{text}");
                failures.push(text);
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    dog.join().unwrap();
    println!(
        "fuzz {name}: {cases} cases in {:.1} s (base seed {base:#x}), {accepted} accepted, {} failed; \
         closest to its allocation bound: {:.1}% ({} bytes for a {}-byte input)",
        start.elapsed().as_secs_f64(),
        failures.len(),
        worst.0 * 100.0,
        worst.1,
        worst.2
    );
    assert!(
        failures.is_empty(),
        "fuzz {name}: {} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn pth_zip() {
    fuzz("pth_zip");
}

#[test]
fn pth_legacy() {
    fuzz("pth_legacy");
}

#[test]
fn safetensors() {
    fuzz("safetensors");
}

#[test]
fn config() {
    fuzz("config");
}

#[test]
fn uri() {
    fuzz("uri");
}

// ---------------------------------------------------------------------------------------
// Inputs that once failed, and checks of the harness itself
// ---------------------------------------------------------------------------------------

/// Runs one fixed input through its target's checks, under a watchdog of its own.
fn regression(name: &str, why: &str, input: &[u8]) {
    install_abort_handler();
    let t = target(name);
    let done = Arc::new(AtomicBool::new(false));
    let dog = {
        let done = done.clone();
        let why = why.to_owned();
        let name = name.to_owned();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::SeqCst) {
                if start.elapsed() > HANG_LIMIT {
                    eprintln!(
                        "fuzz {name}: regression case `{why}` hangs (more than {HANG_LIMIT:?})"
                    );
                    std::process::exit(101);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let started = Instant::now();
    let result = check(&t, 0, input);
    let took = started.elapsed();
    done.store(true, Ordering::SeqCst);
    dog.join().unwrap();
    if let Err(f) = result {
        let shown = if input.len() > 4096 {
            format!("{} bytes, built by the test", input.len())
        } else {
            show_input(input, t.text)
        };
        panic!(
            "fuzz {name}: regression case `{why}`: {}\n  input: {shown}",
            describe(&f, input.len())
        );
    }
    println!("fuzz {name}: regression case `{why}` passes in {took:?}");
}

/// The header pickles of a legacy checkpoint (magic number, protocol version, sys info).
fn legacy_header() -> Vec<u8> {
    let mut out = vec![0x80, 2, 0x8a, 10];
    out.extend([0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]);
    out.extend(b".\x80\x02M\xe9\x03.\x80\x02}.");
    out
}

/// `X` with a string of `n` bytes of `c`.
fn long_string(n: usize, c: u8) -> Vec<u8> {
    let mut out = vec![b'X'];
    out.extend((n as u32).to_le_bytes());
    out.extend(std::iter::repeat_n(c, n));
    out
}

/// A protocol-2 pickle: `body` then `STOP` (a legacy reader runs it before looking at it).
fn pickle(body: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80, 2];
    out.extend(body);
    out.push(b'.');
    out
}

/// A persistent id of a float storage with key `key` and `numel` elements.
fn storage_pid(key: &[u8]) -> Vec<u8> {
    let mut out = b"(".to_vec();
    out.extend(unicode_op("storage"));
    out.extend(b"ctorch\nFloatStorage\n");
    out.extend(key);
    out.extend(unicode_op("cpu"));
    out.extend(b"K\x00tQ");
    out
}

#[test]
fn regression_deflated_data_pkl_unpacks_within_the_budget() {
    // 64 MiB of zeros deflate to about 64 KiB: the reader unpacked all of it before
    // looking at the pickle (the entry's size was only checked against 1 GiB).
    let entries = vec![
        ("archive/data.pkl".to_owned(), vec![0u8; 64 * MIB]),
        ("archive/byteorder".to_owned(), b"little".to_vec()),
    ];
    let input = zip_entries(&entries, true).unwrap();
    regression("pth_zip", "deflated data.pkl of 64 MiB", &input);
}

#[test]
fn regression_reduce_with_a_huge_memoized_tuple_is_linear() {
    // Each REDUCE copied its argument tuple: 15,000 calls with one tuple of 500,000 items.
    let mut body = b"cbuiltins\nprint\nq\x00(".to_vec();
    body.extend(std::iter::repeat_n(b'N', 500_000));
    body.extend(b"tq\x01");
    for _ in 0..15_000 {
        body.extend(b"h\x00h\x01R0");
    }
    regression(
        "pth_legacy",
        "REDUCE on a memoized tuple of 500,000 items",
        &pickle(&body),
    );
}

#[test]
fn regression_rebuild_tensor_with_a_huge_size_tuple_is_linear() {
    // `_rebuild_tensor_v2` read the whole size tuple on each call: 20,000 calls with one
    // memoized size of 300,000 dimensions (and no strides).
    let mut body = b"ctorch._utils\n_rebuild_tensor_v2\nq\x00".to_vec();
    body.extend(storage_pid(&unicode_op("0")));
    body.extend(b"q\x01(");
    body.extend(std::iter::repeat_n(*b"K\x01", 300_000).flatten());
    body.extend(b"tq\x02(h\x01K\x00h\x02)tq\x03");
    for _ in 0..20_000 {
        body.extend(b"h\x00h\x03R0");
    }
    regression(
        "pth_legacy",
        "tensor with 300,000 dimensions, rebuilt 20,000 times",
        &pickle(&body),
    );
}

#[test]
fn regression_stack_global_with_a_huge_name_is_linear() {
    // STACK_GLOBAL formatted module and name into a new string on each call: 60,000 calls
    // with one memoized name of 256 KiB.
    let mut body = long_string(256 << 10, b'a');
    body.extend(b"q\x00");
    for _ in 0..60_000 {
        body.extend(b"h\x00h\x00\x930");
    }
    regression(
        "pth_legacy",
        "STACK_GLOBAL of a 256 KiB name, 60,000 times",
        &pickle(&body),
    );
}

#[test]
fn regression_setitem_with_a_huge_key_is_linear() {
    // SETITEM hashed its key each time: 60,000 sets of one memoized 512 KiB key in a dict
    // big enough to have an index.
    let mut body = b"}(".to_vec();
    for i in 0..16u8 {
        body.extend([b'K', i, b'N']);
    }
    body.extend(b"u");
    body.extend(long_string(512 << 10, b'k'));
    body.extend(b"q\x010");
    for _ in 0..60_000 {
        body.extend(b"h\x01Ns");
    }
    regression(
        "pth_legacy",
        "60,000 SETITEMs of a 512 KiB key",
        &pickle(&body),
    );
}

#[test]
fn regression_storage_key_listed_many_times_is_linear() {
    // The data section looked each listed key up (hashing it) twice: a 512 KiB storage
    // key listed 60,000 times, each with an element count of 0.
    let key = long_string(512 << 10, b'0');
    let mut input = legacy_header();
    input.extend(pickle(&storage_pid(&key)));
    let mut keys = b"](".to_vec();
    keys.extend(&key);
    keys.extend(b"q\x00");
    for _ in 1..60_000 {
        keys.extend(b"h\x00");
    }
    keys.push(b'e');
    input.extend(pickle(&keys));
    for _ in 0..60_000 {
        input.extend(0u64.to_le_bytes());
    }
    regression(
        "pth_legacy",
        "a 512 KiB storage key listed 60,000 times",
        &input,
    );
}

#[test]
fn the_allocation_meter_sees_what_a_parse_holds_at_once() {
    let ((), peak) = measure(usize::MAX, 0, || {
        let a = vec![1u8; 3 * MIB];
        let b = vec![2u8; MIB];
        assert_eq!(a.len() + b.len(), 4 * MIB);
    });
    assert!((4 * MIB..5 * MIB).contains(&peak), "peak {peak}");
    let ((), peak) = measure(usize::MAX, 0, || {
        for _ in 0..10 {
            drop(vec![0u8; MIB]);
        }
    });
    assert!((MIB..2 * MIB).contains(&peak), "peak {peak}");
}

#[test]
fn regression_tensor_name_with_a_newline_stays_on_one_line() {
    // Found by the fuzzer (a header edit made a tensor name "\nts"): a safetensors tensor
    // name went into the error message as written, splitting it over two lines.
    use safetensors::tensor::TensorView;
    let data = [0u8; 4];
    let view = TensorView::new(safetensors::Dtype::I32, vec![1], &data).unwrap();
    let input = safetensors::serialize([("\nts", view)], None).unwrap();
    regression("safetensors", "an i32 tensor named \"\\nts\"", &input);
}

#[test]
fn regression_a_camera_password_with_a_space_is_masked() {
    // Found by the fuzzer: `camera[i].uri` was quoted with the free-text masking, which
    // splits at whitespace, so a password holding a space was shown whole.
    regression(
        "uri",
        "a password with a space",
        b"rtsp://user:s3cret PW@cam.lan:554/stream1",
    );
}

#[test]
fn regression_a_substituted_password_before_a_missing_at_host_is_masked() {
    // Found by the fuzzer in CI (seed 0x8739948fb8c4d69e): `${CAMERA_PASSWORD}` followed
    // by text without the `@host` part; with no `@`, the masking took `viewer:…` for
    // `host:port` and showed the substituted password in the error.
    regression(
        "config",
        "a password before a missing @host",
        b"[[camera]]\nid = \"front\"\nuri = \"rtsp://viewer:${CAMERA_PASSWORD}daemon with a cl4/Streaming/Channels/102\"\n",
    );
}

#[test]
fn regression_a_secret_variable_substituted_into_another_value_is_masked() {
    // Found by a longer fuzz run: `${MQTT_PASSWORD}` ended up in a camera id (and, with a
    // multi-line string swallowing the lines after it, in a camera URI); the errors quoting
    // those values showed the password.
    regression(
        "config",
        "a secret variable in a camera id",
        b"[[camera]]\nid = \"a${MQTT_PASSWORD}\"\n",
    );
    regression(
        "config",
        "a secret variable in a multi-line camera uri",
        b"[[camera]]\nid = \"a\"\nuri = \"\"\"multi\npassword = \"${MQTT_PASSWORD}\"\nline\"\"\"\n",
    );
}

#[test]
fn regression_a_multi_line_shard_value_stays_on_one_line_in_its_error() {
    // Found by a longer fuzz run: the shard error quoted a multi-line string raw.
    regression(
        "config",
        "a multi-line shard",
        b"shard = \"\"\"multi\nline/3\"\"\"\n[[camera]]\nid = \"a\"\nuri = \"test://ball\"\n",
    );
}
