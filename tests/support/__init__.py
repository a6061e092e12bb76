"""Test support: independent references (float64 loops), stand-ins named as such, small ONNX graphs, paths."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
DATA = TESTS / "data"
