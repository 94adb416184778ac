"""PowerSense shared library: settings, store, logging, errors and the domain logic of every stage."""

__version__ = "0.1.0"
