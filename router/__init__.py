"""goproxy-router: a GOPROXY gateway in front of several upstream module proxies."""

__version__ = "0.1.0"
