"""Python side of scripts/bench-peers; runs inside its virtualenv (target/bench-venv).

Not meant to be run by hand. Subcommands:

    versions                      print one JSON object with the peers' versions
    export  --model M --weights plain|subnormal --batches 1,2 --seed S --out DIR
                                  writes one weight set of model M as DIR/M<sfx>.safetensors
                                  (timm names) and DIR/M<sfx>_b<B>.onnx (opset 17, static
                                  batch), <sfx> "" for plain and "_subnormal" for subnormal;
                                  reuses files whose metadata match; checks ONNX Runtime's
                                  logits against PyTorch's; counts the subnormal activations;
                                  prints one JSON object
    worker  --engine torch|onnxruntime|openvino --model M --threads T --dir DIR
                                  reads one JSON request per line on stdin
                                  ({"batch": B, "seconds": S, "weights": W, "hint": H,
                                  "precision": "f32"|"default"}) and answers one JSON line
                                  each on stdout: images_per_s, p50_ms, p99_ms, ...

Weight sets (the same file in every engine, effistream included):
  plain      timm's model, pretrained=False, after torch.manual_seed(S), BatchNorm running
             statistics calibrated on random batches (see seeded_model).
  subnormal  "subnormal-prone": the golden fixture weights of tests/golden/make_goldens.py
             (every weight and bias from its seeded SplitMix64 generator, imported from that
             file; the BatchNorm running statistics calibrated on real photographs, stored in
             tests/fixtures/golden/<model>.safetensors; loaded into timm with strict=True and
             checked against the fixture's logits on its four photos), then "dead channels"
             (see kill_channels): in every BatchNorm followed by SiLU (stem bn1, each block's
             bn1, each inverted-residual block's bn2 on the same channels as its bn1, head
             bn2) a seeded 5% of the channels get BatchNorm weight (gamma) 0 and bias (beta)
             times 2^-136. Such a channel outputs the constant beta * 2^-136, subnormal
             (|x| < 2^-126 = 1.18e-38; |beta| <= 0.25 gives |x| <= 2.9e-42), and stays
             subnormal through SiLU (x * sigmoid(x) = x / 2 there), the depthwise
             convolution, bn2 and the squeeze-and-excitation gate into the next 1x1
             convolution, which multiplies it. With BatchNorm folded into the convolution
             (effistream, the exporter's ONNX graph) the channel's weight row is exactly 0
             and its bias subnormal: the subnormals are activations, not weights. It models
             a channel switched off the way channel pruning by BatchNorm scale does
             (gamma = 0) whose beta ended in the subnormal range (weight decay shrinks a
             parameter geometrically; in f32 it passes through the subnormal range on its
             way to 0), chosen to make the subnormal penalty visible: measured
             on the benchmark input, 3.6% (b1), 3.7% (b2), 3.3% (b3) of all module-output
             elements are subnormal, against 0.012-0.024% for the unmodified golden weights,
             whose only subnormals are a few saturated squeeze-and-excitation gates
             (sigmoid(x) for x in about [-88.7, -87.3]). The logits stay finite and depend
             on the image (checked on the fixture photos, stored in the file's metadata).
             Effect (b1, batch 1, 2 threads, Xeon with AVX-512): effistream bench 19
             images/s with --no-flush against 151 flushed (plain set: 152 with --no-flush);
             ONNX Runtime 1.32 27 against 86 on the plain set.
             Pushing SiLU pre-activations far negative instead (x ~ -100, where
             x * sigmoid(x) is ~1e-41 in exact arithmetic) does not work: PyTorch's SiLU,
             x / (1 + exp(-x)), is never subnormal (|y| >= 2.6e-37, then -0 below -88.7),
             and ONNX Runtime's Sigmoid returns 0 below about -18.

Every engine gets the same input, effistream bench's: element i of the flat NCHW batch is
(i * 2654435761 mod 2^64 mod 2001) / 1000 - 1 in f32 (ours_input). Subnormal activations are
counted over one forward pass of that input at batch 1 with forward hooks on every module
of timm's model: the share of all module-output elements x with 0 < |x| < 2^-126.

The worker keeps its engine loaded between requests so that the caller can interleave
engines batch by batch (ours, PyTorch, ONNX Runtime, OpenVINO, next batch) without paying
for imports again. Only the caller decides what runs when; a worker computes only while
it answers a request.
"""
import argparse
import hashlib
import importlib.util
import json
import os
import pathlib
import sys
import time
import warnings

ONNX_OPSET = 17
# How long the warm-up lasts (seconds, after at least WARMUP_MIN_CALLS calls).
WARMUP_SECONDS = 1.0
WARMUP_MIN_CALLS = 3
MIN_CALLS = 5
CALIBRATION_BATCHES = 2
ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN_SCRIPT = ROOT / "tests" / "golden" / "make_goldens.py"
GOLDEN_FIXTURES = ROOT / "tests" / "fixtures" / "golden"
WEIGHT_SETS = {"plain": "", "subnormal": "_subnormal"}  # weight set -> file name suffix
# The subnormal-prone set's recipe; change SUBNORMAL_MARKER (here and in scripts/bench-peers)
# with any of these, so that files made by the old recipe are remade.
SUBNORMAL_MARKER = "golden-dead-channels-v1"
DEAD_FRACTION = 0.05    # share of the channels of each BatchNorm + SiLU that are made dead
DEAD_SCALE_LOG2 = -136  # their BatchNorm weight is set to 0, their bias times 2^DEAD_SCALE_LOG2
DEAD_SEED = 20261206    # torch.Generator seed for choosing them
F32_MIN_NORMAL = 1.17549435e-38  # 2^-126


def percentile(values, q):
    """Linear interpolation between closest ranks (numpy's default)."""
    v = sorted(values)
    if not v:
        return float("nan")
    pos = (len(v) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def summarize(batch, latencies_s, elapsed_s, calls, extra=None):
    res = {
        "batch": batch,
        "images_per_s": batch * calls / elapsed_s,
        "p50_ms": percentile(latencies_s, 50) * 1e3,
        "p99_ms": percentile(latencies_s, 99) * 1e3,
        "batches": calls,
        "seconds": elapsed_s,
    }
    if extra:
        res.update(extra)
    return res


def measure_sync(fn, batch, seconds):
    """Warm up, then call fn() back to back for `seconds`; one batch per call."""
    t0 = time.perf_counter()
    n = 0
    while n < WARMUP_MIN_CALLS or time.perf_counter() - t0 < min(WARMUP_SECONDS, seconds):
        fn()
        n += 1
    lat = []
    start = time.perf_counter()
    while True:
        t = time.perf_counter()
        fn()
        e = time.perf_counter()
        lat.append(e - t)
        if e - start >= seconds and len(lat) >= MIN_CALLS:
            break
    return summarize(batch, lat, e - start, len(lat), {"mode": "sync"})


def seeded_model(name, seed, calibrate=False):
    """timm's model, pretrained=False, after torch.manual_seed(seed), in eval mode.

    With calibrate, the BatchNorm running statistics (only those) are then measured on a
    few random batches. timm's random init leaves mean 0 / var 1 in every BatchNorm, so in
    eval mode the activations shrink by ~3x per block (to ~1e-12 at the head) and every
    input gives the same logits (the classifier bias): a network no trained model looks
    like, whose outputs cannot tell two engines apart, and whose tiny values drift towards
    the denormal range in deeper variants. Calibrated, activations stay O(1) as in a
    trained network and the logits depend on the input. Deterministic for a given seed."""
    import torch
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    if calibrate:
        bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        model.train()
        size = tuple(model.pretrained_cfg["input_size"])
        g = torch.Generator().manual_seed(seed + 7)
        with torch.no_grad():
            for _ in range(CALIBRATION_BATCHES):
                model(torch.randn((8,) + size, generator=g))
        for m in bns:
            m.momentum = 0.1
    model.eval()
    return model


def input_size(model):
    return tuple(model.pretrained_cfg["input_size"])


def ours_input(batch, size):
    """effistream bench's input, bit for bit: element i of the flat NCHW batch is
    ((i * 2654435761) mod 2^64 mod 2001) as f32 / 1000 - 1 (src/main.rs, fn bench)."""
    import numpy as np
    import torch

    n = batch * int(np.prod(size))
    i = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        k = (i * np.uint64(2654435761)) % np.uint64(2001)
    x = k.astype(np.float32) / np.float32(1000.0) - np.float32(1.0)
    return torch.from_numpy(x.reshape((batch,) + tuple(size)))


def weights_file(d, model, weights):
    return os.path.join(d, f"{model}{WEIGHT_SETS[weights]}.safetensors")


def onnx_file(d, model, weights, b):
    return os.path.join(d, f"{model}{WEIGHT_SETS[weights]}_b{b}.onnx")


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def golden_module():
    """tests/golden/make_goldens.py as a module (importing it only defines functions)."""
    spec = importlib.util.spec_from_file_location("effistream_make_goldens", GOLDEN_SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fixture_photos(name, model):
    """The golden fixture's photos through timm's eval transform, as one batch, and their
    file names (in the fixture's batch order)."""
    import torch
    from PIL import Image
    from safetensors import safe_open
    from timm.data import create_transform, resolve_data_config

    fixture = GOLDEN_FIXTURES / f"{name}.safetensors"
    with safe_open(str(fixture), framework="pt") as f:
        images = (f.metadata() or {}).get("images", "").split(",")
    tr = create_transform(**resolve_data_config({}, model=model))
    return torch.stack([tr(Image.open(GOLDEN_FIXTURES / name / i).convert("RGB"))
                        for i in images]), images


def golden_model(name):
    """timm's model with the golden fixture weights: generator + stored running stats.

    Returns (model, check): check has the largest difference between timm's logits on
    the fixture photos and the logits stored beside the running statistics."""
    import torch
    import timm
    from safetensors.torch import load_file

    fixture = GOLDEN_FIXTURES / f"{name}.safetensors"
    if not fixture.exists():
        raise SystemExit(f"no golden fixture {fixture}: the subnormal-prone weight set exists "
                         "only for the models tests/golden/make_goldens.py covers")
    mg = golden_module()
    stored = load_file(str(fixture))
    model = timm.create_model(name, pretrained=False)
    sd = {}
    for k, t in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.ones_like(t)  # one calibration batch, as make_goldens leaves it
        elif k.endswith(("running_mean", "running_var")):
            sd[k] = stored[k]
        else:
            sd[k] = mg.generated(model, k, list(t.shape))
    model.load_state_dict(sd, strict=True)
    model.eval()
    check = {"fixture": str(fixture.relative_to(ROOT))}
    try:
        x, images = fixture_photos(name, model)
        with torch.no_grad():
            got = model(x)
        ref = stored["logits"]
        check.update(images=len(images), max_abs_logit=float(ref.abs().max()),
                     max_abs_diff=float((got - ref).abs().max()))
        if check["max_abs_diff"] > 1e-3 * max(1.0, check["max_abs_logit"]):
            print(f"  WARNING: {name}: timm's logits on the golden photos differ from the "
                  f"fixture's by {check['max_abs_diff']:.3g}", file=sys.stderr)
    except Exception as e:  # the photos are a check, not a requirement
        check["error"] = f"{type(e).__name__}: {e}"
    return model, check


def kill_channels(model):
    """Makes a seeded DEAD_FRACTION of the channels "dead", in place: in every BatchNorm
    followed by SiLU, sets their weight (gamma) to 0 and multiplies their bias (beta) by
    2^DEAD_SCALE_LOG2. (A BatchNorm of 10 channels or fewer gets none: round(0.05 * C) = 0.)

    The BatchNorm output of such a channel is then the constant beta * 2^-136, subnormal
    for every input (the golden betas are in [-0.25, 0.25]: |x| <= 2.9e-42; only
    |beta| below about 1e-4 would round to 0), SiLU halves it, the depthwise convolution sums
    products of it, and in an inverted-residual block the same channels are dead in bn2,
    so the channel stays subnormal through bn2, SiLU and the squeeze-and-excitation gate
    into conv_pwl. Folded into the convolution, gamma = 0 makes the weight row exactly 0
    (not subnormal) and the bias subnormal. Channels are drawn with torch.randperm from
    one torch.Generator(DEAD_SEED), module by module in timm's order: stem bn1, then per
    block one draw shared by bn1 and bn2 (both have the block's mid channels), head bn2.
    Returns {"dead_channels": n, "channels": total, "batchnorms": count}."""
    import torch
    from timm.layers import BatchNormAct2d

    g = torch.Generator().manual_seed(DEAD_SEED)
    scale = 2.0 ** DEAD_SCALE_LOG2
    picked = {}
    dead = total = n_bn = 0
    with torch.no_grad():
        for name, m in model.named_modules():
            if not (isinstance(m, BatchNormAct2d) and isinstance(m.act, torch.nn.SiLU)):
                continue
            c = m.weight.numel()
            # blocks.S.B.bn1 and blocks.S.B.bn2 share one draw; stem bn1 and head bn2 own one.
            key = name.rsplit(".", 1)[0] if name.startswith("blocks.") else name
            if key not in picked or picked[key][0] != c:
                picked[key] = (c, torch.randperm(c, generator=g)[:round(DEAD_FRACTION * c)])
            idx = picked[key][1]
            m.weight[idx] = 0.0
            m.bias[idx] *= scale
            dead += len(idx)
            total += c
            n_bn += 1
    return {"dead_channels": dead, "channels": total, "batchnorms": n_bn}


def photo_check(name, model):
    """The model's logits on the golden fixture photos: finite, and different per photo
    (max |difference| over the 1000 logits, for every pair of photos)."""
    import torch

    try:
        x, images = fixture_photos(name, model)
        with torch.inference_mode():
            y = model(x)
        pairs = {f"{images[i]}/{images[j]}": round(float((y[i] - y[j]).abs().max()), 4)
                 for i in range(len(images)) for j in range(i + 1, len(images))}
        return {"finite": bool(torch.isfinite(y).all()),
                "max_abs_logit": round(float(y.abs().max()), 4),
                "top1": [int(v) for v in y.argmax(1)],
                "max_abs_diff_between_photos": pairs}
    except Exception as e:  # the photos are a check, not a requirement
        return {"error": f"{type(e).__name__}: {e}"}


def subnormal_model(name):
    """The subnormal-prone set: golden_model, then kill_channels. Returns (model, check)."""
    model, check = golden_model(name)
    check["golden_check_is_before"] = "kill_channels"
    check["kill_channels"] = kill_channels(model)
    pc = photo_check(name, model)
    check["photos_after"] = pc
    diffs = list(pc.get("max_abs_diff_between_photos", {}).values())
    if "error" not in pc and (not pc["finite"] or not diffs or max(diffs) <= 0.1):
        print(f"  WARNING: {name}: subnormal-prone logits on the golden photos are not finite "
              f"or hardly depend on the photo: {pc}", file=sys.stderr)
    return model, check


def count_subnormals(model, x):
    """One forward pass of x; forward hooks on every module count the elements of every
    module output, the subnormal ones (0 < |v| < 2^-126) and the ones below 1e-30."""
    import torch

    c = {"elements": 0, "subnormal": 0, "below_1e-30": 0, "modules_with_subnormals": 0}

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            a = out.detach().abs()
            nz = a > 0
            sub = int((nz & (a < F32_MIN_NORMAL)).sum())
            c["elements"] += a.numel()
            c["subnormal"] += sub
            c["below_1e-30"] += int((nz & (a < 1e-30)).sum())
            c["modules_with_subnormals"] += sub > 0

    hooks = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    c["fraction"] = c["subnormal"] / max(1, c["elements"])
    c["input"] = "effistream bench input, batch 1"
    return c


def stamp(seed, weights="plain", model=None):
    """The metadata that identifies a weight file; a file whose metadata differ is remade.
    (The plain set's keys are the ones earlier versions wrote, so their files stay valid.)"""
    import timm
    import torch

    common = {"timm": timm.__version__, "torch": torch.__version__.split("+")[0],
              "made_by": "scripts/bench-peers"}
    if weights == "subnormal":
        fixture = GOLDEN_FIXTURES / f"{model}.safetensors"
        return {"weights": SUBNORMAL_MARKER, "golden_fixture": str(fixture.relative_to(ROOT)),
                "golden_fixture_sha256": file_sha256(fixture) if fixture.exists() else "missing",
                "recipe": (f"golden fixture weights; in every BatchNorm followed by SiLU a "
                           f"seeded {DEAD_FRACTION:g} of the channels (torch.Generator seed "
                           f"{DEAD_SEED}, randperm per module, bn1/bn2 of a block shared) "
                           f"get BatchNorm weight 0 and bias times 2^{DEAD_SCALE_LOG2}"),
                "dead_fraction": repr(DEAD_FRACTION), "dead_scale": f"2^{DEAD_SCALE_LOG2}",
                "dead_seed": str(DEAD_SEED), **common}
    return {"seed": str(seed), "bn_calibration": f"{CALIBRATION_BATCHES}x8 randn", **common}


def safetensors_stamp(path):
    try:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return f.metadata() or {}
    except Exception:
        return None


def onnx_stamp(path):
    try:
        import onnx

        m = onnx.load(path, load_external_data=False)
        return {p.key: p.value for p in m.metadata_props}
    except Exception:
        return None


def export_onnx(model, x, path, meta):
    import onnx
    import torch

    tmp = path + ".tmp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (x,), tmp, opset_version=ONNX_OPSET, input_names=["x"],
                              output_names=["logits"], dynamo=False)
            exporter = "torchscript"
        except Exception as e:  # the legacy exporter may disappear from a future torch
            print(f"legacy ONNX export failed ({e}); trying torch.export (needs onnxscript)",
                  file=sys.stderr)
            torch.onnx.export(model, (x,), tmp, opset_version=ONNX_OPSET, input_names=["x"],
                              output_names=["logits"], dynamo=True)
            exporter = "dynamo"
    m = onnx.load(tmp)
    for k, v in dict(meta, exporter=exporter).items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, tmp)
    os.replace(tmp, path)


def cmd_export(args):
    import numpy as np
    import torch
    import timm
    from safetensors.torch import load_file, save_file

    os.makedirs(args.out, exist_ok=True)
    ws = args.weights
    meta = stamp(args.seed, ws, args.model)
    model = None
    out = {"model": args.model, "weights": ws, "seed": args.seed, "onnx": {}, "exported": []}

    def source():
        """The weights, made from scratch (only when a file has to be written)."""
        nonlocal model
        if model is None:
            t = time.perf_counter()
            if ws == "subnormal":
                model, check = subnormal_model(args.model)
                out["golden_check"] = check
                kc = check["kill_channels"]
                what = ("golden fixture weights (generator + photo-calibrated BatchNorm), "
                        f"timm's logits on the fixture photos within "
                        f"{check.get('max_abs_diff', float('nan')):.2g} of the stored ones; "
                        f"{kc['dead_channels']} of {kc['channels']} BatchNorm+SiLU channels "
                        f"made dead (gamma 0, beta x 2^{DEAD_SCALE_LOG2})")
            else:
                model = seeded_model(args.model, args.seed, calibrate=True)
                what = "random weights, BatchNorm calibrated"
            print(f"  {args.model}: {what} ({time.perf_counter() - t:.1f} s)", file=sys.stderr)
        return model

    def stale(found):
        return not found or any(found.get(k) != v for k, v in meta.items())

    size = tuple(timm.create_model(args.model, pretrained=False).pretrained_cfg["input_size"])
    out["input_size"] = list(size)

    st_path = weights_file(args.out, args.model, ws)
    found = safetensors_stamp(st_path) if os.path.exists(st_path) else None
    if stale(found):
        sd = {k: v.detach().contiguous() for k, v in source().state_dict().items()}
        # The subnormal count goes into the metadata, so that runs without the
        # virtualenv (--only ours) can still report it.
        probe = timm.create_model(args.model, pretrained=False).eval()
        probe.load_state_dict(sd, strict=True)
        sub = count_subnormals(probe, ours_input(1, size))
        extra = {}
        if ws == "subnormal":
            extra = {"kill_channels": json.dumps(out["golden_check"]["kill_channels"]),
                     "photo_check": json.dumps(out["golden_check"]["photos_after"])}
        save_file(sd, st_path + ".tmp", metadata={
            **meta, "subnormal_fraction": repr(sub["fraction"]),
            "subnormal_count": json.dumps(sub), **extra})
        os.chmod(st_path + ".tmp", 0o644)
        os.replace(st_path + ".tmp", st_path)
        out["exported"].append(st_path)
    else:
        try:
            sub = json.loads(found["subnormal_count"])
        except (KeyError, ValueError):  # made by an earlier version: count now
            probe = timm.create_model(args.model, pretrained=False).eval()
            probe.load_state_dict(load_file(st_path), strict=True)
            sub = count_subnormals(probe, ours_input(1, size))
    out["safetensors"] = st_path
    out["subnormal"] = sub

    for b in args.batches:
        path = onnx_file(args.out, args.model, ws, b)
        if not stale(onnx_stamp(path) if os.path.exists(path) else None):
            out["onnx"][str(b)] = {"path": path}
            continue
        m = source()
        x = ours_input(b, size)
        t = time.perf_counter()
        export_onnx(m, x, path, meta)
        out["exported"].append(path)
        print(f"  exported {os.path.basename(path)} in {time.perf_counter() - t:.1f} s",
              file=sys.stderr)
        # Same weights, same function: ONNX Runtime must give PyTorch's logits, as
        # closely as PyTorch's f32 logits are to exact ones (f64). On the benchmark's noise
        # input the subnormal-prone set has logits in the thousands and amplifies rounding
        # (PyTorch f32 itself is off by ~0.2% there; on the golden photos ONNX Runtime
        # matches to ~1e-7), so a fixed tolerance would cry wolf.
        import copy

        import onnxruntime as ort

        with torch.inference_mode():
            ref = m(x).numpy()
            exact = copy.deepcopy(m).double()(x.double()).numpy()
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        got = s.run(None, {"x": x.numpy()})[0]
        diff = float(np.max(np.abs(got - exact)))
        torch_err = float(np.max(np.abs(ref - exact)))
        scale = float(np.max(np.abs(exact))) or 1.0
        tol = max(1e-3 * max(1.0, scale), 2 * torch_err)
        out["onnx"][str(b)] = {"path": path, "max_abs_diff_vs_f64": diff,
                               "torch_f32_max_abs_diff_vs_f64": torch_err,
                               "max_abs_logit": scale}
        if diff > tol:
            print(f"  WARNING: {os.path.basename(path)}: ONNX Runtime logits differ from "
                  f"PyTorch's f64 ones by {diff:.3g} (PyTorch f32: {torch_err:.3g}, max "
                  f"|logit| {scale:.3g})", file=sys.stderr)
    print(json.dumps(out))


def cmd_versions(_args):
    import numpy
    import onnx
    import onnxruntime
    import openvino
    import safetensors
    import timm
    import torch

    print(json.dumps({
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "timm": timm.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__,
        "safetensors": safetensors.__version__,
        "numpy": numpy.__version__,
    }))


def precision_name(t):
    """OpenVINO's element type as a short name: f32, bf16, f16."""
    try:
        return t.get_type_name()
    except AttributeError:
        v = str(t).lower()
        for long, short in (("bfloat16", "bf16"), ("float16", "f16"), ("float32", "f32")):
            if long in v:
                return short
        return v


class TorchEngine:
    def __init__(self, args):
        import torch

        torch.set_num_threads(args.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        self.torch = torch
        self.args = args
        self.models = {}

    def model(self, weights):
        if weights not in self.models:
            import timm
            from safetensors.torch import load_file

            m = timm.create_model(self.args.model, pretrained=False)
            # Load the exported file, so PyTorch provably runs the weights the others run.
            m.load_state_dict(load_file(weights_file(self.args.dir, self.args.model, weights)),
                              strict=True)
            self.models[weights] = m.eval()
        return self.models[weights]

    def run(self, req):
        b = req["batch"]
        model = self.model(req.get("weights", "plain"))
        x = ours_input(b, input_size(model))
        with self.torch.inference_mode():
            res = measure_sync(lambda: model(x), b, req["seconds"])
        res["threads"] = self.torch.get_num_threads()
        return res


class OrtEngine:
    def __init__(self, args):
        import onnxruntime as ort

        self.ort = ort
        self.args = args
        self.sessions = {}

    def session(self, weights, b):
        key = (weights, b)
        if key not in self.sessions:
            ort = self.ort
            so = ort.SessionOptions()
            so.intra_op_num_threads = self.args.threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            path = onnx_file(self.args.dir, self.args.model, weights, b)
            # One session at a time: each configuration is asked for once per run.
            self.sessions = {key: ort.InferenceSession(path, so,
                                                       providers=["CPUExecutionProvider"])}
        return self.sessions[key]

    def run(self, req):
        b = req["batch"]
        s = self.session(req.get("weights", "plain"), b)
        shape = s.get_inputs()[0].shape
        x = ours_input(b, shape[1:]).numpy()
        res = measure_sync(lambda: s.run(None, {"x": x}), b, req["seconds"])
        res["providers"] = s.get_providers()
        return res


class OvEngine:
    """OpenVINO. precision "f32": INFERENCE_PRECISION_HINT f32; "default": no precision
    hint, the plugin's own choice (bf16 on CPUs with AVX512_BF16), reported as picked.
    LATENCY: one synchronous request. THROUGHPUT: an AsyncInferQueue with the plugin's
    OPTIMAL_NUMBER_OF_INFER_REQUESTS (its streams only run in parallel when that many
    requests are in flight); latency is then per request, submit to callback. With
    "skip_if_precision": P, a configuration that picks precision P is compiled but not
    measured (the default precision on a CPU without bf16 is just the f32 column again)."""

    def __init__(self, args):
        import openvino as ov

        self.ov = ov
        self.core = ov.Core()
        self.args = args

    def run(self, req):
        b, hint, secs = req["batch"], req.get("hint", "LATENCY"), req["seconds"]
        precision = req.get("precision", "f32")
        path = onnx_file(self.args.dir, self.args.model, req.get("weights", "plain"), b)
        config = {"INFERENCE_NUM_THREADS": self.args.threads, "PERFORMANCE_HINT": hint}
        if precision == "f32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        t = time.perf_counter()
        cm = self.core.compile_model(path, "CPU", config)
        compile_s = time.perf_counter() - t
        picked = precision_name(cm.get_property("INFERENCE_PRECISION_HINT"))
        extra = {"hint": hint, "precision_requested": precision, "precision": picked,
                 "compile_s": compile_s}
        try:
            extra["denormals_optimization"] = bool(cm.get_property("CPU_DENORMALS_OPTIMIZATION"))
        except Exception:
            pass
        if req.get("skip_if_precision") == picked:
            extra["skipped"] = f"picked {picked}"
            return extra
        shape = list(cm.inputs[0].get_shape())
        x = ours_input(b, shape[1:]).numpy()
        nreq = int(cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        extra.update(streams=int(cm.get_property("NUM_STREAMS")),
                     infer_requests=1 if hint == "LATENCY" else nreq,
                     inference_num_threads=int(cm.get_property("INFERENCE_NUM_THREADS")))
        if hint == "LATENCY" or nreq <= 1:
            r = cm.create_infer_request()
            res = measure_sync(lambda: r.infer({0: x}), b, secs)
        else:
            res = self.measure_async(cm, nreq, x, b, secs)
        res.update(extra)
        return res

    def measure_async(self, cm, nreq, x, b, secs):
        queue = self.ov.AsyncInferQueue(cm, nreq)
        lat = []
        done = [0]

        def callback(_request, t_submit):
            lat.append(time.perf_counter() - t_submit)
            done[0] += 1

        queue.set_callback(callback)
        t0 = time.perf_counter()
        n = 0
        while n < WARMUP_MIN_CALLS * nreq or time.perf_counter() - t0 < min(WARMUP_SECONDS, secs):
            queue.start_async({0: x}, time.perf_counter())
            n += 1
        queue.wait_all()
        lat.clear()
        done[0] = 0
        start = time.perf_counter()
        while time.perf_counter() - start < secs or done[0] < MIN_CALLS:
            queue.start_async({0: x}, time.perf_counter())  # blocks while all requests busy
        queue.wait_all()
        elapsed = time.perf_counter() - start
        return summarize(b, list(lat), elapsed, done[0], {"mode": f"async x{nreq}"})


ENGINES = {"torch": TorchEngine, "onnxruntime": OrtEngine, "openvino": OvEngine}


def cmd_worker(args):
    # Protocol on a private copy of stdout; anything the libraries print goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    warnings.simplefilter("ignore")
    try:
        engine = ENGINES[args.engine](args)
        proto.write(json.dumps({"ready": True}) + "\n")
    except Exception as e:
        proto.write(json.dumps({"ready": False, "error": f"{type(e).__name__}: {e}"}) + "\n")
        return 1
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line)
        try:
            res = engine.run(req)
            res["engine"] = args.engine
        except Exception as e:
            res = {"error": f"{type(e).__name__}: {e}", "engine": args.engine}
        proto.write(json.dumps(res) + "\n")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("versions")
    e = sub.add_parser("export")
    e.add_argument("--model", required=True)
    e.add_argument("--weights", choices=sorted(WEIGHT_SETS), default="plain")
    e.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",") if v], required=True)
    e.add_argument("--seed", type=int, required=True)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--out", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--engine", choices=sorted(ENGINES), required=True)
    w.add_argument("--model", required=True)
    w.add_argument("--threads", type=int, required=True)
    w.add_argument("--seed", type=int, default=0, help="unused; kept for older callers")
    w.add_argument("--dir", required=True)
    args = p.parse_args(argv)
    return {"versions": cmd_versions, "export": cmd_export, "worker": cmd_worker}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())
