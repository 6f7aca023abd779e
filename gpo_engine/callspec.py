"""The model call a Genkit application would make for a `.prompt` file.

Frontmatter `model` and `config` are written for Genkit: provider prefixes
such as `googleai/` and Genkit's config names (`maxOutputTokens`,
`stopSequences` ...). This module maps them to litellm's, checks their values
(located problems for the editor), and holds the JSON-output request of
`output.format: json`. It never imports litellm: which parameters a provider
accepts is asked of the model layer when the call is made.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Genkit's model prefixes that litellm spells differently.
GENKIT_PROVIDERS = {"googleai": "gemini", "vertexai": "vertex_ai"}
# Prefixes litellm takes as they are, beyond Genkit's: the providers people use
# most through litellm (the full list is litellm.provider_list; a test keeps
# every name here valid there).
LITELLM_PROVIDERS = (
    "openai", "anthropic", "ollama", "ollama_chat", "gemini", "vertex_ai", "azure", "azure_ai",
    "bedrock", "groq", "mistral", "cohere", "together_ai", "openrouter", "deepseek",
    "fireworks_ai", "xai", "perplexity", "huggingface", "hosted_vllm", "lm_studio",
    "text-completion-openai", "litellm_proxy", "cerebras", "sambanova", "databricks",
    "watsonx", "nvidia_nim", "replicate", "deepinfra", "cloudflare", "ai21",
    "llamafile", "dashscope", "moonshot", "voyage", "github", "custom_openai",
)
LOCAL_PROVIDER = "local"  # the embedded model

# Genkit's common generation config -> litellm's parameter names.
CONFIG_NAMES = {
    "temperature": "temperature",
    "maxOutputTokens": "max_tokens",
    "topP": "top_p",
    "topK": "top_k",
    "stopSequences": "stop",
    "presencePenalty": "presence_penalty",
    "frequencyPenalty": "frequency_penalty",
    "seed": "seed",
}
# Config keys that are never sent: a key in a file would end up in caches and
# logs; a version is a Genkit model-plugin choice, not a request parameter.
NOT_SENT = {
    "apiKey": "an API key in a prompt file is not sent; set the provider's key in the environment",
    "version": "config.version picks a Genkit plugin's model version; put it in `model:`",
}

# What Genkit appends when the model cannot be held to a schema by the API.
SCHEMA_INSTRUCTION = (
    "Output should be in JSON format and conform to the following schema:\n\n```\n{schema}\n```\n"
)


def known_prefixes() -> tuple[str, ...]:
    return (*GENKIT_PROVIDERS, *LITELLM_PROVIDERS, LOCAL_PROVIDER)


def litellm_model(name: str) -> str:
    """`googleai/gemini-2.5-flash` -> `gemini/gemini-2.5-flash`; others unchanged."""
    provider, slash, rest = name.partition("/")
    if slash and provider in GENKIT_PROVIDERS:
        return f"{GENKIT_PROVIDERS[provider]}/{rest}"
    return name


def model_problem(name: str) -> str | None:
    """Why `model:` names no provider gpo can reach, or None.

    A bare name (`gpt-4o-mini`) is litellm's to resolve, as it is today.
    """
    provider, slash, rest = name.partition("/")
    if not slash:
        return None
    if provider in known_prefixes():
        return None if rest.strip() else f"model '{name}' names a provider but no model"
    return (f"unknown model provider '{provider}/'; known prefixes: "
            + ", ".join(f"{p}/" for p in known_prefixes()))


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(float(value)))


def config_problem(key: str, value: object) -> str | None:
    """Why a `config:` value cannot be sent, or None (unknown keys are the provider's call)."""
    if key in ("temperature", "topP", "presencePenalty", "frequencyPenalty"):
        if not _is_number(value) or (key in ("temperature", "topP") and float(value) < 0):  # type: ignore[arg-type]
            return f"config.{key} must be a number >= 0, got {value!r}"
    elif key in ("maxOutputTokens", "topK", "seed"):
        minimum = 0 if key == "seed" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            return f"config.{key} must be a whole number >= {minimum}, got {value!r}"
    elif key == "stopSequences" and not (
        isinstance(value, list) and all(isinstance(s, str) and s for s in value)
    ):
        return f"config.stopSequences must be a list of texts, got {value!r}"
    return None


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


@dataclass(frozen=True)
class CallSpec:
    """The task call's model and parameters, before the provider is asked what it takes."""

    model: str  # litellm's model name
    params: Mapping[str, Any]  # litellm parameter -> value (temperature, max_tokens, stop...)
    output_schema: Mapping[str, Any] | None = None  # JSON Schema of `output.schema`
    json_output: bool = False  # output.format: json
    config_max_tokens: bool = False  # max_tokens came from config.maxOutputTokens
    notes: tuple[str, ...] = field(default=())  # config keys not sent, and why

    def fingerprint(self) -> dict[str, Any]:
        """What this call asks beyond gpo's plain call (greedy, gpo.max_tokens long)."""
        out: dict[str, Any] = {k: v for k, v in self.params.items()
                               if k not in ("temperature", "max_tokens")}
        if self.params.get("temperature") != 0.0:
            out["temperature"] = self.params.get("temperature")
        if self.config_max_tokens:
            out["max_tokens"] = self.params.get("max_tokens")
        if self.json_output:
            out["output"] = {"format": "json", "schema": self.output_schema}
        return out


def call_spec(model: str, config: Mapping[str, Any] | None, *, max_tokens: int,
              max_tokens_override: bool, output: Mapping[str, Any] | None) -> CallSpec:
    """The task call for frontmatter `config` and `output`.

    Without config the call is what gpo always sent: greedy (temperature 0)
    and `gpo.max_tokens` long. `config` wins over those defaults, since it is
    what the application sends; an explicit `gpo.max_tokens` (frontmatter or
    command line) wins over `config.maxOutputTokens`, for scoring cheaply.
    """
    params: dict[str, Any] = {"temperature": 0.0, "max_tokens": max_tokens}
    notes: list[str] = []
    for key, value in (config or {}).items():
        if key in NOT_SENT:
            notes.append(NOT_SENT[key])
        elif key in CONFIG_NAMES:
            params[CONFIG_NAMES[key]] = float(value) if key == "temperature" else value
        else:
            params[_snake(str(key))] = value  # kept only if the provider takes it
    if max_tokens_override:
        params["max_tokens"] = max_tokens
    out = output or {}
    schema = out.get("schema")
    return CallSpec(model=litellm_model(model), params=params,
                    config_max_tokens=params["max_tokens"] != max_tokens,
                    output_schema=schema if isinstance(schema, Mapping) else None,
                    json_output=out.get("format") == "json", notes=tuple(notes))


def schema_instruction(schema: Mapping[str, Any] | None) -> str:
    shown = json.dumps(schema, indent=2) if schema else '{"type": "object"}'
    return SCHEMA_INSTRUCTION.format(schema=shown)


def response_format(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """OpenAI's structured-output request, which litellm translates per provider."""
    if not schema:
        return {"type": "json_object"}
    return {"type": "json_schema",
            "json_schema": {"name": "output", "schema": dict(schema)}}


@dataclass(frozen=True)
class Sendable:
    """What the task call sends once the provider's accepted parameters are known."""

    temperature: float
    max_tokens: int
    stop: list[str] | None
    extra: Mapping[str, Any]  # every other parameter, response_format included
    instruction: str | None  # the JSON-schema instruction appended to the last user message
    notes: tuple[str, ...]  # what was not sent, and why

    def complete_args(self) -> dict[str, Any]:
        """Keyword arguments of LLM.complete."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens,
                "stop": self.stop, "extra": dict(self.extra) or None}

    def params(self) -> dict[str, Any]:
        """Every parameter as the request carries it (for `gpo render`)."""
        out: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.stop:
            out["stop"] = self.stop
        out.update(self.extra)
        return out


# Sent whatever the provider says: litellm maps these for every provider.
_ALWAYS = ("temperature", "max_tokens")


def sendable(spec: CallSpec, supported: frozenset[str] | None,
             schema_ok: bool) -> Sendable:
    """Keep the parameters the provider takes; ask for JSON the way it can give it.

    `supported` is litellm's list for the model (None when litellm does not
    know the model: then Genkit's common parameters are sent and any other
    key is dropped). `schema_ok`: the provider can be held to a JSON Schema.
    """
    notes = list(spec.notes)
    kept: dict[str, Any] = {}
    genkit = {v: k for k, v in CONFIG_NAMES.items()}
    for name, value in spec.params.items():
        if name in _ALWAYS:
            continue
        takes = name in supported if supported is not None else name in genkit
        if takes:
            kept[name] = value
        else:
            shown = f"config.{genkit.get(name, name)}"
            notes.append(f"{shown} is not sent: {spec.model} does not take '{name}'")
    stop = kept.pop("stop", None)
    instruction = None
    if spec.json_output:
        if schema_ok:
            kept["response_format"] = response_format(spec.output_schema)
        else:
            instruction = schema_instruction(spec.output_schema)
            if supported is not None and "response_format" in supported:
                kept["response_format"] = {"type": "json_object"}
    return Sendable(temperature=float(spec.params["temperature"]),
                    max_tokens=int(spec.params["max_tokens"]), stop=stop, extra=kept,
                    instruction=instruction, notes=tuple(notes))


def with_instruction(chat: list[dict[str, Any]], instruction: str | None) -> list[dict[str, Any]]:
    """`chat` with `instruction` appended to its last user message, as Genkit does."""
    if not instruction:
        return chat
    instruction = instruction.rstrip()  # as to_chat: no trailing white space is sent
    out = [dict(m) for m in chat]
    for message in reversed(out):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                message["content"] = [*content, {"type": "text", "text": instruction}]
            else:
                message["content"] = f"{content}\n\n{instruction}" if content else instruction
            return out
    return [*out, {"role": "user", "content": instruction}]
