"""The libstdc++ guard: a library with its own copy of libstdc++'s locale code is
recognised (and only such a library triggers the preload)."""

import shutil
import subprocess
import sys
import textwrap

import pytest

from fxdelegate.runtime.backends.libstdcxx_guard import inspect_library

SOURCE = '#include <regex>\n#include <string>\nextern "C" int probe(const char* s) { std::regex r("[a-z]+"); return std::regex_match(std::string(s), r); }\n'


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.fail("g++ is required (AOTInductor needs it too)")
    folder = tmp_path_factory.mktemp("elf")
    (folder / "r.cpp").write_text(SOURCE)
    built = {}
    for name, flags in (("bundled", ["-static-libstdc++"]), ("shared", [])):
        out = folder / f"{name}.so"
        subprocess.run(
            ["g++", "-shared", "-fPIC", "-O1", *flags, "-o", str(out), str(folder / "r.cpp")],
            check=True,
        )
        built[name] = out
    return built


def test_inspection_tells_bundled_from_shared_libstdcxx(libraries):
    bundled = inspect_library(libraries["bundled"].read_bytes())
    shared = inspect_library(libraries["shared"].read_bytes())
    assert bundled.bundles_libstdcxx and not any(n.startswith("libstdc++") for n in bundled.needed)
    assert bundled.defined_locale_symbols >= 50
    assert not shared.bundles_libstdcxx and "libstdc++.so.6" in shared.needed
    assert inspect_library(b"not an elf file") is None
    assert inspect_library(b"\x7fELF" + b"\x02\x01" + b"\x00" * 10) is None  # truncated header


def test_preload_happens_only_for_bundled_libraries(libraries):
    code = textwrap.dedent(
        """
        import sys
        from fxdelegate.runtime.backends import libstdcxx_guard as g
        assert g.prepare_to_load(open(sys.argv[1], "rb").read(), "shared.so") is False
        assert g._preloaded is None
        assert g.prepare_to_load(open(sys.argv[2], "rb").read(), "bundled.so") is True
        assert g._preloaded is not None
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(libraries["shared"]), str(libraries["bundled"])],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
