"""Image-latent consistency: the decoded image must carry the class and attributes its code says.

The Attri-VAE objective ties attributes and the class to the *code*; nothing asks the decoder
to draw them. A small structure such as a lesion costs the reconstruction term little, so the
decoder may leave it out, and then a traversal, a reconstruction or a counterfactual shows an
image that the classifier itself would assign to another class. Two terms close that gap. Both
read decoded images through the network's own encoder and classifier with their weights and
BatchNorm statistics held fixed (:meth:`~AttriVAELib.nn.model.AttriVAE.encode_mu_frozen`,
:func:`classify_frozen`): the reader cannot learn to see what is not drawn, so the terms train the
decoder (and, through the code it decodes, the encoder's choice of code):

* **re-encoded class** (``loss.reencoded_alpha``): the reconstruction ``x̂ = dec(z)``, encoded
  again, is classified against the subject's label::

      α_r · CE(cls(enc(x̂)), y)

* **swapped codes** (``loss.swap_alpha``, ``loss.swap_gamma``): each sample's regularized dims
  ``z[:K]`` are replaced by those of another sample in the batch (a random pairing ``π``), the
  code is decoded and encoded again, and the image must (a) carry the class the latent
  classifier gives the swapped code, and (b) order the attributes as the partner's values::

      z̃ = [z_π[:K], z[K:]],   μ̃ = enc(dec(z̃))
      α_s · CE(cls(μ̃), softmax(cls(z̃)) held fixed) + γ_s · Σ_k AR_k(μ̃[:, k], a_π[:, k])

  A swapped code is what a counterfactual or a traversal decodes (attribute dims moved, the
  rest of the subject kept), so this term trains the decoder on the very codes users look at.

Shapes: ``z`` (B, L), ``attributes`` (B, K), ``labels`` (B,). The encoder can be fooled by a
decoder that draws patterns instead of anatomy; :mod:`AttriVAELib.evaluate.faithfulness`
therefore judges decoded images with an independent classifier and physical measures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from AttriVAELib.nn.losses import attribute_regularization, classification_loss
from AttriVAELib.nn.model import frozen_call

__all__ = ["classify_frozen", "soft_classification_loss", "swap_consistency"]


def classify_frozen(model: nn.Module, mu: Tensor) -> Tensor:
    """Classifier logits of ``mu`` (B, L) with the classifier's weights and statistics held fixed."""
    logits = frozen_call(model.classifier, mu)
    return logits.squeeze(1) if model.config.num_classes == 2 else logits


def soft_classification_loss(logits: Tensor, target_logits: Tensor) -> Tensor:
    """Cross-entropy of ``logits`` against the class probabilities of ``target_logits`` (held fixed).

    Binary heads give (B,) logits (BCE with a soft target); multiclass heads (B, C).
    """
    logits, target = logits.float(), target_logits.detach().float()
    if logits.dim() == 1:
        return F.binary_cross_entropy_with_logits(logits, torch.sigmoid(target))
    return -(torch.softmax(target, dim=1) * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


def reencoded_class_loss(model: nn.Module, recon_mu: Tensor, labels: Tensor,
                         class_weights: list[float] | None = None) -> Tensor:
    """CE of the re-encoded reconstruction's class (frozen encoder and classifier) against ``labels``."""
    return classification_loss(classify_frozen(model, recon_mu.float()), labels, class_weights)


def swap_consistency(model: nn.Module, z: Tensor, attributes: Tensor | None, *, alpha: float, gamma: float,
                     delta: float) -> Tensor:
    """``α_s·CE + γ_s·ΣAR`` on codes whose regularized dims come from a random partner (see module doc).

    ``z`` (B, L) is the sampled code of the batch; ``attributes`` (B, K) the (scaled) attributes
    of dims 0..K-1, or None. Returns a float32 scalar (0 when both weights are 0 or B < 2).
    """
    zero = torch.zeros((), device=z.device)
    k = 0 if attributes is None else attributes.shape[1]
    if z.shape[0] < 2 or k == 0 or (alpha <= 0 and gamma <= 0):
        return zero
    perm = torch.randperm(z.shape[0], device=z.device)
    swapped = torch.cat([z[perm, :k], z[:, k:]], dim=1)
    mu = model.encode_mu_frozen(model.decode(swapped).to(z.dtype))
    term = zero
    if alpha > 0 and model.classifier is not None:
        term = term + alpha * soft_classification_loss(classify_frozen(model, mu.float()),
                                                       classify_frozen(model, swapped.float()))
    if gamma > 0:
        term = term + gamma * attribute_regularization(mu[:, :k].float(), attributes[perm], delta).sum()
    return term
