"""People and what really happened: the review queue (``queue.py``), outcomes
(``outcomes.py``) and the trust metrics built from both (``trust.py``)."""
