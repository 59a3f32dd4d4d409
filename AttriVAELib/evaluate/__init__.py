"""Evaluation of a trained run: disentanglement metrics, held-out scores, the report and method comparison.

Public names are imported on first use (:mod:`AttriVAELib.core.lazy`).
"""

from AttriVAELib.core.lazy import lazy_exports

_EXPORTS = {
    "EvaluationSettings": "AttriVAELib.evaluate.evaluation",
    "classification_scores": "AttriVAELib.evaluate.scores",
    "decoded_attributes": "AttriVAELib.evaluate.fidelity",
    "evaluate_run": "AttriVAELib.evaluate.evaluation",
    "headline": "AttriVAELib.evaluate.evaluation",
    "localization_scores": "AttriVAELib.evaluate.localization",
    "map_localization": "AttriVAELib.evaluate.localization",
    "reconstruction_scores": "AttriVAELib.evaluate.scores",
    "attribute_map_variants": "AttriVAELib.evaluate.localization",
    "region_attention": "AttriVAELib.evaluate.localization",
    "traversal_fidelity": "AttriVAELib.evaluate.fidelity",
    "DCIResult": "AttriVAELib.evaluate.metrics",
    "InterpretabilityResult": "AttriVAELib.evaluate.metrics",
    "MIGResult": "AttriVAELib.evaluate.metrics",
    "MetricInputError": "AttriVAELib.evaluate.metrics",
    "ModularityResult": "AttriVAELib.evaluate.metrics",
    "SAPResult": "AttriVAELib.evaluate.metrics",
    "SCCResult": "AttriVAELib.evaluate.metrics",
    "dci": "AttriVAELib.evaluate.metrics",
    "interpretability": "AttriVAELib.evaluate.metrics",
    "mig": "AttriVAELib.evaluate.metrics",
    "modularity": "AttriVAELib.evaluate.metrics",
    "sap": "AttriVAELib.evaluate.metrics",
    "spearman_score": "AttriVAELib.evaluate.metrics",
    "summarize": "AttriVAELib.evaluate.metrics",
    "write_evaluation": "AttriVAELib.evaluate.report",
    "render_report": "AttriVAELib.evaluate.report",
    "metrics_table_rows": "AttriVAELib.evaluate.report",
    "compare": "AttriVAELib.evaluate.compare",
    "method_config": "AttriVAELib.evaluate.compare",
    "comparison_table": "AttriVAELib.evaluate.compare",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
