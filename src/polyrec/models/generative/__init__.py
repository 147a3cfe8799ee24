"""Generative retrieval: semantic IDs (:mod:`.semantic_ids`), TIGER (:mod:`.tiger`) and the
preference-conditioned Mender (:mod:`.mender`, preferences from :mod:`.preferences`)."""
