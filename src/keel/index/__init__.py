"""The retrieval index: keyword (BM25) and exact vector search over chunks, restricted inside
the store's own query to what the caller may read. SQLite (FTS5) embedded, PostgreSQL
(full-text search and pgvector) in production."""
