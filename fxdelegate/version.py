"""fxdelegate's version, in a module of its own: region content keys include it, and
the passes that compute them sit below the package's top (``fxdelegate/__init__.py``)."""

__version__ = "0.1.0"
