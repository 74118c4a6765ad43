"""PyTorch adapter: :class:`TorchModel` and the torch influence backend.

Importing this subpackage imports torch; ``import sklearn_groupinf`` does not.
A fitted :class:`TorchModel` (or skorch ``NeuralNet``) is routed to
:class:`~sklearn_groupinf.torch._backend.TorchBackend` by
:class:`sklearn_groupinf.GroupInfluence`.
"""

from ._model import DeviceWarning, TorchModel

__all__ = ["DeviceWarning", "TorchModel"]
