"""Task pipelines: export → task-level parity → engine → report, for every model family (mmdeploy's split of model
code from task processors). The CLI, ``export/*.py``, the demo and the samples call these.

- :mod:`.pipeline`: :func:`deploy` and its option objects (``ExportOptions``, ``CheckOptions``, ``EngineOptions``);
- :mod:`.source`: where a PyTorch model comes from (``ModelSource`` → ``LoadedModel``);
- :mod:`.base`, :mod:`.detection`, :mod:`.segmentation`: the task families (what differs between them);
- :mod:`.drawing`: pictures of results; :mod:`.segmentation_sample`, :mod:`.synthetic_shapes`: the trained sample.
"""

from .pipeline import CheckOptions, EngineOptions, ExportOptions, deploy, task_for
from .source import LoadedModel, ModelSource

__all__ = ["deploy", "task_for", "ExportOptions", "CheckOptions", "EngineOptions", "ModelSource", "LoadedModel"]
