"""A torch Dataset over a manifest's subjects, preprocessed once into an in-memory cache.

Every subject is read and preprocessed (:func:`AttriVAELib.data.preprocessing.preprocess_file`)
once, optionally by a thread pool (SimpleITK, NumPy and SciPy release the GIL), into one
contiguous tensor (float16 by default: 1000 subjects at 80³ take 1 GB). An epoch never
re-reads files; augmentation is applied on the fly to a float32 copy of the cached volume.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np
import torch
from scipy import ndimage as ndi
from torch.utils.data import Dataset

from AttriVAELib.core.errors import ConfigError
from AttriVAELib.data.io import read_mask
from AttriVAELib.data.manifest import AttributeScaler, Manifest, Record
from AttriVAELib.data.preprocessing import GridMapping, Preprocessed, PreprocessSpec, preprocess_file, to_model_grid

__all__ = ["CohortDataset"]

ProgressCallback = Callable[[int, int], None]


class CohortDataset(Dataset):
    """Subjects of a manifest as model-ready tensors.

    Args:
        manifest: the loaded manifest.
        subjects: subject ids to include, in this order (e.g. one split).
        spec: preprocessing settings; ``spec.size`` is N.
        scaler: min-max attribute scaling fitted on the training split; None: raw attributes.
        augmentation: callable on a (1, N, N, N) float32 tensor (see
            :func:`AttriVAELib.data.augment.build_augmentation`), applied in ``__getitem__``.
        cache: preprocess every subject once in the constructor and keep the result in
            memory; False: preprocess in every ``__getitem__`` (reads the files each time).
        workers: threads for preprocessing the cache (0 or 1: in this thread).
        progress: True shows a tqdm progress bar; a callable ``progress(done, total)`` is
            called after each subject instead (e.g. for a GUI progress bar).
        cache_dtype: ``torch.float16`` (default; error < 5e-4 on [0, 1]) or ``torch.float32``.
        lesions: also give each subject's lesion mask (for a lesion-weighted reconstruction
            term): the share of each model voxel the lesion covers, dilated by one voxel, and
            moved by the same spatial augmentation as the image (zeros without a lesion mask).

    Items are dicts:
        ``image``: FloatTensor (1, N, N, N) in [0, 1];
        ``attributes``: FloatTensor (K,), scaled with ``scaler`` (raw without);
        ``label``: LongTensor () index into ``label_names``, -1 without a label;
        ``index``: int, the position in this dataset; ``subject``: str;
        with ``lesions``: ``lesion``: FloatTensor (1, N, N, N) in [0, 1].

    Raises:
        InputError: an image or mask is unreadable or unusable (the message names the file).
        ManifestError: a subject is not in the manifest.
        ConfigError: the scaler's attribute names differ from the manifest's.
    """

    def __init__(
        self,
        manifest: Manifest,
        subjects: Sequence[str],
        spec: PreprocessSpec,
        scaler: AttributeScaler | None = None,
        augmentation: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cache: bool = True,
        workers: int = 0,
        progress: bool | ProgressCallback = False,
        cache_dtype: torch.dtype = torch.float16,
        lesions: bool = False,
    ) -> None:
        if cache_dtype not in (torch.float16, torch.float32):
            raise ConfigError(f"cache_dtype must be torch.float16 or torch.float32 (got {cache_dtype})")
        self.manifest = manifest
        self.records: list[Record] = manifest.subset(list(subjects))
        self.spec = spec
        self.scaler = scaler
        self.augmentation = augmentation
        self.attribute_names: list[str] = list(manifest.attribute_names)
        self.label_names: list[str] = list(manifest.label_names)

        raw = manifest.attribute_matrix(self.records)
        if scaler is not None:
            if list(scaler.names) != self.attribute_names:
                raise ConfigError(
                    f"attribute scaling is for {list(scaler.names)}, but the manifest has {self.attribute_names}"
                )
            raw = scaler.transform(raw)
        shape = (len(self.records), len(self.attribute_names))
        self.attributes = torch.as_tensor(raw, dtype=torch.float32).reshape(shape)
        self.labels = torch.as_tensor(manifest.labels(self.records), dtype=torch.long).reshape(len(self.records))

        self._mappings: list[GridMapping | None] = [None] * len(self.records)
        volumes = (len(self.records), 1, spec.size, spec.size, spec.size)
        self._images: torch.Tensor | None = torch.empty(volumes, dtype=cache_dtype) if cache else None
        self._lesions: torch.Tensor | None = torch.zeros(volumes, dtype=torch.float16) if lesions else None
        if cache or lesions:
            self._fill_cache(workers, progress)

    # -- preprocessing -------------------------------------------------------------------

    def _preprocess(self, i: int) -> Preprocessed:
        record = self.records[i]
        return preprocess_file(record.image, self.spec, record.mask)

    def _store(self, i: int, pre: Preprocessed) -> None:
        self._mappings[i] = pre.mapping
        if self._images is not None:
            self._images[i, 0].copy_(torch.from_numpy(pre.image))
        if self._lesions is not None and self.records[i].lesion is not None:
            cover = self.lesion(i, "linear")
            self._lesions[i, 0].copy_(torch.from_numpy(ndi.maximum_filter(cover, size=3)))

    def _fill_cache(self, workers: int, progress: bool | ProgressCallback) -> None:
        total = len(self.records)
        bar = None
        if progress is True:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="preprocessing", unit="image")
        callback = progress if callable(progress) else None
        try:
            if workers > 1 and total > 1:
                pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="attrivae-preprocess")
                try:
                    for done, pre in enumerate(pool.map(self._preprocess, range(total)), start=1):
                        self._store(done - 1, pre)
                        self._report(bar, callback, done, total)
                finally:
                    # On an error, do not wait for the rest of the cohort.
                    pool.shutdown(wait=True, cancel_futures=True)
            else:
                for i in range(total):
                    self._store(i, self._preprocess(i))
                    self._report(bar, callback, i + 1, total)
        finally:
            if bar is not None:
                bar.close()

    @staticmethod
    def _report(bar: Any, callback: ProgressCallback | None, done: int, total: int) -> None:
        if bar is not None:
            bar.update(1)
        if callback is not None:
            callback(done, total)

    # -- access --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.records)

    def _check_index(self, i: int) -> int:
        n = len(self.records)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} subjects")
        return i % n

    def image(self, i: int) -> torch.Tensor:
        """The preprocessed (1, N, N, N) float32 volume of subject ``i``, without augmentation."""
        i = self._check_index(i)
        if self._images is not None:
            return self._images[i].to(torch.float32, copy=True)
        pre = self._preprocess(i)
        self._mappings[i] = pre.mapping
        return torch.from_numpy(pre.image).unsqueeze(0)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = self._check_index(i)
        image = self.image(i)
        lesion = None if self._lesions is None else self._lesions[i].to(torch.float32)
        if self.augmentation is not None:
            if lesion is None:
                image = torch.as_tensor(self.augmentation(image), dtype=torch.float32)
            else:  # one spatial transform for both; intensity changes touch channel 0 only
                both = torch.as_tensor(self.augmentation(torch.cat([image, lesion])), dtype=torch.float32)
                image, lesion = both[:1], both[1:]
        item = {
            "image": image,
            "attributes": self.attributes[i].clone(),
            "label": self.labels[i].clone(),
            "index": i,
            "subject": self.records[i].subject,
        }
        if lesion is not None:
            item["lesion"] = lesion
        return item

    @property
    def images(self) -> torch.Tensor | None:
        """The cache, (S, 1, N, N, N) in the cache dtype (not augmented), or None without cache."""
        return self._images

    def mapping(self, i: int) -> GridMapping:
        """The :class:`GridMapping` of subject ``i``; without a cache, preprocessed here if not yet loaded."""
        i = self._check_index(i)
        if self._mappings[i] is None:
            self._mappings[i] = self._preprocess(i).mapping
        return self._mappings[i]  # type: ignore[return-value]

    @property
    def mappings(self) -> list[GridMapping]:
        """The :class:`GridMapping` of every subject (for mapping model-grid outputs back).

        Without a cache, subjects not yet loaded are preprocessed here.
        """
        return [self.mapping(i) for i in range(len(self.records))]

    @property
    def subjects(self) -> list[str]:
        return [r.subject for r in self.records]

    def lesion(self, i: int, interpolator: str = "nearest") -> np.ndarray | None:
        """Subject ``i``'s lesion mask on the model grid, (N, N, N), or None without one.

        ``"nearest"`` gives uint8 {0, 1}; ``"linear"`` gives the float32 fraction of each
        model voxel covered by the lesion. Read from disk on each call; an empty mask (a subject
        without lesion) gives zeros.
        """
        i = self._check_index(i)
        record = self.records[i]
        if record.lesion is None:
            return None
        mapping = self._mappings[i]
        if mapping is None:
            mapping = self._mappings[i] = self._preprocess(i).mapping
        lesion = read_mask(record.lesion, reference=mapping.source, allow_empty=True)
        return to_model_grid(lesion, mapping, interpolator)

    @staticmethod
    def worker_init_fn(worker_id: int) -> None:
        """``DataLoader(worker_init_fn=...)``: give each worker its own augmentation random state.

        Without it every worker process starts from the same copied random state and
        produces the same augmentations.
        """
        info = torch.utils.data.get_worker_info()
        if info is None:
            return
        augmentation = getattr(info.dataset, "augmentation", None)
        if augmentation is not None and hasattr(augmentation, "set_random_state"):
            augmentation.set_random_state(seed=int(info.seed % (2**32)))
