"""PyTorch eager as a runner: the reference every other backend is compared with."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .base import Runner, TensorMeta

__all__ = ["TorchRunner", "torch_outputs"]


def torch_outputs(model, inputs) -> list[np.ndarray]:
    """``model(*inputs)`` without gradients, flattened (tuples, lists, dicts) to numpy arrays; floats as float32."""
    import torch

    fn = model.module() if isinstance(model, torch.export.ExportedProgram) else model
    with torch.no_grad():
        out = fn(*inputs)
    flat, _ = torch.utils._pytree.tree_flatten(out)
    return [t.detach().float().cpu().numpy() if t.is_floating_point() else t.detach().cpu().numpy() for t in flat]


class TorchRunner(Runner):
    """An ``nn.Module``, ScriptModule or ExportedProgram on numpy feeds, inputs taken in ``input_names`` order.

    Float feeds are cast to the model's parameter dtype; outputs are named ``output_names`` (else output0, ...).
    """

    name = "pytorch"

    def __init__(self, model, input_names: Sequence[str], output_names: Sequence[str] | None = None,
                 device: str | None = None):
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.output_names = list(output_names) if output_names else None
        self._device = device

    def activate_impl(self) -> None:
        import torch

        module = self.model.module() if isinstance(self.model, torch.export.ExportedProgram) else self.model
        self._device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
        if hasattr(module, "to"):
            module = module.to(self._device)
        self._module = module
        param = next(iter(module.parameters()), None) if hasattr(module, "parameters") else None
        self._dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32

    @property
    def device(self) -> str:
        if self._device and self._device.startswith("cuda"):
            import torch

            return torch.cuda.get_device_name(torch.device(self._device))
        return "cpu"

    def input_metadata(self) -> list[TensorMeta]:
        return [TensorMeta(n, str(self._dtype).removeprefix("torch."), ()) for n in self.input_names]

    def _args(self, feeds: Mapping[str, np.ndarray]):
        import torch

        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ValueError(f"missing input(s) {', '.join(missing)}; the model takes {', '.join(self.input_names)}")
        args = []
        for name in self.input_names:
            t = torch.as_tensor(np.ascontiguousarray(feeds[name]))
            args.append(t.to(self._device, self._dtype if t.is_floating_point() else t.dtype))
        return args

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = torch_outputs(self._module, self._args(feeds))
        names = self.output_names or [f"output{i}" for i in range(len(outputs))]
        if len(names) != len(outputs):
            raise ValueError(f"the model gave {len(outputs)} outputs for {len(names)} output names ({', '.join(names)})")
        return dict(zip(names, outputs))

    def timed_call(self, feeds):
        import torch

        args = self._args(feeds)
        sync = torch.cuda.synchronize if self._device.startswith("cuda") else (lambda: None)

        def call():
            with torch.inference_mode():
                self._module(*args)
            sync()

        return call
