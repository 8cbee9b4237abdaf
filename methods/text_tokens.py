"""Text tokenized where the batch is built: in the DataLoader's worker processes.

RICE's and SGMN's text towers read token ids. Tokenizing a batch's transcripts and titles in the
forward puts a Python loop over every string (256 a step at the paper's batch of 128 pairs) on
the main process's critical path while the accelerator waits; a :class:`TextTokens` instance,
returned by the method's :meth:`methods.base.Method.batch_preparer`, does it in the workers
instead and adds to the collated batch

* ``<field>_tokens`` long [B, context]: the ids the tower's own tokenizer gives
  (:func:`tokenize_texts`, the one function both the workers and the forward's fallback call,
  so the ids cannot differ), for ``tower`` ``cn-clip`` or ``openai-clip``; none for ``file``
  (precomputed embeddings are read by id);
* ``<field>_present`` bool [B] (``present=True``): whether the string has any non-space
  character (RICE counts empty text as absent).

for each text field (``asr``, ``title``) the batch holds. A forward that finds them uses them
and tokenizes nothing; a batch built by hand (tests, ``visualize``) still works without them.
Instances hold only settings, so they pickle into workers started by any method.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor

TEXT_FIELDS = ("asr", "title")
TOKENIZING_TOWERS = ("cn-clip", "openai-clip")

_OPENAI: dict[int, Any] = {}  # open_clip SimpleTokenizer per context length, one per process


def tokenize_texts(tower: str, texts: Sequence[str], context_length: int) -> Tensor:
    """[N, context_length] long ids of ``texts`` by ``tower``'s tokenizer: Chinese-CLIP's
    (``cn_clip.clip.tokenize``: [CLS] word pieces [SEP], [PAD] = 0) or OpenAI CLIP's BPE
    (``open_clip.SimpleTokenizer``: SOT ... EOT, zero filled)."""
    if tower == "cn-clip":
        from cn_clip.clip import tokenize  # noqa: PLC0415 (heavy, cn-clip towers only)

        return tokenize(list(texts), context_length=context_length)
    if tower == "openai-clip":
        tok = _OPENAI.get(context_length)
        if tok is None:
            import open_clip  # noqa: PLC0415

            tok = _OPENAI[context_length] = open_clip.SimpleTokenizer(context_length=context_length)
        return tok(list(texts))
    raise ValueError(f"text tower {tower!r} has no tokenizer (one of {', '.join(TOKENIZING_TOWERS)} has)")


def has_text(texts: Sequence[str]) -> Tensor:
    """bool [N]: True where the string has a non-space character."""
    return torch.tensor([bool(s and s.strip()) for s in texts], dtype=torch.bool)


class TextTokens:
    """A batch preparer: ids (and presence) of a batch's text fields, built in the workers."""

    def __init__(self, tower: str, context_length: int, *, present: bool = False) -> None:
        if tower not in (*TOKENIZING_TOWERS, "file"):
            raise ValueError(f"text tower {tower!r} is not one of {', '.join((*TOKENIZING_TOWERS, 'file'))}")
        self.tower, self.context_length, self.present = tower, int(context_length), present

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        for field in TEXT_FIELDS:
            texts = batch.get(field)
            if not isinstance(texts, list):
                continue
            if self.present:
                batch[f"{field}_present"] = has_text(texts)
            if self.tower in TOKENIZING_TOWERS:
                batch[f"{field}_tokens"] = tokenize_texts(self.tower, texts, self.context_length)
        return batch

    def __repr__(self) -> str:
        return f"TextTokens({self.tower!r}, {self.context_length}, present={self.present})"


def batch_tokens(batch: dict[str, Any], field: str) -> Optional[Tensor]:
    """The worker-built ids of ``field`` in ``batch``, or None (then the forward tokenizes)."""
    tokens = batch.get(f"{field}_tokens")
    return tokens if isinstance(tokens, Tensor) else None
