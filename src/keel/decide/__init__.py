"""Deciding and explaining: the draft of one case (``draft.py``), combined batches
(``combine.py``), the recorded decision (``record.py``), the service that decides
(``decider.py``) and the one that reads and explains decisions (``explanations.py``)."""
