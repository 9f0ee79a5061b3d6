"""Built-in backends: ``aoti`` (AOTInductor) and ``reference`` (eager PyTorch).

Each backend is split into a runtime half (loads and runs; no compiler
import) and a compiler half, registered by dotted path in
:mod:`fxdelegate.runtime.backend`.
"""
