"""Governed knowledge: collections with one owner, documents with content-hashed versions and
access lists, chunking, hybrid retrieval that never returns what the caller may not read,
citations, and revocation that removes a document from every index and cache at once."""
