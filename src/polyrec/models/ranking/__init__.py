"""Long-sequence CTR ranking: DIN, SIM, TWIN, DARE and a no-history baseline.

Models train on :class:`polyrec.data.ctr.CTRData` and are scored by AUC, gAUC and logloss
(:mod:`polyrec.eval.ctr_metrics`). :func:`polyrec.models.ranking.base.get_ranker_class`
resolves a name. (Nothing is imported here, so ``polyrec ctr --help`` does not load torch.)
"""
