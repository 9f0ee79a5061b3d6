"""The README's Quickstart and .ci/run must not drift apart; the worked example of the
"Writing a pass" guide (docs/guides/writing-a-pass.md) runs and prints what it shows."""

import pathlib
import re

from readme_blocks import printed_blocks, worked_example_files

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def test_quickstart_has_exactly_two_commands_demo_and_tests():
    demo, tests = _quickstart_commands()
    assert "pip install torch==2.13.0" in demo and demo.endswith("fxdelegate demo")
    assert "pip install torch==2.13.0" in tests and tests.endswith("pytest")


def test_ci_runs_the_readme_test_command():
    _, tests = _quickstart_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def test_the_worked_example_runs_and_prints_what_the_guide_shows(tmp_path, monkeypatch, capsys):
    import importlib

    from fxdelegate.testing import PassTestKit

    files = worked_example_files()
    assert sorted(files) == ["lower_with_my_pass.py", "my_passes.py", "test_my_passes.py"]
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    tests = importlib.import_module("test_my_passes")
    names = [n for n in dir(tests) if n.startswith("test_")]
    assert len(names) == 3
    for name in names:
        getattr(tests, name)(PassTestKit(seed=0))
    # The lowering snippet, on the reference backend (the guide lowers through AOTInductor).
    snippet = files["lower_with_my_pass.py"]
    call = "fxdelegate.lower(ep, pipeline=pipeline)"
    assert call in snippet
    exec(
        compile(snippet.replace(call, call[:-1] + ', backend="reference")'), "snippet", "exec"), {}
    )
    printed = capsys.readouterr().out
    pipeline, report = printed_blocks()
    assert printed.startswith(pipeline + "\n")
    for line in report.splitlines():
        if line != "...":
            assert line.replace("'aoti'", "'reference'") in printed, line
