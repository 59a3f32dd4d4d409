"""How responsive the Slicer module's logic stays during long work, on a real MRML scene (slicer-core).

Loads the shipped demo model, puts a random float volume of SIZE³ voxels (default 256³) into a
bare ``slicer.vtkMRMLScene()``, and runs encode, attention (Grad-CAM), counterfactual and
traversal as background tasks (:mod:`AttriVAELib.slicer.tasks`). The main thread plays the GUI:
it calls ``process_pending()`` every 5 ms, as the module's QTimer does, and records the longest
gap between two of its turns (the time the GUI would have been frozen). Then it starts each
task again and cancels it after its second progress report (in the middle of the work), and measures how long until the task
is cancelled and until its worker thread has stopped.

    python benchmarks/slicer_responsiveness.py [--size 256 | --shape 512 512 300] [--threads 2]

Prints one line per task: wall time, longest main-thread gap, progress reports, and the cancel
latencies. The budget the issue sets: gap ≤ 100 ms, cancel ≤ 1 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def drive(task, runner, tick: float = 0.005, cancel_after_progress: bool = False):
    """Poll ``task`` like the GUI timer; return (wall s, longest gap s, progress reports, cancel s, worker-stop s)."""
    reports = []
    task.on_progress = lambda t: reports.append(t.fraction)
    start = last = time.perf_counter()
    worst = 0.0
    cancelled_at = cancel_done = worker_done = None
    runner.start(task)
    while runner.busy:
        before = time.perf_counter()
        runner.process_pending()
        step = time.perf_counter() - before
        if step > 0.05 and os.environ.get("ATTRIVAE_BENCH_DEBUG"):
            print(f"  main-thread step {1000 * step:.0f} ms in {task.name} ({task.state})")
        if cancel_after_progress and len(reports) >= 2 and cancelled_at is None:
            cancelled_at = time.perf_counter()
            task.cancel()
        if cancelled_at is not None and cancel_done is None and task.finished:
            cancel_done = time.perf_counter()
        time.sleep(tick)
        now = time.perf_counter()
        worst, last = max(worst, now - last), now
    end = time.perf_counter()
    if cancelled_at is not None:
        worker_done = end - cancelled_at
        cancel_done = (cancel_done or end) - cancelled_at
    return end - start, worst, len(reports), cancel_done, worker_done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--shape", type=int, nargs=3, metavar=("I", "J", "K"),
                        help="voxels per axis instead of SIZE³ (e.g. 512 512 300 for a CT)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()

    import slicer
    import torch

    from AttriVAELib.data.io import Geometry, Volume
    from AttriVAELib.slicer import mrml
    from AttriVAELib.slicer.session import AttriVAESession

    if args.threads:
        torch.set_num_threads(args.threads)
    size = tuple(args.shape) if args.shape else (args.size,) * 3
    scene = slicer.vtkMRMLScene()
    session = AttriVAESession(scene)
    session.load_model("demo", "cpu")
    rng = np.random.default_rng(0)
    geometry = Geometry(size=size, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                        direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    image = rng.random(geometry.shape, dtype=np.float32) * 1000.0
    node = mrml.update_volume_node(scene, Volume(image, geometry), "input", role="input")
    cpu = platform.processor() or platform.machine()
    print(f"{'×'.join(map(str, size))} float32 input, demo model on CPU ({cpu}, {os.cpu_count()} logical CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads)")
    makers = {
        "encode": lambda: session.encode_task(node),
        "attention": lambda: session.attention_task(),
        "counterfactual": lambda: session.counterfactual_task("other_class"),
        "traversal (9 frames)": lambda: session.traversal_task(0, -2.0, 2.0, 9),
    }
    worst_all = 0.0
    for name, make in makers.items():
        wall, worst, reports, _, _ = drive(make(), session.tasks)
        worst_all = max(worst_all, worst)
        _, _, _, cancel, stopped = drive(make(), session.tasks, cancel_after_progress=True)
        print(f"{name:22s} wall {wall:6.2f} s   longest main-thread gap {1000 * worst:5.0f} ms   "
              f"progress reports {reports:2d}   cancel {1000 * cancel:4.0f} ms, worker stopped after "
              f"{1000 * stopped:4.0f} ms")
    for message in session.pop_messages():
        print("note:", message)
    print(f"longest gap overall: {1000 * worst_all:.0f} ms (budget 100 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
