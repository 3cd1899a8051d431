"""Saving and loading a ModaVerse directory on the torch engine, and the importer of the official ModaVerse-7b-v0
release.

The directory's layout and its reader live in :mod:`.model_dir` (shared with the llama.cpp engine); here
the torch model's parts are written (:func:`save_pretrained`) and loaded into a fresh model
(:func:`load_pretrained`). Loading checks every file and every tensor before touching the model; errors name
the file and the tensor (``adapter/adapter_model.safetensors: `...q_proj.lora_A.weight` has shape (8, 32),
the model expects (4, 32)``).
"""

from __future__ import annotations

import logging
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ModelError
from .builtin import BUILTIN_LLM_PREFIX
from .config import ModaVerseConfig
from .llm import TrainedRowsEmbedding, load_llm
from .model_dir import (
    ADAPTER_CONFIG,
    ADAPTER_DIR,
    ADAPTER_WEIGHTS,
    PROJECTOR_FILE,
    ROWS_FILE,
    TOKENIZER_DIR,
    check_tensors,
    read_model_dir,
)

if TYPE_CHECKING:
    from .modeling import ModaVerseModel

#: The layout names, re-exported for existing importers (they live in :mod:`.model_dir` and :mod:`.builtin`).
__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_DIR",
    "ADAPTER_WEIGHTS",
    "BUILTIN_LLM_PREFIX",
    "PROJECTOR_FILE",
    "RELEASE_TOKENS",
    "ROWS_FILE",
    "TOKENIZER_DIR",
    "import_official",
    "load_pretrained",
    "save_pretrained",
]

logger = logging.getLogger(__name__)

_META = {"format": "pt"}


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=_META)


def save_pretrained(model: ModaVerseModel, directory: str | Path, *, tokenizer: bool = True) -> Path:
    """Write ``model`` as a ModaVerse directory; returns the directory.

    ``tokenizer=False`` leaves the tokenizer out: loading then rebuilds it from the base LLM's tokenizer
    plus the media tokens (in the same order, so the same ids), which keeps a shipped adapter small.
    """
    from peft import PeftModel, get_peft_model_state_dict

    if model.merged or not isinstance(model.llm, PeftModel):
        raise ModelError("a merged model has no separate LoRA to save; call save_pretrained before merge_and_unload")
    out = Path(directory)
    (out / ADAPTER_DIR).mkdir(parents=True, exist_ok=True)
    model.config.save(out)
    _save(model.projector.state_dict(), out / PROJECTOR_FILE)
    model.llm.peft_config["default"].save_pretrained(str(out / ADAPTER_DIR))
    _save(get_peft_model_state_dict(model.llm, save_embedding_layers=False), out / ADAPTER_WEIGHTS)
    _save(_row_tensors(model), out / ROWS_FILE)
    if tokenizer:
        model.tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
    return out


def _row_tensors(model: ModaVerseModel) -> dict[str, torch.Tensor]:
    embed = model.llm.get_input_embeddings()
    if not isinstance(embed, TrainedRowsEmbedding):
        raise ModelError("the LLM's input embedding is not the trained-rows embedding; build models with from_config")
    indices, weight = embed.indices, embed.row_values()
    frozen = model.frozen_rows.get("embed")
    if frozen is not None:
        extra = frozen[~torch.isin(frozen, indices)]
        indices = torch.cat([indices, extra])
        weight = torch.cat([weight, embed.weight.detach()[extra]])
    tensors = {"embed.indices": indices, "embed.weight": weight}
    head = model.frozen_rows.get("lm_head")
    if head is not None:
        tensors |= {"lm_head.indices": head, "lm_head.weight": model.llm.get_output_embeddings().weight.detach()[head]}
    return tensors


# -- loading ------------------------------------------------------------------------------------------
def load_pretrained(
    directory: str | Path,
    *,
    model_class: type[ModaVerseModel],
    encoder: Any | None = None,
    llm: str | None = None,
    device: torch.device | str | None = None,
    dtype: str | None = None,
    device_map: str | None = None,
    merge: bool = False,
) -> ModaVerseModel:
    """Load a ModaVerse directory into a fresh ``model_class`` (:meth:`ModaVerseModel.from_pretrained` passes
    itself). ``llm`` overrides where the base LLM is (a moved copy); ``encoder`` attaches a media encoder
    (else the one named in the config is loaded, if any); ``merge`` folds LoRA and the media rows into the
    weights for faster inference (the model can then not be saved).

    ``device`` / ``dtype`` place the LLM, the projectors and the encoder together; ``device_map="auto"``
    spreads the LLM over the visible GPUs (accelerate) and puts projectors and encoder by its input embeddings.
    """
    from transformers import AutoTokenizer

    model_dir = read_model_dir(directory, llm=llm, dtype=dtype)
    config = model_dir.config
    base_path = model_dir.llm_path()
    saved_tokenizer = model_dir.saved_tokenizer
    base, tokenizer = load_llm(
        base_path,
        gguf_file=config.gguf_file,
        dtype=config.dtype,
        device=device,
        device_map=device_map,
        with_tokenizer=saved_tokenizer is None,
    )
    if saved_tokenizer is not None:
        tokenizer = AutoTokenizer.from_pretrained(str(saved_tokenizer))
    model = model_class.from_config(config, llm=base, tokenizer=tokenizer)
    _load_rows(model, model_dir.read(ROWS_FILE), ROWS_FILE)
    _load_adapter(model, model_dir.read(ADAPTER_WEIGHTS))
    model_dir.load_projector(model.projector)
    model.encoder = encoder if encoder is not None else model_dir.load_encoder()
    if model.encoder is not None and (device is not None or dtype is not None or device_map is not None):
        model.encoder.to(device=model.device, dtype=model.dtype)  # the encoder sits with the LLM's input
    offloaded = sorted({str(d) for d in getattr(base, "hf_device_map", {}).values()} & {"cpu", "disk"})
    if merge and offloaded:  # accelerate keeps offloaded weights off the module: LoRA stays apart, unmerged
        logger.warning(
            "part of the LLM is offloaded to %s (it does not fit the GPUs): slower, LoRA kept apart", offloaded
        )
    elif merge:
        model.merge_and_unload()
    return model.eval()


def _load_adapter(model: ModaVerseModel, tensors: dict[str, torch.Tensor]) -> None:
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    expected = get_peft_model_state_dict(model.llm, save_embedding_layers=False)
    check_tensors(tensors, expected, ADAPTER_WEIGHTS)
    result = set_peft_model_state_dict(model.llm, tensors)
    unused = list(getattr(result, "unexpected_keys", []))
    if unused:
        raise ModelError(f"{ADAPTER_WEIGHTS}: tensor `{unused[0]}` matches no LoRA layer of the model")


def _load_rows(model: ModaVerseModel, tensors: dict[str, torch.Tensor], where: str) -> None:
    embed = model.llm.get_input_embeddings()
    if not isinstance(embed, TrainedRowsEmbedding):
        raise ModelError("the LLM's input embedding is not the trained-rows embedding")
    allowed = {"embed.indices", "embed.weight", "lm_head.indices", "lm_head.weight"}
    unexpected = sorted(set(tensors) - allowed)
    if unexpected:
        raise ModelError(f"{where}: unexpected tensor `{unexpected[0]}`")
    for table in ("embed", "lm_head"):
        has_idx, has_w = f"{table}.indices" in tensors, f"{table}.weight" in tensors
        if has_idx != has_w or (table == "embed" and not has_idx):
            name = f"{table}.indices" if not has_idx else f"{table}.weight"
            raise ModelError(f"{where}: tensor `{name}` is missing")
    indices, weight = tensors["embed.indices"].long(), tensors["embed.weight"]
    _check_rows(indices, weight, embed.weight, "embed", where)
    missing = sorted(set(embed.indices.tolist()) - set(indices.tolist()))
    if missing:
        raise ModelError(f"{where}: `embed.weight` lacks the trained row of token id {missing[0]}")
    position = {int(t): i for i, t in enumerate(indices.tolist())}
    embed.set_rows(weight[[position[int(t)] for t in embed.indices.tolist()]])
    is_frozen = ~torch.isin(indices, embed.indices.cpu())
    if bool(is_frozen.any()):
        with torch.no_grad():
            embed.weight[indices[is_frozen].to(embed.weight.device)] = weight[is_frozen].to(embed.weight)
        model.frozen_rows["embed"] = indices[is_frozen]
    if "lm_head.indices" in tensors:
        head = model.llm.get_output_embeddings()
        if head.weight.data_ptr() == embed.weight.data_ptr():
            raise ModelError(f"{where}: `lm_head.*` rows given but this LLM ties lm_head to its input embeddings")
        h_idx, h_w = tensors["lm_head.indices"].long(), tensors["lm_head.weight"]
        _check_rows(h_idx, h_w, head.weight, "lm_head", where)
        with torch.no_grad():
            head.weight[h_idx.to(head.weight.device)] = h_w.to(head.weight)
        model.frozen_rows["lm_head"] = h_idx


def _check_rows(indices: torch.Tensor, weight: torch.Tensor, table: torch.Tensor, name: str, where: str) -> None:
    if indices.dim() != 1 or weight.dim() != 2 or weight.shape[0] != indices.shape[0]:
        raise ModelError(
            f"{where}: `{name}.weight` {tuple(weight.shape)} does not match `{name}.indices` {tuple(indices.shape)}"
        )
    if weight.shape[1] != table.shape[1]:
        raise ModelError(
            f"{where}: `{name}.weight` has shape {tuple(weight.shape)}, the model expects "
            f"({weight.shape[0]}, {table.shape[1]}) (its hidden size is {table.shape[1]})"
        )
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= table.shape[0]):
        raise ModelError(f"{where}: `{name}.indices` has ids outside the vocabulary of {table.shape[0]} tokens")


# -- the official release -----------------------------------------------------------------------------
RELEASE_TOKENS = ("<Media>", "</Media>", "[TEXT]", "[IMAGE]", "[AUDIO]", "[VIDEO]")
_LORA_KEY = re.compile(
    r"^LLM\.base_model\.model\.model\.layers\.(\d+)\.self_attn\.([qkvo]_proj)\.lora_([AB])\.default\.weight$"
)
_EMBED = "LLM.base_model.model.model.embed_tokens.weight"
_HEAD = "LLM.base_model.model.lm_head.weight"


def import_official(
    checkpoint: str | Path,
    base_llm: str | Path,
    output_dir: str | Path,
    *,
    lora_alpha: int = 32,
    lora_dropout: float = 0.1,
    dtype: str = "bfloat16",
    encoder: str | None = None,
) -> Path:
    """Convert the release's ``pytorch_model.pt`` (trainable parameters only, on Vicuna-7b-v0) into a
    ModaVerse directory that :meth:`ModaVerseModel.from_pretrained` loads. ``base_llm`` is the local
    Vicuna-7b-v0; ``encoder`` the local ImageBind huge weights (optional)."""
    from transformers import AutoConfig, AutoTokenizer

    path = Path(checkpoint)
    if not path.is_file():
        raise ModelError(f"release checkpoint {path} does not exist")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:  # torch raises several kinds for a bad or pickled-code file
        raise ModelError(f"{path} is not a weights-only torch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict):
        raise ModelError(f"{path} holds a {type(state).__name__}, not a state dict")
    base = str(Path(base_llm).expanduser().resolve()) if Path(base_llm).exists() else str(base_llm)
    try:
        llm_config = AutoConfig.from_pretrained(base).get_text_config()
        tokenizer = AutoTokenizer.from_pretrained(base)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read the base LLM {base_llm} (Vicuna-7b-v0 expected): {e}") from e
    lora, targets, rank = _release_lora(state, path, llm_config.num_hidden_layers)
    for key in ("linear_proj.weight", "linear_proj.bias", _EMBED, _HEAD):
        if key not in state:
            raise ModelError(f"{path}: tensor `{key}` is missing; is this the ModaVerse-7b-v0 release?")
    hidden = llm_config.hidden_size
    proj_w, proj_b = state["linear_proj.weight"], state["linear_proj.bias"]
    if proj_w.dim() != 2 or proj_w.shape[0] != hidden or tuple(proj_b.shape) != (hidden,):
        raise ModelError(
            f"{path}: `linear_proj.weight` has shape {tuple(proj_w.shape)}, expected ({hidden}, encoder width) "
            f"for the base LLM's hidden size {hidden}"
        )
    before = len(tokenizer)
    rows = before + len(RELEASE_TOKENS)
    for key in (_EMBED, _HEAD):
        if tuple(state[key].shape) != (rows, hidden):
            raise ModelError(
                f"{path}: `{key}` has shape {tuple(state[key].shape)}, expected ({rows}, {hidden}): the base "
                f"tokenizer's {before} tokens + the release's {len(RELEASE_TOKENS)}; is {base_llm} Vicuna-7b-v0?"
            )
    config = ModaVerseConfig(
        llm=base,
        dtype=dtype,
        encoder_dim=int(proj_w.shape[1]),
        encoder=encoder,
        num_media_tokens=1,
        shared_projector=True,
        media_start_token="<Media>",
        media_end_token="</Media>",
        extra_tokens=list(RELEASE_TOKENS[2:]),
        lora_r=rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        lora_targets=targets,
        prompt_format="legacy",
        output_format="legacy",
        stop_strings=["###"],
    )
    _write_release(Path(output_dir), config, tokenizer, state, lora)
    return Path(output_dir)


def _release_lora(state: dict[str, Any], path: Path, layers: int) -> tuple[dict[str, torch.Tensor], list[str], int]:
    known = {"linear_proj.weight", "linear_proj.bias", _EMBED, _HEAD}
    lora: dict[str, torch.Tensor] = {}
    targets: set[str] = set()
    ranks: set[int] = set()
    for key, tensor in state.items():
        m = _LORA_KEY.match(key)
        if m is None:
            if key not in known:
                raise ModelError(f"{path}: unexpected tensor `{key}`; this importer reads the ModaVerse-7b-v0 release")
            continue
        layer, module, ab = int(m.group(1)), m.group(2), m.group(3)
        if layer >= layers:
            raise ModelError(f"{path}: `{key}` is for layer {layer} but the base LLM has {layers} layers")
        targets.add(module)
        ranks.add(int(tensor.shape[0] if ab == "A" else tensor.shape[1]))
        lora[f"base_model.model.model.layers.{layer}.self_attn.{module}.lora_{ab}.weight"] = tensor
    if not lora:
        raise ModelError(f"{path}: no LoRA tensors (`LLM.base_model.model.model.layers.N.self_attn.*.lora_*`) found")
    if len(ranks) != 1:
        raise ModelError(f"{path}: LoRA tensors disagree on the rank ({sorted(ranks)})")
    expected = {f"{t}.lora_{ab}" for t in targets for ab in "AB"}
    for layer in range(layers):
        for name in expected:
            module, ab = name.split(".lora_")
            key = f"base_model.model.model.layers.{layer}.self_attn.{module}.lora_{ab}.weight"
            if key not in lora:
                raise ModelError(
                    f"{path}: tensor `LLM.base_model.model.model.layers.{layer}.self_attn.{module}.lora_{ab}"
                    ".default.weight` is missing"
                )
    return lora, sorted(targets), ranks.pop()


def _write_release(
    out: Path, config: ModaVerseConfig, tokenizer: Any, state: dict[str, Any], lora: dict[str, torch.Tensor]
) -> None:
    from peft import LoraConfig

    from .llm import add_tokens, prepare_tokenizer

    (out / ADAPTER_DIR).mkdir(parents=True, exist_ok=True)
    config.save(out)
    _save(
        {"proj.shared.weight": state["linear_proj.weight"], "proj.shared.bias": state["linear_proj.bias"]},
        out / PROJECTOR_FILE,
    )
    LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_targets,
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=config.llm,
    ).save_pretrained(str(out / ADAPTER_DIR))
    _save(lora, out / ADAPTER_WEIGHTS)
    n = state[_EMBED].shape[0]
    _save(
        {
            "embed.indices": torch.arange(n),
            "embed.weight": state[_EMBED],
            "lm_head.indices": torch.arange(n),
            "lm_head.weight": state[_HEAD],
        },
        out / ROWS_FILE,
    )
    prepare_tokenizer(tokenizer)
    add_tokens(tokenizer, config)
    release_ids = tokenizer.convert_tokens_to_ids(list(RELEASE_TOKENS))
    if release_ids != list(range(n - len(RELEASE_TOKENS), n)):
        raise ModelError(f"the release's tokens got ids {release_ids}, expected {n - len(RELEASE_TOKENS)}..{n - 1}")
    tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
