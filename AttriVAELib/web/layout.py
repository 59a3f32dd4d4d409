"""The page: a side panel with the tools, the messages and progress bar, and the six slice views.

Built with trame's Vuetify 3 widgets; every value comes from the trame state that
:class:`~AttriVAELib.web.controller.ViewerController` keeps (keys in
:data:`AttriVAELib.web.state.DEFAULT_STATE`), every button calls one of its triggers with the
tab's id first (``tab_id``, made in the page and never sent back as state), so only the tab
that owns the viewer acts. Other tabs show the views and a notice instead of the tools.

Elements the end-to-end tests use carry ids (``encode-btn``, ``upload-image``, ...).
"""

from __future__ import annotations

from trame.ui.vuetify3 import VAppLayout
from trame.widgets import client, html
from trame.widgets import vuetify3 as v

__all__ = ["build_layout"]

_ACCEPT = ".nii,.nii.gz,.nrrd,.mha,.gz"
#: Height of the strip above the views that holds the progress bar and the messages (pixels).
STATUS_HEIGHT = 112

#: The page's tab id: random, made once when the page mounts, then the tab claims the viewer.
_MOUNTED = "tab_id = Math.random().toString(36).slice(2, 12); trigger('claim', [tab_id])"


def _upload_handler(kind: str) -> str:
    """JS for a file input's change: refuse an oversize file in the page, else send it."""
    files = "$event.target.files"
    return (f"{files} && {files}.length && ({files}[0].size > upload_limit"
            f" ? trigger('too_big', [tab_id, {files}[0].name, {files}[0].size])"
            f" : trigger('upload', [tab_id, '{kind}', {files}]))")


def _act(name: str, *args: str) -> str:
    return f"trigger('{name}', [tab_id{''.join(', ' + a for a in args)}])"


def build_layout(server, rows, title: str = "AttriVAE viewer") -> VAppLayout:
    """The page of the viewer (see the module docstring); ``rows`` places the slice views."""
    server.state.trame__title = title
    with VAppLayout(server, full_height=True) as layout:
        layout.root.theme = "dark"
        client.ClientTriggers(mounted=_MOUNTED)
        client.ClientStateChange(value="owner_tab", change="owner_tab || trigger('claim', [tab_id])")
        with v.VAppBar(density="compact"):
            v.VAppBarTitle(title)
            v.VSpacer()
            html.Div("{{ input_label }}", classes="text-caption mr-4", id="input-label")
        with v.VNavigationDrawer(permanent=True, width=400):
            with html.Div(v_if="owner_tab && owner_tab !== tab_id", classes="pa-3"):
                with v.VAlert(type="info", variant="tonal", id="single-user"):
                    html.Div("This viewer is single-user: another browser tab is driving it. This tab shows the "
                             "views only. Close the other tab, or take over here (the other tab is then told so).")
                    v.VBtn("Take over", click=_act("take_over"), classes="mt-2", id="take-over", size="small")
            html.Div("Connecting…", v_if="!owner_tab", classes="pa-3")
            with html.Div(v_if="owner_tab && owner_tab === tab_id", id="tools"):
                _tools()
        with v.VMain():
            with html.Div(style="display:flex;flex-direction:column;height:100%;"):
                _status()
                with html.Div(style="flex:1 1 auto;min-height:0;position:relative;", id="views"):
                    rows.initialize_layout(layout)
    return layout


def _status() -> None:
    """Progress and messages in a strip of fixed height (newest first), so the views never change size."""
    html.Div("{{ decode_count }}", id="decode-count", style="display:none")
    with html.Div(style=f"height:{STATUS_HEIGHT}px;overflow-y:auto;flex:0 0 auto;", classes="px-3 py-1",
                  id="status"):
        with html.Div(v_if="busy", classes="d-flex align-center py-1", id="progress"):
            v.VProgressLinear(model_value=("progress",), color="primary", height=8, rounded=True, classes="mr-3",
                              style="flex:1")
            html.Div("{{ progress_text }}", classes="text-caption mr-3", id="progress-text")
            v.VBtn("Cancel", click=_act("cancel"), size="small", variant="tonal", id="cancel-btn")
        with html.Div(id="messages"):
            v.VAlert("{{ m.text }}", v_for="m in messages.slice().reverse()", key="m.id", type=("m.kind",),
                     density="compact", variant="tonal", closable=True, classes="mb-1 text-body-2",
                     click_close="trigger('dismiss', [m.id])", raw_attrs=[':data-kind="m.kind"'])


def _tools() -> None:
    with v.VExpansionPanels(multiple=True, model_value=([0, 1, 2, 3, 4],), variant="accordion"):
        with v.VExpansionPanel(title="Model and input"):
            with v.VExpansionPanelText():
                _input_panel()
        with v.VExpansionPanel(title="Encoding and latent sliders"):
            with v.VExpansionPanelText():
                _latent_panel()
        with v.VExpansionPanel(title="Attention maps"):
            with v.VExpansionPanelText():
                _attention_panel()
        with v.VExpansionPanel(title="Traversal"):
            with v.VExpansionPanelText():
                _traversal_panel()
        with v.VExpansionPanel(title="Counterfactual"):
            with v.VExpansionPanelText():
                _counterfactual_panel()


def _input_panel() -> None:
    compact = {"density": "compact", "hide_details": True, "classes": "mb-2"}
    with html.Div(classes="d-flex align-center"):
        v.VSelect(label="Model", items=("model_choices",), v_model=("model_choice",), id="model-select", **compact)
        v.VBtn("Load", click=_act("load_model"), size="small", classes="ml-2 mb-2", id="load-model-btn")
    html.Div("{{ model_info }}", classes="text-caption mb-2", id="model-info")
    v.VSelect(label="Volume", items=("files",), v_model=("image_key",), id="image-select", **compact)
    html.Div("{{ files_note }}", v_if="files_note", classes="text-caption mb-2")
    v.VFileInput(label=("`…or upload a volume (at most ${upload_limit_text})`",), accept=_ACCEPT, id="upload-image",
                 change=_upload_handler("image"), prepend_icon="mdi-upload", **compact)
    v.VSelect(label="Mask (optional)", items=("files",), v_model=("mask_key",), clearable=True, id="mask-select",
              **compact)
    v.VFileInput(label="…or upload a mask", accept=_ACCEPT, id="upload-mask", change=_upload_handler("mask"),
                 prepend_icon="mdi-upload", **compact)
    v.VBtn("Encode", click=_act("encode"), color="primary", block=True, disabled=("busy",), id="encode-btn")


def _latent_panel() -> None:
    html.Div("Encode an image to see its class, attributes and sliders.", v_if="!has_encoding",
             classes="text-caption")
    with html.Div(v_if="has_encoding", id="summary"):
        html.Div("{{ line }}", v_for="line in summary_lines", key="line", classes="text-body-2")
    with html.Div(v_for="(s, i) in sliders", key="s.dim + ':' + s.rev", classes="mt-2 latent-slider",
                  raw_attrs=[':data-dim="s.dim"']):
        html.Div("{{ slider_labels[i] }}", classes="text-caption slider-label")
        v.VSlider(model_value=("s.value",), min=("s.min",), max=("s.max",), step=("s.step",), hide_details=True,
                  density="compact", color="primary",
                  update_modelValue="s.value = $event; " + _act("slide", "s.dim", "$event"))
    v.VBtn("Reset", v_if="has_encoding", click=_act("reset"), size="small", variant="tonal", classes="mt-2",
           id="reset-btn")


def _attention_panel() -> None:
    compact = {"density": "compact", "hide_details": True, "classes": "mb-2"}
    with html.Div(classes="d-flex"):
        v.VSelect(label="Layer", items=("gradcam_layers",), v_model=("gradcam_layer",), **compact)
        v.VCheckbox(label="signed", v_model=("heatmap_signed",), classes="ml-2", density="compact",
                    hide_details=True)
    v.VBtn("Compute attention maps", click=_act("attention"), disabled=("busy || !has_encoding",), block=True,
           size="small", classes="mb-2", id="attention-btn")
    v.VSelect(label="Map", items=("heatmap_names",), v_model=("heatmap_name",), id="heatmap-select", **compact)
    v.VSelect(label="Overlay on the input", items=("['none', 'attention', 'difference']",), v_model=("overlay",),
              id="overlay-select", **compact)
    v.VSelect(label="Colour map", items=("colormaps",), v_model=("heatmap_colormap",), id="colormap-select",
              **compact)
    v.VSlider(label="Opacity", v_model=("heatmap_opacity",), min=0, max=1, step=0.05, thumb_label=True,
              id="opacity-slider", **compact)
    v.VSlider(label="Threshold", v_model=("heatmap_threshold",), min=0, max=1, step=0.05, thumb_label=True,
              id="threshold-slider", **compact)


def _traversal_panel() -> None:
    compact = {"density": "compact", "hide_details": True, "classes": "mb-2"}
    v.VSelect(label="Latent dim", items=("traversal_dims",), v_model=("traversal_dim",), id="traversal-dim",
              **compact)
    v.VSelect(label="Units", items=("['latent', 'attribute']",), v_model=("traversal_units",), **compact)
    with html.Div(classes="d-flex"):
        v.VTextField(label="From", v_model=("traversal_from",), type="number", classes="mb-2 mr-1",
                     density="compact", hide_details=True)
        v.VTextField(label="To", v_model=("traversal_to",), type="number", classes="mb-2 mr-1", density="compact",
                     hide_details=True)
        v.VTextField(label="Steps", v_model=("traversal_steps",), type="number", classes="mb-2",
                     density="compact", hide_details=True)
    v.VBtn("Create traversal", click=_act("traversal"), disabled=("busy || !has_encoding",), block=True,
           size="small", classes="mb-2", id="traversal-btn")
    with html.Div(v_if="traversal_labels.length", classes="d-flex align-center"):
        v.VBtn(icon=("traversal_playing ? 'mdi-pause' : 'mdi-play'",), click=_act("play"), size="small",
               variant="tonal", id="play-btn")
        v.VSlider(v_model=("traversal_frame",), min=0, max=("traversal_labels.length - 1",), step=1,
                  hide_details=True, density="compact", classes="mx-2", id="frame-slider")
        html.Div("{{ traversal_labels[traversal_frame] }}", classes="text-caption", id="frame-label")
    v.VSelect(label="Output row shows", items=("output_modes",), v_model=("output_mode",), id="output-mode",
              classes="mt-2", density="compact", hide_details=True)


def _counterfactual_panel() -> None:
    compact = {"density": "compact", "hide_details": True, "classes": "mb-2"}
    v.VSelect(label="Mode", items=("['other class', 'attribute value']",), v_model=("cf_mode",), **compact)
    with html.Div(v_if="cf_mode === 'attribute value'", classes="d-flex"):
        v.VSelect(label="Attribute", items=("cf_attributes",), v_model=("cf_attribute",), classes="mb-2 mr-1",
                  density="compact", hide_details=True)
        v.VTextField(label="Value", v_model=("cf_value",), type="number", classes="mb-2", density="compact",
                     hide_details=True)
    v.VBtn("Compute counterfactual", click=_act("counterfactual"), disabled=("busy || !has_encoding",), block=True,
           size="small", classes="mb-2", id="counterfactual-btn")
    html.Div("{{ line }}", v_for="line in cf_lines", key="line", classes="text-body-2")
