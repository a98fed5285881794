"""Rules: schema, loading with line numbers, validation, typed model."""

from router.config.loader import LoadResult, RulesError, load_or_raise, load_rules
from router.config.model import Rules
from router.config.source import Problem

__all__ = ["LoadResult", "Problem", "Rules", "RulesError", "load_or_raise", "load_rules"]
