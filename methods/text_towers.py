"""Text towers a profile names: Chinese-CLIP's BERT, or precomputed embeddings read from files.

LPR4M's ASR transcripts and shop titles are Chinese (a Kuaishou livestream platform); RICE's
authors embed them with Chinese-CLIP ("adding Chinese-CLIP text embeddings further boosts
performance") and SGMN's official loader reads 512-d ASR / title embeddings precomputed per clip
and per item (``training_seg2emb_65w.json``, ``training_item2emb_155100.json``:
``{id: [512 floats]}``), the width of Chinese-CLIP ViT-B/16's text embedding. OpenAI CLIP's BPE
cuts Chinese into single UTF-8 bytes (docs/text.md), so the English tower (``openai-clip``, kept
in :mod:`methods.encoders`) is an option, not the default of the paper profiles.

``cn-clip``: :class:`CnClipText`, the text half of the ``cn-clip`` package's ``CLIP``: its
``BertModel`` (config ``RoBERTa-wwm-ext-base-chinese`` = ViT-B-16's, ``RBT3-chinese`` = RN50's,
or ``custom``: a small one for the tiny profile) and ``text_projection``, [CLS] output ->
projection, with its ``FullTokenizer`` (Chinese BERT vocabulary, 21128 word pieces, one token
per Chinese character) and ``[PAD]`` masked. Weights: a cn-clip hub name (``ViT-B-16``, read from
cn-clip's download folder, ``~/.cache/clip``, since nothing is downloaded here) or a local
cn-clip checkpoint; absent weights are an error, never a silent random start, unless the
profile asks for random initialisation (``text_pretrained=None``, the tiny profile).

``file``: :class:`FileTextEmbeddings`, two JSON files ``{clip id: [floats]}`` (ASR) and
``{image id: [floats]}`` (titles), as SGMN's official loader; a missing id is an error naming the
file and the id. Fixed features: nothing to train.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from methods.text_tokens import tokenize_texts

TEXT_TOWERS = ("openai-clip", "cn-clip", "file")
CN_CLIP_CONFIGS = ("RoBERTa-wwm-ext-base-chinese", "RBT3-chinese", "custom")
CN_CLIP_DOWNLOAD_ROOT = Path(os.path.expanduser("~/.cache/clip"))  # cn_clip.load_from_name's default


class TextTowerError(RuntimeError):
    pass


def cn_clip_config(name: str, width: int = 128, layers: int = 2, heads: int = 4) -> dict:
    """A cn-clip text config: a shipped JSON (``model_configs/<name>.json``) or ``custom``."""
    if name == "custom":
        return {
            "vocab_size": 21128,
            "text_attention_probs_dropout_prob": 0.1,
            "text_hidden_act": "gelu",
            "text_hidden_dropout_prob": 0.1,
            "text_hidden_size": width,
            "text_initializer_range": 0.02,
            "text_intermediate_size": 4 * width,
            "text_max_position_embeddings": 512,
            "text_num_attention_heads": heads,
            "text_num_hidden_layers": layers,
            "text_type_vocab_size": 2,
        }
    if name not in CN_CLIP_CONFIGS:
        raise ValueError(f"cn-clip text config {name!r} is not one of {', '.join(CN_CLIP_CONFIGS)}")
    import cn_clip.clip  # noqa: PLC0415 (heavy: torchvision transforms, its vocabulary; cn-clip towers only)

    path = Path(cn_clip.clip.__file__).parent / "model_configs" / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def hub_weights_path(name: str, text_config: str) -> Path:
    """Where cn-clip keeps hub model ``name``'s checkpoint; its text config must be ``text_config``."""
    from cn_clip.clip import utils  # noqa: PLC0415 (heavy, cn-clip towers only)

    if name not in utils._MODELS:
        raise TextTowerError(
            f"cn-clip has no model {name!r}; its models are {', '.join(utils._MODELS)} (or give a local checkpoint file)"
        )
    struct_text = utils._MODEL_INFO[name]["struct"].split("@")[1]
    if struct_text != text_config:
        raise TextTowerError(f"cn-clip {name}'s text tower is {struct_text}, but encoder.text_config is {text_config}")
    return CN_CLIP_DOWNLOAD_ROOT / utils._MODELS[name][1]


class CnClipText(nn.Module):
    """Chinese-CLIP's text tower: BERT -> [CLS] -> ``text_projection`` (cn-clip's ``encode_text``)."""

    def __init__(self, config: dict, embed_dim: int, context_length: int = 52) -> None:
        super().__init__()
        from cn_clip.clip.configuration_bert import BertConfig  # noqa: PLC0415 (heavy, cn-clip towers only)
        from cn_clip.clip.modeling_bert import BertModel  # noqa: PLC0415

        if context_length > config["text_max_position_embeddings"]:
            raise ValueError(
                f"cn-clip text: context {context_length} > {config['text_max_position_embeddings']} positions"
            )
        self.bert = BertModel(
            BertConfig(
                vocab_size_or_config_json_file=config["vocab_size"],
                hidden_size=config["text_hidden_size"],
                num_hidden_layers=config["text_num_hidden_layers"],
                num_attention_heads=config["text_num_attention_heads"],
                intermediate_size=config["text_intermediate_size"],
                hidden_act=config["text_hidden_act"],
                hidden_dropout_prob=config["text_hidden_dropout_prob"],
                attention_probs_dropout_prob=config["text_attention_probs_dropout_prob"],
                max_position_embeddings=config["text_max_position_embeddings"],
                type_vocab_size=config["text_type_vocab_size"],
                initializer_range=config["text_initializer_range"],
                layer_norm_eps=1e-12,
            )
        )
        hidden = config["text_hidden_size"]
        self.text_projection = nn.Parameter(torch.randn(hidden, embed_dim) * hidden**-0.5)  # cn-clip's init
        self.context_length = context_length

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """[N, context_length] ids: [CLS] word pieces [SEP], zero ([PAD]) filled (cn_clip.tokenize)."""
        return tokenize_texts("cn-clip", texts, self.context_length)

    def forward(self, texts: Sequence[str], tokens: Optional[Tensor] = None) -> Tensor:
        """Embeddings [N, E] of ``texts``, or of their ids ``tokens`` when the DataLoader's
        workers built them (:mod:`methods.text_tokens`; then nothing is tokenized here)."""
        if tokens is None:
            tokens = self.tokenize(texts)
        tokens = tokens.to(self.text_projection.device)
        mask = tokens.ne(0).to(self.text_projection.dtype)  # cn-clip: [PAD] (id 0) is not attended
        hidden = self.bert(tokens, attention_mask=mask)[0]
        return hidden[:, 0] @ self.text_projection

    def load(self, source: str, text_config: str) -> None:
        """Weights from a cn-clip hub name or a local cn-clip checkpoint (``state_dict`` of the
        whole CLIP, ``module.`` prefixed or not); only ``bert.*`` (no pooler) and
        ``text_projection`` are taken. Missing weights or keys are one error naming the file."""
        path = Path(source) if Path(source).suffix or os.sep in source else hub_weights_path(source, text_config)
        if not path.is_file():
            raise TextTowerError(
                f"Chinese-CLIP text weights {source!r}: {path} is absent (nothing is downloaded here); put cn-clip's "
                f"checkpoint there or set encoder.text_pretrained to a local cn-clip checkpoint file"
            )
        state = _read_checkpoint(path)
        state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
        mine = {
            k: v
            for k, v in state.items()
            if (k.startswith("bert.") and not k.startswith("bert.pooler")) or k == "text_projection"
        }
        missing, _ = self.load_state_dict(mine, strict=False)
        missing = [k for k in missing if not k.startswith("bert.pooler")]
        if missing:
            raise TextTowerError(f"Chinese-CLIP text weights {path}: missing {len(missing)} keys, e.g. {missing[:3]}")


def _read_checkpoint(path: Path) -> dict:
    """A cn-clip checkpoint's tensors (``weights_only``; the ``state_dict`` entry when nested)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TextTowerError(f"Chinese-CLIP text weights {path}: not a loadable tensor checkpoint ({first})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TextTowerError(f"Chinese-CLIP text weights {path}: not a state dict")
    return state


class FileTextEmbeddings(nn.Module):
    """Precomputed text embeddings: ``{clip id: vector}`` (ASR) and ``{image id: vector}`` (titles)."""

    def __init__(self, asr_path: Optional[str], title_path: Optional[str], embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.tables = {
            "asr": _read_table(asr_path, embed_dim, "ASR"),
            "title": _read_table(title_path, embed_dim, "title"),
        }
        self.paths = {"asr": asr_path, "title": title_path}
        self.register_buffer("_device", torch.zeros(0), persistent=False)

    def forward(self, ids: Sequence[str], kind: str) -> Tensor:
        table = self.tables[kind]
        rows = []
        for i in ids:
            row = table.get(str(i))
            if row is None:
                raise TextTowerError(f"text embeddings {self.paths[kind]}: no {kind} embedding for id {i!r}")
            rows.append(row)
        if not rows:
            return torch.zeros(0, self.embed_dim, device=self._device.device)
        return torch.stack(rows).to(self._device.device)


def _read_table(path: Optional[str], dim: int, what: str) -> dict[str, Tensor]:
    """One ``{id: [dim floats]}`` JSON file; any fault is one error line naming the file."""
    if not path:
        raise TextTowerError(f"text tower 'file' needs the {what} embeddings file (encoder.{what.lower()}_embeddings)")
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TextTowerError(
            f"text embeddings {p}: cannot read a JSON object ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if not isinstance(data, dict):
        raise TextTowerError(
            f"text embeddings {p}: expected a JSON object {{id: [{dim} floats]}}, got {type(data).__name__}"
        )
    out: dict[str, Tensor] = {}
    for key, vec in data.items():
        if (
            not isinstance(vec, list)
            or len(vec) != dim
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vec)
        ):
            raise TextTowerError(f"text embeddings {p}: id {key!r} is not a list of {dim} numbers")
        t = torch.tensor(vec, dtype=torch.float32)
        if not torch.isfinite(t).all():
            raise TextTowerError(f"text embeddings {p}: id {key!r} has a non-finite value")
        out[str(key)] = t
    return out
