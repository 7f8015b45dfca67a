"""Feature cache: content-addressed, resumable, atomic storage of frozen-encoder outputs."""

from modalign.features.cache import FeatureCache, default_cache_root
from modalign.features.extract import Extraction, extract
from modalign.features.keys import item_key

__all__ = ["Extraction", "FeatureCache", "default_cache_root", "extract", "item_key"]
