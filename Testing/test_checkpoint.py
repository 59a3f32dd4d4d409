"""Checkpoints: safetensors + JSON, atomic, verified, never unpickled."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from AttriVAELib.core.errors import CheckpointError
from AttriVAELib.nn.checkpoint import (load_checkpoint, optimizer_from_tensors, optimizer_to_tensors, read_metadata,
                                       save_checkpoint)


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"model.w": torch.randn(4, 3, generator=g), "model.b": torch.zeros(3), "step": torch.tensor(7)}


def test_round_trip(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, tensors(), {"kind": "model", "attributes": {"names": ["a"]}})
    loaded, meta = load_checkpoint(tmp_path)
    for k, v in tensors().items():
        assert torch.equal(loaded[k], v)
    assert meta["attributes"]["names"] == ["a"]
    assert meta["versions"]["torch"] == torch.__version__
    sidecar = json.loads((tmp_path / "model.json").read_text())
    assert sidecar["weights_file"] == "model.safetensors" and len(sidecar["sha256"]) == 64
    assert read_metadata(tmp_path / "model.safetensors")["kind"] == "model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    weights = save_checkpoint(tmp_path, tensors(), {"kind": "model"})
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # flip bits inside the tensor data
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        load_checkpoint(tmp_path)


def test_truncated_file(tmp_path: Path) -> None:
    weights = save_checkpoint(tmp_path, tensors(), {"kind": "model"})
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path)


def test_missing_checkpoint_and_sidecar(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, tensors(), {"kind": "model"})
    os.remove(tmp_path / "model.json")
    with pytest.raises(CheckpointError, match="metadata file missing"):
        load_checkpoint(tmp_path)


def test_plain_safetensors_is_not_a_checkpoint(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file(tensors(), str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="not an AttriVAE checkpoint"):
        load_checkpoint(tmp_path)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {_Exploit.marker}",))


def test_pickle_payload_is_never_executed(tmp_path: Path) -> None:
    _Exploit.marker = tmp_path / "pwned"
    (tmp_path / "model.safetensors").write_bytes(pickle.dumps(_Exploit()))
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path)
    assert not _Exploit.marker.exists()


def test_newer_format_is_refused(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, tensors(), {"kind": "model", "format_version": 99})
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(tmp_path)


def test_optimizer_state_round_trip() -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    flat, meta = optimizer_to_tensors(opt.state_dict())
    json.dumps(meta)  # JSON-safe
    restored = torch.optim.Adam(model.parameters(), lr=1e-3)
    restored.load_state_dict(optimizer_from_tensors(flat, json.loads(json.dumps(meta))))
    for a, b in zip(opt.state_dict()["state"].values(), restored.state_dict()["state"].values()):
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key]))
