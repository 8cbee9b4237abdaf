"""Hugging Face hub weights: fail fast, in one line, when they cannot be had.

open_clip and timm fetch pretrained weights with ``huggingface_hub``, which retries each
candidate file five times with back-off when the hub is unreachable (24 warnings over about
52 s for CLIP ViT-B/32 before the error) and, with ``HF_HUB_OFFLINE=1``, still logs and wraps
its error in two more. :func:`require_hub_files` is called before them: if none of the files
is in the local Hugging Face cache and the hub is offline by choice (``HF_HUB_OFFLINE=1``) or
unreachable (one request, no retries), it raises :class:`EncoderLoadError` naming the
repository, the files and the way out; otherwise the library loads as before. The error class
lives here, below ``methods.encoders`` and ``methods.backbones``, which re-export it.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Sequence

PROBE_TIMEOUT_S = 5.0
_TRUE = ("1", "on", "yes", "true")


class EncoderLoadError(RuntimeError):
    """Pretrained weights that cannot be loaded (a user-facing, one-line error)."""


def is_local_weights(spec: str) -> bool:
    """A ``pretrained`` value naming a file rather than a hub tag."""
    suffixes = (".pt", ".pth", ".bin", ".safetensors")
    return "/" in spec or "\\" in spec or Path(spec).suffix in suffixes or Path(spec).exists()


def offline_requested() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set to a true value, read now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE


def hub_endpoint() -> str:
    """The hub's base URL (``HF_ENDPOINT`` as huggingface_hub read it)."""
    from huggingface_hub import constants  # noqa: PLC0415  heavy: only when hub weights are asked for

    return constants.ENDPOINT


def cached_file(repo_id: str, filenames: Sequence[str], cache_dir: Optional[str] = None) -> Optional[str]:
    """The local path of the first of ``filenames`` in the Hugging Face cache, or None."""
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415  heavy: only when hub weights are asked for

    for name in filenames:
        found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
        if isinstance(found, str):
            return found
    return None


def hub_reachable(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One HEAD request to ``endpoint`` (proxies from the environment), no retries: any HTTP
    answer, an error status included, means reachable."""
    try:
        with urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # URLError, timeouts, refused connections, a malformed endpoint
        return False


def require_hub_files(
    repo_id: str, filenames: Sequence[str], what: str, fix: str, cache_dir: Optional[str] = None
) -> None:
    """Return if ``repo_id`` can supply one of ``filenames`` (cached, or the hub answers);
    otherwise raise :class:`EncoderLoadError` naming ``what``, the files and ``fix``."""
    if cached_file(repo_id, filenames, cache_dir) is not None:
        return
    files = " or ".join(filenames)
    if offline_requested():
        reason = "HF_HUB_OFFLINE is set"
    else:
        endpoint = hub_endpoint()
        if hub_reachable(endpoint):
            return
        reason = f"the hub ({endpoint}) is unreachable"
    raise EncoderLoadError(f"{what}: {reason} and the Hugging Face cache has no {files} of {repo_id}; {fix}")


def require_timm_weights(tag: str, what: str, fix: str) -> None:
    """:func:`require_hub_files` for a timm ``name.tag`` whose weights are on the hub (timm
    tries ``model.safetensors``, then ``pytorch_model.bin``); other sources are left to timm."""
    import timm  # noqa: PLC0415  heavy: only when hub weights are asked for
    from timm.models._hub import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME  # noqa: PLC0415  as above

    cfg = timm.models.get_pretrained_cfg(tag)
    repo_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if repo_id:
        filename = getattr(cfg, "hf_hub_filename", None)
        names = [filename] if filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        require_hub_files(repo_id, names, what, fix)
