"""Shared fixtures. AOTInductor compiles are slow on CPU (seconds each), so:

* inductor's cache and fxdelegate's compile cache are persistent folders
  shared by every session (gitignored: ``.cache/`` in the checkout, or
  ``$FXDELEGATE_TEST_CACHE``);
* programs compiled through real AOTInductor are session fixtures reused by
  every test that needs them;
* pass-level tests use the ``reference`` backend.
"""

from __future__ import annotations

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CACHE = pathlib.Path(os.environ.get("FXDELEGATE_TEST_CACHE", ROOT / ".cache"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(CACHE / "inductor"))
os.environ.setdefault("FXDELEGATE_CACHE_DIR", str(CACHE / "fxdelegate"))
# The tests' helper modules (models, graph_checks, zoo, corpus, ...) import by name.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "support"))

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

import fxdelegate  # noqa: E402
from fxdelegate.demo import DemoModel, export_demo  # noqa: E402
from models import NestedIO, export_nested  # noqa: E402

# Property tests: 2,000 derandomized examples in CI, fewer locally.
settings.register_profile("ci", max_examples=2000, derandomize=True, print_blob=True)
settings.register_profile("dev", max_examples=300)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def demo_model() -> DemoModel:
    torch.manual_seed(1)
    return DemoModel().eval()


@pytest.fixture(scope="session")
def demo_aoti(demo_model):
    """The demo model lowered through AOTInductor with GELU pinned to the executor."""
    ep = export_demo(demo_model)
    return fxdelegate.lower(ep, backend="aoti", exclude_ops=("aten.gelu",), min_partition_size=1)


@pytest.fixture(scope="session")
def demo_archive(demo_aoti, tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("archive") / "demo.pt2"
    demo_aoti.save(path)
    return path


@pytest.fixture(scope="session")
def nested_model() -> NestedIO:
    torch.manual_seed(2)
    return NestedIO().eval()


@pytest.fixture(scope="session")
def nested_aoti(nested_model):
    return fxdelegate.lower(
        export_nested(nested_model), backend="aoti", exclude_ops=("aten.gelu.default",)
    )
