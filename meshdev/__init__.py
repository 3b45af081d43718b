"""meshdev: a local service-mesh dev environment."""

__version__ = "0.1.0"
