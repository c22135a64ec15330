#!/usr/bin/env python3
"""Write the fine-tuned-checkpoint fixture that tests/own_model.rs compares effistream
against: a model that timm itself fine-tuned and saved with `timm.models.save_for_hf`.
Run by hand, not in CI (after make_goldens.py, whose b1_pruned fixture it reads):

    scripts/fetch-test-assets
    /tmp/venv/bin/python tests/golden/make_finetuned.py

timm builds efficientnet_b1_pruned with num_classes=3; every tensor starts as
make_goldens.py's seeded generator makes it (testkit/src/golden.rs implements it in
Rust), the BatchNorm running statistics are those of
tests/fixtures/golden/efficientnet_b1_pruned.safetensors. The backbone is frozen (and in
eval mode, so its BatchNorm statistics stay), and timm trains the new classifier for a
few SGD steps on the four photos with three labels: cat (chelsea), espresso (coffee),
space (astronaut, rocket). `save_for_hf` then writes model.safetensors and config.json,
with an eval transform that is NOT the variant's default (input 224, crop_pct 0.95,
mean (0.45, 0.5, 0.55), std (0.55, 0.5, 0.45); Adam, 500 steps on the frozen backbone's features), so the test shows that effistream takes it from config.json.

It writes, under tests/fixtures/finetuned/:

config.json            timm's config.json, verbatim.
classifier.safetensors the tensors the seed cannot reproduce: `classifier.weight`,
                       `classifier.bias` (fine-tuned), and timm's `logits` [4, 3] for
                       the four PNGs as one batch, through timm's eval transform from
                       config.json. Metadata: the images in batch order.
<photo>.png            the photos pre-resized so that the shorter side is exactly
                       floor(224 / 0.95) = 235 (timm's Resize is then the identity), as
                       make_goldens.py does.

The script reassembles model.safetensors from the generator, the b1 golden statistics
and classifier.safetensors, exactly as the Rust test does, and asserts that every tensor
equals what timm saved.
"""
import json
import math
import os
import pathlib
import random
import shutil
import sys
import tempfile

import torch
import timm
from PIL import Image
from safetensors.torch import load_file, save_file
from timm.data import create_transform, resolve_data_config

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_goldens as g  # noqa: E402

OUT = g.FIXTURES / "finetuned"
g.ASSETS = pathlib.Path(os.environ.get("EFFISTREAM_TEST_ASSETS", g.ASSETS))
VARIANT = "efficientnet_b1_pruned"
LABELS = ["cat", "espresso", "space"]
TARGETS = [0, 1, 2, 2]  # chelsea, coffee, astronaut, rocket
# Not the variant's transform (240, crop_pct 0.882, mean = std = 0.5); mean and std stay
# near the 0.5 the BatchNorm statistics were calibrated with, so that the random backbone
# keeps a moderate range of activations (ImageNet's std 0.229 blows them up to ~1e4 and
# makes the logits sensitive to float rounding).
DATA = {"input_size": (3, 224, 224), "crop_pct": 0.95, "mean": (0.45, 0.5, 0.55),
        "std": (0.55, 0.5, 0.45), "interpolation": "bicubic", "crop_mode": "center"}


def seeded_model():
    model = timm.create_model(VARIANT, pretrained=False, num_classes=len(LABELS))
    stats = load_file(g.FIXTURES / "golden" / f"{VARIANT}.safetensors")
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith(("running_mean", "running_var")):
                tensor.copy_(stats[name])
            else:
                tensor.copy_(g.generated(model, name, list(tensor.shape)))
    return model


def main():
    torch.set_num_threads(2)
    torch.manual_seed(g.SEED)
    random.seed(g.SEED)
    model = seeded_model()
    short = math.floor(DATA["input_size"][1] / DATA["crop_pct"])
    OUT.mkdir(parents=True, exist_ok=True)
    names = []
    for i, p in enumerate(g.PHOTOS):
        name = p.rsplit(".", 1)[0] + ".png"
        g.pre_resized(g.photo(p), short, portrait=i % 2 == 1).save(OUT / name, optimize=True)
        names.append(name)
    transform = create_transform(**DATA)
    images = [Image.open(OUT / n).convert("RGB") for n in names]
    for img in images:
        assert transform.transforms[0](img).size == img.size  # Resize is the identity
    batch = torch.stack([transform(img) for img in images])

    # Fine-tune the classifier only; the backbone stays frozen, in eval mode.
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith("classifier.")
    model.eval()
    # Adam: its steps do not depend on the (large) scale of the random backbone's features.
    opt = torch.optim.Adam(model.get_classifier().parameters(), lr=1e-2)
    target = torch.tensor(TARGETS)
    with torch.no_grad():  # the frozen backbone's features, once
        features = model.forward_head(model.forward_features(batch), pre_logits=True)
    for step in range(500):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.get_classifier()(features), target)
        loss.backward()
        opt.step()
    print("final loss", loss.item())

    with tempfile.TemporaryDirectory() as tmp:
        timm.models.save_for_hf(model, tmp, model_config={"label_names": LABELS},
                                safe_serialization=True, data_config=DATA)
        shutil.copy(pathlib.Path(tmp) / "config.json", OUT / "config.json")
        saved = load_file(pathlib.Path(tmp) / "model.safetensors")

    # timm's logits through timm's eval transform as config.json describes it.
    config = json.loads((OUT / "config.json").read_text())
    reloaded = timm.create_model(config["architecture"], pretrained=False,
                                 num_classes=config["num_classes"])
    reloaded.load_state_dict(saved)
    reloaded.eval()
    cfg = resolve_data_config(pretrained_cfg=config["pretrained_cfg"], model=reloaded)
    assert tuple(cfg["input_size"]) == DATA["input_size"] and cfg["crop_pct"] == DATA["crop_pct"], cfg
    eval_transform = create_transform(**cfg)
    with torch.no_grad():
        logits = reloaded(torch.stack([eval_transform(img) for img in images]))
    top1 = logits.argmax(-1).tolist()
    print("top-1", [LABELS[i] for i in top1], "logits", logits.tolist())
    assert top1 == TARGETS, "fine-tuning did not learn the labels"

    save_file({"classifier.weight": saved["classifier.weight"].contiguous(),
               "classifier.bias": saved["classifier.bias"].contiguous(),
               "logits": logits.contiguous()},
              OUT / "classifier.safetensors",
              metadata={"images": ",".join(names), "seed": str(g.SEED),
                        "timm": timm.__version__, "torch": torch.__version__})

    # The reassembly the Rust test does gives exactly what timm saved.
    stored = load_file(OUT / "classifier.safetensors")
    base = seeded_model().state_dict()
    for name, tensor in saved.items():
        if name.endswith("num_batches_tracked"):
            continue
        want = stored[name] if name.startswith("classifier.") else base[name]
        assert torch.equal(tensor, want), name
    print("reassembled tensors equal timm's saved model.safetensors")


if __name__ == "__main__":
    main()
