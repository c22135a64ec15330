"""Python side of scripts/bench-peers; runs inside its virtualenv (target/bench-venv).

Not meant to be run by hand. Subcommands:

    versions                      print one JSON object with the peers' versions
    export  --model M --batches 1,2 --seed S --out DIR
                                  timm model, pretrained=False, torch.manual_seed(S), eval;
                                  state_dict -> DIR/M.safetensors, ONNX (opset 17, static
                                  batch) -> DIR/M_b<B>.onnx; reuses files made with the same
                                  seed and versions; checks ONNX Runtime's logits against
                                  PyTorch's; prints one JSON object
    worker  --engine torch|onnxruntime|openvino --model M --threads T --seed S --dir DIR
                                  reads one JSON request per line on stdin
                                  ({"batch": B, "seconds": S, "hint": H}) and answers one JSON
                                  line each on stdout: images_per_s, p50_ms, p99_ms, ...

The worker keeps its engine loaded between requests so that the caller can interleave
engines batch by batch (ours, PyTorch, ONNX Runtime, OpenVINO, next batch) without paying
for imports again. Only the caller decides what runs when; a worker computes only while
it answers a request.
"""
import argparse
import json
import os
import sys
import time
import warnings

ONNX_OPSET = 17
# How long the warm-up lasts (seconds, after at least WARMUP_MIN_CALLS calls).
WARMUP_SECONDS = 1.0
WARMUP_MIN_CALLS = 3
MIN_CALLS = 5
CALIBRATION_BATCHES = 2


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


def make_input(batch, size, seed):
    import torch

    g = torch.Generator().manual_seed(seed + 1000 + batch)
    return torch.randn((batch,) + tuple(size), generator=g)


def stamp(seed):
    import timm
    import torch

    return {"seed": str(seed), "bn_calibration": f"{CALIBRATION_BATCHES}x8 randn",
            "timm": timm.__version__, "torch": torch.__version__.split("+")[0],
            "made_by": "scripts/bench-peers"}


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
    from safetensors.torch import save_file

    os.makedirs(args.out, exist_ok=True)
    meta = stamp(args.seed)
    model = None

    def calibrated():
        nonlocal model
        if model is None:
            t = time.perf_counter()
            model = seeded_model(args.model, args.seed, calibrate=True)
            print(f"  {args.model}: random weights, BatchNorm calibrated in "
                  f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
        return model

    def stale(found):
        return not found or any(found.get(k) != v for k, v in meta.items())

    import timm

    size = tuple(timm.create_model(args.model, pretrained=False).pretrained_cfg["input_size"])
    out = {"model": args.model, "input_size": list(size), "seed": args.seed, "onnx": {},
           "exported": []}

    st_path = os.path.join(args.out, f"{args.model}.safetensors")
    if stale(safetensors_stamp(st_path) if os.path.exists(st_path) else None):
        sd = {k: v.detach().contiguous() for k, v in calibrated().state_dict().items()}
        save_file(sd, st_path + ".tmp", metadata=meta)
        os.chmod(st_path + ".tmp", 0o644)
        os.replace(st_path + ".tmp", st_path)
        out["exported"].append(st_path)
    out["safetensors"] = st_path

    for b in args.batches:
        path = os.path.join(args.out, f"{args.model}_b{b}.onnx")
        if not stale(onnx_stamp(path) if os.path.exists(path) else None):
            out["onnx"][str(b)] = {"path": path}
            continue
        m = calibrated()
        x = make_input(b, size, args.seed)
        t = time.perf_counter()
        export_onnx(m, x, path, meta)
        out["exported"].append(path)
        print(f"  exported {os.path.basename(path)} in {time.perf_counter() - t:.1f} s",
              file=sys.stderr)
        # Same weights, same function: ONNX Runtime must give PyTorch's logits.
        import onnxruntime as ort

        with torch.inference_mode():
            ref = m(x).numpy()
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        got = s.run(None, {"x": x.numpy()})[0]
        diff = float(np.max(np.abs(got - ref)))
        scale = float(np.max(np.abs(ref))) or 1.0
        out["onnx"][str(b)] = {"path": path, "max_abs_diff_vs_torch": diff,
                               "max_abs_logit": scale}
        if diff > 1e-3 * max(1.0, scale):
            print(f"  WARNING: {os.path.basename(path)}: ONNX Runtime logits differ from "
                  f"PyTorch's by {diff:.3g} (max |logit| {scale:.3g})", file=sys.stderr)
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


class TorchEngine:
    def __init__(self, args):
        import torch
        from safetensors.torch import load_file

        torch.set_num_threads(args.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        self.torch = torch
        self.model = seeded_model(args.model, args.seed)
        # Load the exported file, so PyTorch provably runs the weights the others run.
        self.model.load_state_dict(load_file(os.path.join(args.dir, f"{args.model}.safetensors")))
        self.size = input_size(self.model)
        self.seed = args.seed

    def run(self, req):
        b = req["batch"]
        x = make_input(b, self.size, self.seed)
        with self.torch.inference_mode():
            res = measure_sync(lambda: self.model(x), b, req["seconds"])
        res["threads"] = self.torch.get_num_threads()
        return res


class OrtEngine:
    def __init__(self, args):
        import onnxruntime as ort

        self.ort = ort
        self.args = args
        self.sessions = {}

    def session(self, b):
        if b not in self.sessions:
            ort = self.ort
            so = ort.SessionOptions()
            so.intra_op_num_threads = self.args.threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            path = os.path.join(self.args.dir, f"{self.args.model}_b{b}.onnx")
            # One session at a time: each batch size is asked for once per run.
            self.sessions = {b: ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])}
        return self.sessions[b]

    def run(self, req):
        b = req["batch"]
        s = self.session(b)
        shape = s.get_inputs()[0].shape
        import numpy as np

        x = make_input(b, shape[1:], self.args.seed).numpy().astype(np.float32)
        res = measure_sync(lambda: s.run(None, {"x": x}), b, req["seconds"])
        res["providers"] = s.get_providers()
        return res


class OvEngine:
    """OpenVINO f32. LATENCY: one synchronous request. THROUGHPUT: an AsyncInferQueue with
    the plugin's OPTIMAL_NUMBER_OF_INFER_REQUESTS (its streams only run in parallel when
    that many requests are in flight); latency is then per request, submit to callback."""

    def __init__(self, args):
        import openvino as ov

        self.ov = ov
        self.core = ov.Core()
        self.args = args

    def run(self, req):
        b, hint, secs = req["batch"], req.get("hint", "LATENCY"), req["seconds"]
        path = os.path.join(self.args.dir, f"{self.args.model}_b{b}.onnx")
        t = time.perf_counter()
        cm = self.core.compile_model(path, "CPU", {
            "INFERENCE_NUM_THREADS": self.args.threads,
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": hint,
        })
        compile_s = time.perf_counter() - t
        shape = list(cm.inputs[0].get_shape())
        x = make_input(b, shape[1:], self.args.seed).numpy()
        nreq = int(cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        extra = {
            "hint": hint,
            "streams": int(cm.get_property("NUM_STREAMS")),
            "infer_requests": 1 if hint == "LATENCY" else nreq,
            "inference_num_threads": int(cm.get_property("INFERENCE_NUM_THREADS")),
            "precision": str(cm.get_property("INFERENCE_PRECISION_HINT")),
            "compile_s": compile_s,
        }
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
    e.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",") if v], required=True)
    e.add_argument("--seed", type=int, required=True)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--out", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--engine", choices=sorted(ENGINES), required=True)
    w.add_argument("--model", required=True)
    w.add_argument("--threads", type=int, required=True)
    w.add_argument("--seed", type=int, required=True)
    w.add_argument("--dir", required=True)
    args = p.parse_args(argv)
    return {"versions": cmd_versions, "export": cmd_export, "worker": cmd_worker}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())
