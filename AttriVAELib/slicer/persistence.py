"""The session saved with the MRML scene and restored from it (model, device, nodes, latent vector).

:class:`PersistenceMixin` is part of :class:`~AttriVAELib.slicer.session.AttriVAESession`: the
state goes to the module's scripted module node as JSON (:mod:`AttriVAELib.slicer.mrml.parameters`),
so it travels with ``.mrml``/``.mrb`` files, and :meth:`~PersistenceMixin.restore_state` reloads
the model, re-encodes the saved input and restores the latent vector.
"""

from __future__ import annotations

from typing import Any, Mapping

from AttriVAELib.slicer import mrml

__all__ = ["PersistenceMixin"]


class PersistenceMixin:
    """Save and restore the session with the scene (uses the session's state and methods)."""

    def save_state(self, extra: Mapping[str, Any] | None = None):
        """Store the session (model, device, nodes, latent vector) with the scene; return the node."""
        state: dict[str, Any] = {
            "model": self.model_location, "device": self.device_request, "fallback_to_cpu": self.fallback_to_cpu,
            "input_node": None if self.input_node is None else self.input_node.GetID(),
            "mask_node": None if self.mask_node is None else self.mask_node.GetID(),
            "latent": None if self.latent is None else [float(v) for v in self.latent],
        }
        state.update(extra or {})
        return mrml.save_parameters(self.scene, state)

    def restore_state(self) -> dict[str, Any]:
        """Reload the model, re-encode the input and restore the latent vector saved by :meth:`save_state`.

        Returns:
            The saved parameters (``{}`` if none).
        """
        state = mrml.load_parameters(self.scene)
        if not state or not state.get("model"):
            return state
        self.load_model(state["model"], state.get("device") or "auto",
                        fallback_to_cpu=bool(state.get("fallback_to_cpu")))
        node_id = state.get("input_node")
        node = self.scene.GetNodeByID(node_id) if node_id else None
        if node is None:
            return state
        mask_id = state.get("mask_node")
        mask = self.scene.GetNodeByID(mask_id) if mask_id else None
        self.encode(node, mask)
        latent = state.get("latent")
        if latent is not None and len(latent) == self.model.latent_size:
            self.set_latents(dict(enumerate(float(v) for v in latent)), preview=False)
        return state
