"""Tag-based photo search: index a folder's principal vectors once, then rank photos by typed tags.

- :mod:`.index`: the model identity, the entries and the index file (load/save);
- :mod:`.update`: scanning a folder and updating an index with only new or changed photos;
- :mod:`.query`: embedding typed tags, scoring, combining (``any``/``all``) and the top photos.
"""
from __future__ import annotations

from .index import (DEFAULT_INDEX_NAME, INDEX_FORMAT, INDEX_VERSION, FileEntry, ModelIdentity, SearchIndex,
                    SearchIndexError, load_index, model_identity, resolve_index_path, weights_fingerprint)
from .query import (MODES, SEARCH_CHUNK, SearchHit, SearchResult, combine, embed_query, query_space, search,
                    tag_scores, top_rows)
from .update import (IMAGE_SUFFIXES, UpdateReport, check_compatible, entries_for_files, model_source, scan_folder,
                     update_index, verify_model)

__all__ = ["DEFAULT_INDEX_NAME", "IMAGE_SUFFIXES", "INDEX_FORMAT", "INDEX_VERSION", "MODES", "SEARCH_CHUNK",
           "FileEntry", "ModelIdentity", "SearchHit", "SearchIndex", "SearchIndexError", "SearchResult",
           "UpdateReport", "check_compatible", "combine", "embed_query", "entries_for_files", "load_index",
           "model_identity", "model_source", "query_space", "resolve_index_path", "scan_folder", "search",
           "tag_scores", "top_rows", "update_index", "verify_model", "weights_fingerprint"]
