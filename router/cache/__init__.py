"""Metadata cache: replacement policies (pure; the value store sits on top)."""

from router.cache.policy import CachePolicy, LRUKPolicy, LRUPolicy

__all__ = ["CachePolicy", "LRUKPolicy", "LRUPolicy"]
