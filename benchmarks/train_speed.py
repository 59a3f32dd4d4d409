"""Training throughput of the published way vs the project's fast path, side by side.

    python benchmarks/train_speed.py [--json FILE] [--steps 5] [--warmup 2] [--size 80]
                                     [--batch 16] [--device auto] [--compile] [--ablation]

Paths (same architecture, weights, batch and loss: SSE + β·KL + γ·AR with K=4 random
attributes + α·BCE + L1 5e-5, Adam):

  published  fp32, NCDHW, eager, default allocator (what the reference code does)
  fast       the project default: channels_last_3d + bf16 autocast where bf16 is native,
             the channels-last BatchNorm backward, and (CPU) glibc allocator tuning
  compiled   ``--compile``: fast + torch.compile (not part of the default path)
  ablation   ``--ablation``: fp32 channels_last; bf16 NCDHW (to see where the gain comes from)

Each path runs in its own subprocess, so its peak RSS and allocator state are its own. The
loss of each path is also evaluated (forward only, train mode, same seed) on the same batch
and initial weights, to show that the fast path computes the same objective.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PATHS = {
    #         channels_last, bf16 ("auto" = where native), tune allocator, compile
    "published": (False, False, False, False),
    "fast": (True, "auto", True, False),
    "compiled": (True, "auto", True, True),
    "fp32_channels_last": (True, False, True, False),
    "bf16_ncdhw": (False, "auto", True, False),
}
LABELS = {
    "published": "(a) published: fp32, NCDHW, eager",
    "fast": "(b) fast path: channels_last_3d + bf16 autocast",
    "compiled": "(c) fast path + torch.compile",
    "fp32_channels_last": "ablation: fp32, channels_last_3d",
    "bf16_ncdhw": "ablation: bf16 autocast, NCDHW",
}
NUM_ATTRIBUTES = 4

# Dense bf16 tensor-core peaks (FLOP/s) for the achieved-share line on GPUs.
GPU_BF16_PEAK = {"H200": 989e12, "H100 SXM": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12,
                 "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12, "RTX 4090": 165e12}


def _phantom_batch(batch: int, size: int, generator):
    """Smooth ellipsoid phantoms in [0, 1] (more realistic than noise for the SSE term)."""
    import torch

    grid = torch.linspace(-1, 1, size)
    zz, yy, xx = torch.meshgrid(grid, grid, grid, indexing="ij")
    vols = []
    for _ in range(batch):
        r = 0.3 + 0.4 * torch.rand(3, generator=generator)
        c = 0.2 * (torch.rand(3, generator=generator) - 0.5)
        d = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2
        vols.append(torch.sigmoid(8 * (1 - d)))
    return torch.stack(vols).unsqueeze(1)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(args: argparse.Namespace) -> dict:
    """Run one path; returns its measurements (printed as JSON by the subprocess)."""
    channels_last, bf16, tune_alloc, compile_ = PATHS[args.worker]
    from AttriVAELib.nn import fastpath

    if tune_alloc:
        fastpath.tune_cpu_allocator()
    import torch

    from AttriVAELib.nn.losses import AttriVAELoss, LossConfig
    from AttriVAELib.nn.model import AttriVAE, ModelConfig

    device = fastpath.select_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    use_bf16 = fastpath.bf16_supported(device) if bf16 == "auto" else bool(bf16)
    cuda = device.type == "cuda"

    g = torch.Generator().manual_seed(0)
    x = _phantom_batch(args.batch, args.size, g)
    attrs = torch.rand(args.batch, NUM_ATTRIBUTES, generator=g)
    labels = torch.randint(0, 2, (args.batch,), generator=g)
    torch.manual_seed(0)
    model = AttriVAE(ModelConfig(input_size=args.size, num_regularized=NUM_ATTRIBUTES, num_classes=2))
    model = model.to(device)
    x, attrs, labels = x.to(device), attrs.to(device), labels.to(device)
    if channels_last:
        model = fastpath.to_channels_last(model)
        x = fastpath.channels_last_input(x)
    loss_fn = AttriVAELoss(LossConfig(l1=5e-5))
    step_model = torch.compile(model) if compile_ else model

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    # Loss on the initial weights, forward only, train mode (dropout and z sampled), same seed.
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    with torch.no_grad(), fastpath.autocast_context(device, use_bf16):
        out = model(x)
    with torch.no_grad():
        loss_terms = {k: float(v) for k, v in loss_fn(out, x, attrs, labels, model).items() if v.numel() == 1}
    model.load_state_dict(state)  # undo the running-statistics update
    del out

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    def train_step(step: int) -> float:
        opt.zero_grad(set_to_none=True)
        with fastpath.autocast_context(device, use_bf16):
            out = step_model(x)
        loss = loss_fn(out, x, attrs, labels, model, step)["total"]
        loss.backward()
        opt.step()
        return float(loss)

    times, first = [], None
    for step in range(args.warmup + args.steps):
        sync()
        t0 = time.perf_counter()
        train_step(step)
        sync()
        dt = time.perf_counter() - t0
        if step == 0:
            first = dt
        if step >= args.warmup:
            times.append(dt)
    step_s = statistics.median(times)
    result = {
        "path": args.worker,
        "device": fastpath.describe_device(device),
        "bf16": use_bf16,
        "channels_last": channels_last,
        "compile": compile_,
        "step_s_median": step_s,
        "step_s_all": times,
        "first_step_s": first,
        "vol_per_s": args.batch / step_s,
        "peak_rss_mb": _rss_mb(),
        "loss": loss_terms["total"],
        "loss_terms": loss_terms,
    }
    if cuda:
        result["cuda_max_memory_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    if args.flops and args.worker == "fast":
        result.update(_flops(model, loss_fn, x, attrs, labels, device, use_bf16, step_s, args.batch))
    return result


def _flops(model, loss_fn, x, attrs, labels, device, use_bf16, step_s, batch) -> dict:
    """FLOPs of one training step (forward + backward), counted on 2 samples and scaled."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from AttriVAELib.nn import fastpath

    n = min(2, batch)
    counter = FlopCounterMode(display=False)
    with counter:
        with fastpath.autocast_context(device, use_bf16):
            out = model(x[:n])
        loss_fn(out, x[:n], attrs[:n], labels[:n], model)["total"].backward()
    model.zero_grad(set_to_none=True)
    flops = counter.get_total_flops() * batch / n
    info = {"train_step_gflop": flops / 1e9, "achieved_tflops": flops / step_s / 1e12}
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in GPU_BF16_PEAK.items() if k in name), None)
        if peak:
            info["bf16_peak_tflops"] = peak / 1e12
            info["peak_share"] = flops / step_s / peak
    return info


def _run_path(name: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--size", str(args.size), "--batch", str(args.batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device,
           "--threads", str(args.threads)]
    if args.flops:
        cmd.append("--flops")
    print(f"running {name} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"path {name} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--steps", type=int, default=5, help="timed steps per path (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--size", type=int, default=80)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--compile", action="store_true", help="also time fast path + torch.compile")
    p.add_argument("--ablation", action="store_true", help="also time fp32 channels_last and bf16 NCDHW")
    p.add_argument("--no-flops", dest="flops", action="store_false", help="skip the FLOP count")
    p.add_argument("--flops", dest="flops", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker", choices=list(PATHS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    names = ["published", "fast"] + (["compiled"] if args.compile else [])
    names += ["fp32_channels_last", "bf16_ncdhw"] if args.ablation else []
    t0 = time.perf_counter()
    results = {name: _run_path(name, args) for name in names}
    pub, fast = results["published"], results["fast"]
    speedup = fast["vol_per_s"] / pub["vol_per_s"]
    loss_abs_diff = abs(fast["loss"] - pub["loss"])

    print(f"\nTraining step, {args.size}³ batch {args.batch}, published architecture, all loss terms "
          f"(median of {args.steps} steps after {args.warmup} warm-up)\n")
    print(f"device: {fast['device']}\n")
    print("| path | step (s) | throughput (vol/s) | vs published | peak RSS (MB) | loss (fwd, same batch) |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {LABELS[name]} | {r['step_s_median']:.2f} | {r['vol_per_s']:.2f} | "
              f"{r['vol_per_s'] / pub['vol_per_s']:.2f}× | {r['peak_rss_mb']:.0f} | {r['loss']:.2f} |")
    print(f"\nloss |fast − published| = {loss_abs_diff:.4g} (relative {loss_abs_diff / abs(pub['loss']):.2e})")
    if "compiled" in results:
        print(f"torch.compile first step (compilation included): {results['compiled']['first_step_s']:.0f} s")
    if "train_step_gflop" in fast:
        line = (f"one training step ≈ {fast['train_step_gflop']:.3g} GFLOP; fast path achieves "
                f"{fast['achieved_tflops'] * 1e3:.0f} GFLOP/s")
        if "peak_share" in fast:
            line += f" = {fast['peak_share']:.1%} of the {fast['bf16_peak_tflops']:.0f} TFLOP/s bf16 peak"
        print(line)
    if "cuda_max_memory_allocated_mb" in fast:
        print(f"GPU max memory allocated: published {pub['cuda_max_memory_allocated_mb']:.0f} MB, "
              f"fast {fast['cuda_max_memory_allocated_mb']:.0f} MB")
    print(f"total benchmark time {time.perf_counter() - t0:.0f} s")

    if args.json:
        payload = {
            "published_vol_per_s": pub["vol_per_s"],
            "fast_vol_per_s": fast["vol_per_s"],
            "speedup": speedup,
            "loss_abs_diff": loss_abs_diff,
            "loss_published": pub["loss"],
            "loss_fast": fast["loss"],
            "device": fast["device"],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results.values()),
            "size": args.size,
            "batch": args.batch,
            "steps": args.steps,
            "warmup": args.warmup,
            "paths": results,
        }
        for key in ("train_step_gflop", "achieved_tflops", "peak_share"):
            if key in fast:
                payload[key] = fast[key]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
