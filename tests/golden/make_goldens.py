#!/usr/bin/env python3
"""Write the parity fixtures that tests/golden.rs, tests/preprocess.rs and
tests/real_weights.rs compare effistream against. Run by hand, not in CI:

    scripts/fetch-test-assets                       # photos + Lite0 weights
    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch timm safetensors
    /tmp/venv/bin/python tests/golden/make_goldens.py

It writes, under tests/fixtures/:

golden/<variant>/<photo>.png and golden/<variant>.safetensors, for the three pruned
variants and efficientnet_b0. The network weights are NOT stored: every convolution and linear weight, every
bias and every BatchNorm weight/bias comes from the seeded generator below, which
testkit/src/golden.rs implements identically in Rust. Only the BatchNorm running statistics
are stored: they are calibrated on real photographs (several augmented crops of each) so
that the outputs depend on the image instead of collapsing to one answer. The inputs are
real photographs pre-resized so that the shorter side is exactly timm's
floor(size / crop_pct) (timm's Resize is then the identity), with the longer side 7 pixels
longer so that the center crop has a half-pixel offset to round. The safetensors file holds
`logits` [4, 1000] from timm for the four PNGs as one batch, and the running statistics
under their timm names; its metadata lists the images in batch order.

preprocess/<variant>/<photo>.png: timm's eval transform of each photo up to the center
crop (8-bit). timm's normalised tensor is exactly (png / 255 - mean) / std of this PNG,
which the script asserts.

lite0_timm.safetensors: timm's tf_efficientnet_lite0 with the real Lite0 weights, logits
for each photo through timm's full eval transform.

The generator (SplitMix64 over a per-tensor stream):
    seed(name)  = FNV-1a-64(name as UTF-8) XOR SEED
    z_i         = splitmix64_mix(seed(name) + (i + 1) * 0x9E3779B97F4A7C15)  (mod 2^64)
    u_i         = (z_i >> 40) / 2^24                                  in [0, 1)
    value_i     = offset + (2 * u_i - 1) * scale    in float64, then rounded to float32
for element i of the tensor in row-major order, with (scale, offset):
    conv / linear weight           sqrt(6 / fan_in), 0     (fan_in = numel / shape[0])
    conv / linear bias             0.1, 0
    BatchNorm weight               0.25, 1
    BatchNorm bias                 0.25, 0
"""
import math
import pathlib
import random

import numpy as np
import torch
import timm
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform, resolve_data_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
ASSETS = ROOT / "target" / "test-assets"
FIXTURES = ROOT / "tests" / "fixtures"
SEED = 20261129
PHOTOS = ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"]
GOLDEN = [
    "efficientnet_b1_pruned", "efficientnet_b2_pruned", "efficientnet_b3_pruned",
    # timm's symmetric padding, BN eps 1e-5 and ImageNet mean/std are covered by b0.
    "efficientnet_b0",
]
M64 = (1 << 64) - 1


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def uniform(name: str, n: int) -> np.ndarray:
    """u_i in [0, 1) as float64, exactly as testkit/src/golden.rs computes them."""
    seed = np.uint64(fnv1a64(name.encode()) ^ SEED)
    with np.errstate(over="ignore"):
        z = seed + (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def is_bn(model, name):
    module = model.get_submodule(name.rsplit(".", 1)[0])
    return isinstance(module, torch.nn.BatchNorm2d)


def generated(model, name, shape):
    n = int(np.prod(shape)) if shape else 1
    if is_bn(model, name):
        scale, offset = (0.25, 1.0) if name.endswith(".weight") else (0.25, 0.0)
    elif name.endswith(".weight"):
        scale, offset = math.sqrt(6.0 / (n // shape[0])), 0.0
    else:
        scale, offset = 0.1, 0.0
    values = offset + (2.0 * uniform(name, n) - 1.0) * scale
    return torch.from_numpy(values.astype(np.float32).reshape(shape))


def photo(name):
    return Image.open(ASSETS / "photos" / name).convert("RGB")


def pre_resized(img, short, extra=7, portrait=False):
    """Resize so the shorter side is `short` and the longer `short + extra`, cropping the
    longer dimension of the photo to that aspect first."""
    w, h = img.size
    target_w, target_h = (short, short + extra) if portrait else (short + extra, short)
    ratio = target_w / target_h
    if w / h > ratio:
        cw = round(h * ratio)
        img = img.crop(((w - cw) // 2, 0, (w - cw) // 2 + cw, h))
    else:
        ch = round(w / ratio)
        img = img.crop((0, (h - ch) // 2, w, (h - ch) // 2 + ch))
    return img.resize((target_w, target_h), Image.BICUBIC)


def calibrate(model, cfg):
    """BatchNorm running statistics from augmented crops of the real photos."""
    # timm's training transform draws from both Python's and torch's generators.
    random.seed(SEED)
    torch.manual_seed(SEED)
    aug = create_transform(**{**cfg, "is_training": True, "auto_augment": None,
                              "re_prob": 0.0, "color_jitter": None})
    batch = torch.stack([aug(photo(p)) for p in PHOTOS for _ in range(10)])
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        model(batch)
    model.eval()


def golden(variant):
    model = timm.create_model(variant, pretrained=False)
    state = model.state_dict()
    for name, tensor in state.items():
        if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        tensor.copy_(generated(model, name, list(tensor.shape)))
    cfg = resolve_data_config({}, model=model)
    calibrate(model, cfg)

    short = math.floor(cfg["input_size"][1] / cfg["crop_pct"])
    out_dir = FIXTURES / "golden" / variant
    out_dir.mkdir(parents=True, exist_ok=True)
    transform = create_transform(**cfg)
    inputs, names = [], []
    for i, p in enumerate(PHOTOS):
        name = p.rsplit(".", 1)[0] + ".png"
        pre_resized(photo(p), short, portrait=i % 2 == 1).save(out_dir / name, optimize=True)
        img = Image.open(out_dir / name).convert("RGB")
        x = transform(img)
        # timm's Resize must be the identity on these inputs.
        crop = transform.transforms[1](img)
        assert torch.equal(x, transform.transforms[3](transform.transforms[2](crop)))
        assert transform.transforms[0](img).size == img.size
        inputs.append(x)
        names.append(name)
    with torch.no_grad():
        logits = model(torch.stack(inputs))
        singles = torch.cat([model(x.unsqueeze(0)) for x in inputs])
    assert torch.allclose(logits, singles, atol=1e-4)
    top1 = logits.argmax(-1).tolist()
    print(variant, "top-1", top1, "logit range", float(logits.min()), float(logits.max()))
    assert len(set(top1)) > 1, "outputs collapsed to one class"

    tensors = {"logits": logits.contiguous()}
    for name, tensor in model.state_dict().items():
        if name.endswith(("running_mean", "running_var")):
            tensors[name] = tensor.contiguous()
    save_file(tensors, FIXTURES / "golden" / f"{variant}.safetensors", metadata={
        "images": ",".join(names), "seed": str(SEED),
        "timm": timm.__version__, "torch": torch.__version__,
    })


def preprocess_fixtures():
    for variant in ["efficientnet_b1_pruned", "tf_efficientnet_lite0"]:
        model = timm.create_model(variant, pretrained=False)
        cfg = resolve_data_config({}, model=model)
        transform = create_transform(**cfg)
        out_dir = FIXTURES / "preprocess" / variant
        out_dir.mkdir(parents=True, exist_ok=True)
        for p in PHOTOS:
            img = photo(p)
            crop = transform.transforms[1](transform.transforms[0](img))
            full = transform(img)
            assert torch.equal(full, transform.transforms[3](transform.transforms[2](crop)))
            crop.save(out_dir / (p.rsplit(".", 1)[0] + ".png"), optimize=True)


def lite0():
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    checkpoint = torch.load(ASSETS / "lite0.pth", map_location="cpu", weights_only=False)
    values = [v for k, v in checkpoint.items() if not k.endswith("num_batches_tracked")]
    names = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    assert len(values) == len(names)
    for (k, v), n in zip(((k, v) for k, v in checkpoint.items()
                          if not k.endswith("num_batches_tracked")), names):
        assert v.shape == model.state_dict()[n].shape, (k, n)
    model.load_state_dict(dict(zip(names, values)), strict=False)
    transform = create_transform(**resolve_data_config({}, model=model))
    with torch.no_grad():
        logits = torch.cat([model(transform(photo(p)).unsqueeze(0)) for p in PHOTOS])
    for p, row in zip(PHOTOS, logits.softmax(-1)):
        v, i = row.topk(5)
        print("lite0", p, i.tolist(), [round(float(x), 3) for x in v])
    save_file({"logits": logits.contiguous()}, FIXTURES / "lite0_timm.safetensors", metadata={
        "images": ",".join(PHOTOS), "timm": timm.__version__, "torch": torch.__version__,
    })


def main():
    torch.set_num_threads(2)
    for variant in GOLDEN:
        golden(variant)
    preprocess_fixtures()
    lite0()


if __name__ == "__main__":
    main()
