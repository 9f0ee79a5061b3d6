"""fxdelegate.testing: a kit for testing passes of one's own.

Installed with fxdelegate and registered with pytest as the plugin
``fxdelegate`` (a ``pytest11`` entry point): any test can ask for the ``fxd``
fixture, a :class:`PassTestKit`, without a conftest. Outside pytest, make one
with ``PassTestKit(seed=0)``.
"""

from .inputs import SMALLEST_DYNAMIC_SIZE, InputSample, sample_inputs
from .kit import PassTestKit, non_convex_regions

__all__ = [
    "SMALLEST_DYNAMIC_SIZE",
    "InputSample",
    "PassTestKit",
    "non_convex_regions",
    "sample_inputs",
]
