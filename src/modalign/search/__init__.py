"""Any-to-any search over an aligned space: index folders, modality routing, adaptive top-k."""

from modalign.search.catalog import Segment
from modalign.search.hit import Hit
from modalign.search.index import Index
from modalign.search.ingest import IngestReport
from modalign.search.query import QueryError
from modalign.search.routing import ROUTINGS, CorpusStats

__all__ = ["ROUTINGS", "CorpusStats", "Hit", "Index", "IngestReport", "QueryError", "Segment"]
