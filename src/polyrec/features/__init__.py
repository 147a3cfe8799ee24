"""Item side features for the models: text embeddings (:mod:`polyrec.features.text`), image
embeddings (:mod:`polyrec.features.image`) and precomputed matrices
(:mod:`polyrec.features.matrix`)."""
