"""``attrivae view``: the AttriVAE session in a real browser (trame-slicer server, system Chromium, Playwright).

The first tests need no browser: which files the viewer may open (confinement), uploads and
their limit, the one-user rule, the command line. The others start ``attrivae view`` as a
subprocess on 127.0.0.1 and a free port, on a folder with phantom volumes written here, and
drive the page as a user does: encode with the shipped demo model, move a slider, attention
maps, a traversal, a counterfactual, bad uploads, a path outside the folders, two tabs.
Pixels are read from the frames the page shows (the server's rendered JPEG slices).

Without Chromium or EGL the browser tests are skipped locally and fail in CI (``CI=true``).
``ATTRIVAE_UPDATE_SCREENSHOTS=1`` writes the page screenshots to ``Resources/Screenshots/web_*.png``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from AttriVAELib.core.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import web_helpers as web  # noqa: E402

#: Grey levels a pixel must differ by to count as changed (JPEG noise stays below it).
CHANGED = 12
#: Channel spread (max − min of R, G, B) above which a pixel is coloured, not grey.
COLOURED = 40


# ---------------------------------------------------------------------------------- data
def write_phantom(folder: Path, index: int, size: int = 48) -> Path:
    from AttriVAELib.cohorts.phantom.generator import geometry_for_size, render_subject, to_stored_intensity
    from AttriVAELib.data.io import Volume, write_image

    _, image, wall, _ = render_subject(index, size, seed=3)
    geometry = geometry_for_size(size)
    write_image(Volume(wall.astype(np.uint8), geometry), folder / f"phantom{index}_mask.nii.gz")
    return write_image(Volume(to_stored_intensity(image), geometry), folder / f"phantom{index}.nii.gz")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """``data/`` with two phantoms (the viewer's only folder) and ``secret.nii.gz`` next to it."""
    base = tmp_path_factory.mktemp("web")
    folder = base / "data"
    folder.mkdir()
    write_phantom(folder, 1)
    write_phantom(folder, 2)
    write_phantom(base, 5).rename(base / "secret.nii.gz")
    return folder


# ---------------------------------------------------------------------------------- without a browser
def test_file_roots_offer_only_what_the_command_line_names(tmp_path: Path):
    from AttriVAELib.web.files import FileRoots

    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.nii.gz").write_bytes(b"x")
    (root / "sub" / "b.nrrd").write_bytes(b"x")
    (root / "notes.txt").write_text("x")
    outside = tmp_path / "outside.nii.gz"
    outside.write_bytes(b"x")
    (root / "link.nii.gz").symlink_to(outside)
    single = tmp_path / "single.mha"
    single.write_bytes(b"x")

    roots = FileRoots([root, single])
    listed, cut = roots.list_files()
    assert not cut
    titles = {f.title for f in listed}
    assert titles == {"root/a.nii.gz", "root/sub/b.nrrd", "single.mha"}  # no text file, no link out
    for item in listed:
        assert roots.resolve(item.key) == item.path.resolve()
    for bad in ("0:../outside.nii.gz", f"0:{outside}", "0:link.nii.gz", "0:sub/../../outside.nii.gz", "7:a.nii.gz",
                "0:", "a.nii.gz", "1:other.mha", "0:notes.txt", "0:missing.nii.gz"):
        with pytest.raises(InputError) as excinfo:
            roots.resolve(bad)
        assert "\n" not in str(excinfo.value)
    with pytest.raises(InputError, match="outside the folders"):
        roots.resolve("0:link.nii.gz")
    with pytest.raises(InputError, match="no such file or folder"):
        FileRoots([tmp_path / "nope"])
    with pytest.raises(InputError, match="not a volume file"):
        FileRoots([root / "notes.txt"])


def test_uploads_are_limited_and_kept_apart(tmp_path: Path):
    from AttriVAELib.web.files import UploadStore

    store = UploadStore(max_bytes=1000)
    try:
        path = store.save("../../evil name.nii.gz", b"\x00" * 10)
        assert path.parent == store.folder and path.name.endswith("evil_name.nii.gz")
        with pytest.raises(InputError, match="over the upload limit of"):
            store.save("big.nii.gz", b"\x00" * 1001)
        with pytest.raises(InputError, match="not a volume file"):
            store.save("notes.txt", b"hello")
        with pytest.raises(InputError, match="needs its data file"):
            store.save("header.nhdr", b"NRRD0004")
        with pytest.raises(InputError, match="empty"):
            store.save("empty.nii", b"")
    finally:
        store.close()
    assert not store.folder.exists()


def test_a_4d_file_is_named_as_such(tmp_path: Path):
    import nibabel as nib

    from AttriVAELib.web.files import check_volume_file

    path = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 6, 3), np.float32), np.eye(4)), str(path))
    with pytest.raises(InputError, match=r"four\.nii\.gz: image is 4D"):
        check_volume_file(path, "four.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 6, 1), np.float32), np.eye(4)), str(path))
    check_volume_file(path)  # a trailing time axis of 1 is a 3D volume


def test_one_tab_drives_the_viewer():
    from AttriVAELib.web.state import TabOwner

    owner = TabOwner()
    assert owner.claim("a", 1) and not owner.claim("b", 2) and owner.is_owner("a")
    assert not owner.disconnected(2)  # another tab closed: "a" keeps the viewer
    assert owner.is_owner("a") and not owner.claim("b", 2)
    assert owner.disconnected(1) and owner.owner is None  # the owner's tab closed
    assert owner.claim("b", 2) and owner.is_owner("b")  # the first open tab to ask gets it
    owner.take_over("c", 3)
    assert owner.is_owner("c") and not owner.is_owner("b") and not owner.is_owner(None)


def test_web_package_imports_without_trame_torch_or_slicer():
    """Only the page (layout) imports trame at module level; the rest imports it when the viewer starts."""
    code = ("import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'slicer', 'vtk', 'vtkmodules', 'qt', 'trame', 'trame_slicer',"
            " 'trame_client', 'trame_server', 'trame_vuetify', 'wslink'):\n"
            "            raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import AttriVAELib.web, AttriVAELib.web.app, AttriVAELib.web.controller, AttriVAELib.web.files\n"
            "import AttriVAELib.web.server, AttriVAELib.web.state, AttriVAELib.cli.view\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", errors="replace",
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_session_outputs_the_viewer_reads(data_dir: Path):
    """The session's ``output_node``, ``traversal_frames`` and ``show_traversal_frame`` on a bare MRML scene."""
    slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel")
    from vtk.util import numpy_support

    from AttriVAELib.core.errors import ConfigError
    from AttriVAELib.slicer import mrml
    from AttriVAELib.slicer.session import AttriVAESession

    def voxels(node):
        image = node.GetImageData()
        return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).copy()

    session = AttriVAESession(slicer.vtkMRMLScene())
    session.load_model("demo", "cpu")
    session.encode(mrml.load_volume_node(session.scene, data_dir / "phantom1.nii.gz"))
    assert session.output_node("reconstruction") is session.reconstruction_node
    assert session.output_node("counterfactual") is None and session.traversal_frames() == []
    with pytest.raises(ConfigError, match="no traversal yet"):
        session.show_traversal_frame(0)
    with pytest.raises(ConfigError, match="unknown output role"):
        session.output_node("input")
    session.traversal(0, -2.0, 2.0, 3, units="latent")
    assert session.traversal_frames() == ["-2 latent", "0 latent", "2 latent"]
    first = voxels(session.show_traversal_frame(0))
    last = voxels(session.show_traversal_frame(2))
    assert first.shape == last.shape and np.abs(first - last).max() > 0
    with pytest.raises(ConfigError, match="outside 0..2"):
        session.show_traversal_frame(3)
    difference = session.counterfactual("other_class")
    assert session.output_node("difference") is difference
    assert session.output_node("counterfactual") is not None


def _run_cli(*args: str, code: str = "") -> subprocess.CompletedProcess:
    script = code + "\nimport sys\nfrom AttriVAELib.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, encoding="utf-8",
                          errors="replace", cwd=ROOT, timeout=300)


def test_view_command_line(tmp_path: Path):
    from AttriVAELib.web.server import host_warning

    result = _run_cli("--help")
    assert result.returncode == 0 and "view" in result.stdout
    result = _run_cli("view", str(tmp_path / "missing"))
    assert result.returncode == 2
    missing = tmp_path / "missing"
    assert result.stderr.strip().splitlines() == [f"attrivae view: error: {missing}: no such file or folder"]
    result = _run_cli("view", "--model", str(tmp_path / "no_run"), str(tmp_path))
    assert result.returncode == 2 and "no such run folder or model file" in result.stderr
    block = ("import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
             "        if name.split('.')[0].startswith('trame'):\n            raise ImportError(name)\n"
             "sys.meta_path.insert(0, Block())\n")
    result = _run_cli("view", str(tmp_path), code=block)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "attrivae view: error: the web viewer needs trame, trame_slicer, trame_vuetify: "
        "install with pip install 'attrivae[web]'"]
    assert host_warning("127.0.0.1") is None and host_warning("localhost") is None
    assert "anyone who can reach this machine" in host_warning("0.0.0.0", 8080)


# ---------------------------------------------------------------------------------- in the browser
@pytest.fixture(scope="module")
def browser_parts() -> None:
    missing = web.missing_browser_parts()
    if missing:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"the web viewer's browser tests need {missing} (scripts/setup_env.sh installs them)")
        pytest.skip(f"needs {missing}")


@pytest.fixture(scope="module")
def viewer(browser_parts, data_dir: Path):
    with web.Viewer([data_dir], env={"CUDA_VISIBLE_DEVICES": ""}) as running:
        yield running
    assert not running.alive


@pytest.fixture(scope="module")
def browser(browser_parts):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = web.launch_browser(playwright)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(viewer, browser):
    tab = web.open_page(browser, viewer.url)
    web.wait_model(tab)
    yield tab
    web.close_page(tab)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    if os.environ.get("ATTRIVAE_UPDATE_SCREENSHOTS") == "1":
        return ROOT / "Resources" / "Screenshots"
    return tmp_path_factory.mktemp("screenshots")


def ensure_encoded(page, image: str = "phantom1.nii.gz") -> None:
    if page.locator("#summary").count() == 0 or image.split(".")[0] not in page.inner_text("#input-label"):
        web.encode(page, image)


def coloured(pixels: np.ndarray) -> np.ndarray:
    return (pixels.max(-1) - pixels.min(-1)) > COLOURED


def test_encode_and_a_slider_change_the_shell(page, shots: Path):
    from scipy import ndimage

    web.encode(page, "phantom1.nii.gz")
    summary = page.inner_text("#summary")
    assert "Predicted class:" in summary and " mL" in summary and " mm" in summary
    labels = page.locator(".latent-slider .slider-label").all_inner_texts()
    assert len(labels) == 4 and labels[0].startswith("volume_ml (mL): ")

    picture = web.settled_pixels(page, "Input")
    before = web.settled_pixels(page, "Output")
    assert picture.shape == before.shape and not coloured(picture).any()
    count = web.decode_count(page)
    web.click_slider(page, 0, 0.97)
    page.wait_for_function(f"Number(document.querySelector('#decode-count').textContent) > {count}",
                           timeout=60000)
    after = web.settled_pixels(page, "Output")
    assert page.locator(".latent-slider .slider-label").first.inner_text() != labels[0]

    grey = picture.mean(-1)
    shell = ndimage.binary_dilation(grey > np.percentile(grey, 85), iterations=6)  # the phantom and its wall
    change = np.abs(after - before).max(-1)
    assert (change > CHANGED).sum() > 50, "the reconstruction did not change"
    assert change[shell].mean() > 2 * change[~shell].mean(), "the change is not where the shell is"
    page.screenshot(path=str(shots / "web_slider.png"))

    page.click("#reset-btn")
    page.wait_for_function(f"Number(document.querySelector('#decode-count').textContent) > {count + 1}",
                           timeout=60000)
    assert page.locator(".latent-slider .slider-label").first.inner_text() == labels[0]

    # Both rows show the same slice: moving the input's axial slice moves the output's.
    middle = page.evaluate("window.trame.state.get('InputAxial__SliderState__value')")
    for value in (middle - 6, middle):
        page.evaluate(f"window.trame.state.set('InputAxial__SliderState__value', {value})")
        page.wait_for_function(f"Math.abs(window.trame.state.get('OutputAxial__SliderState__value') - {value}) < 1e-3",
                               timeout=15000)


def test_attention_map_colours_the_image(page, shots: Path):
    ensure_encoded(page)
    page.locator("#overlay-select").wait_for(state="attached")
    web.choose(page, "overlay-select", "none")
    plain = web.settled_pixels(page, "Input")
    assert not coloured(plain).any()
    page.click("#attention-btn")
    web.wait_idle(page)
    names = page.evaluate("window.trame.state.get('heatmap_names')")
    assert names[:4] == ["volume_ml", "max_axial_diameter_mm", "wall_thickness_mm", "lesion_volume_ml"]
    web.choose(page, "heatmap-select", "wall_thickness_mm")
    page.screenshot(path=str(shots / "web_attention.png"))
    # A colour table without a dark end and no threshold: every voxel of the map is coloured.
    web.choose(page, "colormap-select", "ColdToHotRainbow")
    box = page.locator("#threshold-slider").locator("xpath=ancestor::div[contains(@class,'v-slider')]").first
    track = box.locator(".v-slider-track").bounding_box()
    page.mouse.click(track["x"] + 1, track["y"] + track["height"] / 2)
    page.wait_for_function("window.trame.state.get('heatmap_threshold') === 0", timeout=10000)
    shown = web.settled_pixels(page, "Input")
    assert coloured(shown).mean() > 0.3, "the attention map's colours are not over the image"
    web.choose(page, "overlay-select", "none")
    assert not coloured(web.settled_pixels(page, "Input")).any()


def test_traversal_plays_frames(page, shots: Path):
    ensure_encoded(page)
    page.click("#traversal-btn")
    web.wait_idle(page)
    page.wait_for_selector("#play-btn", timeout=60000)
    labels = page.evaluate("window.trame.state.get('traversal_labels')")
    assert len(labels) == 7 and len(set(labels)) == 7
    first = web.settled_pixels(page, "Output")
    label = page.inner_text("#frame-label")
    page.click("#play-btn")
    seen = [label]
    for _ in range(2):
        page.wait_for_function(f"document.querySelector('#frame-label').innerText !== {seen[-1]!r}", timeout=15000)
        seen.append(page.inner_text("#frame-label"))
    page.click("#play-btn")
    assert len(set(seen)) == 3 and all(text in labels for text in seen)
    # Paused on a later frame: once the stream has caught up, the view shows it, not the first.
    assert page.inner_text("#frame-label") != label
    assert np.abs(web.settled_pixels(page, "Output") - first).max() > CHANGED, "the frames look the same"
    page.screenshot(path=str(shots / "web_traversal.png"))


def test_counterfactual_overlays_its_difference(page, shots: Path):
    ensure_encoded(page)
    page.click("#counterfactual-btn")
    web.wait_idle(page)
    page.wait_for_function("window.trame.state.get('cf_lines').length > 0", timeout=30000)
    assert page.evaluate("window.trame.state.get('cf_lines')")[0].startswith("Moved: ")
    assert page.evaluate("window.trame.state.get('overlay')") == "difference"
    assert page.evaluate("window.trame.state.get('output_mode')") == "counterfactual"
    assert coloured(web.settled_pixels(page, "Input")).mean() > 0.3  # a signed map: colour wherever it is
    page.screenshot(path=str(shots / "web_counterfactual.png"))


def test_bad_files_get_a_message_and_the_server_keeps_serving(page, viewer, data_dir: Path, tmp_path: Path):
    import nibabel as nib

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a NIfTI file at all")
    four = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.float32), np.eye(4)), str(four))
    expected = {notes: "notes.txt': not a volume file", broken: "broken.nii.gz: cannot read image",
                four: "four.nii.gz: image is 4D"}
    for path, text in expected.items():
        page.set_input_files("#upload-image", str(path))
        page.wait_for_function("(t) => document.querySelector('#messages').innerText.includes(t)", arg=text,
                               timeout=30000)
        assert viewer.alive
    errors = page.locator("#messages [data-kind='error']").all_inner_texts()
    assert any("image is 4D (size (8, 8, 8, 3)); expected a 3D volume" in e for e in errors)
    assert not any(str(tmp_path) in e for e in errors)  # named as uploaded, not by the server's copy

    # A path outside the command line's folders, sent as if the page offered it, is refused.
    page.evaluate("window.trame.state.set('image_key', '0:../secret.nii.gz')")
    page.wait_for_function("document.querySelector('#messages').innerText.includes('outside the folders')",
                           timeout=30000)
    assert "secret" not in page.inner_text("#input-label")

    # A good upload still works, and so does encoding it.
    page.set_input_files("#upload-image", str(data_dir / "phantom2.nii.gz"))
    page.wait_for_function("document.querySelector('#messages').innerText.includes('uploaded phantom2.nii.gz')",
                           timeout=30000)
    page.click("#encode-btn")
    page.wait_for_function("document.querySelector('#messages').innerText.includes('encoded ')", timeout=120000)
    web.wait_idle(page)
    assert "phantom2" in page.inner_text("#input-label")


def test_a_second_tab_is_told_the_viewer_is_single_user(page, browser, shots: Path):
    ensure_encoded(page)
    second = web.open_page(browser, page.url, owner=False)
    try:
        assert "single-user" in second.inner_text("#single-user")
        assert second.locator("#tools").count() == 0
        assert page.locator("#tools").count() == 1
        second.screenshot(path=str(shots / "web_single_user.png"))
        # Its triggers do nothing (the server checks who sends them).
        count = web.decode_count(page)
        second.evaluate("window.trame.trigger('reset', [window.trame.state.get('tab_id')])")
        page.wait_for_timeout(1500)
        assert web.decode_count(page) == count
        second.click("#take-over")
        second.wait_for_selector("#tools", timeout=15000)
        page.wait_for_selector("#single-user", timeout=15000)
    finally:
        web.close_page(second)
    page.wait_for_selector("#tools", timeout=20000)  # the closed tab let the viewer go back
