"""Images, manifests, preprocessing onto the model grid, datasets, augmentation and shape attributes.

Public names are imported on first use (:mod:`AttriVAELib.core.lazy`).
"""

from AttriVAELib.core.lazy import lazy_exports

_EXPORTS = {
    "Geometry": "AttriVAELib.data.io",
    "Volume": "AttriVAELib.data.io",
    "read_sitk": "AttriVAELib.data.io",
    "read_image": "AttriVAELib.data.io",
    "read_mask": "AttriVAELib.data.io",
    "write_image": "AttriVAELib.data.io",
    "attribute_unit": "AttriVAELib.data.manifest",
    "attribute_label": "AttriVAELib.data.manifest",
    "Record": "AttriVAELib.data.manifest",
    "Manifest": "AttriVAELib.data.manifest",
    "load_manifest": "AttriVAELib.data.manifest",
    "make_split": "AttriVAELib.data.manifest",
    "load_split": "AttriVAELib.data.manifest",
    "AttributeScaler": "AttriVAELib.data.manifest",
    "fit_scaler": "AttriVAELib.data.manifest",
    "training_subjects": "AttriVAELib.data.manifest",
    "GridMapping": "AttriVAELib.data.preprocessing",
    "PreprocessSpec": "AttriVAELib.data.preprocessing",
    "Preprocessed": "AttriVAELib.data.preprocessing",
    "preprocess": "AttriVAELib.data.preprocessing",
    "preprocess_file": "AttriVAELib.data.preprocessing",
    "to_model_grid": "AttriVAELib.data.preprocessing",
    "to_source_grid": "AttriVAELib.data.preprocessing",
    "largest_component": "AttriVAELib.data.attributes",
    "max_axial_diameter_mm": "AttriVAELib.data.attributes",
    "mean_wall_thickness_mm": "AttriVAELib.data.attributes",
    "shape_attributes": "AttriVAELib.data.attributes",
    "sphericity": "AttriVAELib.data.attributes",
    "surface_area_mm2": "AttriVAELib.data.attributes",
    "volume_ml": "AttriVAELib.data.attributes",
    "CohortDataset": "AttriVAELib.data.dataset",
    "build_augmentation": "AttriVAELib.data.augment",
    "cohort_summary": "AttriVAELib.data.cohort_files",
    "describe_cohort": "AttriVAELib.data.cohort_files",
    "label_map_path": "AttriVAELib.data.cohort_files",
    "manifest_text": "AttriVAELib.data.cohort_files",
    "read_label_map": "AttriVAELib.data.cohort_files",
    "read_cohort_info": "AttriVAELib.data.cohort_files",
    "write_cohort": "AttriVAELib.data.cohort_files",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
