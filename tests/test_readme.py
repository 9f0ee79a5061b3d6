"""The README's Quickstart and .ci/run must not drift apart."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


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
