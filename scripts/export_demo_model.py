"""Copy a trained run's best model into the extension as its built-in demo model.

    python scripts/export_demo_model.py demo/run [--out AttriVAE/Resources/DemoModel]

Only what inference needs is kept (weights, configuration, preprocessing, attribute
calibration, class statistics and their exemplars, the donors of counterfactuals; a run trained
by an older version gets its exemplars first, from its training data); paths of the machine it was trained on (the cohort, the
class statistics' source, the run a fine-tune started from) are replaced by descriptions, and the held-out scores are recorded. The checkpoint is re-saved, so its
SHA-256 sidecar matches. A README next to it says what the model is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from AttriVAELib.core import atomic
from AttriVAELib.nn.checkpoint import load_checkpoint, save_checkpoint
from AttriVAELib.train.heldout import add_calibration

ROOT = Path(__file__).resolve().parent.parent


def _cohort_description(meta: dict) -> str:
    """"attrivae demo: N subjects at S³, seed K" from the training cohort's ``cohort.json``."""
    manifest = (meta.get("data") or {}).get("manifest")
    info_file = Path(manifest).parent / "cohort.json" if manifest else None
    if info_file is None or not info_file.is_file():
        return "attrivae demo"
    info = json.loads(info_file.read_text())
    return f"attrivae demo: {info['n']} subjects at {info['size']}³, seed {info['seed']}"


def export(run: Path, out: Path) -> Path:
    tensors, meta = load_checkpoint(run, name="model")
    if "calibration" not in meta or "class_statistics" not in meta:
        raise SystemExit(f"{run}: the model lacks its calibration or class statistics; train it with this version")
    if "exemplars" not in meta["class_statistics"]:
        add_calibration(run)
        tensors, meta = load_checkpoint(run, name="model")
    held = json.loads((run / "heldout.json").read_text()) if (run / "heldout.json").exists() else {}
    meta["data"] = {"description": f"built-in synthetic phantom cohort ({_cohort_description(meta)})"}
    statistics = meta["class_statistics"]
    if "source" in statistics:
        statistics["source"] = f"the training split of that cohort (n={sum(statistics.get('counts', []))})"
    train_config = (meta.get("config") or {}).get("train") or {}
    if train_config.get("init_from"):
        train_config["init_from"] = "the first stage of attrivae demo (its fine-tune starts from that model)"
    meta["heldout"] = held
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, {k: v.contiguous() for k, v in tensors.items()}, meta, name="model")
    size, latent = meta["model_config"]["input_size"], meta["model_config"]["latent_dim"]
    seed = int(train_config.get("seed", 0))
    demo_command = "bash scripts/demo.sh" + (f" --train-seed {seed}" if seed else "")
    attrs = ", ".join(meta["attributes"]["regularized"] if "regularized" in meta["attributes"]
                      else meta["attributes"]["names"])
    scores = ", ".join(f"{k.removeprefix('spearman_')} ρ {v:.2f}" for k, v in held.items()
                       if k.startswith("spearman_") and k != "spearman_min")
    atomic.write_text(out / "README.md", f"""# AttriVAE demo model

A small Attri-VAE (preset `fast_cpu`: {size}³ input, latent {latent}) trained with the recipe of `attrivae demo`
(200 epochs, then a 25-epoch fine-tune that makes the lesion-volume dimension draw a lesion) on the built-in
synthetic phantom cohort (hollow ellipsoidal shells, class 1 = a bright lesion in the wall). It lets a
new user try encoding, sliders, attention maps, traversals and counterfactuals offline; it is not a
clinical model and knows nothing of real anatomy.

- Regularized attributes: {attrs}.
- Held-out test split (n = {held.get('n', '?')}): AUC {held.get('auc', float('nan')):.3f}, accuracy
  {held.get('accuracy', float('nan')):.3f}; {scores}.
- Counterfactuals take the class-relevant dimensions from the nearest of
  {len(meta["class_statistics"]["exemplars"]["subjects"])} stored training codes (subject IDs of the cohort that `attrivae demo` generates).
- Input: any 3D image of a phantom; intensities are read with a fixed window [0, 1000] (the cohort
  stores intensities × 1000).

Re-create it with `{demo_command}` then `python scripts/export_demo_model.py demo/run` (training
repeats bit for bit on the same CPU and thread count only).
""")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="run folder (with model.safetensors)")
    p.add_argument("--out", type=Path, default=ROOT / "AttriVAE" / "Resources" / "DemoModel")
    args = p.parse_args()
    print(f"demo model written to {export(args.run, args.out)}")


if __name__ == "__main__":
    main()
