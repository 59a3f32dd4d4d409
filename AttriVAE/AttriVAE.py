"""AttriVAE: interpretable 3D generative models (Attri-VAE) in 3D Slicer.

The module only holds the GUI. Everything it computes is done by ``AttriVAELib`` (the engine,
installed next to this file): ``AttriVAELogic`` below delegates to
``AttriVAELib.slicer.session.AttriVAESession``. ``AttriVAELib`` and its dependencies (torch, ...)
are imported inside methods only, so Slicer can discover this module before they are
installed; they are installed on first use, after one confirmation.
"""

import contextlib
import logging
import pathlib
import shutil
import sys
import traceback
from typing import Annotated, Union

import ctk
import qt
import slicer
import vtk
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

# Choices shown in the combo boxes. They mirror AttriVAELib (which cannot be imported here):
# Testing/test_slicer_module_static.py checks that they agree.
DEVICE_CHOICES = ("auto", "cpu", "cuda")
LAYER_CHOICES = ("auto", "conv1", "conv2", "conv3", "conv4", "conv5")
COLORMAP_CHOICES = ("Inferno", "Viridis", "Magma", "Plasma", "ColdToHotRainbow")
PRESET_CHOICES = ("fast_cpu", "attri_vae", "published", "ar_vae", "beta_vae", "vae", "vae_mlp", "brain_cpu",
                  "brain_gpu")
TRAVERSAL_UNITS = ("latent", "attribute")
COUNTERFACTUAL_MODES = ("other class", "attribute value")
#: Debounce of slider moves before decoding (ms).
DECODE_DELAY_MS = 150
#: How often the training output is drained into the log (ms).
TRAINING_POLL_MS = 250
#: How often a background task's progress and results are taken on the main thread (ms).
TASK_POLL_MS = 50


#
# AttriVAE
#


class AttriVAE(ScriptedLoadableModule):
    """Module description (Slicer reads it when the module is discovered)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("AttriVAE")
        self.parent.categories = ["Explainable AI"]
        self.parent.dependencies = []
        self.parent.contributors = ["AttriVAE developers (SlicerAttriVAE project)"]
        self.parent.helpText = _("""
Interpretable 3D generative models (Attri-VAE) for MRI/CT volumes.
<ul>
<li><b>Model</b>: use the demo model or a trained run folder; pick CPU or GPU.</li>
<li><b>Input</b>: select a 3D volume (and optionally a labelmap or segmentation mask) and press Encode.
The class probability and the estimated attributes are shown.</li>
<li><b>Latent sliders</b>: each attribute-regularized latent dimension has a slider labelled with the
attribute value it stands for; the decoded volume ("AttriVAE reconstruction") follows the sliders.</li>
<li><b>Attention</b>: attribute-wise Grad-CAM heatmaps overlaid on the input.</li>
<li><b>Traversal</b>: sweep one dimension into a sequence you can play.</li>
<li><b>Counterfactual</b>: what the image would look like in the other class, or with another
attribute value; the signed difference is overlaid.</li>
<li><b>Build a cohort</b>: measure the labels of your images' segmentations, merge a clinical table and
write a cohort folder (manifest, summary) that the Train section then uses; runs in the background.</li>
<li><b>Train a model</b>: train on a manifest in a background process (Cancel stops it).</li>
</ul>
Outputs are placed on the input's exact grid and reused on every update.
See <a href="https://github.com/attrivae/SlicerAttriVAE">the project page</a>.
""")
        self.parent.acknowledgementText = _("""
Attri-VAE method: I. Cetin, M. Stephens, O. Camara, M. A. Gonzalez Ballester, "Attri-VAE: attribute-based
interpretable representations of medical images with variational autoencoders", Computerized Medical Imaging
and Graphics, 2023. Module structure follows the 3D Slicer scripted module template.
""")


#
# Parameter node
#


@parameterNodeWrapper
class AttriVAEParameterNode:
    """Module settings saved with the scene (the widgets are bound to them by SlicerParameterName).

    The three paths are plain strings ("" when unset) synchronised by the widget (PATH_WIDGETS):
    a pathlib.Path field shows an unset path as "." in its ctkPathLineEdit.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    maskNode: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, None]
    useDemoModel: bool = True
    modelPath: str = ""
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    cpuFallback: bool = True
    gradcamLayer: Annotated[str, Choice(LAYER_CHOICES)] = "auto"
    signedHeatmaps: bool = False
    colormap: Annotated[str, Choice(COLORMAP_CHOICES)] = "Inferno"
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    threshold: Annotated[float, WithinRange(0.0, 1.0)] = 0.2
    traversalUnits: Annotated[str, Choice(TRAVERSAL_UNITS)] = "latent"
    traversalMin: float = -2.0
    traversalMax: float = 2.0
    traversalSteps: Annotated[int, WithinRange(2, 64)] = 9
    counterfactualMode: Annotated[str, Choice(COUNTERFACTUAL_MODES)] = "other class"
    counterfactualValue: float = 0.0
    trainManifest: str = ""
    trainOutput: str = ""
    trainPreset: Annotated[str, Choice(PRESET_CHOICES)] = "fast_cpu"
    trainEpochs: Annotated[int, WithinRange(1, 10000)] = 60


#: Path settings (parameter name -> ctkPathLineEdit), synchronised by the widget, not by connectGui.
PATH_WIDGETS = {"modelPath": "modelPathLineEdit", "trainManifest": "manifestPathLineEdit",
                "trainOutput": "trainOutputPathLineEdit"}


def _comboData(combo):
    """User data of a combo box's current item (None when nothing is selected)."""
    index = combo.currentIndex
    return None if index < 0 else combo.itemData(index)


def _pathText(path) -> str:
    """A path setting as text ('' when unset, never '.'); see AttriVAELib.slicer.panel_state.path_text."""
    text = str(path if path is not None else "").strip()
    return "" if text in ("", ".") else text


def _htmlLines(lines) -> str:
    """Plain text lines (from the session) as QLabel rich text."""
    import html

    return "<br>".join(html.escape(line) for line in lines)


_errorDepth = [0]


@contextlib.contextmanager
def showErrors(message: str, waitCursor: bool = False):
    """Show an exception of the block in ONE popup and continue after the block.

    Unlike slicer.util.tryWithErrorDisplay (which re-raises, so the code after the block is
    skipped and nested uses show two popups), only the outermost block shows the error; inner
    blocks pass it up. In testing mode the error propagates, so a test sees it.
    """
    _errorDepth[0] += 1
    cursor = False
    try:
        if waitCursor:
            slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
            cursor = True
        yield
    except Exception as exc:
        if cursor:
            slicer.app.restoreOverrideCursor()
            cursor = False
        if _errorDepth[0] > 1 or slicer.app.testingEnabled():
            raise
        logging.error("%s %s", message, exc)
        slicer.util.errorDisplay(f"{message}\n\n{exc}", detailedText=traceback.format_exc())
    finally:
        if cursor:
            slicer.app.restoreOverrideCursor()
        _errorDepth[0] -= 1


#
# AttriVAEWidget
#


class AttriVAEWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel. Long work runs as background tasks of the session (AttriVAELib.slicer.tasks):
    a QTimer polls them, the status bar and the progress bar show their progress, Cancel stops them."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._sliders = {}  # dim -> (label, slider)
        self._sliderRows = []  # (layout, label, slider)
        self._pendingLatents = {}
        self._updatingSliders = False
        self._decodeTimer = None
        self._trainingProcess = None
        self._trainingTimer = None
        self._taskTimer = None
        self._sync = None
        self._cohortTextSettings = {}

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        from AttriVAELib.slicer.panel_state import PanelSync

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/AttriVAE.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = AttriVAELogic()
        self._sync = PanelSync()
        self._buildCohortSection()

        self._decodeTimer = qt.QTimer()
        self._decodeTimer.setSingleShot(True)
        self._decodeTimer.setInterval(DECODE_DELAY_MS)
        self._decodeTimer.connect("timeout()", self.onDecodeTimer)
        self._trainingTimer = qt.QTimer()
        self._trainingTimer.setInterval(TRAINING_POLL_MS)
        self._trainingTimer.connect("timeout()", self.onTrainingTimer)
        self._taskTimer = qt.QTimer()
        self._taskTimer.setInterval(TASK_POLL_MS)
        self._taskTimer.connect("timeout()", self.onTaskTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.loadModelButton.connect("clicked(bool)", self.onLoadModelButton)
        self.ui.modelFileButton.connect("clicked(bool)", self.onModelFileButton)
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependenciesButton)
        self.ui.encodeButton.connect("clicked(bool)", self.onEncodeButton)
        self.ui.restoreButton.connect("clicked(bool)", self.onRestoreButton)
        self.ui.resetButton.connect("clicked(bool)", self.onResetButton)
        self.ui.computeAttentionButton.connect("clicked(bool)", self.onComputeAttentionButton)
        self.ui.heatmapComboBox.connect("currentIndexChanged(int)", self.onHeatmapStyleChanged)
        self.ui.opacitySliderWidget.connect("valueChanged(double)", self.onHeatmapStyleChanged)
        self.ui.thresholdSliderWidget.connect("valueChanged(double)", self.onHeatmapStyleChanged)
        self.ui.colormapComboBox.connect("currentIndexChanged(int)", self.onHeatmapStyleChanged)
        self.ui.traversalDimComboBox.connect("currentIndexChanged(int)", self.onTraversalDimChanged)
        self.ui.traversalUnitsComboBox.connect("currentIndexChanged(int)", self.onTraversalDimChanged)
        self.ui.traversalButton.connect("clicked(bool)", self.onTraversalButton)
        self.ui.counterfactualAttributeComboBox.connect("currentIndexChanged(int)", self.onCounterfactualAttribute)
        self.ui.counterfactualButton.connect("clicked(bool)", self.onCounterfactualButton)
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        self.ui.cancelTaskButton.connect("clicked(bool)", self.onCancelTaskButton)
        for name, widgetName in PATH_WIDGETS.items():
            getattr(self.ui, widgetName).connect("currentPathChanged(QString)",
                                                 lambda text, name=name: self.onPathChanged(name, text))

        self.ui.trainProgressBar.setVisible(False)
        self.ui.taskFrame.setVisible(False)
        self.initializeParameterNode()
        self._updateButtonStates()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        self.removeObservers()
        for timer in (self._decodeTimer, self._trainingTimer, self._taskTimer):
            if timer is not None:
                timer.stop()
        session = self._session()
        if session is not None:
            session.cancel_task()
        if self._trainingProcess is not None and self._trainingProcess.running:
            self._trainingProcess.cancel()
        if self._parameterNode is not None and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode is not None:
            if self._parameterNodeGuiTag is not None:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
                self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        session = self._session()
        if session is not None:
            session.cancel_task()  # nothing may be written into the closing scene
        self.setParameterNode(None)
        self._decodeTimer.stop()
        self._pendingLatents = {}
        if self.logic is not None:
            self.logic.closeSession()
        self._clearSliders()
        self._sync.forget("heatmap")
        self._sync.forget("traversal")

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        from AttriVAELib.slicer.panel_state import default_input_node

        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            candidate = default_input_node(slicer.mrmlScene)  # skips label maps and AttriVAE's outputs
            if candidate is not None:
                self._parameterNode.inputVolume = candidate

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode is not None:
            if self._parameterNodeGuiTag is not None:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
                self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode is not None:
            # The connectors clear and refill the bound combo boxes: those signals are not user changes.
            with self._sync.connecting():
                self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self._sync.remember("heatmap", self._heatmapChoice())
            self._sync.remember("traversal", self._traversalChoice())
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        params = self._parameterNode
        if params is not None:
            for name, widgetName in PATH_WIDGETS.items():
                widget = getattr(self.ui, widgetName)
                text = _pathText(getattr(params, name))
                if widget.currentPath != text:
                    wasBlocked = widget.blockSignals(True)
                    widget.currentPath = text
                    widget.blockSignals(wasBlocked)
        self._updateButtonStates()

    def onPathChanged(self, name: str, text: str) -> None:
        if self._parameterNode is not None and not self._sync.quiet:
            setattr(self._parameterNode, name, _pathText(text))

    def _session(self):
        """The logic's session; None until a model is first loaded (AttriVAELib may not be installed yet)."""
        return self.logic.session if self.logic is not None else None

    def _busy(self) -> bool:
        session = self._session()
        return session is not None and session.busy

    def _updateButtonStates(self) -> None:
        params = self._parameterNode
        session = self._session()
        busy = self._busy()
        hasEncoding = session is not None and session.has_encoding
        hasInput = params is not None and params.inputVolume is not None
        self.ui.modelPathLineEdit.enabled = params is not None and not params.useDemoModel
        self.ui.modelFileButton.enabled = params is not None and not params.useDemoModel
        self.ui.loadModelButton.enabled = not busy
        self.ui.encodeButton.enabled = hasInput and not busy
        self.ui.encodeButton.toolTip = _("Encode the input volume") if hasInput else _("Select an input volume")
        for button in (self.ui.resetButton, self.ui.computeAttentionButton, self.ui.traversalButton,
                       self.ui.counterfactualButton):
            button.enabled = hasEncoding and not busy
        self.ui.restoreButton.enabled = self.logic is not None and self.logic.hasSavedState() and not busy
        self.buildCohortButton.enabled = not busy
        attributeMode = params is not None and params.counterfactualMode == COUNTERFACTUAL_MODES[1]
        self.ui.counterfactualAttributeComboBox.enabled = attributeMode
        self.ui.counterfactualValueSpinBox.enabled = attributeMode

    # ------------------------------------------------------------------ background tasks
    def _runTask(self, task, onDone=None, onEnd=None) -> None:
        """Run a session task in the background: progress in the status bar and the progress bar, Cancel stops it.

        ``onDone(value)`` runs when the task is done, ``onEnd(task)`` at any end (done, failed, cancelled).
        """
        def onProgress(task):
            percent = int(round(100 * task.fraction))
            self.ui.taskProgressBar.setValue(percent)
            slicer.util.showStatusMessage(f"{task.name}: {task.message} ({percent}%)", 2000)

        def onFinished(task):
            self.ui.taskProgressBar.setValue(100)
            if onEnd is not None:
                onEnd(task)
            if task.state == "done":
                slicer.util.showStatusMessage(_("{name}: done").format(name=task.name), 2000)
                if onDone is not None:
                    with showErrors(_("{name} failed.").format(name=task.name)):
                        onDone(task.value)
            elif task.state == "cancelled":
                slicer.util.showStatusMessage(_("{name}: cancelled").format(name=task.name), 3000)
            else:
                with showErrors(_("{name} failed.").format(name=task.name)):
                    task.result()  # raises the task's error inside showErrors: one popup
            self._showMessages()
            self._updateButtonStates()

        task.on_progress = onProgress
        task.on_finished = onFinished
        self.logic.getSession().start(task)
        self.ui.taskProgressBar.setValue(0)
        self.ui.taskProgressBar.setFormat(f"{task.name}: %p%")
        self.ui.taskFrame.setVisible(True)
        self.ui.cancelTaskButton.enabled = True
        self._taskTimer.start()
        self._updateButtonStates()

    def onTaskTimer(self) -> None:
        """Deliver progress and write results on the main thread, a few milliseconds at a time."""
        session = self._session()
        if session is None or not session.process_tasks():
            self._taskTimer.stop()
            self.ui.taskFrame.setVisible(False)
            self._updateButtonStates()
            if self._pendingLatents:
                self._decodeTimer.start()  # slider moves that arrived while busy

    def onCancelTaskButton(self) -> None:
        session = self._session()
        if session is not None:
            session.cancel_task()
        self.ui.cancelTaskButton.enabled = False

    # ------------------------------------------------------------------ model
    def _modelLocation(self) -> str:
        params = self._parameterNode
        if params.useDemoModel:
            return "demo"
        location = _pathText(params.modelPath)
        if not location:
            raise ValueError(_("Select a model (a training run folder or its model.safetensors), or use the demo."))
        return location

    def _requirementsReady(self) -> bool:
        """Install the dependencies if needed (the confirmation comes first, without a busy cursor)."""
        ready = False
        with showErrors(_("Failed to install the Python packages.")):
            ready = self.logic.setupPythonRequirements(askConfirmation=True)
        return ready

    def _withModel(self, then, reload: bool = False) -> None:
        """Load the selected model in the background if needed, then call ``then()``."""
        if not self._requirementsReady():
            return
        params = self._parameterNode
        session = self.logic.getSession()
        location = self._modelLocation()
        session.set_cpu_fallback(params.cpuFallback)
        if not reload and session.is_loaded(location, params.device):
            then()
            return

        def loaded(description):
            self.ui.modelInfoLabel.text = description
            self._clearSliders()
            then()

        self._runTask(session.load_model_task(location, params.device, fallback_to_cpu=params.cpuFallback), loaded)

    def onLoadModelButton(self) -> None:
        with showErrors(_("Failed to load the model.")):
            self._withModel(lambda: None, reload=True)
        self._updateButtonStates()

    def onModelFileButton(self) -> None:
        path = qt.QFileDialog.getOpenFileName(self.parent, _("Choose an AttriVAE model file"),
                                              _pathText(self._parameterNode.modelPath),
                                              _("AttriVAE model (*.safetensors);;All files (*)"))
        if path:
            self._parameterNode.modelPath = path

    def onInstallDependenciesButton(self) -> None:
        if self._requirementsReady():
            self.ui.modelInfoLabel.text = _("All required Python packages are installed.")

    def _showMessages(self) -> None:
        """Log the session's new notes for the user (e.g. a CPU fallback); show the newest in the status bar."""
        session = self._session()
        messages = session.pop_messages() if session is not None else []
        for message in messages:
            logging.warning(message)
        if messages:
            slicer.util.showStatusMessage(messages[-1], 5000)

    # ------------------------------------------------------------------ encode
    def onEncodeButton(self) -> None:
        with showErrors(_("Failed to encode the image.")):
            self._withModel(self._startEncode)
        self._updateButtonStates()

    def _startEncode(self) -> None:
        params = self._parameterNode
        inputVolume = params.inputVolume
        session = self.logic.getSession()

        def encoded(summary):
            self._showEncoding()
            slicer.util.setSliceViewerLayers(background=session.ensure_reconstruction(), foreground=inputVolume,
                                             foregroundOpacity=0.0, fit=True)
            self.logic.saveState()

        self._runTask(session.encode_task(inputVolume, params.maskNode), encoded)

    def onRestoreButton(self) -> None:
        if not self._requirementsReady():
            return
        with showErrors(_("Failed to restore the saved session."), waitCursor=True):
            state = self.logic.restoreState()
            session = self.logic.getSession()
            if not session.has_encoding:
                raise ValueError(_("The scene holds no complete AttriVAE session to restore."))
            if state.get("model") and state["model"] != "demo":
                self._parameterNode.useDemoModel = False
                self._parameterNode.modelPath = state["model"]
            self._parameterNode.inputVolume = session.input_node
            self.ui.modelInfoLabel.text = session.model_description
            self._showEncoding()
            slicer.util.setSliceViewerLayers(background=self.logic.reconstructionNode(), fit=True)
        self._updateButtonStates()

    def _showEncoding(self) -> None:
        self._showPrediction()
        self._buildSliders()
        self._fillDimensionCombos()

    def _showPrediction(self) -> None:
        lines = self.logic.getSession().summary_lines()
        self.ui.encodingLabel.text = _htmlLines(lines) if lines else _("Encoded (the model has no classifier).")

    # ------------------------------------------------------------------ latent sliders
    def _clearSliders(self) -> None:
        for layout, label, slider in self._sliderRows:
            layout.removeWidget(label)
            layout.removeWidget(slider)
            label.deleteLater()
            slider.deleteLater()
        self._sliderRows = []
        self._sliders = {}

    def _buildSliders(self) -> None:
        """One slider per latent dim: regularized dims first, the free dims in a collapsed section."""
        self._clearSliders()
        specs = self.logic.getSession().slider_specs()
        self._updatingSliders = True
        try:
            for spec in specs:
                frame = self.ui.regularizedSlidersFrame if spec.regularized else self.ui.freeSlidersFrame
                layout = frame.layout()
                label = qt.QLabel(spec.label)
                label.toolTip = _("Latent dimension {dim}").format(dim=spec.dim)
                slider = ctk.ctkSliderWidget()
                slider.decimals = 3
                slider.minimum = spec.minimum
                slider.maximum = spec.maximum
                slider.singleStep = max(spec.step, 1e-3)
                slider.pageStep = slider.singleStep * 10
                slider.value = spec.value
                slider.toolTip = _("Latent value (encoded: {mu:.3f})").format(mu=spec.mu)
                slider.connect("valueChanged(double)",
                               lambda value, dim=spec.dim: self.onLatentSliderMoved(dim, value))
                layout.addRow(label, slider)
                self._sliders[spec.dim] = (label, slider)
                self._sliderRows.append((layout, label, slider))
            self.ui.freeDimsCollapsibleButton.text = _("Free dimensions ({count})").format(
                count=sum(1 for spec in specs if not spec.regularized))
        finally:
            self._updatingSliders = False

    def _setSliderValues(self) -> None:
        """Move the sliders to the session's latent vector (without decoding again)."""
        self._updatingSliders = True
        try:
            for spec in self.logic.getSession().slider_specs():
                if spec.dim in self._sliders:
                    label, slider = self._sliders[spec.dim]
                    slider.value = spec.value
                    label.text = spec.label
        finally:
            self._updatingSliders = False

    def onLatentSliderMoved(self, dim: int, value: float) -> None:
        if self._updatingSliders:
            return
        self._pendingLatents[dim] = float(value)
        label, _slider = self._sliders[dim]
        label.text = self.logic.dimLabel(dim, float(value))
        self._decodeTimer.start()  # restarts: decode once the slider rests for DECODE_DELAY_MS

    def onDecodeTimer(self) -> None:
        if not self._pendingLatents:
            return
        if self._busy():
            return  # decoded when the running task ends (onTaskTimer restarts this timer)
        pending, self._pendingLatents = self._pendingLatents, {}
        session = self.logic.getSession()

        def decoded(node):
            self._showPrediction()
            self.logic.saveState()

        with showErrors(_("Failed to decode the latent vector.")):
            self._runTask(session.latents_task(pending, preview=True), decoded)

    def onResetButton(self) -> None:
        self._decodeTimer.stop()
        self._pendingLatents = {}
        session = self.logic.getSession()

        def reset(node):
            self._setSliderValues()
            self._showPrediction()
            self.logic.saveState()

        with showErrors(_("Failed to reset the latent vector.")):
            self._runTask(session.reset_task(), reset)

    def _fillDimensionCombos(self) -> None:
        session = self.logic.getSession()
        for combo, attributesOnly in ((self.ui.traversalDimComboBox, False),
                                      (self.ui.counterfactualAttributeComboBox, True)):
            wasBlocked = combo.blockSignals(True)
            combo.clear()
            for text, dim in session.dimension_choices(attributesOnly):
                combo.addItem(text, dim)
            combo.blockSignals(wasBlocked)
        self._sync.forget("traversal")  # a new encoding: its default range applies
        self.onTraversalDimChanged()
        self.onCounterfactualAttribute()

    # ------------------------------------------------------------------ attention
    def onComputeAttentionButton(self) -> None:
        params = self._parameterNode
        session = self.logic.getSession()

        def computed(maps):
            wasBlocked = self.ui.heatmapComboBox.blockSignals(True)
            self.ui.heatmapComboBox.clear()
            for name in maps:
                self.ui.heatmapComboBox.addItem(name)
            self.ui.heatmapComboBox.blockSignals(wasBlocked)
            self._sync.forget("heatmap")
            self.onHeatmapStyleChanged()

        with showErrors(_("Failed to compute the attention maps.")):
            colormap = params.colormap
            if params.signedHeatmaps and colormap == COLORMAP_CHOICES[0]:
                colormap = None  # a diverging table for signed maps
            self._runTask(session.attention_task(params.gradcamLayer, relu=not params.signedHeatmaps,
                                                 colormap=colormap, threshold=params.threshold,
                                                 opacity=params.opacity), computed)

    def _heatmapChoice(self):
        return (self.ui.heatmapComboBox.currentText, round(self.ui.opacitySliderWidget.value, 4),
                round(self.ui.thresholdSliderWidget.value, 4), self.ui.colormapComboBox.currentText)

    def onHeatmapStyleChanged(self, *args) -> None:
        """Show the selected heatmap with the current colour table, opacity and threshold (no recompute)."""
        session = self._session()
        name = self.ui.heatmapComboBox.currentText
        if session is None or not name or name not in session.heatmap_names:
            return
        if not self._sync.should_apply("heatmap", self._heatmapChoice()):
            return  # a refill of the combo boxes on module entry, or nothing changed
        with showErrors(_("Failed to show the attention map.")):
            # shown over the encoded input in every slice view, at this opacity
            self.logic.showHeatmap(name, opacity=self.ui.opacitySliderWidget.value,
                                   threshold=self.ui.thresholdSliderWidget.value,
                                   colormap=self.ui.colormapComboBox.currentText or None)

    # ------------------------------------------------------------------ traversal
    def _traversalChoice(self):
        return (_comboData(self.ui.traversalDimComboBox), self.ui.traversalUnitsComboBox.currentText)

    def onTraversalDimChanged(self, *args) -> None:
        """Default traversal range: the slider range (latent) or the calibrated range (attribute)."""
        session = self._session()
        dim = _comboData(self.ui.traversalDimComboBox)
        if session is None or not session.has_encoding or dim is None or self._parameterNode is None:
            return
        if not self._sync.should_apply("traversal", self._traversalChoice()):
            return  # module entry refilled the units box: keep the user's range
        low, high = session.traversal_range(int(dim), self.ui.traversalUnitsComboBox.currentText)
        self._parameterNode.traversalMin = float(low)
        self._parameterNode.traversalMax = float(high)

    def onTraversalButton(self) -> None:
        params = self._parameterNode
        session = self.logic.getSession()

        def created(sequence):
            browser = session.traversal_browser
            if browser is not None:
                proxy = browser.GetProxyNode(sequence)
                if proxy is not None:
                    slicer.util.setSliceViewerLayers(background=proxy, foreground=None, fit=True)
                sequences = getattr(slicer.modules, "sequences", None)
                if sequences is not None and hasattr(sequences, "setToolBarActiveBrowserNode"):
                    sequences.setToolBarActiveBrowserNode(browser)
            slicer.util.showStatusMessage(_("Traversal ready: play it with the Sequences toolbar."), 5000)

        with showErrors(_("Failed to create the traversal.")):
            dim = _comboData(self.ui.traversalDimComboBox)
            if dim is None:
                raise ValueError(_("Encode an image first."))
            self._runTask(session.traversal_task(int(dim), params.traversalMin, params.traversalMax,
                                                 params.traversalSteps, units=params.traversalUnits), created)

    # ------------------------------------------------------------------ counterfactual
    def onCounterfactualAttribute(self, *args) -> None:
        session = self._session()
        dim = _comboData(self.ui.counterfactualAttributeComboBox)
        if session is None or not session.has_encoding or dim is None or self._parameterNode is None:
            return
        estimate = session.attribute_estimate(int(dim))
        if estimate is not None:
            self._parameterNode.counterfactualValue = estimate

    def onCounterfactualButton(self) -> None:
        params = self._parameterNode
        session = self.logic.getSession()
        inputVolume = params.inputVolume
        opacity = params.opacity

        def computed(node):
            slicer.util.setSliceViewerLayers(background=inputVolume, foreground=node, foregroundOpacity=opacity)
            self.ui.counterfactualLabel.text = _htmlLines(session.counterfactual_lines())

        with showErrors(_("Failed to compute the counterfactual.")):
            if params.counterfactualMode == COUNTERFACTUAL_MODES[1]:
                dim = _comboData(self.ui.counterfactualAttributeComboBox)
                if dim is None:
                    raise ValueError(_("Select the attribute to change."))
                mode = ("attribute", int(dim), params.counterfactualValue)
            else:
                mode = "other_class"
            self._runTask(session.counterfactual_task(mode, opacity=opacity), computed)

    # ------------------------------------------------------------------ cohort
    def _buildCohortSection(self) -> None:
        """The "Build a cohort" section, made here (not in the .ui) and placed just before "Train a model"."""
        section = self.cohortCollapsibleButton = ctk.ctkCollapsibleButton()
        section.text = _("Build a cohort")
        section.collapsed = True
        form = qt.QFormLayout(section)
        flags = ctk.ctkPathLineEdit
        folders = flags.Dirs | flags.Drives | flags.Readable
        self._cohortTextSettings = {}  # QSettings key -> line edit: the texts are remembered between sessions

        def pathEdit(label, filters, key, tip):
            edit = ctk.ctkPathLineEdit()
            edit.filters = filters
            edit.settingKey = key  # recent paths, kept by Slicer's settings
            edit.toolTip = tip
            form.addRow(label, edit)
            return edit

        def lineEdit(label, key, placeholder, tip):
            edit = qt.QLineEdit()
            edit.text = str(qt.QSettings().value(key, "") or "")
            edit.placeholderText = placeholder
            edit.toolTip = tip
            form.addRow(label, edit)
            self._cohortTextSettings[key] = edit
            return edit

        self.cohortImagesPathLineEdit = pathEdit(_("Images:"), folders, "AttriVAE/CohortImages", _(
            "Folder of the images (searched recursively: NIfTI, NRRD, MHA, DICOM series folders), "
            "or a pattern such as data/*/*_frame01.nii.gz"))
        self.cohortLabelsPathLineEdit = pathEdit(_("Segmentations:"), folders, "AttriVAE/CohortLabels", _(
            "Folder of the label maps (may be the images' folder when their names end in _gt, _seg, _label ...), "
            "or a pattern"))
        self.cohortLabelSpecsLineEdit = lineEdit(_("Labels:"), "AttriVAE/CohortLabelSpecs",
                                                 "myocardium=2, lv_cavity=3",
                                                 _("The labels to measure, NAME=VALUE separated by commas "
                                                   "(lv=2+3 for a union of values)"))
        self.cohortClinicalPathLineEdit = pathEdit(
            _("Clinical table:"), flags.Files | flags.Drives | flags.Readable, "AttriVAE/CohortClinical",
            _("Optional: a .csv, .tsv or .xlsx table with one row per subject or patient"))
        self.cohortClinicalPathLineEdit.nameFilters = [_("Clinical table (*.csv *.tsv *.txt *.xlsx *.xlsm)"),
                                                       _("All files (*)")]
        self.cohortIdColumnLineEdit = lineEdit(_("Id column:"), "AttriVAE/CohortIdColumn",
                                               _("default: a column named id, subject, patient or case"),
                                               _("The clinical table's subject id column"))
        self.cohortClassColumnLineEdit = lineEdit(_("Class column:"), "AttriVAE/CohortClassColumn",
                                                  _("optional, e.g. Group"),
                                                  _("The clinical column holding each subject's class"))
        self.cohortOutputPathLineEdit = pathEdit(
            _("Output folder:"), flags.Dirs | flags.Drives | flags.Writable, "AttriVAE/CohortOutput",
            _("The cohort folder: a new one, or an earlier cohort's to resume it"))
        self.buildCohortButton = qt.QPushButton(_("Build cohort"))
        self.buildCohortButton.toolTip = _("Measure the labels and write the cohort in the background "
                                           "(Cancel stops it; building again resumes)")
        self.buildCohortButton.connect("clicked(bool)", self.onBuildCohortButton)
        form.addRow(self.buildCohortButton)
        self.cohortSummaryTextEdit = qt.QPlainTextEdit()
        self.cohortSummaryTextEdit.readOnly = True
        self.cohortSummaryTextEdit.lineWrapMode = qt.QPlainTextEdit.NoWrap
        font = qt.QFont("Monospace")
        font.setStyleHint(qt.QFont.TypeWriter)
        self.cohortSummaryTextEdit.font = font
        self.cohortSummaryTextEdit.toolTip = _("The cohort's summary: subjects, attribute distributions, "
                                               "correlated attributes, excluded subjects and unpaired files")
        form.addRow(self.cohortSummaryTextEdit)
        layout = self.ui.trainCollapsibleButton.parentWidget().layout()
        layout.insertWidget(layout.indexOf(self.ui.trainCollapsibleButton), section)

    def onBuildCohortButton(self) -> None:
        if not self._requirementsReady():
            return
        with showErrors(_("Failed to build the cohort.")):
            clinical = self.cohortClinicalPathLineEdit.currentPath
            if not self.logic.setupCohortRequirements(clinical, askConfirmation=True):
                return
            paths = (self.cohortImagesPathLineEdit, self.cohortLabelsPathLineEdit, self.cohortOutputPathLineEdit)
            task = self.logic.cohortTask(*(edit.currentPath for edit in paths), self.cohortLabelSpecsLineEdit.text,
                                         clinical, self.cohortIdColumnLineEdit.text,
                                         self.cohortClassColumnLineEdit.text)
            for edit in (*paths, self.cohortClinicalPathLineEdit):
                if edit.currentPath:
                    edit.addCurrentPathToHistory()
            for key, edit in self._cohortTextSettings.items():
                qt.QSettings().setValue(key, edit.text)
            self.cohortSummaryTextEdit.setPlainText(_("Building the cohort..."))
            self._runTask(task, self._onCohortBuilt, onEnd=self._showCohortResult)
        self._updateButtonStates()

    def _showCohortResult(self, task) -> None:
        """The summary (or why it stopped or failed) in the section's text box."""
        self.cohortSummaryTextEdit.setPlainText(self.logic.cohortResultText(task))

    def _onCohortBuilt(self, summary) -> None:
        """The new cohort folder becomes the Train section's data."""
        if self._parameterNode is not None:
            self._parameterNode.trainManifest = str(summary.out)
        self.ui.trainCollapsibleButton.collapsed = False
        slicer.util.showStatusMessage(_("Cohort ready ({count} subjects): the Train section uses it.").format(
            count=summary.subjects), 5000)

    # ------------------------------------------------------------------ training
    def onTrainButton(self) -> None:
        if self._trainingProcess is not None and self._trainingProcess.running:
            self._trainingProcess.cancel()
            self.ui.trainLogTextEdit.appendPlainText(_("Cancelling..."))
            return
        if not self._requirementsReady():
            return
        with showErrors(_("Failed to start training.")):
            params = self._parameterNode
            process = self.logic.startTraining(_pathText(params.trainManifest), _pathText(params.trainOutput),
                                               params.trainPreset, params.trainEpochs, params.device)
            self._trainingProcess = process
            self.ui.trainLogTextEdit.clear()
            self.ui.trainLogTextEdit.appendPlainText(" ".join(process.command))
            self.ui.trainProgressBar.setVisible(True)
            self.ui.trainProgressBar.setRange(0, 0)  # busy until the first epoch is reported
            self.ui.trainButton.text = _("Cancel")
            self.ui.trainButton.toolTip = _("Stop the training process")
            self._trainingTimer.start()

    def onTrainingTimer(self) -> None:
        """Drain the training output on the main thread; finish up when the process has exited.

        Works whether or not the module is shown and after a scene close: it reads the process's
        own output folder, never the panel's (possibly reset) settings.
        """
        process = self._trainingProcess
        if process is None:
            self._trainingTimer.stop()
            return
        for line in process.poll():
            self.ui.trainLogTextEdit.appendPlainText(line)
        if process.progress is not None:
            done, total = process.progress
            self.ui.trainProgressBar.setRange(0, total)
            self.ui.trainProgressBar.setValue(done)
        if process.running:
            return
        self._trainingTimer.stop()
        self._trainingProcess = None
        self.ui.trainButton.text = _("Train")
        self.ui.trainButton.toolTip = _("Train a model in a background process")
        self.ui.trainProgressBar.setVisible(False)
        if process.cancelled:
            self.ui.trainLogTextEdit.appendPlainText(_("Training cancelled."))
        elif process.returncode == 0:
            output = self.logic.selectTrainedModel(process)
            self.ui.trainLogTextEdit.appendPlainText(_("Training finished: {path}").format(path=output or "?"))
            if output:
                slicer.util.showStatusMessage(_("Training finished; the new model is selected."), 5000)
        else:
            tail = "\n".join(process.log[-5:])
            slicer.util.errorDisplay(_("Training failed (exit code {code}).").format(code=process.returncode),
                                     detailedText=tail)


#
# AttriVAELogic
#


class AttriVAELogic(ScriptedLoadableModuleLogic):
    """Computation, usable without the widget (e.g. from the Python console or a test).

    Delegates to ``AttriVAELib.slicer.session.AttriVAESession``; ``session`` is created on first use.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.session = None

    def getParameterNode(self):
        return AttriVAEParameterNode(super().getParameterNode())

    # ------------------------------------------------------------------ dependencies
    def setupPythonRequirements(self, askConfirmation: bool = True) -> bool:
        """Install torch (through the PyTorch extension) and the other packages if missing.

        One confirmation for everything (asked before the busy cursor); no prompt and no
        installation while Slicer runs its tests (the testing environment must provide the
        packages). An installed torch that is too old is never upgraded in place (it may be
        imported already): the user is told to update it in PyTorch Utils and restart.
        Returns True when all requirements are importable.
        """
        import importlib

        from AttriVAELib.slicer.requirements import TORCH_REQUIREMENT, missing_requirements, torch_update_message

        missing = missing_requirements()
        if not missing:
            return True
        update = torch_update_message()
        if update:
            raise RuntimeError(update)
        question = _("AttriVAE needs these Python packages, which will be downloaded and installed now "
                     "(this can take several minutes):\n\n{packages}")
        if not self._mayInstall(missing, question, askConfirmation):
            return False
        with slicer.util.WaitCursor():
            if any(req.startswith("torch") for req in missing):
                try:
                    import PyTorchUtils
                except ModuleNotFoundError:
                    raise RuntimeError(_("AttriVAE needs the PyTorch extension: install it from the Extensions "
                                         "Manager and restart Slicer.")) from None
                minimum = TORCH_REQUIREMENT[len("torch"):]
                torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                                      torchVersionRequirement=minimum)
                importlib.invalidate_caches()
                if torch is None:
                    return False
            rest = [req for req in missing if not req.startswith("torch")]
            if rest:
                self._pipInstall(rest)
            importlib.invalidate_caches()  # so the new packages are found without a restart
        self._checkInstalled(missing_requirements())
        return True

    @staticmethod
    def _mayInstall(missing, question: str, askConfirmation: bool) -> bool:
        """Whether to install ``missing`` now: never while Slicer runs its tests, else after ``question``
        (a translated text with ``{packages}``) when ``askConfirmation``."""
        if slicer.app.testingEnabled():
            logging.warning("AttriVAE: missing Python packages in testing mode: %s", ", ".join(missing))
            return False
        return not askConfirmation or slicer.util.confirmOkCancelDisplay(
            question.format(packages="\n".join(missing)), windowTitle=_("Install Python packages"))

    @staticmethod
    def _checkInstalled(still) -> None:
        """One error naming the packages that are still missing after an installation."""
        if still:
            raise RuntimeError(_("These Python packages could not be installed: {packages}").format(
                packages=", ".join(still)))

    @staticmethod
    def _pipInstall(requirements) -> None:
        """``slicer.packaging.pip_ensure`` where Slicer has it (5.12+), else ``slicer.util.pip_install``."""
        try:
            from slicer.packaging import pip_ensure
        except ImportError:
            pip_ensure = None
        if pip_ensure is not None:
            pip_ensure(list(requirements), prompt_install=False, requester="AttriVAE")
        else:
            slicer.util.pip_install(" ".join(requirements))

    # ------------------------------------------------------------------ session
    def getSession(self):
        from AttriVAELib.slicer.session import AttriVAESession

        if self.session is None or self.session.scene is not slicer.mrmlScene:
            self.session = AttriVAESession(slicer.mrmlScene)
        return self.session

    def closeSession(self) -> None:
        """Forget the encoding and output nodes (the scene is closing); keep the loaded model."""
        if self.session is not None:
            self.session.close_scene()

    def loadModel(self, location: str = "demo", device: str = "auto", cpuFallback: bool = True) -> str:
        return self.getSession().load_model(location, device, fallback_to_cpu=cpuFallback)

    def encode(self, inputVolume, maskNode=None):
        return self.getSession().encode(inputVolume, maskNode)

    def reconstructionNode(self):
        """The reconstruction node of the current latent vector (decoded if there is none yet)."""
        return self.getSession().ensure_reconstruction()

    def setLatents(self, values):
        return self.getSession().set_latents(values, preview=True)

    def resetLatents(self):
        return self.getSession().reset()

    def dimLabel(self, dim: int, value: float) -> str:
        return self.getSession().dim_label(dim, value)

    def computeAttention(self, layer: str = "auto", signed: bool = False, colormap=None, threshold: float = 0.2,
                         opacity: float = 0.5):
        if signed and colormap == COLORMAP_CHOICES[0]:
            colormap = None  # a diverging table for signed maps
        return self.getSession().attention(layer, relu=not signed, colormap=colormap, threshold=threshold,
                                           opacity=opacity)

    def showHeatmap(self, name: str, opacity=None, threshold=None, colormap=None):
        """Show (and restyle) a computed heatmap over the encoded input in the slice views; return its node."""
        session = self.getSession()
        if session.heatmap_signed and colormap == COLORMAP_CHOICES[0]:
            colormap = None  # signed maps default to a diverging table
        return session.show_heatmap(name, opacity=opacity, threshold=threshold, colormap=colormap)

    def computeCounterfactual(self, mode: str = "other_class", attribute=None, value=None, opacity: float = 0.5):
        target = mode if mode == "other_class" else ("attribute", attribute, value)
        return self.getSession().counterfactual(target, opacity=opacity)

    def createTraversal(self, dim: int, low: float, high: float, steps: int, units: str = "latent"):
        """The traversal sequence node (its browser: ``session.traversal_browser``)."""
        return self.getSession().traversal(dim, low, high, steps, units=units)

    def saveState(self):
        return self.getSession().save_state()

    @staticmethod
    def hasSavedState() -> bool:
        """Whether the scene holds a latent vector saved by ``saveState`` (read without importing AttriVAELib)."""
        node = slicer.mrmlScene.GetSingletonNode("AttriVAE", "vtkMRMLScriptedModuleNode")
        return node is not None and node.GetParameter("json.latent") not in ("", "null")

    def restoreState(self):
        return self.getSession().restore_state()

    # ------------------------------------------------------------------ cohort
    def setupCohortRequirements(self, clinical=None, askConfirmation: bool = True) -> bool:
        """Install what building a cohort needs besides the module's packages (pandas to read a clinical table).

        As for :meth:`setupPythonRequirements`: one confirmation, no prompt while Slicer runs its tests.
        Returns True when all of them are importable.
        """
        import importlib

        from AttriVAELib.slicer.cohort_step import missing_cohort_requirements

        missing = missing_cohort_requirements(clinical)
        if not missing:
            return True
        question = _("Building a cohort needs these Python packages, which will be downloaded and installed now:"
                     "\n\n{packages}")
        if not self._mayInstall(missing, question, askConfirmation):
            return False
        with slicer.util.WaitCursor():
            self._pipInstall(missing)
            importlib.invalidate_caches()
        self._checkInstalled(missing_cohort_requirements(clinical))
        return True

    @staticmethod
    def cohortTask(images: str, labels: str, out: str, labelSpecs: str, clinical=None, idColumn=None,
                   classColumn=None, workers: int = 1):
        """A background task that builds (or resumes) the cohort folder ``out``; its value is the summary.

        Start it with ``getSession().start(task)`` (one task at a time; Cancel stops it after the current
        subject, and the next run resumes). ``labelSpecs`` is one line such as ``"myocardium=2, lv_cavity=3"``.
        """
        from AttriVAELib.slicer.cohort_step import cohort_task

        return cohort_task(images, labels, out, labelSpecs, clinical=clinical, id_column=idColumn,
                           class_column=classColumn, workers=workers)

    def buildCohort(self, images: str, labels: str, out: str, labelSpecs: str, clinical=None, idColumn=None,
                    classColumn=None, workers: int = 1):
        """Build the cohort in the calling thread (the Python console); return its summary (``summary.text()``)."""
        return self.cohortTask(images, labels, out, labelSpecs, clinical, idColumn, classColumn, workers).run_here()

    @staticmethod
    def cohortResultText(task) -> str:
        """The text shown for a finished cohort task: its summary, the stop note, or the reasons and the error."""
        from AttriVAELib.slicer.cohort_step import result_text

        return result_text(task)

    # ------------------------------------------------------------------ training
    @staticmethod
    def pythonExecutable() -> str:
        """The Python that runs the training process (Slicer's PythonSlicer launcher when available)."""
        return shutil.which("PythonSlicer") or sys.executable

    @staticmethod
    def selectTrainedModel(process):
        """Make the run a finished training process wrote the selected model of the current scene.

        Uses the process's own output folder and the scene's parameter node (created if the
        scene was closed meanwhile), so it works when the module is not shown. Returns the
        folder, or None when the process made no model.
        """
        from AttriVAELib.slicer.panel_state import select_trained_model
        from AttriVAELib.slicer.training_process import trained_model

        output = trained_model(process)
        if output is None:
            return None
        return str(select_trained_model(slicer.mrmlScene, output))

    def startTraining(self, manifest: str, output: str, preset: str = "fast_cpu", epochs: int = 60,
                      device: str = "auto"):
        """Start ``python -m AttriVAELib.cli train`` in the background; return its TrainingProcess."""
        from AttriVAELib.slicer.training_process import TrainingProcess, training_command, training_environment

        command = training_command(manifest, output, preset=preset, epochs=epochs, device=device,
                                   python=self.pythonExecutable())
        return TrainingProcess(command, env=training_environment())


#
# AttriVAETest
#


class AttriVAETest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Developer mode: Reload and Test, or ctest): the real application, GUI and views."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_AttriVAELogic()
        self.setUp()
        self.test_AttriVAEWidget()
        self.setUp()
        self.test_AttriVAECohort()

    # ------------------------------------------------------------------ helpers
    def _modelFolder(self) -> str:
        """The shipped demo model, else a tiny model trained here (about 20 s on a CPU)."""
        from AttriVAELib.slicer.demo_model import find_demo_model

        try:
            return str(find_demo_model())
        except Exception:  # the demo model is not shipped in this build
            pass
        from AttriVAELib.cohorts.phantom.generator import generate_cohort
        from AttriVAELib.train.config import resolve_config
        from AttriVAELib.train.trainer import train

        root = pathlib.Path(slicer.app.temporaryPath) / "AttriVAETest"
        run = root / "run"
        if not (run / "model.safetensors").exists():
            if root.exists():
                shutil.rmtree(root)
            generate_cohort(root / "cohort", n=24, size=32, seed=1, workers=1, progress=False)
            config = resolve_config("attri_vae", {"model": {"input_size": 16, "latent_dim": 8, "width": 0.5},
                                                  "optim": {"batch_size": 8},
                                                  "train": {"epochs": 1, "precision": "fp32"}})
            train(root / "cohort", run, config=config, progress=False)
        return str(run)

    def _obliquePhantom(self, name: str = "AttriVAE test phantom"):
        """A synthetic subject on an oblique grid with anisotropic spacing."""
        import numpy as np

        from AttriVAELib.cohorts.phantom.generator import render_subject

        _row, image, _wall, _lesion = render_subject(7, 40, seed=0)
        array = (image[4:36, 2:38, :] * 1000.0).astype(np.float32)  # (k, j, i)
        c, s = np.cos(np.radians(20.0)), np.sin(np.radians(20.0))
        rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        ijkToRAS = np.eye(4)
        ijkToRAS[:3, :3] = rotation @ np.diag([2.1, 1.8, 2.9])
        ijkToRAS[:3, 3] = [-40.0, 25.0, -12.0]
        return slicer.util.addVolumeFromArray(array, ijkToRAS=ijkToRAS, name=name)

    def _assertSameGrid(self, node, reference):
        import numpy as np

        a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(a)
        reference.GetIJKToRASMatrix(b)
        for r in range(4):
            for c in range(4):
                self.assertAlmostEqual(a.GetElement(r, c), b.GetElement(r, c), places=6)
        self.assertEqual(node.GetImageData().GetDimensions(), reference.GetImageData().GetDimensions())
        self.assertTrue(np.isfinite(slicer.util.arrayFromVolume(node)).all())

    # ------------------------------------------------------------------ tests
    def test_AttriVAELogic(self):
        import numpy as np

        self.delayDisplay("Starting the logic test")
        logic = AttriVAELogic()
        if not logic.setupPythonRequirements(askConfirmation=False):
            self.skipTest("AttriVAE's Python packages are not installed in this testing environment")
        volume = self._obliquePhantom()
        logic.loadModel(self._modelFolder(), "auto", cpuFallback=True)
        summary = logic.encode(volume)
        self.assertEqual(len(summary["dims"]), logic.session.latent_size)
        self.assertAlmostEqual(sum(summary["probabilities"].values()), 1.0, places=4)

        reconstruction = logic.reconstructionNode()
        self._assertSameGrid(reconstruction, volume)
        before = slicer.util.arrayFromVolume(reconstruction).copy()
        nodeCount = slicer.mrmlScene.GetNumberOfNodes()
        first = summary["dims"][0]
        moved = logic.setLatents({0: first["max"]})
        self.assertEqual(moved.GetID(), reconstruction.GetID())
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodeCount)
        self.assertGreater(float(np.abs(slicer.util.arrayFromVolume(moved) - before).max()), 0.0)

        maps = logic.computeAttention(threshold=0.2, opacity=0.5)
        for name, node in maps.items():
            self._assertSameGrid(node, volume)
            values = slicer.util.arrayFromVolume(node)
            self.assertGreaterEqual(float(values.min()), -1e-6, name)
            self.assertLessEqual(float(values.max()), 1.0 + 1e-6, name)
            # Slicer's own Inferno colour table (not a hand-built copy) is used in the application
            self.assertEqual(node.GetDisplayNode().GetColorNodeID(), "vtkMRMLColorTableNodeFileInferno.txt")
        shown = next(iter(maps.values()))
        composite = slicer.app.layoutManager().sliceWidget("Red").sliceLogic().GetSliceCompositeNode()
        self.assertEqual(composite.GetForegroundVolumeID(), shown.GetID())
        self.assertEqual(composite.GetBackgroundVolumeID(), volume.GetID())

        difference = logic.computeCounterfactual("other_class")
        self._assertSameGrid(difference, volume)
        sequence = logic.createTraversal(0, first["min"], first["max"], 5)
        browser = logic.session.traversal_browser
        self.assertEqual(sequence.GetNumberOfDataNodes(), 5)
        self.assertIsNotNone(browser)
        self.assertIsNotNone(browser.GetProxyNode(sequence))
        self.delayDisplay("Logic test passed")

    def _waitForTasks(self, widget, timeout: float = 120.0) -> None:
        """Let the widget's timer run the background tasks to the end (the GUI stays live meanwhile)."""
        import time

        end = time.monotonic() + timeout
        session = widget.logic.session
        while (session is None or session.busy or widget._taskTimer.isActive()) and time.monotonic() < end:
            slicer.app.processEvents()
            time.sleep(0.01)
            session = widget.logic.session
        self.assertFalse(session is not None and session.busy, "a background task did not finish")

    def test_AttriVAEWidget(self):
        """The whole workflow through the panel: demo model, encode, slider, attention, traversal,
        counterfactual, module re-entry keeping the user's settings, scene close and reopen."""
        self.delayDisplay("Starting the widget test")
        logic = AttriVAELogic()
        if not logic.setupPythonRequirements(askConfirmation=False):
            self.skipTest("AttriVAE's Python packages are not installed in this testing environment")
        volume = self._obliquePhantom()
        slicer.util.selectModule("AttriVAE")
        widget = slicer.modules.AttriVAEWidget
        params = widget._parameterNode
        self.assertEqual(params.inputVolume.GetID(), volume.GetID())  # chosen automatically
        self.assertEqual(widget.ui.trainOutputPathLineEdit.currentPath, "")  # unset paths are empty, not "."
        params.useDemoModel = True
        widget.ui.encodeButton.click()  # loads the demo model, then encodes, in the background
        self.assertTrue(widget._busy())
        self._waitForTasks(widget)
        session = widget.logic.session
        self.assertTrue(session.has_encoding)
        self.assertEqual(len(widget._sliders), session.latent_size)

        # a slider move is decoded once the slider rests (debounced), in the background
        label, slider = widget._sliders[0]
        before = session.slider_specs()[0].value
        farther = slider.maximum if abs(slider.maximum - before) > abs(slider.minimum - before) else slider.minimum
        slider.value = farther
        self.assertIn(": ", label.text)
        self.delayDisplay("Waiting for the debounced decode", DECODE_DELAY_MS * 4)
        self._waitForTasks(widget)
        self.assertAlmostEqual(session.slider_specs()[0].value, slider.value, places=3)
        widget.ui.resetButton.click()
        self._waitForTasks(widget)
        self.assertAlmostEqual(session.slider_specs()[0].value, before, places=4)

        widget.ui.computeAttentionButton.click()
        self._waitForTasks(widget)
        self.assertGreater(widget.ui.heatmapComboBox.count, 0)
        widget.ui.opacitySliderWidget.value = 0.3
        composite = slicer.app.layoutManager().sliceWidget("Red").sliceLogic().GetSliceCompositeNode()
        self.assertAlmostEqual(composite.GetForegroundOpacity(), 0.3, places=3)

        params.traversalSteps = 3
        widget.ui.traversalButton.click()
        self._waitForTasks(widget)
        sequence = slicer.mrmlScene.GetFirstNode("AttriVAE traversal", "vtkMRMLSequenceNode")
        self.assertEqual(sequence.GetNumberOfDataNodes(), 3)

        widget.ui.counterfactualButton.click()
        self._waitForTasks(widget)
        self.assertIsNotNone(slicer.mrmlScene.GetFirstNode("AttriVAE counterfactual difference",
                                                           "vtkMRMLScalarVolumeNode"))

        # module re-entry keeps the user's settings and views
        params.traversalUnits = TRAVERSAL_UNITS[1]  # a user change: the default attribute range applies
        params.traversalMin, params.traversalMax = 0.125, 0.375  # then the user's own range
        slicer.util.setSliceViewerLayers(background=volume, foreground=None)
        slicer.util.selectModule("Data")
        slicer.util.selectModule("AttriVAE")
        self.assertEqual((params.traversalMin, params.traversalMax), (0.125, 0.375))
        self.assertEqual(params.traversalUnits, TRAVERSAL_UNITS[1])
        self.assertEqual(composite.GetBackgroundVolumeID(), volume.GetID())
        self.assertFalse(composite.GetForegroundVolumeID())

        # a long task can be cancelled; the panel is usable again at once
        widget.ui.computeAttentionButton.click()
        widget.ui.cancelTaskButton.click()
        self._waitForTasks(widget, 5.0)

        # scene close and reopen: the saved session comes back
        path = str(pathlib.Path(slicer.app.temporaryPath) / "AttriVAETest.mrb")
        self.assertTrue(slicer.util.saveScene(path))
        slicer.mrmlScene.Clear(0)
        self.assertFalse(widget.logic.session.has_encoding)
        self.assertEqual(widget._sliders, {})
        slicer.util.loadScene(path)
        widget.ui.restoreButton.click()
        self.assertTrue(widget.logic.session.has_encoding)
        self.assertEqual(len(widget._sliders), widget.logic.session.latent_size)
        self.delayDisplay("Widget test passed")

    def test_AttriVAECohort(self):
        """The Build a cohort section: a small ACDC-like cohort built in the background fills the Train section."""
        self.delayDisplay("Starting the cohort test")
        logic = AttriVAELogic()
        if not (logic.setupPythonRequirements(askConfirmation=False)
                and logic.setupCohortRequirements("clinical.csv", askConfirmation=False)):
            self.skipTest("AttriVAE's Python packages are not installed in this testing environment")
        from AttriVAELib.cohorts.acdc_like.generator import generate_acdc_like

        root = pathlib.Path(slicer.app.temporaryPath) / "AttriVAECohortTest"
        if root.exists():
            shutil.rmtree(root)
        generate_acdc_like(root / "raw", n=3, spacing=(1.6, 1.6, 5.0), seed=4, workers=1, progress=False)
        slicer.util.selectModule("AttriVAE")
        widget = slicer.modules.AttriVAEWidget
        widget.cohortImagesPathLineEdit.currentPath = str(root / "raw")
        widget.cohortLabelsPathLineEdit.currentPath = str(root / "raw")
        widget.cohortLabelSpecsLineEdit.text = "lv_cavity=3, myocardium=2, outer=1"
        widget.cohortClinicalPathLineEdit.currentPath = str(root / "raw" / "clinical.csv")
        widget.cohortIdColumnLineEdit.text = ""
        widget.cohortClassColumnLineEdit.text = "Group"
        widget.cohortOutputPathLineEdit.currentPath = str(root / "cohort")
        widget.buildCohortButton.click()
        self._waitForTasks(widget)
        self.assertTrue((root / "cohort" / "manifest.csv").is_file())
        self.assertEqual(widget._parameterNode.trainManifest, str(root / "cohort"))
        self.assertIn("6 subjects", widget.cohortSummaryTextEdit.toPlainText())
        self.delayDisplay("Cohort test passed")
