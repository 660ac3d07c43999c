"""circmesh: the desk node."""

__version__ = "0.1.0"
