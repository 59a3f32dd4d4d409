"""What the module panel shows, as plain values: slider specs, summary lines, combo-box choices.

Pure functions of the dicts :meth:`AttriVAESession.summary` and the counterfactual summary
(:attr:`AttriVAESession.last_counterfactual`) return, so the Qt widget only copies values into
widgets and never reads the session's model or encoding. Texts are plain (no HTML); attribute
values are shown with 4 significant digits, probabilities with 3 decimals.
:class:`PanelViewsMixin` gives the session these views as methods (``session.slider_specs()``).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

__all__ = ["PanelViewsMixin", "SliderSpec", "attribute_estimate", "counterfactual_lines", "dimension_choices",
           "moved_line", "slider_specs", "summary_lines", "traversal_range"]


class SliderSpec(NamedTuple):
    """One latent slider: the dim, what it stands for, its range and step, and its current value."""

    dim: int
    name: str
    unit: str
    regularized: bool
    minimum: float
    maximum: float
    step: float
    value: float
    mu: float
    label: str


def slider_specs(summary: Mapping[str, Any]) -> list[SliderSpec]:
    """One :class:`SliderSpec` per latent dim, in dim order (the regularized dims come first)."""
    return [SliderSpec(int(d["dim"]), d["name"], d["unit"], bool(d["regularized"]), float(d["min"]),
                       float(d["max"]), float(d["step"]), float(d["value"]), float(d["mu"]), d["label"])
            for d in summary["dims"]]


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """The predicted class with its probabilities, then ``name: estimate unit`` per attribute.

    An attribute line ends with ``→ current`` when the sliders moved the current latent vector
    away from the encoded estimate. Empty when the model has neither a classifier nor attributes.
    """
    lines = []
    if summary.get("probabilities"):
        probs = ", ".join(f"{name}: {p:.3f}" for name, p in summary["probabilities"].items())
        lines.append(f"Predicted class: {summary['predicted_label']} ({probs})")
    for item in summary["attributes"]:
        if item["estimate"] is None:
            continue
        unit = f" {item['unit']}" if item["unit"] else ""
        text = f"{item['name']}: {item['estimate']:.4g}{unit}"
        if item["current"] is not None and abs(item["current"] - item["estimate"]) > 1e-9:
            text += f" → {item['current']:.4g}{unit}"
        lines.append(text)
    return lines


def dimension_choices(summary: Mapping[str, Any], attributes_only: bool = False) -> list[tuple[str, int]]:
    """(text, dim) per latent dim, or per attribute with ``attributes_only``; text ``"name (unit)"``."""
    items = summary["attributes"] if attributes_only else summary["dims"]
    return [(f"{item['name']} ({item['unit']})" if item.get("unit") else item["name"], int(item["dim"]))
            for item in items]


def traversal_range(summary: Mapping[str, Any], dim: int, units: str = "latent") -> tuple[float, float]:
    """Default traversal range of ``dim``: the slider range, or with ``units="attribute"`` the
    calibrated attribute range (physical units) when the dim has one."""
    item = summary["dims"][int(dim)]
    low, high = item["min"], item["max"]
    if units == "attribute":
        ranges = [a["range"] for a in summary["attributes"] if a["dim"] == int(dim)]
        if ranges and ranges[0]:
            low, high = ranges[0]
    return float(low), float(high)


def attribute_estimate(summary: Mapping[str, Any], dim: int) -> float | None:
    """The encoded image's estimate of attribute ``dim`` (its unit), None without one."""
    for item in summary["attributes"]:
        if item["dim"] == int(dim):
            return None if item["estimate"] is None else float(item["estimate"])
    return None


def moved_line(moved: Mapping[str, Any]) -> str:
    """``Moved: <attribute names>`` and, past a few unnamed dims, their number only."""
    named = [name for name in moved if not name.startswith("dim_")]
    unnamed = [name for name in moved if name.startswith("dim_")]
    if len(unnamed) <= 3:
        return "Moved: " + ", ".join([*named, *unnamed])
    return "Moved: " + ", ".join([*named, f"{len(unnamed)} unnamed dims"])


def counterfactual_lines(result: Mapping[str, Any] | None) -> list[str]:
    """``Moved: <dims>``, the donor of an exemplar counterfactual, with a classifier ``Class
    probabilities after: ...`` and what the decoded image shows when read back, and one line per
    read-back disagreement; [] before any."""
    if not result:
        return []
    lines = [moved_line(result.get("moved", {}))]
    donor = result.get("exemplar")
    if donor:
        from AttriVAELib.inference.readback import donor_note

        note = donor_note(donor)
        lines.append(note[0].upper() + note[1:])
    if result.get("probabilities_counterfactual"):
        probs = ", ".join(f"{p:.3f}" for p in result["probabilities_counterfactual"])
        lines.append(f"Class probabilities after: {probs}")
    checked = result.get("read_back") or {}
    if checked.get("probabilities_image"):
        shown = ", ".join(f"{p:.3f}" for p in checked["probabilities_image"])
        lines.append(f"Its decoded image, read back: {shown}")
    return lines + list(checked.get("warnings") or [])


class PanelViewsMixin:
    """The panel's views of a session (part of :class:`~AttriVAELib.slicer.session.AttriVAESession`)."""

    def slider_specs(self) -> list[SliderSpec]:
        """One :class:`SliderSpec` per latent dim: range, step, value, label."""
        return slider_specs(self.summary())

    def summary_lines(self) -> list[str]:
        """The predicted class and the attribute estimates as text lines (see :func:`summary_lines`)."""
        return summary_lines(self.summary())

    def dimension_choices(self, attributes_only: bool = False) -> list[tuple[str, int]]:
        """(text, dim) for a combo box: every latent dim, or only the attributes."""
        return dimension_choices(self.summary(), attributes_only)

    def traversal_range(self, dim: int, units: str = "latent") -> tuple[float, float]:
        """Default (from, to) of a traversal of ``dim`` in ``units`` (``"latent"`` or ``"attribute"``)."""
        return traversal_range(self.summary(), dim, units)

    def attribute_estimate(self, dim: int) -> float | None:
        """The encoded image's estimate of attribute ``dim`` in its unit (None without one)."""
        return attribute_estimate(self.summary(), dim)

    def counterfactual_lines(self) -> list[str]:
        """What the last counterfactual moved and the class probabilities after it."""
        return counterfactual_lines(self.last_counterfactual)
