"""Argument groups shared by the subcommands. Each group adds its options to a parser and parses them straight into
the API's option object (as Polygraphy's argument groups do), so the command line and the Python API say the same
thing with the same names. Nothing here imports torch, onnx or TensorRT: ``--help`` stays fast.

The vocabulary: the input model is a positional argument; ``-o/--output`` is what a command writes; ``--save-*`` are
further files it writes; ``--engine`` only ever names an engine that is read.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

__all__ = ["HelpFormatter", "ModelSourceArgs", "ExportArgs", "CheckArgs", "EngineArgs", "ProfileArgs", "parse_shape",
           "parse_dynamic", "add_backend", "tolerance", "port"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions (module docstrings) as plain text: their ``literal`` markup dropped, each paragraph filled to the
    terminal's width; and every option's default shown: lists as they are typed (``63 95``), nothing for flags and
    for options whose absence their help describes (None), nor where the help already says "default"."""

    def _fill_text(self, text, width, indent):
        paragraphs = textwrap.dedent(text.replace("``", "")).strip().split("\n\n")
        return "\n\n".join(textwrap.fill(" ".join(p.split()), width, initial_indent=indent,
                                          subsequent_indent=indent) for p in paragraphs)

    def _get_help_string(self, action):
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS or "default" in (action.help or ""):
            return action.help
        if isinstance(default, (list, tuple)):
            return f"{action.help} (default: {' '.join(map(str, default))})"
        return super()._get_help_string(action)


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` (or ``1x3x224x224``) -> ``(1, 3, 224, 224)``."""
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: use comma-separated ints, e.g. 1,3,224,224") from None
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: use comma-separated positive ints, e.g. 1,3,224,224")
    return dims


def tolerance(text: str) -> float:
    """``--rtol`` / ``--atol``: a finite number >= 0 (``carafe_deploy.compare.check_tolerance`` holds the API to the
    same rule; numpy is not imported here)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):  # NaN fails the first test
        raise argparse.ArgumentTypeError(f"{text!r}: a tolerance must be a finite number >= 0")
    return value


def port(text: str) -> int:
    """A TCP port, 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1 to 65535)")
    return value


def parse_dynamic(text: str) -> tuple[str, dict[int, str]]:
    """``"image:0,2,3"`` or ``"image:0=N,2=H,3=W"`` -> ``("image", {0: "N", 2: "H", 3: "W"})``."""
    name, sep, axes = text.partition(":")
    if not sep or not name or not axes:
        raise argparse.ArgumentTypeError(f"bad --dynamic {text!r}: use NAME:AXES, e.g. image:0,2,3 or image:0=N,2=H")
    out = {}
    for item in axes.split(","):
        axis, _, label = item.partition("=")
        try:
            axis = int(axis)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad axis {item!r} in --dynamic {text!r}") from None
        out[axis] = label or f"{name}_dim{axis}"
    return name, out


def _parse_set(items) -> dict:
    """``--set KEY=VALUE``: the value as JSON (numbers, true/false, lists), else as a string."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def add_backend(group, building: bool) -> None:
    """``--backend tensorrt|tensorrt-rtx``: the TensorRT runtime that builds (``building``) or runs the engine."""
    from ..trt.runtime import RUNTIMES  # no TensorRT import: only the names

    default = ("full TensorRT when it is installed, else TensorRT-RTX" if building else
               "the runtime that built the engine, as its sidecar says")
    group.add_argument("--backend", choices=tuple(RUNTIMES), default=None,
                       help=f"TensorRT runtime: tensorrt (TensorRT 10/11) or tensorrt-rtx (TensorRT for RTX); "
                            f"default: {default}")


class ModelSourceArgs:
    """Where the PyTorch model comes from -> :class:`carafe_deploy.tasks.ModelSource`."""

    def __init__(self, required: bool, title: str = "PyTorch model (one of)"):
        self.required = required
        self.title = title

    def add(self, parser: argparse.ArgumentParser) -> None:
        from ..models import MODEL_NAMES

        g = parser.add_argument_group(self.title)
        src = g.add_mutually_exclusive_group(required=self.required)
        src.add_argument("--python", metavar="FILE", help="a Python file defining the model class (with --class)")
        src.add_argument("--torchscript", metavar="FILE", help="a TorchScript file (torch.jit.save)")
        src.add_argument("--exported-program", metavar="FILE", help="an ExportedProgram file (torch.export.save)")
        src.add_argument("--model", metavar="NAME", help="a registered model: " + ", ".join(MODEL_NAMES))
        src.add_argument("--config", metavar="FILE",
                         help="an mmdetection / mmsegmentation config (.py, _base_ read with mmengine) of a CARAFE "
                              "Faster/Mask R-CNN or UperNet: the model it describes (with --checkpoint: its weights)")
        g.add_argument("--class", dest="class_name", metavar="NAME",
                       help="the nn.Module class in --python FILE (needed with --python)")
        g.add_argument("--kwargs", default="{}", metavar="JSON", help="constructor keyword arguments for --class")
        g.add_argument("--checkpoint", metavar="PATH",
                       help="weights for --python, --model or --config: mmcv/mmdet/mmseg or this package's; with "
                            "--model, the class count and widths come from the checkpoint (its config, else its "
                            "tensor shapes) (default: random weights)")
        g.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="a builder option of --model or --config, e.g. score_thr=0.3 or num_classes=5; "
                            "repeatable (default: the model's own)")
        g.add_argument("--tiny", action="store_true",
                       help="--model's or --config's narrow variant: same structure and names (quick checks; random "
                            "weights unless --checkpoint gives weights of those widths)")

    @staticmethod
    def parse(args: argparse.Namespace):
        from ..tasks.source import ModelSource

        return ModelSource(python=args.python, class_name=args.class_name, kwargs=args.kwargs,
                           torchscript=args.torchscript, exported_program=args.exported_program, model=args.model,
                           checkpoint=args.checkpoint, overrides=_parse_set(args.set), tiny=args.tiny,
                           config=args.config)


class ExportArgs:
    """How the model is written to ONNX -> :class:`carafe_deploy.tasks.ExportOptions`."""

    def add(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("ONNX export")
        g.add_argument("-o", "--output", type=Path, metavar="OUT.onnx",
                       help="the ONNX file to write (default: the model's name + .onnx, in the current folder)")
        g.add_argument("--mode", choices=("plugin", "portable", "decomposed"), default="portable",
                       help="plugin: carafe::CARAFE nodes only (TensorRT with the plugin); portable: the nodes plus "
                            "their standard-op function (any runtime); decomposed: standard ops only")
        g.add_argument("--detection-ops", choices=("auto", "plugin", "standard"), default="auto",
                       help="detectors' NMS and RoI Align: plugin: one carafe::BatchedNMS / MultiLevelRoIAlign node "
                            "each (with their standard-op function in portable mode), so TensorRT, TensorRT-RTX "
                            "included, builds the whole detector with the plugin library; standard: ONNX "
                            "NonMaxSuppression / RoiAlign; auto: plugin when the plugin library is found and the "
                            "engine may use it (not with --no-plugin or --mode decomposed), else standard")
        g.add_argument("--opset", type=int, default=None, help="ONNX opset of the default domain, 18-23 (default: 18)")
        g.add_argument("--fp16", action="store_true", help="float16 weights and compute (float32 inputs/outputs)")
        g.add_argument("--input-shape", type=parse_shape, action="append", metavar="N,C,H,W",
                       help="example input shape; repeat once per input (default: the model's own)")
        g.add_argument("--input-names", nargs="+", metavar="NAME", help="ONNX input names (default: the model's)")
        g.add_argument("--output-names", nargs="+", metavar="NAME", help="ONNX output names (default: the model's)")
        dyn = g.add_mutually_exclusive_group()
        dyn.add_argument("--dynamic", nargs="?", const=True, type=parse_dynamic, action="append", metavar="NAME:AXES",
                         help="dynamic axes: alone, the model's registered ones (batch, height, width; for a model "
                              "with none, those of each 4-D input); "
                              "NAME:AXES, e.g. image:0,2,3 or image:0=N,2=H; repeatable (default: the model's own "
                              "choice: segmenters and the tiny net dynamic, detectors static)")
        dyn.add_argument("--static", action="store_true", help="no dynamic axes")

    @staticmethod
    def parse(args: argparse.Namespace, default_name: str):
        from ..tasks.pipeline import ExportOptions

        dynamic, axes = None, {}
        for item in args.dynamic or ():
            if item is True:
                dynamic = True
            else:
                name, dims = item
                axes[name] = dims
        if args.static:
            dynamic = False
        suffix = ("" if args.mode == "portable" else f"_{args.mode}") + ("_fp16" if args.fp16 else "")
        output = args.output or Path(f"{default_name}{suffix}.onnx")
        return ExportOptions(output=output, mode=args.mode, opset=args.opset, fp16=args.fp16,
                             detection_ops=args.detection_ops,
                             input_shapes=args.input_shape, input_names=args.input_names,
                             output_names=args.output_names, dynamic=dynamic, dynamic_axes=axes)


class CheckArgs:
    """Comparing ONNX Runtime (and the engine) with PyTorch -> :class:`carafe_deploy.tasks.CheckOptions`."""

    def add(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("check against PyTorch (task level: detections by IoU, segmentation logits "
                                      "and argmax, other models element-wise)")
        g.add_argument("--no-check", action="store_true", help="do not compare ONNX Runtime with PyTorch")
        g.add_argument("--check-shape", type=parse_shape, action="append", metavar="N,C,H,W",
                       help="input shape of the comparison, once per input (default: the task's choice)")
        g.add_argument("--rtol", type=tolerance, default=None,
                       help="relative tolerance of element-wise models (default: 1e-4; fp16: 1e-2)")
        g.add_argument("--atol", type=tolerance, default=None,
                       help="absolute tolerance of element-wise models (default: 1e-5 times each output's largest "
                            "magnitude; fp16: 1e-2 times)")
        g.add_argument("--save-reference", type=Path, metavar="REF.npz",
                       help="also save the inputs and PyTorch's outputs, for carafe-deploy check --reference")
        g.add_argument("--save-report", type=Path, metavar="REPORT.json", help="also save the report as JSON")

    @staticmethod
    def parse(args: argparse.Namespace):
        from ..tasks.pipeline import CheckOptions

        return CheckOptions(enabled=not args.no_check, shapes=args.check_shape, rtol=args.rtol, atol=args.atol,
                            save_reference=args.save_reference)


class ProfileArgs:
    """An optimization profile in trtexec's syntax -> (min, opt, max) shape dicts."""

    def __init__(self, title: str):
        self.title = title

    def add(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group(self.title)
        fallback = {"min": "the opt shape", "opt": "the max shape, else the min", "max": "the opt shape"}
        for kind in ("min", "opt", "max"):
            g.add_argument(f"--{kind}", action="append", metavar="NAME:DxDxD",
                           help=f"{kind} shape of an input, e.g. image:1x3x512x512; repeat or comma-separate "
                                f"(default: {fallback[kind]})")

    @staticmethod
    def parse(args: argparse.Namespace):
        from ..trt.profiles import parse_shape_specs

        return tuple(parse_shape_specs(getattr(args, kind), f"--{kind}") for kind in ("min", "opt", "max"))


def add_plugin_choice(group) -> None:
    """--plugin [LIB.so] / --no-plugin: the engine choice of every command that builds one (choose_plugin of
    carafe_deploy.trt)."""
    group.add_argument("--plugin", nargs="?", const=True, default=None, type=Path, metavar="LIB.so",
                       help="build CARAFE with the TensorRT plugin, from LIB.so if given (default: the plugin where its "
                            "library is found -- $CARAFE_DEPLOY_PLUGIN or the CMake build folder --, else standard ops)")
    group.add_argument("--no-plugin", action="store_true",
                       help="build CARAFE from standard ops (each node unrolled) even where the plugin is found")


def parse_plugin_choice(args: argparse.Namespace) -> tuple[bool | None, Path | None]:
    """(use_plugin: True, False or None for the automatic choice, the library's path or None)."""
    if args.no_plugin and args.plugin:
        raise ValueError("--plugin and --no-plugin contradict each other")
    if args.no_plugin:
        return False, None
    if args.plugin is None:
        return None, None
    return True, (None if args.plugin is True else args.plugin)


class EngineArgs:
    """The engine built after export -> :class:`carafe_deploy.tasks.EngineOptions`."""

    profile = ProfileArgs("engine profile (default: the task's; trtexec syntax)")

    def add(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("TensorRT engine (built when TensorRT is installed, else skipped with the reason)")
        g.add_argument("--save-engine", type=Path, metavar="ENGINE", help="also build this engine (+ ENGINE.json)")
        add_plugin_choice(g)
        add_backend(g, building=True)
        self.profile.add(parser)

    def parse(self, args: argparse.Namespace):
        from ..tasks.pipeline import EngineOptions

        use_plugin, plugin_path = parse_plugin_choice(args)
        mins, opts, maxs = self.profile.parse(args)
        return EngineOptions(path=args.save_engine, min_shapes=mins, opt_shapes=opts, max_shapes=maxs,
                             use_plugin=use_plugin, plugin_path=plugin_path, backend=args.backend)
