"""edgeatlas registry: the system of record and everything users touch."""

__version__ = "0.1.0"
