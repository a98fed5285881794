"""Rules: schema, loading with line numbers, validation, typed model."""

from router.config.loader import LoadResult, RulesError, load_or_raise, load_rules
from router.config.source import Problem
from router.core.model import Rules

__all__ = ["LoadResult", "Problem", "Rules", "RulesError", "load_or_raise", "load_rules"]
