import subprocess
import sys

import pytest

from fxdelegate.errors import InvalidArgumentError
from fxdelegate.runtime import get_runtime, register_backend, registered_backends


def test_builtin_backends_are_registered():
    assert {"aoti", "reference"} <= set(registered_backends())
    assert get_runtime("aoti").is_available()


@pytest.mark.parametrize("bad", ["", "a-b", "x/y", None])
def test_backend_ids_are_validated(bad):
    with pytest.raises(InvalidArgumentError, match="backend id"):
        register_backend(bad, runtime="m:C")  # type: ignore[arg-type]


def test_registering_twice_needs_replace():
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_backend("aoti", runtime="m:C")


def test_wrong_object_types_are_refused():
    with pytest.raises(InvalidArgumentError, match="must be a BackendRuntime"):
        register_backend("typo", runtime=object())  # type: ignore[arg-type]


def test_runtime_half_loads_without_the_compiler():
    code = (
        "import sys; import fxdelegate; from fxdelegate.runtime import get_runtime; get_runtime('aoti'); "
        "bad = [m for m in ('fxdelegate.runtime.backends.aoti_compiler', 'torch._inductor.compile_fx', "
        "'torch._inductor.codecache') if m in sys.modules]; print(bad); assert not bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
