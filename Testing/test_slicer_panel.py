"""AttriVAELib.slicer.panel: the panel's values and texts, from hand-made summaries (no model, no Slicer).

The session methods that use these (``slider_specs()``, ``summary_lines()``, ...) are tested
against a real MRML scene in test_slicer_logic.py; here the cases a tiny model cannot show
(an attribute moved by a slider, no classifier, a dim without a calibrated range).
"""

from __future__ import annotations

import pytest

from AttriVAELib.slicer import panel


def summary(current: float = 70.0, probabilities=True) -> dict:
    return {
        "probabilities": {"healthy": 0.25, "lesion": 0.75} if probabilities else None,
        "predicted_label": "lesion" if probabilities else None,
        "attributes": [
            {"dim": 0, "name": "volume_ml", "unit": "mL", "estimate": 70.0, "current": current, "range": (40.0, 90.0)},
            {"dim": 1, "name": "score", "unit": "", "estimate": 0.5, "current": 0.5, "range": None},
            {"dim": 2, "name": "unknown", "unit": "mm", "estimate": None, "current": None, "range": None},
        ],
        "dims": [
            {"dim": d, "name": name, "unit": unit, "regularized": d < 3, "mu": 0.1 * d, "value": 0.1 * d + 0.5,
             "min": -2.0, "max": 2.0 + d, "step": (4.0 + d) / 200, "label": f"{name}: {d}"}
            for d, (name, unit) in enumerate([("volume_ml", "mL"), ("score", ""), ("unknown", "mm"),
                                              ("dim 3", "")])
        ],
    }


def test_summary_lines():
    assert panel.summary_lines(summary()) == ["Predicted class: lesion (healthy: 0.250, lesion: 0.750)",
                                              "volume_ml: 70 mL", "score: 0.5"]
    moved = panel.summary_lines(summary(current=81.234567, probabilities=False))
    assert moved == ["volume_ml: 70 mL → 81.23 mL", "score: 0.5"]
    assert panel.summary_lines({"probabilities": None, "attributes": []}) == []


def test_slider_specs():
    specs = panel.slider_specs(summary())
    assert [s.dim for s in specs] == [0, 1, 2, 3] and [s.regularized for s in specs] == [True, True, True, False]
    last = specs[-1]
    assert (last.name, last.unit, last.minimum, last.maximum, last.label) == ("dim 3", "", -2.0, 5.0, "dim 3: 3")
    assert last.value == pytest.approx(0.8) and last.mu == pytest.approx(0.3) and last.step == pytest.approx(0.035)
    assert last._asdict()["maximum"] == 5.0


def test_dimension_choices_traversal_range_and_estimates():
    s = summary()
    assert panel.dimension_choices(s) == [("volume_ml (mL)", 0), ("score", 1), ("unknown (mm)", 2), ("dim 3", 3)]
    assert panel.dimension_choices(s, attributes_only=True) == [("volume_ml (mL)", 0), ("score", 1),
                                                                 ("unknown (mm)", 2)]
    assert panel.traversal_range(s, 0) == (-2.0, 2.0)
    assert panel.traversal_range(s, 0, "attribute") == (40.0, 90.0)
    assert panel.traversal_range(s, 1, "attribute") == (-2.0, 3.0)  # no calibrated range: the slider's
    assert panel.traversal_range(s, 3, "attribute") == (-2.0, 5.0)  # a free dim
    assert panel.attribute_estimate(s, 0) == 70.0
    assert panel.attribute_estimate(s, 2) is None and panel.attribute_estimate(s, 3) is None


def test_counterfactual_lines():
    assert panel.counterfactual_lines(None) == [] and panel.counterfactual_lines({}) == []
    result = {"moved": {"volume_ml": [0.1, 0.9], "dim_5": [0.0, -1.0]}, "probabilities_counterfactual": [0.8, 0.2]}
    assert panel.counterfactual_lines(result) == ["Moved: volume_ml, dim_5", "Class probabilities after: 0.800, 0.200"]
    assert panel.counterfactual_lines({"moved": {"volume_ml": [0.1, 0.9]}}) == ["Moved: volume_ml"]
    many = {"moved": {"lesion_volume_ml": [0, 1], **{f"dim_{d}": [0, 1] for d in range(4, 9)}},
            "exemplar": {"subject": "sub-0007", "readback": 0.996}}
    assert panel.counterfactual_lines(many) == [
        "Moved: lesion_volume_ml, 5 unnamed dims",
        "Taken from training subject sub-0007 (its decoded image read back as the target class, p 1.00)"]
