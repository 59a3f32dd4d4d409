"""Two processes, one run folder; killed writers: their workers and temporaries."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostile_helpers import TINY_CONFIG, leftovers, run


def _train(data: Path, out: Path, config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "AttriVAELib.cli", "train", "--data", str(data), "--out", str(out),
                             "--config", str(config), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_two_trainings_into_one_folder_never_both_succeed(tiny_cohort: Path, tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG.replace("epochs: 1", "epochs: 3"))
    out = tmp_path / "run"
    first = _train(tiny_cohort, out, config)  # both start together: neither has written anything yet
    second = _train(tiny_cohort, out, config)
    results = [(p.wait(timeout=600), *p.communicate()) for p in (first, second)]
    codes = [r[0] for r in results]
    assert sorted(codes) == [0, 2], [r[2] for r in results]
    loser = results[codes.index(2)][2].strip().splitlines()
    assert "Traceback" not in "\n".join(loser)
    assert "another attrivae train" in loser[-1] or "holds a run already" in loser[-1], loser
    assert (out / "model.safetensors").is_file() and not leftovers(out)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(c) for c in fh.read().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
                    reason="needs /proc/PID/task/PID/children to find the worker processes")
def test_killed_synth_takes_its_workers_and_a_rerun_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    proc = subprocess.Popen([sys.executable, "-m", "AttriVAELib.cli", "synth", "--out", str(out), "--n", "400",
                             "--size", "64", "--workers", "2", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    workers: list[int] = []
    while time.time() < deadline and proc.poll() is None:
        workers = _children(proc.pid)
        if len(workers) >= 2 and any(p.name.startswith(".tmp-cohort") for p in tmp_path.iterdir()):
            break
        time.sleep(0.05)
    assert len(workers) >= 2, "synth did not start its workers"
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "workers outlived their killed parent"
    assert not out.exists() and leftovers(tmp_path), "nothing to clean up: the kill came too late"
    result = run("synth", "--out", str(out), "--n", "2", "--size", "24", "--workers", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    assert not leftovers(tmp_path)
