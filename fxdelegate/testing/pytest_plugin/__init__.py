"""fxdelegate's pytest plugin: the ``fxd`` fixture.

Installed as the top-level module ``pytest_fxdelegate`` and registered through
the ``pytest11`` entry point ``fxdelegate``, so pytest finds it in any project
that installs fxdelegate. pytest loads plugins before any conftest.py; this
module therefore imports neither torch nor fxdelegate until a test asks for
the fixture (a conftest may still set up the environment torch reads, such as
``TORCHINDUCTOR_CACHE_DIR``). ``pytest -p no:fxdelegate`` turns it off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from fxdelegate.testing import PassTestKit


@pytest.fixture
def fxd() -> PassTestKit:
    """fxdelegate's pass test kit (:class:`fxdelegate.testing.PassTestKit`): export,
    run a pass as the pipeline does, compare outputs on many inputs, check ops and
    regions. Its random values are seeded the same for every test."""
    from fxdelegate.testing import PassTestKit

    return PassTestKit(seed=0)
