"""Reading a GGUF file's header: its key-value metadata, without building the tensors or the vocabulary.

The one reader of GGUF metadata in the project: the engines (base and adapter checks), the GGUF loading
of :func:`~.llm.load_llm` and the built-in base LLM's tokenizer folder all read headers here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelError

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


def read_gguf_header(path: str | Path) -> dict[str, Any]:
    """A GGUF file's key-value metadata: scalars and strings as values, arrays as their length.

    A plain reader of the header (gguf's ``GGUFReader`` builds every array item, ~20 s for a 262k vocab)."""
    import mmap
    import struct

    def fail(why: str) -> ModelError:
        return ModelError(f"{path} is not a readable GGUF file ({why})")

    try:
        with open(path, "rb") as f:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as e:
        raise fail(str(e)) from e
    try:
        if data[:4] != b"GGUF":
            raise fail("no GGUF magic")
        pos = 24
        (n_kv,) = struct.unpack_from("<Q", data, 16)

        def string(at: int) -> tuple[str, int]:
            (n,) = struct.unpack_from("<Q", data, at)
            return bytes(data[at + 8 : at + 8 + n]).decode("utf-8", "replace"), at + 8 + n

        def skip(kind: int, at: int) -> tuple[Any, int]:
            if kind == _STRING:
                return string(at)
            if kind == _ARRAY:
                item, n = struct.unpack_from("<IQ", data, at)
                at += 12
                if item == _STRING:
                    for _ in range(n):
                        at += 8 + struct.unpack_from("<Q", data, at)[0]
                else:
                    at += n * struct.calcsize("<" + _SCALARS[item])
                return n, at
            fmt = "<" + _SCALARS[kind]
            return struct.unpack_from(fmt, data, at)[0], at + struct.calcsize(fmt)

        out: dict[str, Any] = {}
        for _ in range(n_kv):
            key, pos = string(pos)
            (kind,) = struct.unpack_from("<I", data, pos)
            out[key], pos = skip(kind, pos + 4)
        return out
    except (struct.error, KeyError, IndexError) as e:
        raise fail(f"truncated or unknown value type: {e}") from e
    finally:
        data.close()


def gguf_metadata(path: str | Path) -> dict[str, Any]:
    """Architecture, type, block count, width, heads and vocabulary size of a GGUF file."""
    kv = read_gguf_header(path)
    arch = kv.get("general.architecture")
    if not isinstance(arch, str):
        raise ModelError(f"{path} has no `general.architecture`; it is not a GGUF model")
    return {
        "arch": arch,
        "type": kv.get("general.type", "model"),
        "n_blocks": kv.get(f"{arch}.block_count"),
        "n_embd": kv.get(f"{arch}.embedding_length"),
        "n_head": kv.get(f"{arch}.attention.head_count"),
        "n_head_kv": kv.get(f"{arch}.attention.head_count_kv", kv.get(f"{arch}.attention.head_count")),
        "n_vocab": kv.get("tokenizer.ggml.tokens"),
    }


def gguf_architecture(path: str | Path) -> str:
    """``general.architecture`` of a GGUF file; ModelError when it is not a readable GGUF."""
    arch = read_gguf_header(path).get("general.architecture")
    if not isinstance(arch, str):
        raise ModelError(f"{path} is not a readable GGUF file (no `general.architecture` key)")
    return arch
