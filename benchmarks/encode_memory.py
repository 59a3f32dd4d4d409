"""Peak memory of ``attrivae encode`` on a large CT, and how fast an oversized header is refused.

Writes a 512 × 512 × 600 float32 CT-like volume (0.7 × 0.7 × 1.25 mm, smooth anatomy-like
blobs plus noise; 600 MiB of voxels) and a small model checkpoint (random weights, the
published 80³ network) into a work folder, then runs, each in a fresh subprocess:

* ``baseline``: ``attrivae encode`` of a 32³ image (interpreter, torch, the model);
* ``encode``: ``attrivae encode`` of the CT (``.nii``, and ``.nii.gz`` with ``--gz``);
* ``bomb``: ``attrivae encode`` of a 1 MB ``.nii.gz`` whose header promises 1024³ float32 voxels.

Peak memory is the child's peak resident set size (``resource.getrusage(RUSAGE_CHILDREN)
.ru_maxrss`` of a wrapper process that runs exactly one command). It is reported as a ratio to
the image's float32 size, raw and above the baseline (what encoding the image itself costs).
The engine's target: the raw peak stays under 4× the image's float32 size. This is a
benchmark, not a test: it prints numbers and asserts nothing.

Usage::

    python benchmarks/encode_memory.py [--work DIR] [--gz] [--keep]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPE = (600, 512, 512)  # (z, y, x)
SPACING = (0.7, 0.7, 1.25)  # (x, y, z) mm

_WRAPPER = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.perf_counter() - t
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": proc.returncode, "seconds": seconds, "peak_bytes": peak_kib * 1024,
                  "stderr": proc.stderr.strip().splitlines()[-1:] }))
"""


def make_ct(path: Path) -> None:
    """A CT-like float32 volume: body ellipse, organ blobs, bone ring, noise (HU-like values)."""
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    z, y, x = (np.linspace(-1, 1, n, dtype=np.float32) for n in SHAPE)
    array = np.full(SHAPE, -1000.0, dtype=np.float32)
    for k in range(SHAPE[0]):  # slice by slice keeps this script's own memory low
        r2 = (x[None, :] / 0.8) ** 2 + (y[:, None] / 0.6) ** 2
        sl = np.where(r2 < 1.0, 40.0, -1000.0).astype(np.float32)
        sl[(r2 > 0.85) & (r2 < 0.95)] = 700.0
        sl += 30.0 * np.sin(6 * x[None, :] + 4 * y[:, None] + 3 * z[k])
        sl += rng.normal(0, 15, sl.shape).astype(np.float32)
        array[k] = sl
    image = sitk.GetImageFromArray(array)
    del array
    image.SetSpacing(SPACING)
    image.SetOrigin((-180.0, -180.0, -375.0))
    sitk.WriteImage(image, str(path), path.name.endswith(".gz"))


def make_small(path: Path) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.random.default_rng(1).random((32, 32, 32), dtype=np.float32))
    sitk.WriteImage(image, str(path))


def make_bomb(path: Path) -> None:
    """A gzip NIfTI whose header promises 1024³ float32 voxels; 1 MB on disk (1 GiB of zeros inside)."""
    import nibabel

    header = nibabel.Nifti1Header()
    header.set_data_shape((1024, 1024, 1024))
    header.set_data_dtype(np.float32)
    with gzip.open(path, "wb", compresslevel=9) as fh:
        fh.write(header.binaryblock + b"\0" * 4)
        zeros = b"\0" * (1 << 24)
        for _ in range(64):
            fh.write(zeros)


def make_model(folder: Path) -> None:
    import torch

    from AttriVAELib.nn.checkpoint import save_checkpoint
    from AttriVAELib.nn.model import AttriVAE, ModelConfig

    torch.manual_seed(0)
    config = ModelConfig(input_size=80, latent_dim=64, num_regularized=2, num_classes=2)
    network = AttriVAE(config).eval()
    tensors = {f"model.{k}": v for k, v in network.state_dict().items()}
    meta = {"kind": "model", "model_config": config.to_dict(), "preprocess": {"size": 80},
            "attributes": {"names": ["a_mm", "b_ml"], "units": ["mm", "mL"], "regularized": ["a_mm", "b_ml"]},
            "labels": {"names": ["0", "1"]}}
    save_checkpoint(folder, tensors, meta, name="model")


def measure(*command: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *command], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--gz", action="store_true", help="also encode the CT as .nii.gz (slow to write)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="attrivae-encode-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "AttriVAELib.cli"]
    env_note = f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}"
    try:
        model = work / "model"
        if not (model / "model.safetensors").exists():
            model.mkdir(exist_ok=True)
            make_model(model)
        small, bomb = work / "small.nii", work / "bomb.nii.gz"
        make_small(small)
        if not bomb.exists():
            make_bomb(bomb)
        cts = [work / "ct.nii"] + ([work / "ct.nii.gz"] if args.gz else [])
        for ct in cts:
            if not ct.exists():
                t = time.perf_counter()
                make_ct(ct)
                print(f"wrote {ct} ({ct.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.0f} s")
        image_bytes = int(np.prod(SHAPE)) * 4
        print(env_note)
        print(f"image: {SHAPE[2]}×{SHAPE[1]}×{SHAPE[0]} float32 = {image_bytes / 2**20:.0f} MiB")
        base = measure(*cli, "encode", "--model", str(model), str(small), "--device", "cpu")
        print(f"baseline (32³ image): peak {base['peak_bytes'] / 2**20:.0f} MiB, {base['seconds']:.1f} s, rc {base['rc']}")
        for ct in cts:
            r = measure(*cli, "encode", "--model", str(model), str(ct), "--device", "cpu")
            peak = r["peak_bytes"]
            print(f"encode {ct.name}: peak {peak / 2**20:.0f} MiB = {peak / image_bytes:.2f}× the image's float32 size "
                  f"({(peak - base['peak_bytes']) / image_bytes:.2f}× above the baseline); {r['seconds']:.1f} s, "
                  f"rc {r['rc']}  [target: < 4×]")
        r = measure(*cli, "encode", "--model", str(model), str(bomb), "--device", "cpu")
        t = time.perf_counter()
        from AttriVAELib.core.errors import InputError
        from AttriVAELib.data.io import check_image_file

        try:
            check_image_file(bomb)
            refused = "accepted"
        except InputError as exc:
            refused = f"refused: {exc}"
        in_process = time.perf_counter() - t
        print(f"oversized header ({bomb.stat().st_size / 2**20:.1f} MiB file, header 1024³ float32): "
              f"check_image_file {in_process * 1000:.0f} ms ({refused[:60]}…); whole command {r['seconds']:.1f} s "
              f"(interpreter + torch + model load included), rc {r['rc']}, peak {r['peak_bytes'] / 2**20:.0f} MiB")
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
