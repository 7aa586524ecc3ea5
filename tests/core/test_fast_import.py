"""The light timm import (sdl_core/fast_import.py): what it leaves out, that the model path
works without it, that torchvision still imports whole afterwards, and the plain fallback.

Each check runs in a fresh interpreter: this test process has long imported timm whole."""
from __future__ import annotations

from tests.conftest import json_from_fresh_interpreter

REPORT = """
import json, sys
print(json.dumps({m: m in sys.modules for m in ("torch._dynamo", "torchvision", "torchvision.models", "sympy")}))
"""


def loaded_after(code: str) -> dict[str, bool]:
    """Run ``code`` in a fresh interpreter; which of the heavy modules it left loaded."""
    return json_from_fresh_interpreter(code + REPORT)


def test_timm_imports_without_torchvision_or_dynamo_and_builds_models():
    code = """
import torch
from sdl_core.fast_import import import_timm
timm = import_timm()
net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0, global_pool="").eval()
with torch.inference_mode():
    assert net.forward_features(torch.zeros(1, 3, 64, 64)).shape == (1, 1280, 2, 2)
assert import_timm() is timm
"""
    assert loaded_after(code) == {"torch._dynamo": False, "torchvision": False, "torchvision.models": False,
                                  "sympy": False}


def test_the_cli_and_demo_model_loads_stay_light():
    """The two entry points that load a model (the CLI's load_tagger, the demo's TaggerCache)."""
    code = """
import argparse
from sdl_core.cli.common import load_tagger
tagger = load_tagger(argparse.Namespace(model="default", data_dir=None, word_space=None, device="cpu"))
assert tagger.tag("demo/examples/coffee.jpg", extra_tags=["espresso"], top_k=3)[0].tag
from demo.models import TaggerCache, model_choices
assert TaggerCache(model_choices("default", None)).get().name == tagger.name
"""
    assert loaded_after(code) == {"torch._dynamo": False, "torchvision": False, "torchvision.models": False,
                                  "sympy": False}


def test_torchvision_imports_whole_afterwards_with_the_same_classes():
    code = """
from sdl_core.fast_import import import_timm
import_timm()
import torchvision
from torchvision import transforms
from timm.layers import norm_act
assert torchvision.ops.FrozenBatchNorm2d is norm_act.FrozenBatchNorm2d
assert transforms.Resize(8)(__import__("torch").zeros(3, 16, 16)).shape == (3, 8, 8)
assert torchvision.models.resnet18 is not None
"""
    assert loaded_after(code)["torchvision.models"] is True


def test_compiler_disable_wraps_on_first_call_and_is_restored():
    code = """
import torch
real = torch.compiler.disable
from sdl_core import fast_import
fast_import.import_timm()
assert torch.compiler.disable is real
assert "torch._dynamo" not in __import__("sys").modules
deferred = fast_import._deferred(real)(lambda x: x + 1)
assert "torch._dynamo" not in __import__("sys").modules  # nothing wrapped yet
assert deferred(1) == 2 and deferred(2) == 3  # wrapped by the real disable on the first call
"""
    assert loaded_after(code)["torch._dynamo"] is True


def test_a_surprise_falls_back_to_the_plain_import():
    code = """
from sdl_core import fast_import
def broken():
    raise ImportError("another torchvision layout")
fast_import._shells = broken
timm = fast_import.import_timm()
assert timm.create_model("tf_efficientnet_lite0", pretrained=False) is not None
"""
    assert loaded_after(code) == {"torch._dynamo": True, "torchvision": True, "torchvision.models": True,
                                  "sympy": True}


def test_an_already_imported_torchvision_is_left_alone():
    code = """
import torchvision
from sdl_core.fast_import import import_timm
assert import_timm().create_model("tf_efficientnet_lite0", pretrained=False) is not None
"""
    assert loaded_after(code)["torchvision.models"] is True
