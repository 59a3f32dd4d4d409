"""Long work off the GUI thread (AttriVAELib.slicer.tasks) on a real MRML scene (slicer-core).

The main thread of these tests plays the GUI: it calls ``process_pending()`` every 5 ms, as the
module's QTimer does, and records the longest gap between two of its turns, i.e. how long the
GUI would have been frozen. The shipped demo model does the work (a real torch model).

Responsiveness on a loaded 2-core machine: a real block (work or an MRML write on the main
thread, a garbage collection in the worker) repeats on every run, while a scheduling hiccup
of the machine does not, so each measurement gets three tries and the best one must meet the
budget. The 256³ figures are measured by ``benchmarks/slicer_responsiveness.py``.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")

from AttriVAELib.core.errors import ConfigError, InputError  # noqa: E402
from AttriVAELib.data.io import Geometry, Volume  # noqa: E402
from AttriVAELib.data.preprocessing import to_source_grid  # noqa: E402
from AttriVAELib.slicer import gridding, mrml  # noqa: E402
from AttriVAELib.slicer.session import AttriVAESession  # noqa: E402
from AttriVAELib.slicer.tasks import Task, TaskCancelled, TaskRunner  # noqa: E402

#: The budget of the issue: the main thread is never blocked for longer than this.
MAX_GAP_S = 0.100
#: Cancel must stop the work within this.
MAX_CANCEL_S = 1.0
#: Input size of the responsiveness tests (the budget holds at 256³ too; see the benchmark).
SIZE = 128


def oblique_geometry(n: int) -> Geometry:
    c, s = np.cos(np.radians(20.0)), np.sin(np.radians(20.0))
    direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return Geometry(size=(n, n, n - 8), spacing=(1.1, 1.0, 1.4), origin=(-60.0, 20.0, 5.0),
                    direction=tuple(float(v) for v in direction.ravel()))


@pytest.fixture(scope="module")
def demo_session():
    scene = slicer.vtkMRMLScene()
    session = AttriVAESession(scene)
    session.load_model("demo", "cpu")
    geometry = oblique_geometry(SIZE)
    rng = np.random.default_rng(0)
    image = (rng.random(geometry.shape, dtype=np.float32) * 1000.0)
    node = mrml.update_volume_node(scene, Volume(image, geometry), "input", role="input")
    return session, node


def drive(runner: TaskRunner, task: Task, *, cancel_after: int | None = None, tick: float = 0.005):
    """Poll like the GUI timer; return (longest gap s, progress fractions, seconds from cancel to stop)."""
    fractions: list[float] = []
    task.on_progress = lambda t: fractions.append(t.fraction)
    runner.start(task)
    last = time.perf_counter()
    worst = 0.0
    cancelled_at = None
    while runner.busy:
        runner.process_pending()
        if cancel_after is not None and cancelled_at is None and len(fractions) >= cancel_after:
            cancelled_at = time.perf_counter()
            task.cancel()
            assert task.state == "cancelled"  # at once, for the GUI
        time.sleep(tick)
        now = time.perf_counter()
        worst, last = max(worst, now - last), now
    stopped = None if cancelled_at is None else time.perf_counter() - cancelled_at
    return worst, fractions, stopped


def best_of_three(run) -> tuple[float, list[float]]:
    best = (float("inf"), [])
    for _ in range(3):
        worst, fractions, _ = run()
        best = min(best, (worst, fractions), key=lambda item: item[0])
        if best[0] <= MAX_GAP_S:
            break
    return best


# ---------------------------------------------------------------------------------- the task machinery


def test_progress_and_apply_steps_run_on_the_polling_thread():
    main = threading.get_ident()
    seen: list[tuple[str, int]] = []

    def work(task):
        seen.append(("work", threading.get_ident()))
        for i in range(3):
            task.report(i / 3, f"step {i}")
        return 21

    def apply(value):
        seen.append(("apply 1", threading.get_ident()))
        yield
        seen.append(("apply 2", threading.get_ident()))
        return value * 2

    task = Task("demo", work, apply)
    progress = []
    task.on_progress = lambda t: progress.append((threading.get_ident(), t.fraction, t.message))
    finished = []
    task.on_finished = lambda t: finished.append(t.state)
    TaskRunner().start(task).wait(10)
    assert task.result() == 42 and finished == ["done"]
    assert seen[0][0] == "work" and seen[0][1] != main
    assert [tid for name, tid in seen[1:]] == [main, main]
    assert progress and all(tid == main for tid, _, _ in progress) and progress[-1][1:] == (2 / 3, "step 2")


def test_errors_and_cancellation_end_the_task():
    def failing(task):
        raise InputError("volume 'x' has 3 NaN or infinite voxels")

    task = TaskRunner().start(Task("bad", failing)).wait(10)
    assert task.state == "failed" and "NaN" in str(task.error) and "\n" not in str(task.error)
    with pytest.raises(InputError):
        task.result()

    release = threading.Event()

    def slow(task):
        while True:
            task.check()
            release.wait(0.01)

    runner = TaskRunner()
    task = runner.start(Task("slow", slow, lambda _: pytest.fail("a cancelled task must not be applied")))
    with pytest.raises(ConfigError):
        runner.start(Task("second", lambda t: None))  # one at a time
    start = time.perf_counter()
    task.cancel()
    while runner.busy:
        runner.process_pending()
        time.sleep(0.005)
    assert time.perf_counter() - start < MAX_CANCEL_S
    assert task.state == "cancelled" and not task.worker_alive
    with pytest.raises(TaskCancelled):
        task.result()
    assert Task("here", lambda t: 3, lambda v: v + 1).run_here() == 4


def test_slab_resampling_equals_the_whole_grid():
    geometry = oblique_geometry(40)
    from AttriVAELib.data.preprocessing import GridMapping

    model_grid = Geometry(size=(16, 16, 16), spacing=(3.0, 3.0, 3.0), origin=(-55.0, 22.0, 8.0),
                          direction=geometry.direction)
    mapping = GridMapping(source=geometry, model=model_grid, intensity_range=(-100.0, 900.0))
    array = np.random.default_rng(1).random((16, 16, 16), dtype=np.float32)
    whole = to_source_grid(array, mapping, "linear", rescale=True)
    checks = []
    slabs = gridding.to_input_grid(array, mapping, rescale=True, slab_voxels=40 * 40 * 3,
                                   check=lambda: checks.append(1))
    assert slabs.geometry == whole.geometry and len(checks) == 11
    np.testing.assert_array_equal(slabs.array, whole.array)


# ---------------------------------------------------------------------------------- responsiveness on a real scene


def test_encode_and_attention_keep_the_main_thread_free(demo_session):
    session, node = demo_session
    reference = AttriVAESession(session.scene)
    reference.model, reference.model_location = session.model, session.model_location

    worst, fractions = best_of_three(lambda: drive(session.tasks, session.encode_task(node)))
    assert worst <= MAX_GAP_S, f"the main thread was blocked for {1000 * worst:.0f} ms during encode"
    assert len(fractions) >= 3 and fractions == sorted(fractions)
    assert session.has_encoding and session.tasks.task.value["dims"]
    recon = mrml.volume_from_node(session.reconstruction_node).array

    worst, fractions = best_of_three(lambda: drive(session.tasks, session.attention_task()))
    assert worst <= MAX_GAP_S, f"the main thread was blocked for {1000 * worst:.0f} ms during attention"
    assert len(fractions) >= 3
    maps = session.tasks.task.value
    assert set(maps) == set(session.model.attribute_names) | {"classifier"}

    # the background result is the synchronous one
    reference.encode(node)
    np.testing.assert_allclose(recon, mrml.volume_from_node(reference.reconstruction_node).array, atol=1e-4)


def test_cancel_stops_within_a_second_and_changes_nothing(demo_session):
    session, node = demo_session
    session.encode(node)
    before = session.scene.GetNumberOfNodes()
    latent = session.latent.copy()
    for make in (lambda: session.encode_task(node), session.attention_task,
                 lambda: session.counterfactual_task("other_class"), lambda: session.traversal_task(0, -1.0, 1.0, 5),
                 lambda: session.latents_task({0: 1.5})):
        task = make()
        _, _, stopped = drive(session.tasks, task, cancel_after=1)
        assert task.state == "cancelled" and not task.worker_alive
        assert stopped < MAX_CANCEL_S, f"{task.name}: the worker ran {stopped:.2f} s after Cancel"
    assert session.scene.GetNumberOfNodes() == before
    np.testing.assert_array_equal(session.latent, latent)


def test_traversal_memory_is_estimated_first(demo_session):
    session, node = demo_session
    session.encode(node)
    geometry = mrml.geometry_from_node(node)
    full = gridding.traversal_grid(geometry, 5, memory_limit=1 << 40, max_frame_voxels=1 << 40)
    assert full.factor == 1 and full.bytes == 5 * int(np.prod(geometry.size)) * 4 and not full.note
    limit = full.bytes // 6
    plan = gridding.traversal_grid(geometry, 5, memory_limit=limit, max_frame_voxels=1 << 40)
    assert plan.factor >= 2 and plan.bytes <= limit and "coarser" in plan.note and "\n" not in plan.note
    session.pop_messages()
    sequence = session.traversal(0, -1.0, 1.0, 5, memory_limit=limit)
    assert sequence.GetNumberOfDataNodes() == 5
    frame = sequence.GetNthDataNode(0)
    assert frame.GetImageData().GetDimensions() == tuple(int(v) for v in plan.geometry.size)
    np.testing.assert_allclose(mrml.geometry_from_node(frame).spacing, plan.geometry.spacing)
    assert any("coarser" in m for m in session.pop_messages())
    # 512×512×300 CT, 9 frames: 2.8 GB on the input grid; bounded before anything is allocated
    ct = Geometry(size=(512, 512, 300), spacing=(0.7, 0.7, 1.0), origin=(0.0, 0.0, 0.0),
                  direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    big = gridding.traversal_grid(ct, 9)
    assert big.full_bytes > 2.5e9 and big.bytes <= gridding.DEFAULT_TRAVERSAL_MEMORY
