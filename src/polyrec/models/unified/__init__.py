"""Unified multi-task personalization (UniMP-style, Wei et al., ICLR 2024): one generative model
over interleaved multimodal user histories serving next-item recommendation, product search,
rating prediction and explanation generation as instructions.

:mod:`.tokens` (unified token space, history serialisation), :mod:`.prompts` (tasks as
prompt/target pairs), :mod:`.network` (causal LM, scratch or Hugging Face backbone),
:mod:`.unimp` (the :class:`UniMP` recommender: training, decoding), :mod:`.evaluate`
(per-task metrics). The history schema is :mod:`polyrec.data.interleaved`.
"""

from polyrec.models.unified.unimp import UniMP, UniMPConfig

__all__ = ["UniMP", "UniMPConfig"]
