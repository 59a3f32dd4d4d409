"""Explanation and slider speed of the published architecture (80³, random weights).

Side by side in one process:

* Grad-CAM maps/s for B samples × K attribute dims:
  (a) as published — one forward and one full ``backward()`` per (sample, dim), batch 1;
  (a') a lighter per-sample baseline — one forward per sample, one ``autograd.grad`` per dim;
  (b) batched — :class:`AttriVAELib.explain.gradcam.AttributeGradCAM`: one forward of the B samples
      and one backward batched over the K dims (same layer, conv5, and the default layer);
* decode latency of one volume (the Slicer slider): eager fp32 as published, and the
  inference object's fast path (BatchNorm folded, channels_last_3d; fp32, and the bf16
  ``preview`` for sliders);
* encode latency of one volume (network only, and from a 3D image including preprocessing).

Medians are reported; the load average is recorded before and after (the machine may be shared).

Usage::

    PYTHONPATH=. python benchmarks/explain_speed.py [--json FILE] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from AttriVAELib.data.io import Geometry, Volume  # noqa: E402
from AttriVAELib.explain.gradcam import AttributeGradCAM  # noqa: E402
from AttriVAELib.inference.model import AttriVAEModel  # noqa: E402
from AttriVAELib.nn.model import AttriVAE, ModelConfig  # noqa: E402


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def published_network(size: int, k: int) -> AttriVAE:
    """The published architecture with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    net = AttriVAE(ModelConfig(input_size=size, latent_dim=64, num_regularized=k, num_classes=2))
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.reset_running_stats()
    net.train()
    with torch.no_grad():
        net(torch.rand(2, 1, size, size, size))
    return net.eval()


def published_gradcam(net: AttriVAE, x: torch.Tensor, dims: int) -> torch.Tensor:
    """(a): per sample and per dim, a batch-1 forward, a full backward() (parameter gradients
    included, as the reference code does) and a conv5 map upsampled with F.interpolate."""
    layer = net.encoder.conv5
    maps = []
    for b in range(x.shape[0]):
        for d in range(dims):
            store: dict[str, torch.Tensor] = {}

            def keep(_m, _i, out, store=store):
                out.register_hook(lambda g: store.__setitem__("grad", g))
                store["act"] = out

            handle = layer.register_forward_hook(keep)
            net.zero_grad(set_to_none=True)
            mu, _ = net.encode(x[b:b + 1])
            mu[0, d].backward()
            handle.remove()
            act, grad = store["act"].detach(), store["grad"]
            cam = torch.relu((grad.mean(dim=(2, 3, 4), keepdim=True) * act).sum(1, keepdim=True))
            maps.append(torch.nn.functional.interpolate(cam, size=x.shape[2:], mode="trilinear", align_corners=False))
    return torch.cat(maps)


def shared_forward_gradcam(net: AttriVAE, x: torch.Tensor, dims: int) -> torch.Tensor:
    """A lighter baseline: one batch-1 forward per sample, one ``autograd.grad`` per dim
    (retaining the graph, no parameter gradients)."""
    layer = net.encoder.conv5
    maps = []
    for b in range(x.shape[0]):
        store: list[torch.Tensor] = []
        handle = layer.register_forward_hook(lambda _m, _i, out: store.append(out))
        mu, _ = net.encode(x[b:b + 1])
        handle.remove()
        for d in range(dims):
            (grad,) = torch.autograd.grad(mu[0, d], store[0], retain_graph=d < dims - 1)
            cam = torch.relu((grad.mean(dim=(2, 3, 4), keepdim=True) * store[0].detach()).sum(1, keepdim=True))
            maps.append(torch.nn.functional.interpolate(cam, size=x.shape[2:], mode="trilinear", align_corners=False))
    return torch.cat(maps)


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    n, b, k = args.size, args.batch, args.dims
    net = published_network(n, k)
    for p in net.parameters():
        p.requires_grad_(True)
    torch.manual_seed(1)
    x = torch.rand(b, 1, n, n, n)
    results: dict = {}

    # -- Grad-CAM ------------------------------------------------------------------------
    maps_total = b * k
    t_pub = median_time(lambda: published_gradcam(net, x, k), max(1, args.repeats // 2), warmup=0)
    results["published_maps_per_s"] = maps_total / t_pub
    t_shared = median_time(lambda: shared_forward_gradcam(net, x, k), max(1, args.repeats // 2), warmup=0)
    results["published_shared_forward_maps_per_s"] = maps_total / t_shared
    cam5 = AttributeGradCAM(net, "conv5")
    t_b5 = median_time(lambda: cam5.attribute(x), args.repeats)
    results["batched_maps_per_s"] = maps_total / t_b5
    results["batched_layer"] = "encoder.conv5 (as published), aligned linear upsampling"
    t_b5t = median_time(lambda: cam5.attribute(x, upsample="trilinear"), args.repeats)
    results["batched_trilinear_maps_per_s"] = maps_total / t_b5t
    t_raw = median_time(lambda: cam5.attribute(x, upsample=False), args.repeats)
    results["batched_raw_maps_per_s"] = maps_total / t_raw
    cam_default = AttributeGradCAM(net)  # "auto": conv4 at 80³
    t_bd = median_time(lambda: cam_default.attribute(x), args.repeats)
    results["batched_default_layer"] = cam_default.layer_name
    results["batched_default_layer_maps_per_s"] = maps_total / t_bd
    results["gradcam_speedup"] = results["batched_maps_per_s"] / results["published_maps_per_s"]
    # Same maps: (b) at conv5 with trilinear upsampling equals (a).
    ref = published_gradcam(net, x[:1], k).reshape(1, k, n, n, n)
    got = cam5.attribute(x[:1], upsample="trilinear")
    results["max_abs_difference_published_vs_batched"] = float((ref - got).abs().max())
    results["max_abs_published_map"] = float(ref.abs().max())

    # -- decode ----------------------------------------------------------------------------
    meta = {"preprocess": {"size": n}, "labels": {"names": ["0", "1"]}}
    z = torch.randn(1, 64)
    with torch.inference_mode():
        results["decode_eager_fp32_ms"] = 1e3 * median_time(lambda: net.decode(z), args.decode_repeats, warmup=3)
    fast = AttriVAEModel(net, meta, device="cpu")
    z_np = z.numpy()
    results["decode_ms"] = 1e3 * median_time(lambda: fast.decode(z_np), args.decode_repeats, warmup=3)
    results["decode_path"] = type(fast._decoder_module()).__name__ + ": BatchNorm folded, channels_last_3d, fp32"
    results["decode_preview_ms"] = 1e3 * median_time(lambda: fast.decode(z_np, preview=True), args.decode_repeats,
                                                      warmup=3)
    results["decode_preview_path"] = "AttriVAEModel.decode(preview=True): as decode_ms in bf16 where native"
    with torch.inference_mode():
        exact = net.decode(z)[:, 0].numpy()
    results["decode_fast_max_abs_error"] = float(np.abs(fast.decode(z_np) - exact).max())
    results["decode_preview_max_abs_error"] = float(np.abs(fast.decode(z_np, preview=True) - exact).max())
    traverse_z = np.repeat(z_np, 9, axis=0)
    results["decode_batch9_ms"] = 1e3 * median_time(lambda: fast.decode(traverse_z), max(3, args.decode_repeats // 5))

    # -- encode ----------------------------------------------------------------------------
    x1 = x[:1, 0].numpy()
    results["encode_ms"] = 1e3 * median_time(lambda: fast.encode_arrays(x1), args.decode_repeats, warmup=3)
    rng = np.random.default_rng(0)
    image = Volume(rng.random((96, 128, 128), dtype=np.float32),
                   Geometry((128, 128, 96), (1.2, 1.2, 2.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)))
    results["encode_with_preprocessing_ms"] = 1e3 * median_time(lambda: fast.encode(image), max(3, args.repeats))

    results["setup"] = {
        "size": n, "batch": b, "dims": k, "repeats": args.repeats, "decode_repeats": args.decode_repeats,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", ""),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--size", type=int, default=80)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dims", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--decode-repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    results = run(args)
    width = max(len(key) for key in results)
    for key, value in results.items():
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{key:<{width}s}  {shown}")
    if args.json:
        from AttriVAELib.core.atomic import write_json

        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
