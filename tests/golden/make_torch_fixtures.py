"""Writes the small PyTorch checkpoints that tests/pth_reader.rs reads.

What it writes, into tests/fixtures/torch/ (a few KB each, about 60 KB in all):

* ``<case>.zip.pth``     -- ``torch.save(obj, f)``: the zip format (torch >= 1.6 default);
* ``<case>.legacy.pth``  -- ``torch.save(obj, f, _use_new_zipfile_serialization=False)``:
  the legacy pickle stream format;
* ``expected.json``      -- for every file, either the tensors the reader must return (in
  state-dict order: name, dtype, shape and the values flattened in row-major order, with
  float16/bfloat16 values given as the exact floats they stand for, plus the raw bytes in
  hex), or a substring of the error it must return.

The cases cover float64/32/16, bfloat16, int64/32/16/8, uint8 and bool tensors; a
transposed (non-contiguous) tensor, views sharing one storage with offsets, a strided
slice, an expanded (stride 0) tensor, 0-dim and empty tensors; ``nn.Parameter``s
(plain and with Python attributes) and a tensor with attributes; the OrderedDict state
dict of a tiny ``nn.Sequential(Conv2d, BatchNorm2d)``; checkpoints that nest the state
dict under ``state_dict`` (with an ``epoch``) or ``model``; pickle protocols 4 and 5; a
checkpoint with no tensors; and a uint16 tensor (a dtype the reader rejects).

Run it from the repository root with the project's Python environment (torch 2.x):

    /work/venv/bin/python tests/golden/make_torch_fixtures.py

The checkpoints differ byte for byte between runs (zip serialization ids, legacy storage
keys), but their contents and expected.json do not, so re-running is only needed when a
case is added.
"""

import collections
import io
import json
import pathlib

import torch
from torch import nn

OUT = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "torch"


def values(t):
    """A tensor's values, flattened row-major, as exact JSON numbers."""
    flat = t.detach().contiguous().reshape(-1)
    if t.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        # float16/bfloat16/float32 values are exactly representable as Python floats.
        return [float(x) for x in flat.to(torch.float64).tolist()]
    if t.dtype == torch.bool:
        return [int(x) for x in flat.tolist()]
    return [int(x) for x in flat.tolist()]


def raw_hex(t):
    """The tensor's contiguous little-endian bytes, as hex (an exact check of every bit)."""
    flat = t.detach().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes().hex()


def expect_tensors(state_dict):
    out = []
    for name, t in state_dict.items():
        if not isinstance(t, torch.Tensor):
            continue
        out.append(
            {
                "name": name,
                "dtype": str(t.dtype).removeprefix("torch."),
                "shape": list(t.shape),
                "values": values(t),
                "hex": raw_hex(t),
            }
        )
    return out


def dtypes_case():
    g = torch.Generator().manual_seed(1)
    sd = collections.OrderedDict()
    sd["f32"] = torch.randn(2, 3, generator=g)
    sd["f16"] = torch.tensor([0.5, -1.25, 65504.0, 6.1e-5, 3.1416], dtype=torch.float16)
    sd["bf16"] = torch.tensor([1.0, -2.5, 3.0e38, 1.0e-3], dtype=torch.bfloat16)
    sd["f64"] = torch.tensor([[1.0 / 3.0, -1e300], [2.5e-310, 0.0]], dtype=torch.float64)
    sd["i64"] = torch.tensor([0, -1, 2**40, -(2**62), 2**63 - 1], dtype=torch.int64)
    sd["i32"] = torch.tensor([-(2**31), 2**31 - 1, 7], dtype=torch.int32)
    sd["i16"] = torch.tensor([-32768, 32767], dtype=torch.int16)
    sd["i8"] = torch.tensor([-128, 127, 0], dtype=torch.int8)
    sd["u8"] = torch.tensor([0, 255, 17], dtype=torch.uint8)
    sd["bool"] = torch.tensor([True, False, True])
    return sd, expect_tensors(sd)


def views_case():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    flat = base.view(-1)
    sd = collections.OrderedDict()
    sd["base"] = base
    sd["transposed"] = base.t()  # shape (6, 4), stride (1, 6): non-contiguous
    sd["view_a"] = flat[2:6]  # offset 2 into the same storage
    sd["view_b"] = flat[5:11].view(2, 3)  # offset 5, overlapping view_a
    sd["every_other"] = base[1:, ::2]  # offset 6, stride (6, 2)
    sd["element"] = flat[7]  # 0-dim view at offset 7
    sd["scalar"] = torch.tensor(3.5)  # 0-dim with its own storage
    sd["empty"] = torch.zeros(0, 3)
    sd["expanded"] = torch.tensor([1, 2, 3], dtype=torch.int64).expand(2, 3)  # stride (0, 1)
    sd["half_t"] = torch.tensor([[1, 2], [3, 4]], dtype=torch.float16).t()
    return sd, expect_tensors(sd)


def params_case():
    g = torch.Generator().manual_seed(2)
    sd = {}
    sd["weight"] = nn.Parameter(torch.randn(3, 2, generator=g))
    sd["frozen"] = nn.Parameter(torch.randn(2, generator=g), requires_grad=False)
    with_state = nn.Parameter(torch.ones(2, dtype=torch.float64))
    with_state.note = "attribute"  # pickled via _rebuild_parameter_with_state
    sd["with_state"] = with_state
    attr = torch.tensor([4, 5], dtype=torch.int32)
    attr.tag = 7  # pickled via torch._tensor._rebuild_from_type_v2
    sd["tensor_with_attr"] = attr
    sd["note"] = "not a tensor"  # skipped
    return sd, expect_tensors(sd)


def tiny_model():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 3, kernel_size=2), nn.BatchNorm2d(3))
    with torch.no_grad():
        model[1].running_mean.copy_(torch.tensor([0.1, 0.2, 0.3]))
        model[1].running_var.copy_(torch.tensor([1.5, 2.5, 3.5]))
        model[1].num_batches_tracked.fill_(42)
    return model


def sequential_case():
    sd = tiny_model().state_dict()  # OrderedDict with a `_metadata` attribute (BUILD)
    return sd, expect_tensors(sd)


def checkpoint_case():
    sd = tiny_model().state_dict()
    return {"state_dict": sd, "epoch": 3, "arch": "tiny"}, expect_tensors(sd)


def model_key_case():
    sd = collections.OrderedDict(w=torch.tensor([[1.0, 2.0]]), b=torch.tensor([0.5]))
    return {"epoch": 1, "model": sd, "optimizer": {"lr": 0.1}}, expect_tensors(sd)


def no_tensors_case():
    return {"epoch": 3, "arch": "tiny", "optimizer": {"lr": 0.1}}, None


def uint16_case():
    t = torch.tensor([1, 2, 3], dtype=torch.int32).to(torch.uint16)
    return {"u16": t}, None


CASES = {
    # name: (build, pickle protocols to save with, expected error substring or None)
    "dtypes": (dtypes_case, None),
    "views": (views_case, None),
    "params": (params_case, None),
    "sequential": (sequential_case, None),
    "checkpoint": (checkpoint_case, None),
    "model_key": (model_key_case, None),
    "no_tensors": (
        no_tensors_case,
        "no tensors found: top-level object is a dict with keys [epoch, arch, optimizer]",
    ),
    "uint16": (uint16_case, "tensor `u16` has dtype uint16, which is not supported"),
}


def save(obj, path, legacy, protocol=2):
    # Saving through a buffer makes torch use its default archive folder name `archive/`
    # for zip files; one case below saves to a path to get the file-stem folder name.
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy, pickle_protocol=protocol)
    path.write_bytes(buf.getvalue())


def compact_json(expected):
    """JSON with one line per file or tensor: readable, diffable and small."""
    lines = ["{"]
    for i, (name, exp) in enumerate(expected.items()):
        comma = "," if i + 1 < len(expected) else ""
        if "error" in exp:
            lines.append(f" {json.dumps(name)}: {json.dumps(exp)}{comma}")
            continue
        lines.append(f' {json.dumps(name)}: {{"tensors": [')
        for j, t in enumerate(exp["tensors"]):
            sep = "," if j + 1 < len(exp["tensors"]) else ""
            lines.append(f"  {json.dumps(t)}{sep}")
        lines.append(f" ]}}{comma}")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == expected
    return text


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.pth"):
        old.unlink()
    expected = {}
    for case, (build, error) in CASES.items():
        obj, tensors = build()
        for legacy in (False, True):
            name = f"{case}.{'legacy' if legacy else 'zip'}.pth"
            save(obj, OUT / name, legacy)
            expected[name] = {"error": error} if error else {"tensors": tensors}
    # Pickle protocols 4 and 5 (FRAME, MEMOIZE, SHORT_BINUNICODE, ...).
    for protocol in (4, 5):
        obj, tensors = views_case()
        for legacy in (False, True):
            name = f"views_p{protocol}.{'legacy' if legacy else 'zip'}.pth"
            save(obj, OUT / name, legacy, protocol)
            expected[name] = {"tensors": tensors}
    # Saved to a path, so the zip folder is the file stem rather than `archive`.
    obj, tensors = sequential_case()
    torch.save(obj, OUT / "stem_prefix.zip.pth")
    expected["stem_prefix.zip.pth"] = {"tensors": tensors}

    # Check the expectations against torch's own reader before writing them.
    for name, exp in expected.items():
        if "tensors" not in exp:
            continue
        loaded = torch.load(OUT / name, weights_only=False)
        sd = loaded if any(isinstance(v, torch.Tensor) for v in loaded.values()) else None
        for key in ("state_dict", "model"):
            if sd is None and key in loaded:
                sd = loaded[key]
        assert expect_tensors(sd) == exp["tensors"], name

    (OUT / "expected.json").write_text(compact_json(expected))
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(expected)} checkpoints to {OUT} ({total} bytes in all)")


if __name__ == "__main__":
    main()
