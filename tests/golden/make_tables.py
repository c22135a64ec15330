#!/usr/bin/env python3
"""Regenerate the model tables that effistream ships, from timm.

Run by hand (not in CI) when timm changes:

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch timm
    /tmp/venv/bin/python tests/golden/make_tables.py

Writes, relative to the repository root:

- src/model/imagenet_classes.txt: the 1000 ImageNet-1k class names, one per line, in
  class-id order (timm's `ImageNetInfo`: WordNet lemmas such as "tabby, tabby cat").
- src/model/shapes/<variant>.txt: the name and shape of every parameter and buffer that
  timm's model has (num_batches_tracked excluded), in state-dict order, one per line:
  `conv_stem.weight 32 3 3 3`. effistream checks loaded weights against this table so
  that weights of another variant are refused with the first mismatching tensor named.
"""
import pathlib

import timm
from timm.data import ImageNetInfo

ROOT = pathlib.Path(__file__).resolve().parents[2]
VARIANTS = [
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "efficientnet_b1_pruned", "efficientnet_b2_pruned", "efficientnet_b3_pruned",
    "tf_efficientnet_lite0",
]


def main():
    info = ImageNetInfo()
    names = [info.index_to_description(i) for i in range(1000)]
    assert all(names) and all("\n" not in n for n in names)
    (ROOT / "src/model/imagenet_classes.txt").write_text("\n".join(names) + "\n")

    out = ROOT / "src/model/shapes"
    out.mkdir(parents=True, exist_ok=True)
    for variant in VARIANTS:
        model = timm.create_model(variant, pretrained=False)
        lines = [f"# timm {timm.__version__} {variant}: name and shape of every tensor"]
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            lines.append(" ".join([name, *map(str, tensor.shape)]))
        (out / f"{variant}.txt").write_text("\n".join(lines) + "\n")
        print(variant, len(lines) - 1, "tensors")


if __name__ == "__main__":
    main()
