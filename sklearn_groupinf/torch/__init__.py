"""PyTorch adapter: :class:`TorchModel`, a torch module as a scikit-learn estimator.

Importing this subpackage imports torch; ``import sklearn_groupinf`` does not.
A fitted :class:`TorchModel` (or a subclass, or a skorch ``NeuralNet``) is
routed by :class:`sklearn_groupinf.GroupInfluence` to the torch backend,
:class:`sklearn_groupinf.backends._torch.TorchBackend`, which holds all the
calculus (per-example gradients, curvature products, conjugate gradients).
:class:`CausalLM` wraps a Hugging Face causal language model (``transformers``
and ``peft``, the ``[text]`` extra, are imported only by the caller).
"""

from ._causal_lm import CausalLM
from ._functional import DeviceWarning
from ._model import TorchModel

__all__ = ["CausalLM", "DeviceWarning", "TorchModel"]
