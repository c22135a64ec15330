//! Tests of `effistream::pth` against checkpoints written by PyTorch itself
//! (`tests/fixtures/torch/`, made by `tests/golden/make_torch_fixtures.py`), plus
//! robustness tests on truncated, corrupted and hand-crafted hostile inputs.

use std::io::{Cursor, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use effistream::pth::{PthDType, PthError, PthTensor, read_pth, read_pth_bytes};
use effistream_testkit::rng::Rng;
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch")
}

fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(fixture_dir().join("expected.json"))
        .expect("tests/fixtures/torch/expected.json (run tests/golden/make_torch_fixtures.py)");
    match serde_json::from_str(&text).expect("expected.json is JSON") {
        Value::Object(map) => map,
        other => panic!("expected.json is not an object: {other}"),
    }
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = expected()
        .keys()
        .map(|name| {
            let bytes = std::fs::read(fixture_dir().join(name)).expect("fixture file");
            (name.clone(), bytes)
        })
        .collect();
    out.sort();
    assert!(out.len() >= 16, "fixtures missing");
    out
}

fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1f);
    let frac = f64::from(bits & 0x3ff);
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        _ => sign * (1.0 + frac / 1024.0) * 2f64.powi(exp - 15),
    }
}

/// A tensor's elements as exact numbers: floats as f64, integers and bools as i64.
enum Elements {
    Float(Vec<f64>),
    Int(Vec<i64>),
}

fn elements(t: &PthTensor) -> Elements {
    let size = t.dtype.size_in_bytes();
    assert_eq!(t.data.len() % size, 0, "{}: ragged data", t.name);
    let chunks = t.data.chunks_exact(size);
    match t.dtype {
        PthDType::F64 => Elements::Float(
            chunks
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        PthDType::F32 => Elements::Float(
            chunks
                .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                .collect(),
        ),
        PthDType::F16 => Elements::Float(
            chunks
                .map(|c| f16_to_f64(u16::from_le_bytes(c.try_into().unwrap())))
                .collect(),
        ),
        PthDType::BF16 => Elements::Float(
            chunks
                .map(|c| {
                    let bits = u32::from(u16::from_le_bytes(c.try_into().unwrap())) << 16;
                    f64::from(f32::from_bits(bits))
                })
                .collect(),
        ),
        PthDType::I64 => Elements::Int(
            chunks
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        PthDType::I32 => Elements::Int(
            chunks
                .map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap())))
                .collect(),
        ),
        PthDType::I16 => Elements::Int(
            chunks
                .map(|c| i64::from(i16::from_le_bytes(c.try_into().unwrap())))
                .collect(),
        ),
        PthDType::I8 => Elements::Int(chunks.map(|c| i64::from(c[0] as i8)).collect()),
        PthDType::U8 | PthDType::Bool => Elements::Int(chunks.map(|c| i64::from(c[0])).collect()),
    }
}

fn check_tensors(file: &str, got: &[PthTensor], want: &[Value]) {
    let got_names: Vec<&str> = got.iter().map(|t| t.name.as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(got_names, want_names, "{file}: tensor names and order");
    for (t, w) in got.iter().zip(want) {
        let what = format!("{file}: tensor `{}`", t.name);
        assert_eq!(
            t.dtype.name(),
            w["dtype"].as_str().unwrap(),
            "{what}: dtype"
        );
        let shape: Vec<usize> = w["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{what}: shape");
        let numel: usize = shape.iter().product();
        assert_eq!(
            t.data.len(),
            numel * t.dtype.size_in_bytes(),
            "{what}: byte length"
        );
        // Every bit, from the hex of torch's own contiguous bytes.
        assert_eq!(hex(&t.data), w["hex"].as_str().unwrap(), "{what}: bytes");
        // And the numbers. serde_json (without its `float_roundtrip` feature) may parse a
        // decimal 1 ULP off, so floats are compared at the tensor's own precision (exact
        // for 32-bit and narrower; float64 within 1 ULP, its bits being checked above).
        let values = w["values"].as_array().unwrap();
        match elements(t) {
            Elements::Float(got) => {
                let want: Vec<f64> = values.iter().map(|v| v.as_f64().unwrap()).collect();
                assert_eq!(got.len(), want.len(), "{what}: element count");
                for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    let same = if t.dtype == PthDType::F64 {
                        g == w || g.to_bits().abs_diff(w.to_bits()) <= 1
                    } else {
                        g as f32 == w as f32
                    };
                    assert!(same, "{what}: element {i} is {g}, want {w}");
                }
            }
            Elements::Int(got) => {
                let want: Vec<i64> = values.iter().map(|v| v.as_i64().unwrap()).collect();
                assert_eq!(got, want, "{what}: values");
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn torch_written_checkpoints_in_both_formats_read_back_exactly() {
    let mut checked = 0;
    for (name, spec) in expected() {
        let Some(want) = spec.get("tensors") else {
            continue;
        };
        let path = fixture_dir().join(&name);
        let got = read_pth(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_tensors(&name, &got, want.as_array().unwrap());
        checked += 1;
    }
    assert!(checked >= 14, "only {checked} fixtures checked");
}

#[test]
fn reading_from_memory_matches_reading_from_the_file() {
    for (name, bytes) in fixtures() {
        let from_file = read_pth(&fixture_dir().join(&name));
        let from_bytes = read_pth_bytes(&bytes);
        match (from_file, from_bytes) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.len(), b.len(), "{name}");
                for (x, y) in a.iter().zip(&b) {
                    assert_eq!(
                        (&x.name, x.dtype, &x.shape, &x.data),
                        (&y.name, y.dtype, &y.shape, &y.data),
                        "{name}"
                    );
                }
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{name}"),
            (a, b) => panic!("{name}: file gave {a:?}, memory gave {b:?}"),
        }
    }
}

#[test]
fn zip_and_legacy_files_of_the_same_object_give_identical_tensors() {
    let mut pairs = 0;
    for (name, bytes) in fixtures() {
        let Some(case) = name.strip_suffix(".zip.pth") else {
            continue;
        };
        let Ok(legacy) = std::fs::read(fixture_dir().join(format!("{case}.legacy.pth"))) else {
            continue;
        };
        let (Ok(a), Ok(b)) = (read_pth_bytes(&bytes), read_pth_bytes(&legacy)) else {
            continue;
        };
        let a: Vec<_> = a
            .into_iter()
            .map(|t| (t.name, t.dtype, t.shape, t.data))
            .collect();
        let b: Vec<_> = b
            .into_iter()
            .map(|t| (t.name, t.dtype, t.shape, t.data))
            .collect();
        assert_eq!(a, b, "{case}");
        pairs += 1;
    }
    assert!(pairs >= 6);
}

#[test]
fn fixtures_that_torch_can_load_but_we_cannot_use_give_the_expected_error() {
    let mut checked = 0;
    for (name, spec) in expected() {
        let Some(want) = spec.get("error").and_then(Value::as_str) else {
            continue;
        };
        let err = read_pth(&fixture_dir().join(&name)).expect_err(&name);
        let msg = err.to_string();
        assert!(msg.contains(want), "{name}: got `{msg}`, want `{want}`");
        checked += 1;
    }
    assert!(checked >= 4);
}

#[test]
fn checkpoint_without_tensors_names_its_top_level_keys() {
    for format in ["zip", "legacy"] {
        let path = fixture_dir().join(format!("no_tensors.{format}.pth"));
        let err = read_pth(&path).unwrap_err();
        assert!(matches!(err, PthError::NoTensors(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "no tensors found: top-level object is a dict with keys [epoch, arch, optimizer]"
        );
    }
}

#[test]
fn a_missing_file_is_an_io_error_naming_the_path() {
    let err = read_pth(Path::new("/nonexistent/dir/weights.pth")).unwrap_err();
    assert!(matches!(err, PthError::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/dir/weights.pth"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Robustness on damaged input
// ---------------------------------------------------------------------------------------

/// Runs the reader, turning a panic into a test failure that says which input caused it.
fn read_without_panic(bytes: &[u8], what: &str) -> Result<Vec<PthTensor>, PthError> {
    match catch_unwind(AssertUnwindSafe(|| read_pth_bytes(bytes))) {
        Ok(result) => {
            if let Ok(tensors) = &result {
                let total: usize = tensors.iter().map(|t| t.data.len()).sum();
                assert!(
                    total <= bytes.len() * 4 + (16 << 20),
                    "{what}: {total} bytes of tensors from {} bytes of input",
                    bytes.len()
                );
            }
            result
        }
        Err(_) => panic!("reader panicked on {what}"),
    }
}

#[test]
fn every_truncation_of_every_fixture_is_an_error() {
    for (name, bytes) in fixtures() {
        for len in 0..bytes.len() {
            let result = read_without_panic(&bytes[..len], &format!("{name} cut to {len} bytes"));
            assert!(result.is_err(), "{name} cut to {len} bytes was accepted");
        }
    }
}

#[test]
fn truncated_legacy_storage_data_says_what_is_missing() {
    let bytes = std::fs::read(fixture_dir().join("dtypes.legacy.pth")).unwrap();
    let err = read_pth_bytes(&bytes[..bytes.len() - 1]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("truncated: storage "), "{msg}");
    assert!(
        msg.ends_with(&format!("but the file ends at {}", bytes.len() - 1)),
        "{msg}"
    );
}

#[test]
fn thousands_of_random_byte_flips_never_panic() {
    let files = fixtures();
    let mut rng = Rng(0x5eed_0001);
    for round in 0..4000 {
        let (name, original) = &files[rng.below(files.len())];
        let mut bytes = original.clone();
        let flips = 1 + rng.below(4);
        for _ in 0..flips {
            let at = rng.below(bytes.len());
            bytes[at] ^= 1 + rng.below(255) as u8;
        }
        let _ = read_without_panic(&bytes, &format!("{name} with flips (round {round})"));
    }
}

/// Rebuilds a zip checkpoint with `edit` applied to its `data.pkl`, keeping the zip valid
/// (so the damage reaches the pickle reader instead of failing the CRC check).
fn repack_zip(
    bytes: &[u8],
    method: zip::CompressionMethod,
    edit: impl Fn(&str, &mut Vec<u8>),
) -> Vec<u8> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let name = entry.name().unwrap().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        edit(&name, &mut data);
        writer.start_file(name, options).unwrap();
        writer.write_all(&data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

#[test]
fn random_damage_to_data_pkl_inside_a_valid_zip_never_panics() {
    let files: Vec<(String, Vec<u8>)> = fixtures()
        .into_iter()
        .filter(|(name, _)| name.ends_with(".zip.pth"))
        .collect();
    let mut rng = Rng(0x5eed_0002);
    for round in 0..1500 {
        let (name, original) = &files[rng.below(files.len())];
        let seed = rng.next();
        let bytes = repack_zip(original, zip::CompressionMethod::Stored, |entry, data| {
            if entry.ends_with("/data.pkl") && !data.is_empty() {
                let mut r = Rng(seed);
                match r.below(3) {
                    0 => {
                        let at = r.below(data.len());
                        data[at] ^= 1 + r.below(255) as u8;
                    }
                    1 => data.truncate(r.below(data.len())),
                    _ => {
                        let at = r.below(data.len());
                        data[at] = r.next() as u8;
                        let at = r.below(data.len());
                        data.insert(at, r.next() as u8);
                    }
                }
            }
        });
        let _ = read_without_panic(&bytes, &format!("{name} with damaged data.pkl ({round})"));
    }
}

#[test]
fn deflate_compressed_zip_checkpoints_read_the_same() {
    let bytes = std::fs::read(fixture_dir().join("views.zip.pth")).unwrap();
    let deflated = repack_zip(&bytes, zip::CompressionMethod::Deflated, |_, _| {});
    let a = read_pth_bytes(&bytes).unwrap();
    let b = read_pth_bytes(&deflated).unwrap();
    let a: Vec<_> = a.into_iter().map(|t| (t.name, t.shape, t.data)).collect();
    let b: Vec<_> = b.into_iter().map(|t| (t.name, t.shape, t.data)).collect();
    assert_eq!(a, b);
}

#[test]
fn big_endian_zip_checkpoints_are_rejected() {
    let bytes = std::fs::read(fixture_dir().join("dtypes.zip.pth")).unwrap();
    let big = repack_zip(&bytes, zip::CompressionMethod::Stored, |entry, data| {
        if entry.ends_with("/byteorder") {
            *data = b"big".to_vec();
        }
    });
    let err = read_pth_bytes(&big).unwrap_err();
    assert!(matches!(err, PthError::BigEndian), "{err:?}");
}

#[test]
fn zip_without_a_storage_entry_names_the_missing_entry() {
    let bytes = std::fs::read(fixture_dir().join("dtypes.zip.pth")).unwrap();
    let mut archive = zip::ZipArchive::new(Cursor::new(&bytes[..])).unwrap();
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for i in 0..archive.len() {
        let entry = archive.by_index(i).unwrap();
        if entry.name_raw() != b"archive/data/3" {
            writer.raw_copy_file(entry).unwrap();
        }
    }
    let bytes = writer.finish().unwrap().into_inner();
    let err = read_pth_bytes(&bytes).unwrap_err();
    assert_eq!(err.to_string(), "zip archive has no `archive/data/3` entry");
}

#[test]
fn empty_input_is_not_a_checkpoint() {
    let err = read_pth_bytes(&[]).unwrap_err();
    assert!(matches!(err, PthError::NotACheckpoint(_)), "{err:?}");
    assert!(err.to_string().contains("empty"), "{err}");
}

#[test]
fn png_and_jpeg_files_are_named_in_the_error() {
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0";
    let err = read_pth_bytes(png).unwrap_err();
    assert!(err.to_string().contains("PNG image"), "{err}");
    let jpeg = b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0";
    let err = read_pth_bytes(jpeg).unwrap_err();
    assert!(err.to_string().contains("JPEG image"), "{err}");
}

#[test]
fn random_bytes_are_rejected() {
    let mut rng = Rng(0x5eed_0003);
    for len in [1, 2, 7, 64, 1000, 65536] {
        for _ in 0..20 {
            let bytes = rng.bytes(len);
            let result = read_without_panic(&bytes, &format!("{len} random bytes"));
            assert!(result.is_err(), "{len} random bytes were accepted");
        }
    }
    // Random bytes that happen to look like the start of each format.
    for prefix in [&b"PK\x03\x04"[..], b"\x80\x02", b"\x80\x02\x8a\x0a"] {
        for _ in 0..200 {
            let mut bytes = prefix.to_vec();
            let n = rng.below(300);
            bytes.extend(rng.bytes(n));
            assert!(read_without_panic(&bytes, "random bytes after a magic").is_err());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Hand-crafted hostile legacy checkpoints
// ---------------------------------------------------------------------------------------

/// Pickle opcode builders (protocol 2).
fn unicode(s: &str) -> Vec<u8> {
    let mut out = vec![b'X'];
    out.extend((s.len() as u32).to_le_bytes());
    out.extend(s.as_bytes());
    out
}

fn int(i: i32) -> Vec<u8> {
    let mut out = vec![b'J'];
    out.extend(i.to_le_bytes());
    out
}

fn tuple(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![b'('];
    for item in items {
        out.extend(item);
    }
    out.push(b't');
    out
}

/// A legacy checkpoint: the three header pickles, `main`, the key list, then `data`.
fn legacy(main: &[u8], keys: &[&str], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80, 2, 0x8a, 10];
    out.extend([0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]);
    out.push(b'.');
    out.extend([0x80, 2, b'M', 0xe9, 0x03, b'.']);
    out.extend([0x80, 2, b'}', b'.']);
    out.extend([0x80, 2]);
    out.extend(main);
    out.push(b'.');
    out.extend([0x80, 2, b']', b'(']);
    for key in keys {
        out.extend(unicode(key));
    }
    out.extend([b'e', b'.']);
    out.extend(data);
    out
}

/// `{name: _rebuild_tensor_v2(FloatStorage '0' of `numel` elements, offset, size, stride)}`.
fn one_tensor_dict(numel: i32, offset: i32, size: &[i32], stride: &[i32]) -> Vec<u8> {
    let mut main = vec![b'}', b'('];
    main.extend(unicode("w"));
    main.extend(b"ctorch._utils\n_rebuild_tensor_v2\n");
    let pid = tuple(&[
        unicode("storage"),
        b"ctorch\nFloatStorage\n".to_vec(),
        unicode("0"),
        unicode("cpu"),
        int(numel),
        b"N".to_vec(),
    ]);
    let mut storage = pid;
    storage.push(b'Q');
    let size = tuple(&size.iter().map(|&d| int(d)).collect::<Vec<_>>());
    let stride = tuple(&stride.iter().map(|&d| int(d)).collect::<Vec<_>>());
    main.extend(tuple(&[
        storage,
        int(offset),
        size,
        stride,
        vec![0x89],
        b"}".to_vec(),
    ]));
    main.extend([b'R', b'u']);
    main
}

fn float_storage(values: &[f32]) -> Vec<u8> {
    let mut data = (values.len() as u64).to_le_bytes().to_vec();
    for v in values {
        data.extend(v.to_le_bytes());
    }
    data
}

#[test]
fn hand_built_legacy_checkpoint_with_a_strided_view_reads_correctly() {
    let main = one_tensor_dict(6, 1, &[2, 2], &[1, 3]);
    let bytes = legacy(&main, &["0"], &float_storage(&[0., 1., 2., 3., 4., 5.]));
    let tensors = read_pth_bytes(&bytes).unwrap();
    assert_eq!(tensors.len(), 1);
    assert_eq!(tensors[0].shape, vec![2, 2]);
    let values: Vec<f32> = tensors[0]
        .data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(values, vec![1., 4., 2., 5.]);
}

#[test]
fn zero_stride_expansion_to_terabytes_is_refused_before_allocating() {
    let main = one_tensor_dict(1, 0, &[1 << 20, 1 << 20], &[0, 0]);
    let bytes = legacy(&main, &["0"], &float_storage(&[7.0]));
    let err = read_pth_bytes(&bytes).unwrap_err();
    assert!(matches!(err, PthError::TooLarge { .. }), "{err:?}");
}

#[test]
fn tensor_reaching_past_its_storage_is_an_error() {
    let main = one_tensor_dict(4, 0, &[10], &[1]);
    let bytes = legacy(&main, &["0"], &float_storage(&[0.0; 4]));
    let err = read_pth_bytes(&bytes).unwrap_err();
    assert!(
        err.to_string().starts_with("tensor `w`: reaches element 9"),
        "{err}"
    );
}

#[test]
fn storage_count_disagreeing_with_the_pickle_is_an_error() {
    let main = one_tensor_dict(4, 0, &[4], &[1]);
    let bytes = legacy(&main, &["0"], &float_storage(&[0.0; 3]));
    let err = read_pth_bytes(&bytes).unwrap_err();
    assert!(matches!(err, PthError::Storage { .. }), "{err:?}");
}

#[test]
fn huge_declared_string_length_is_a_truncation_error_not_an_allocation() {
    let mut main = vec![b'X'];
    main.extend(0xffff_fff0u32.to_le_bytes());
    main.extend(b"abc");
    let err = read_pth_bytes(&legacy(&main, &[], &[])).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("truncated: pickle opcode BINUNICODE at byte ")
            && msg.contains("4294967280"),
        "{msg}"
    );
    // Same with the 8-byte length opcodes.
    for op in [0x8d, 0x8e, 0x96] {
        let mut main = vec![op];
        main.extend(u64::MAX.to_le_bytes());
        let err = read_pth_bytes(&legacy(&main, &[], &[])).unwrap_err();
        assert!(matches!(err, PthError::Truncated { .. }), "{err:?}");
    }
}

#[test]
fn deeply_nested_marks_hit_a_limit_instead_of_exhausting_memory() {
    let main = vec![b'('; 1_000_000];
    let err = read_pth_bytes(&legacy(&main, &[], &[])).unwrap_err();
    assert!(matches!(err, PthError::PickleLimit { .. }), "{err:?}");
}

#[test]
fn deeply_nested_lists_do_not_overflow_the_stack() {
    // [[[[...]]]] two hundred thousand levels deep, built with EMPTY_LIST and APPEND.
    let depth = 200_000;
    let mut main = vec![b']'; depth];
    main.extend(vec![b'a'; depth - 1]);
    let err = read_pth_bytes(&legacy(&main, &[], &[])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no tensors found: top-level object is a list of 1 items"
    );
}

#[test]
fn a_dict_containing_itself_is_handled() {
    // d = {}; d['self'] = d
    let mut main = vec![b'}', b'q', 0];
    main.extend(unicode("self"));
    main.extend([b'h', 0, b's']);
    let err = read_pth_bytes(&legacy(&main, &[], &[])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no tensors found: top-level object is a dict with keys [self]"
    );
}

#[test]
fn unknown_opcode_is_reported_with_its_position() {
    // Magic (15 bytes), version (6) and sys-info (4) pickles, then PROTO 2 (2 bytes).
    let pos = 15 + 6 + 4 + 2;
    let err = read_pth_bytes(&legacy(&[0xff], &[], &[])).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("unsupported pickle opcode 0xff at byte {pos}")
    );
}

#[test]
fn wrong_magic_number_is_not_a_checkpoint() {
    let mut bytes = legacy(
        &one_tensor_dict(1, 0, &[1], &[1]),
        &["0"],
        &float_storage(&[1.0]),
    );
    bytes[4] ^= 1;
    let err = read_pth_bytes(&bytes).unwrap_err();
    assert!(matches!(err, PthError::NotACheckpoint(_)), "{err:?}");
}
