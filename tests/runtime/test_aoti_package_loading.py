"""How compiled regions reach AOTInductor's loader: each package once per process."""

import os

import pytest
import torch

import fxdelegate
from fxdelegate.demo import demo_inputs
from fxdelegate.runtime.backends import aoti_runtime

pytestmark = pytest.mark.aoti


@pytest.fixture
def fresh_loading_state(monkeypatch):
    monkeypatch.setattr(aoti_runtime, "_packages", {})
    monkeypatch.setattr(aoti_runtime, "_loads_folders", None)
    real = torch._C._aoti.AOTIModelPackageLoader
    sources: list[str] = []

    def patch(refuse_folders: bool) -> list[str]:
        def loader(source, *args):
            sources.append(source)
            if refuse_folders and os.path.isdir(source):
                # what torch 2.11's loader says when handed a folder
                raise RuntimeError(
                    "Failed to initialize zip archive: failed finding central directory"
                )
            return real(source, *args)

        monkeypatch.setattr(torch._C._aoti, "AOTIModelPackageLoader", loader)
        return sources

    return patch


def _check(prog, model):
    for batch in (1, 5):
        args, kwargs = demo_inputs(batch)
        with torch.no_grad():
            torch.testing.assert_close(prog(*args, **kwargs), model(*args, **kwargs))


def test_each_package_is_unpacked_once_and_loaded_from_its_folder(
    demo_archive, demo_model, fresh_loading_state
):
    if tuple(int(p) for p in torch.__version__.split(".")[:2]) < (2, 13):
        pytest.skip("torch before 2.13 loads packages from archives only (the next test)")
    sources = fresh_loading_state(refuse_folders=False)
    prog = fxdelegate.load(demo_archive)
    packages = {a.package_key for a in prog.artifacts.values()}
    assert len(packages) < len(prog.artifacts)  # the demo's identical blocks share one
    assert aoti_runtime._loads_folders is True
    assert len(sources) == len(prog.artifacts) and all(os.path.isdir(s) for s in sources)
    assert len(set(sources)) == len(packages)  # one folder per package, shared by its regions
    _check(prog, demo_model)


def test_a_loader_that_takes_archives_only_gets_archives(
    demo_archive, demo_model, fresh_loading_state
):
    sources = fresh_loading_state(refuse_folders=True)
    prog = fxdelegate.load(demo_archive)
    assert aoti_runtime._loads_folders is False
    assert os.path.isdir(sources[0])
    assert all(os.path.isfile(s) for s in sources[1:])  # after the first refusal, only archives
    _check(prog, demo_model)
