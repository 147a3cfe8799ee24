"""Multimodal recommenders: VBPR (:mod:`.vbpr`) and FREEDOM (:mod:`.freedom`), reading item
features from ``Dataset.item_vectors`` (see :mod:`polyrec.features.matrix`)."""
