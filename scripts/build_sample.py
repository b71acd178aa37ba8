"""Build the offline sample shipped inside the package.

    python scripts/build_sample.py /path/to/cifar-100-python [--classes 0,55,58]

Keeps every train and test image of the given classes, in the original order, as uint8
NHWC arrays with their fine ids, in a compressed .npz under cifarlab/sample/.
"""
import argparse
from pathlib import Path

import numpy as np

from cifarlab.classes import select_classes
from cifarlab.data import SAMPLE_PATH, read_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="an extracted cifar-100-python/ folder")
    ap.add_argument("--classes", default="0,55,58")
    ap.add_argument("--out", type=Path, default=SAMPLE_PATH)
    args = ap.parse_args()
    ids = list(select_classes(args.classes).ids)
    arrays = {}
    for split in ("train", "test"):
        x, y = read_split(args.folder, split)
        keep = np.isin(y, ids)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x[keep], y[keep].astype(np.uint8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB):",
          {k: v.shape for k, v in arrays.items()})


if __name__ == "__main__":
    main()
