"""The Slicer module file AttriVAE/AttriVAE.py and its Qt Designer file, checked without Slicer.

The module cannot run outside the Slicer application (qt, ctk, ScriptedLoadableModule and
parameterNodeWrapper are Slicer's), so this checks what would otherwise only fail at run time:
the .ui is valid and holds every widget the code uses, the widgets bound to the parameter node
can represent their fields, the choices mirror AttriVAELib, and the module stays importable
before AttriVAELib's dependencies are installed. It also imports the module with small
stand-ins for the Slicer-only packages and runs its logic class against a real MRML scene.
"""

from __future__ import annotations

import ast
import py_compile
import re
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "AttriVAE" / "AttriVAE.py"
UI = ROOT / "AttriVAE" / "Resources" / "UI" / "AttriVAE.ui"
SOURCE = MODULE.read_text(encoding="utf-8")
TREE = ast.parse(SOURCE)

# What a module-level import may name: the standard library pieces used and Slicer's bundled packages.
ALLOWED_TOP_LEVEL_IMPORTS = {"contextlib", "logging", "os", "pathlib", "shutil", "sys", "traceback", "typing",
                             "unittest", "ctk", "qt", "vtk", "slicer"}
# Widget class ↔ field type that parameterNodeWrapper's GUI connectors can bind (Slicer 5.4+).
BINDABLE = {
    "QCheckBox": {"bool"},
    "QComboBox": {"str-choice"},
    "QSpinBox": {"int"},
    "QDoubleSpinBox": {"float", "float-range"},
    "ctkSliderWidget": {"float-range"},
    "ctkPathLineEdit": {"path"},
    "qMRMLNodeComboBox": {"node"},
}


def classes() -> dict[str, ast.ClassDef]:
    return {node.name: node for node in TREE.body if isinstance(node, ast.ClassDef)}


def ui_widgets() -> dict[str, str]:
    """name → class of every widget in the .ui file."""
    root = ET.parse(UI).getroot()
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


def ui_parameter_bindings() -> dict[str, tuple[str, str]]:
    """SlicerParameterName → (widget name, widget class)."""
    out = {}
    for w in ET.parse(UI).getroot().iter("widget"):
        for p in w.findall("property"):
            if p.get("name") == "SlicerParameterName":
                assert p.get("stdset") == "0", f"{w.get('name')}: SlicerParameterName must be a dynamic property"
                name = p.find("string").text
                assert name not in out, f"parameter {name} bound twice"
                out[name] = (w.get("name"), w.get("class"))
    return out


def parameter_fields() -> dict[str, str]:
    """Field name → kind (bool, int, float, float-range, str-choice, path, node) of the parameter node."""
    cls = classes()["AttriVAEParameterNode"]
    fields = {}
    for stmt in cls.body:
        if not isinstance(stmt, ast.AnnAssign):
            continue
        text = ast.unparse(stmt.annotation)
        if text.startswith("Annotated[str") and "Choice(" in text:
            kind = "str-choice"
        elif text.startswith("Annotated[float") and "WithinRange(" in text:
            kind = "float-range"
        elif text.startswith("Annotated[int"):
            kind = "int"
        elif text == "pathlib.Path":
            kind = "path"
        elif "vtkMRML" in text:
            kind = "node"
        else:
            kind = text
        fields[stmt.target.id] = kind
    return fields


def module_constant(name: str):
    for node in TREE.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not defined at module level")


# ---------------------------------------------------------------------------------- module file


def test_module_compiles_and_lines_are_short(tmp_path):
    py_compile.compile(str(MODULE), cfile=str(tmp_path / "AttriVAE.pyc"), doraise=True)
    long_lines = [i for i, line in enumerate(SOURCE.splitlines(), 1) if len(line) >= 120]
    assert not long_lines, f"lines of 120 characters or more: {long_lines}"


def test_the_four_classes_and_their_bases():
    found = classes()
    bases = {name: [ast.unparse(b) for b in cls.bases] for name, cls in found.items()}
    assert bases["AttriVAE"] == ["ScriptedLoadableModule"]
    assert bases["AttriVAEWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert bases["AttriVAELogic"] == ["ScriptedLoadableModuleLogic"]
    assert bases["AttriVAETest"] == ["ScriptedLoadableModuleTest"]
    decorators = [ast.unparse(d) for d in found["AttriVAEParameterNode"].decorator_list]
    assert decorators == ["parameterNodeWrapper"]
    assert 'self.parent.categories = ["Explainable AI"]' in SOURCE
    for attribute in ("title", "contributors", "helpText", "acknowledgementText"):
        assert f"self.parent.{attribute} = " in SOURCE


def test_no_heavy_imports_at_module_level():
    """torch/AttriVAELib are imported inside methods, so Slicer discovers the module before they exist."""
    top = []
    for node in TREE.body:
        if isinstance(node, ast.Import):
            top += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            top.append(node.module)
    roots = {name.split(".")[0] for name in top}
    assert roots <= ALLOWED_TOP_LEVEL_IMPORTS, f"module-level imports of {roots - ALLOWED_TOP_LEVEL_IMPORTS}"
    assert "__future__" not in roots  # parameterNodeWrapper reads real annotations
    inner = [n for n in ast.walk(TREE) if isinstance(n, (ast.Import, ast.ImportFrom)) and n not in TREE.body]
    assert any(getattr(n, "module", "") and n.module.startswith("AttriVAELib") for n in inner)


def test_methods_are_camel_case():
    for name in ("AttriVAEWidget", "AttriVAELogic", "AttriVAETest"):
        for stmt in classes()[name].body:
            if isinstance(stmt, ast.FunctionDef) and not stmt.name.startswith("__"):
                assert re.fullmatch(r"_?[a-z][A-Za-z0-9]*(_[A-Za-z0-9]+)?", stmt.name) and (
                    "_" not in stmt.name.lstrip("_") or stmt.name.startswith("test_")), f"{name}.{stmt.name}"


# ---------------------------------------------------------------------------------- the session facade

#: Calls that return the session (``self.logic.getSession()``, the widget's ``self._session()``).
SESSION_GETTERS = {"getSession", "_session"}


def _is_session(expr: ast.AST) -> bool:
    """``session``, ``<anything>.session`` or a call of a session getter."""
    if isinstance(expr, ast.Name):
        return expr.id == "session"
    if isinstance(expr, ast.Attribute):
        return expr.attr == "session"
    return isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr in SESSION_GETTERS


def session_access_problems(source: str, public_api: set[str] | None = None) -> list[str]:
    """Places where ``source`` reaches into a session instead of using its public methods/properties.

    Flags ``session._x`` (a private name), ``session.a.b`` and ``session.a[i]`` (a chain deeper
    than ``session.<name>``), assignments to ``session.a``, and with ``public_api`` any name that
    is not one of its methods or properties (e.g. the raw fields ``model``, ``encoding``, ``latent``).
    Returns "line: code: why" strings; also the number of session accesses seen, as the last item.
    """
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    problems, seen = [], 0
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _is_session(node.value)):
            continue
        seen += 1
        parent = parents.get(node)
        why = []
        if node.attr.startswith("_"):
            why.append("private name")
        if isinstance(parent, (ast.Attribute, ast.Subscript)) and parent.value is node:
            why.append("reaches into a field (chain deeper than session.<name>)")
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            why.append("writes a session attribute")
        if public_api is not None and not node.attr.startswith("_") and node.attr not in public_api:
            why.append("not a public method or property of AttriVAESession")
        if why:
            code = ast.unparse(parent if isinstance(parent, (ast.Attribute, ast.Subscript)) else node)
            problems.append(f"{node.lineno}: {code}: {', '.join(why)}")
    return sorted(problems, key=lambda text: int(text.split(":")[0])) + [seen]


def session_public_api() -> set[str]:
    """Public methods and properties of AttriVAESession (not its instance fields)."""
    import inspect

    from AttriVAELib.slicer.session import AttriVAESession

    return {name for name in dir(AttriVAESession) if not name.startswith("_")
            and (callable(inspect.getattr_static(AttriVAESession, name))
                 or isinstance(inspect.getattr_static(AttriVAESession, name), property))}


def test_module_uses_only_the_public_session_api():
    """The widget, logic and test classes read the session through its public methods and read-only
    properties: no private names, no ``session.model.config`` or ``session.latent[0]``, no writes."""
    *problems, seen = session_access_problems(SOURCE, session_public_api())
    assert not problems, "AttriVAE.py reaches into the session:\n" + "\n".join(problems)
    assert seen >= 30  # the check sees the session accesses (self.logic.session, getSession(), ...)


def test_the_session_access_check_catches_each_kind_of_reach():
    bad = """
def f(self, session):
    session.model.config
    self.logic.session._class_stats
    self.logic.getSession().latent[0]
    session.fallback_to_cpu = True
    session.messages.clear()
    self._session().encoding
    widget.logic.session.has_encoding
    session.summary_lines()
"""
    *problems, seen = session_access_problems(bad, session_public_api())
    assert seen == 8
    assert [p.split(":")[0] for p in problems] == ["3", "4", "5", "6", "7", "8"], problems
    assert "private" in problems[1] and "chain deeper" in problems[2] and "writes" in problems[3]
    assert "not a public method" in problems[5]
    assert {"has_model", "has_encoding", "slider_specs", "summary_lines", "pop_messages"} <= session_public_api()
    assert not {"model", "encoding", "latent", "messages"} & session_public_api()


# ---------------------------------------------------------------------------------- .ui file


def test_ui_is_valid_designer_xml():
    root = ET.parse(UI).getroot()
    assert root.tag == "ui" and root.get("version") == "4.0"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == root.find("class").text == "AttriVAE"
    declared = {c.find("class").text for c in root.iter("customwidget")}
    used = {cls for cls in ui_widgets().values() if not cls.startswith("Q")}
    assert used <= declared, f"custom widgets used but not declared: {used - declared}"
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "duplicate widget names"
    for connection in root.iter("connection"):
        assert connection.find("receiver").text in names
    for section in ("model", "input", "latent", "attention", "traversal", "counterfactual", "train"):
        assert ui_widgets()[f"{section}CollapsibleButton"] == "ctkCollapsibleButton"


def test_every_ui_widget_used_in_code_exists():
    widgets = ui_widgets()
    used = set(re.findall(r"\bui\.([A-Za-z_]\w*)", SOURCE))
    missing = used - set(widgets)
    assert not missing, f"self.ui.<name> used in AttriVAE.py but not in AttriVAE.ui: {sorted(missing)}"
    assert {"trainProgressBar", "trainLogTextEdit", "trainButton", "regularizedSlidersFrame", "freeSlidersFrame",
            "opacitySliderWidget", "thresholdSliderWidget"} <= used
    # the node selectors are reached through their SlicerParameterName binding, not self.ui
    assert {"inputVolumeSelector", "maskSelector"} <= {w for w, _ in ui_parameter_bindings().values()}


def test_expected_widget_kinds():
    widgets = ui_widgets()
    assert widgets["inputVolumeSelector"] == widgets["maskSelector"] == "qMRMLNodeComboBox"
    assert widgets["modelPathLineEdit"] == widgets["manifestPathLineEdit"] == "ctkPathLineEdit"
    assert widgets["opacitySliderWidget"] == widgets["thresholdSliderWidget"] == "ctkSliderWidget"
    assert widgets["deviceComboBox"] == "QComboBox"
    assert widgets["trainProgressBar"] == "QProgressBar" and widgets["trainLogTextEdit"] == "QPlainTextEdit"
    assert widgets["freeDimsCollapsibleButton"] == "ctkCollapsibleButton"
    root = ET.parse(UI).getroot()
    for frame in ("regularizedSlidersFrame", "freeSlidersFrame"):
        node = next(w for w in root.iter("widget") if w.get("name") == frame)
        assert node.find("layout").get("class") == "QFormLayout"  # the code adds rows to it
    types_of = {}
    for w in root.iter("widget"):
        for p in w.findall("property"):
            if p.get("name") == "nodeTypes":
                types_of[w.get("name")] = [s.text for s in p.iter("string")]
    assert types_of["inputVolumeSelector"] == ["vtkMRMLScalarVolumeNode"]
    assert types_of["maskSelector"] == ["vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode"]


def test_parameter_names_match_the_parameter_node_and_can_be_bound():
    bindings = ui_parameter_bindings()
    fields = parameter_fields()
    paths = module_constant("PATH_WIDGETS")
    bound = set(fields) - set(paths)
    assert set(bindings) == bound, (f"bound but not fields: {set(bindings) - bound}; "
                                    f"fields without a widget: {bound - set(bindings)}")
    for name, (widget, cls) in bindings.items():
        assert fields[name] in BINDABLE[cls], f"{widget} ({cls}) cannot represent {name}: {fields[name]}"


def test_path_fields_are_strings_synchronised_by_the_widget():
    """A pathlib.Path field shows an unset path as "." in its ctkPathLineEdit: the three paths are
    str fields ("" when unset) that the widget keeps in step with its path widgets."""
    fields = parameter_fields()
    widgets = ui_widgets()
    for name, widget in module_constant("PATH_WIDGETS").items():
        assert fields[name] == "str", f"{name} must be a str field, not {fields[name]}"
        assert widgets[widget] == "ctkPathLineEdit" and widget not in {w for w, _ in ui_parameter_bindings().values()}
    assert 'currentPathChanged(QString)' in SOURCE and "_pathText(getattr(params, name))" in SOURCE
    assert not re.search(r"pathlib\.Path\(\s*\w*\.?(modelPath|trainOutput|trainManifest)", SOURCE)


def test_model_path_browse_picks_a_folder():
    """ctkPathLineEdit's Browse opens a file dialog whenever Files is in its filters; the model path
    browses for a run folder, and a separate button picks a model file."""
    root = ET.parse(UI).getroot()
    edit = next(w for w in root.iter("widget") if w.get("name") == "modelPathLineEdit")
    filters = next(p for p in edit.findall("property") if p.get("name") == "filters").find("set").text
    assert "ctkPathLineEdit::Dirs" in filters and "ctkPathLineEdit::Files" not in filters
    assert ui_widgets()["modelFileButton"] == "QToolButton" and "getOpenFileName" in SOURCE


def test_choices_mirror_the_engine():
    from AttriVAELib.nn.model import ENCODER_LAYER_NAMES
    from AttriVAELib.slicer import DEVICE_CHOICES, NODE_NAMES
    from AttriVAELib.slicer.mrml import BUILTIN_COLORMAPS, PARAMETER_PREFIX, PARAMETER_SINGLETON_TAG, ROLE_ATTRIBUTE
    from AttriVAELib.train.presets import PRESETS

    assert tuple(module_constant("DEVICE_CHOICES")) == DEVICE_CHOICES
    assert tuple(module_constant("LAYER_CHOICES")) == ("auto", *ENCODER_LAYER_NAMES)
    assert set(module_constant("PRESET_CHOICES")) == set(PRESETS)
    assert set(BUILTIN_COLORMAPS) <= set(module_constant("COLORMAP_CHOICES"))
    assert module_constant("COLORMAP_CHOICES")[0] == "Inferno"
    # names the module uses literally (it cannot import AttriVAELib at import time)
    assert ROLE_ATTRIBUTE and f'"{NODE_NAMES["traversal"]}"' in SOURCE
    assert f'GetSingletonNode("{PARAMETER_SINGLETON_TAG}"' in SOURCE and f'"{PARAMETER_PREFIX}latent"' in SOURCE
    assert module_constant("DECODE_DELAY_MS") == 150


# ---------------------------------------------------------------------------------- import with stand-ins


def _stub_slicer_gui(monkeypatch):
    """Stand-ins for qt, ctk and the Slicer-only parts of the ``slicer`` package."""
    slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel")
    pytest.importorskip("vtk")

    class Base:
        def __init__(self, *args, **kwargs):
            self.parent = args[0] if args else None

    class ScriptedLoadableModuleLogic:
        def __init__(self):
            pass

        def getParameterNode(self):
            return slicer.mrmlScene.GetSingletonNode("AttriVAE", "vtkMRMLScriptedModuleNode")

    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    scripted.ScriptedLoadableModule = scripted.ScriptedLoadableModuleWidget = Base
    scripted.ScriptedLoadableModuleTest = Base
    scripted.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic

    wrapper = types.ModuleType("slicer.parameterNodeWrapper")

    class Choice:
        def __init__(self, choices):
            self.choices = tuple(choices)

    class WithinRange:
        def __init__(self, minimum, maximum):
            self.minimum, self.maximum = minimum, maximum

    wrapper.Choice, wrapper.WithinRange = Choice, WithinRange
    wrapper.parameterNodeWrapper = lambda cls: cls
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    for name, module in (("slicer.ScriptedLoadableModule", scripted), ("slicer.parameterNodeWrapper", wrapper),
                         ("slicer.i18n", i18n), ("qt", types.ModuleType("qt")), ("ctk", types.ModuleType("ctk"))):
        monkeypatch.setitem(sys.modules, name, module)
    app = types.SimpleNamespace(testingEnabled=lambda: True)
    monkeypatch.setattr(slicer, "app", app, raising=False)
    return slicer


def _import_module(monkeypatch):
    import importlib.util

    _stub_slicer_gui(monkeypatch)
    spec = importlib.util.spec_from_file_location("AttriVAE_under_test", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_module_imports_with_stand_ins_and_describes_itself(monkeypatch):
    import typing

    before = set(sys.modules)
    module = _import_module(monkeypatch)
    assert not {m for m in set(sys.modules) - before if m == "torch" or m.startswith("AttriVAELib.inference")}
    parent = types.SimpleNamespace()
    module.AttriVAE(parent)
    assert parent.title == "AttriVAE" and parent.categories == ["Explainable AI"] and parent.contributors
    assert "Grad-CAM" in parent.helpText and "Cetin" in parent.acknowledgementText
    hints = typing.get_type_hints(module.AttriVAEParameterNode, include_extras=True)
    assert set(hints) == set(parameter_fields())
    device = hints["device"].__metadata__[0]
    assert device.choices == module.DEVICE_CHOICES and module.AttriVAEParameterNode.device == "auto"
    assert hints["opacity"].__metadata__[0].maximum == 1.0


def test_logic_delegates_to_the_session_on_a_real_scene(monkeypatch, tiny_run):
    import numpy as np

    from AttriVAELib.cohorts.phantom.generator import render_subject
    from AttriVAELib.data.io import Geometry, Volume
    from AttriVAELib.slicer import mrml

    module = _import_module(monkeypatch)
    slicer = sys.modules["slicer"]
    scene = slicer.vtkMRMLScene()
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    logic = module.AttriVAELogic()
    assert logic.setupPythonRequirements(askConfirmation=False) is True
    assert not logic.hasSavedState()

    _, image, _, _ = render_subject(1, 24, seed=3)
    volume = Volume(image.astype(np.float32), Geometry(size=(24, 24, 24), spacing=(2.0, 2.0, 3.0),
                                                       origin=(0.0, 0.0, 0.0),
                                                       direction=(0, 1, 0, 1, 0, 0, 0, 0, -1)))
    node = mrml.update_volume_node(scene, volume, "input", role="input")
    assert "16³" in logic.loadModel(str(tiny_run), "cpu", cpuFallback=False)
    summary = logic.encode(node)
    recon = logic.reconstructionNode()
    moved = logic.setLatents({0: summary["dims"][0]["max"]})
    assert moved.GetID() == recon.GetID() and ": " in logic.dimLabel(0, 0.0)
    maps = logic.computeAttention(signed=False, colormap="Inferno", threshold=0.25, opacity=0.4)
    assert maps and logic.showHeatmap(next(iter(maps)), opacity=0.7) is not None
    assert logic.computeCounterfactual("attribute", summary["attributes"][0]["name"], 70.0) is not None
    sequence = logic.createTraversal(1, -1.0, 1.0, 3, "latent")
    assert sequence.GetNumberOfDataNodes() == 3
    logic.saveState()
    assert logic.hasSavedState()
    logic.closeSession()
    assert not logic.session.has_encoding and logic.session.has_model


# ---------------------------------------------------------------------------------- error display


def test_errors_show_one_popup_and_the_code_after_the_block_runs(monkeypatch):
    """slicer.util.tryWithErrorDisplay re-raises: the code after the block is skipped and nested
    uses show two popups. The module's showErrors shows one popup and continues."""
    assert "util.tryWithErrorDisplay(" not in SOURCE
    module = _import_module(monkeypatch)
    slicer = sys.modules["slicer"]
    shown = []
    monkeypatch.setattr(slicer.app, "testingEnabled", lambda: False)
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kwargs: shown.append(text), raising=False)
    after = []
    with module.showErrors("Outer failed."):
        with module.showErrors("Inner failed."):
            raise ValueError("the volume is 2D")
    after.append("outer continues")
    assert after == ["outer continues"] and len(shown) == 1
    assert shown[0].startswith("Outer failed.") and "the volume is 2D" in shown[0]
    with module.showErrors("Fine."):
        after.append("body")
    assert after[-1] == "body" and len(shown) == 1
    monkeypatch.setattr(slicer.app, "testingEnabled", lambda: True)
    with pytest.raises(ValueError):  # a test sees the error
        with module.showErrors("Failed."):
            raise ValueError("x")


def test_no_confirmation_under_a_busy_cursor():
    """Dialogs that ask (install confirmation) come before any wait cursor is set."""
    asking = {"_requirementsReady", "setupPythonRequirements", "_withModel", "confirmOkCancelDisplay"}
    busy_blocks = 0
    for node in ast.walk(TREE):
        if not isinstance(node, ast.With):
            continue
        for item in node.items:
            call = item.context_expr
            if isinstance(call, ast.Call) and any(k.arg == "waitCursor" and getattr(k.value, "value", False)
                                                  for k in call.keywords):
                busy_blocks += 1
                names = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
                         for n in ast.walk(node) if isinstance(n, ast.Call)}
                assert not names & asking, f"line {node.lineno}: {names & asking} under a wait cursor"
    logic = classes()["AttriVAELogic"]
    setup = next(f for f in logic.body if isinstance(f, ast.FunctionDef) and f.name == "setupPythonRequirements")
    text = ast.unparse(setup)
    # The confirmation (in _mayInstall) is asked before the busy cursor starts.
    assert text.index("self._mayInstall(") < text.index("WaitCursor")
    assert "confirmOkCancelDisplay" in ast.unparse(_method("AttriVAELogic", "_mayInstall"))
    assert busy_blocks >= 1


def test_long_work_runs_as_background_tasks():
    """Encode, attention, traversal, counterfactual, slider decodes: session tasks, polled by a QTimer."""
    for name in ("encode_task", "attention_task", "traversal_task", "counterfactual_task", "latents_task",
                 "reset_task", "load_model_task"):
        assert f"session.{name}(" in SOURCE, name
    assert "process_tasks()" in SOURCE and "cancel_task()" in SOURCE and module_constant("TASK_POLL_MS") <= 100
    assert {"taskProgressBar", "cancelTaskButton", "taskFrame"} <= set(ui_widgets())
    widget = classes()["AttriVAEWidget"]
    for handler in ("onEncodeButton", "onComputeAttentionButton", "onTraversalButton", "onCounterfactualButton"):
        body = ast.unparse(next(f for f in widget.body if isinstance(f, ast.FunctionDef) and f.name == handler))
        for sync_call in ("logic.encode(", "logic.computeAttention(", "logic.createTraversal(",
                          "logic.computeCounterfactual("):
            assert sync_call not in body, f"{handler} blocks the GUI with {sync_call}"


# ---------------------------------------------------------------------------------- the Build a cohort section


def _method(cls: str, name: str) -> ast.FunctionDef:
    return next(f for f in classes()[cls].body if isinstance(f, ast.FunctionDef) and f.name == name)


#: Widgets of the cohort section: made in code (they are not in the .ui, so not reached through self.ui).
COHORT_WIDGET = re.compile(r"\b(?:self|widget)\.((?:cohort|buildCohort)[A-Za-z]*(?:Button|LineEdit|TextEdit))\b")


def test_cohort_section_is_made_before_train():
    """The section is a collapsible button inserted just before "Train a model", made before the
    parameter node is connected (``_updateButtonStates`` enables its button)."""
    setup = ast.unparse(_method("AttriVAEWidget", "setup"))
    assert "self._buildCohortSection()" in setup
    assert setup.index("self._buildCohortSection()") < setup.index("self.initializeParameterNode()")
    build = ast.unparse(_method("AttriVAEWidget", "_buildCohortSection"))
    assert "ctk.ctkCollapsibleButton()" in build and "section.collapsed = True" in build
    assert "layout.insertWidget(layout.indexOf(self.ui.trainCollapsibleButton), section)" in build
    assert ui_widgets()["trainCollapsibleButton"] == "ctkCollapsibleButton"
    for field in ("Images", "Labels", "LabelSpecs", "Clinical", "IdColumn", "ClassColumn", "Output"):
        assert f"self.cohort{field}" in build, field
    assert "self.buildCohortButton.connect('clicked(bool)', self.onBuildCohortButton)" in build
    assert "self.cohortSummaryTextEdit.readOnly = True" in build
    assert "Build a cohort" in SOURCE.split("class AttriVAEParameterNode")[0]  # the module's help text


def test_every_cohort_widget_used_is_made_in_the_section():
    made = set(re.findall(r"\bself\.(\w+) = ", ast.unparse(_method("AttriVAEWidget", "_buildCohortSection"))))
    used = set(COHORT_WIDGET.findall(SOURCE))
    assert used and not used - made, f"used but not made in _buildCohortSection: {sorted(used - made)}"
    assert not {name for name in used if name in ui_widgets()}  # no clash with a .ui widget
    assert {"buildCohortButton", "cohortSummaryTextEdit", "cohortLabelSpecsLineEdit"} <= used


def test_building_a_cohort_runs_as_a_background_task():
    """Build cohort starts the logic's task with the panel's progress bar and Cancel; it never builds
    in the GUI thread, never under a wait cursor, and the engine stays out of the widget."""
    body = ast.unparse(_method("AttriVAEWidget", "onBuildCohortButton"))
    assert "self.logic.cohortTask(" in body and "self._runTask(task, self._onCohortBuilt" in body
    assert "onEnd=self._showCohortResult" in body
    for blocking in ("buildCohort(", "run_here(", "build_cohort", "waitCursor"):
        assert blocking not in body, blocking
    assert body.index("self._requirementsReady()") < body.index("setupCohortRequirements(") < body.index(
        "cohortTask(")
    widget = ast.unparse(classes()["AttriVAEWidget"])
    assert "AttriVAELib.data" not in widget and "cohort_step" not in widget  # thin: through the logic
    run_task = ast.unparse(_method("AttriVAEWidget", "_runTask"))
    assert run_task.index("onEnd(task)") < run_task.index("if task.state == 'done'")
    assert "self.buildCohortButton.enabled = not busy" in ast.unparse(_method("AttriVAEWidget", "_updateButtonStates"))
    built = ast.unparse(_method("AttriVAEWidget", "_onCohortBuilt"))
    assert "self._parameterNode.trainManifest = str(summary.out)" in built
    setup = ast.unparse(_method("AttriVAELogic", "setupCohortRequirements"))
    assert setup.index("self._mayInstall(") < setup.index("WaitCursor")
    assert "self.test_AttriVAECohort()" in ast.unparse(_method("AttriVAETest", "runTest"))


def test_logic_builds_a_cohort_through_the_session_runner(monkeypatch, tmp_path):
    """The widget's path without Qt: the logic's task started on the session's runner, polled like the
    QTimer does; the summary text, the cohort folder for Train, a rerun from the cache, one-line errors."""
    import time

    from AttriVAELib.cohorts.acdc_like.generator import generate_acdc_like
    from AttriVAELib.core.errors import ConfigError

    module = _import_module(monkeypatch)
    slicer = sys.modules["slicer"]
    monkeypatch.setattr(slicer, "mrmlScene", slicer.vtkMRMLScene(), raising=False)
    raw = tmp_path / "raw"
    generate_acdc_like(raw, n=2, spacing=(2.0, 2.0, 5.0), seed=5, workers=1, progress=False)
    logic = module.AttriVAELogic()
    assert logic.setupCohortRequirements(str(raw / "clinical.csv"), askConfirmation=False) is True
    task = logic.cohortTask(str(raw), str(raw), str(tmp_path / "cohort"), "lv_cavity=3, myocardium=2, outer=1",
                            str(raw / "clinical.csv"), "", "Group")
    session = logic.getSession()
    session.start(task)
    end = time.monotonic() + 300
    while session.process_tasks() and time.monotonic() < end:
        time.sleep(0.01)
    assert task.state == "done", logic.cohortResultText(task)
    summary = task.value
    assert summary.manifest == tmp_path / "cohort" / "manifest.csv" and summary.manifest.is_file()
    assert str(summary.out) == str(tmp_path / "cohort") and summary.subjects == 4
    assert logic.cohortResultText(task) == summary.text() and "manifest:" in summary.text()
    again = logic.buildCohort(str(raw), str(raw), str(tmp_path / "cohort"), "lv_cavity=3, myocardium=2, outer=1",
                              str(raw / "clinical.csv"), None, "Group")
    assert (again.measured, again.reused, again.subjects) == (0, 4, 4)
    with pytest.raises(ConfigError, match="label 'lv_cavity'") as error:
        logic.cohortTask(str(raw), str(raw), str(tmp_path / "other"), "lv_cavity, myocardium=2")
    assert "\n" not in str(error.value) and not (tmp_path / "other").exists()
