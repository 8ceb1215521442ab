"""Model kinds: whether a model is a language model whose next-token predictions claims can measure.

Causal claims (necessity, sufficiency, minimality, completeness, faithfulness,
paths, faithfulness curves) and lens claims read the model's next-token
logits. They mean nothing on

- an **encoder** (BERT-style masked language models, and any model whose
  attention is bidirectional: every position sees the tokens after it, so
  the logits at a position are not a prediction of the next token), or an
  encoder-decoder;
- a model whose **language-model head is untrained**: its weights were not in
  the checkpoint and were newly initialised at load (a sentence encoder
  saved without its masked-LM head, a decoder saved without an untied
  ``lm_head``), or the checkpoint holds them exactly as a fresh
  initialisation leaves them (every normalisation weight 1 and every bias 0
  in the head: what each transformers architecture's ``_init_weights`` sets).

Head-pattern claims (previous-token, duplicate-token, induction, BOS and
user patterns) read attention patterns only and keep working on both, as do
probes on the residual stream.

Where it comes from: ``cfg.attention_dir`` (TransformerLens records
``"bidirectional"`` for encoders), the Hugging Face architecture class and
config, and the marks transformers leaves on parameters it loaded from a
checkpoint (``_is_hf_initialized``; parameters without it when others have
it were newly initialised). The Hugging Face source records the kind when it
loads a model (``model.circuitcheck_kind``), before anything can replace a
parameter; other models are inspected on first use. Models built by hand
(TransformerLens-native bridges, the zoo, Hugging Face models made from a
config) were loaded from no checkpoint, so nothing about their head is
claimed and only their attention direction is read.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CircuitCheckError

#: What still works on a model that is not a language model (said by every refusal).
STILL_WORKS = (
    "head-pattern claims (assert_previous_token_head, assert_duplicate_token_head, assert_induction_head, "
    "assert_bos_head, assert_head_matches_pattern, head_scores) and probes still work on it"
)

_SHOWN_NAMES = 4  # parameter names listed in a message before "and N more"


class ModelKindError(CircuitCheckError, TypeError):
    """A claim that needs a language model's next-token predictions, asked of a model that makes none."""


@dataclass(frozen=True)
class ModelKind:
    """What a model is, as far as claims care.

    ``family``: ``"decoder"`` (causal attention: position i sees positions <= i),
    ``"encoder"`` (bidirectional attention, e.g. masked language models) or
    ``"encoder-decoder"``. ``attention``: ``cfg.attention_dir`` (``"causal"`` or
    ``"bidirectional"``). ``architecture``: the Hugging Face class (e.g.
    ``"BertForMaskedLM"``), or TransformerLens's name for a native model.
    ``loaded_from_checkpoint``: transformers marked parameters as loaded from a
    checkpoint (False for models built by hand, where nothing below is known).
    ``newly_initialized``: parameters (clean names) that were not in the
    checkpoint and were initialised at load. ``head``: the language-model head's
    parameters that are the model's own (not tied to the input embeddings).
    ``head_at_init``: the head's normalisation weights and biases, when every one
    of them is exactly at its initial value (1 and 0); empty otherwise.
    """

    family: str
    attention: str
    architecture: str | None
    loaded_from_checkpoint: bool = False
    newly_initialized: tuple[str, ...] = ()
    head: tuple[str, ...] = ()
    head_at_init: tuple[str, ...] = ()

    @property
    def head_newly_initialized(self) -> tuple[str, ...]:
        """The head's parameters that were initialised at load (not in the checkpoint)."""
        return tuple(name for name in self.newly_initialized if name in self.head)

    @property
    def head_status(self) -> str:
        """``"newly initialised"``, ``"at initialisation"``, ``"trained"`` (loaded and not at init) or ``"unknown"`` (no checkpoint)."""
        if self.head_newly_initialized:
            return "newly initialised"
        if self.head_at_init:
            return "at initialisation"
        return "trained" if self.loaded_from_checkpoint else "unknown"

    @property
    def is_language_model(self) -> bool:
        """Causal attention, a decoder, and no weight newly initialised or left at initialisation in the head or body."""
        return not self.problems()

    def problems(self) -> list[str]:
        """What makes next-token claims meaningless on this model, one phrase each (empty for a language model)."""
        found = []
        architecture = f" ({self.architecture})" if self.architecture else ""
        if self.family == "encoder":
            found.append(f"an encoder{architecture} with {self.attention} attention, not a causal language model: "
                         "each position's logits see the tokens after it, so they are not next-token predictions")
        elif self.family == "encoder-decoder":
            found.append(f"an encoder-decoder{architecture}, not a decoder-only causal language model")
        elif self.attention != "causal":
            found.append(f"a model{architecture} with {self.attention} attention, not causal attention")
        if self.head_newly_initialized:
            found.append("its language-model head is untrained: " + _names(self.head_newly_initialized, "was", "were")
                         + " not in the checkpoint and newly initialised at load")
        elif self.head_at_init:
            found.append("its language-model head is untrained: " + _names(self.head_at_init, "holds", "hold")
                         + " exactly the values initialisation gives (norm weights 1, biases 0)")
        body = [name for name in self.newly_initialized if name not in self.head]
        if body:
            found.append(_names(body, "was", "were") + " not in the checkpoint and newly initialised at load")
        return found

    def describe(self) -> str:
        """One line: what the model is."""
        problems = self.problems()
        if problems:
            return "; ".join(problems)
        head = {"trained": "its head loaded from the checkpoint", "unknown": "built without a checkpoint"}[self.head_status]
        return f"a causal language model ({self.architecture or 'unknown architecture'}, {head})"

    def to_dict(self) -> dict:
        """JSON-safe: the fields, the head's status and the problems found."""
        return {
            "family": self.family,
            "attention": self.attention,
            "architecture": self.architecture,
            "loaded_from_checkpoint": self.loaded_from_checkpoint,
            "newly_initialized": list(self.newly_initialized),
            "head": list(self.head),
            "head_status": self.head_status,
            "problems": self.problems(),
        }


def model_kind(model) -> ModelKind:
    """The kind of ``model``: the one recorded when circuitcheck loaded it, else inspected now (and recorded)."""
    recorded = getattr(model, "circuitcheck_kind", None)
    return recorded if isinstance(recorded, ModelKind) else record_kind(model)


def record_kind(model) -> ModelKind:
    """Inspect ``model`` now and record its kind on it: called right after loading, before weights can be replaced."""
    kind = detect_kind(model)
    try:
        model.circuitcheck_kind = kind
    except (AttributeError, TypeError):  # pragma: no cover - exotic model classes
        pass
    return kind


def require_language_model(model, claims: str) -> None:
    """Raise :class:`ModelKindError` when ``model`` is not a language model ``claims`` can be measured on.

    ``claims`` names what was asked, e.g. ``"causal claims (necessity, ...)"``.
    The message names the model, what was detected, and what still works.
    """
    __tracebackhide__ = True
    kind = model_kind(model)
    problems = kind.problems()
    if problems:
        from .components import model_label

        raise ModelKindError(
            f"{claims} need a causal language model whose next-token predictions they measure, but model "
            f"{model_label(model)!r} is " + "; and ".join(problems) + f". {STILL_WORKS}."
        )


def detect_kind(model) -> ModelKind:
    """Inspect ``model`` (a TransformerBridge, or anything with a TransformerLens ``cfg``) for its kind."""
    cfg = model.cfg
    attention = str(getattr(cfg, "attention_dir", None) or "causal")
    hf_model = _hf_model(model)
    hf_config = getattr(hf_model, "config", None)
    architecture = type(hf_model).__name__ if hf_model is not None else getattr(cfg, "architecture", None)
    if hf_config is not None and getattr(hf_config, "is_encoder_decoder", False):
        family = "encoder-decoder"
    elif attention == "bidirectional" or _is_masked_lm_class(architecture):
        family = "encoder"
    else:
        family = "decoder"
    if hf_model is None:
        return ModelKind(family=family, attention=attention, architecture=architecture)
    loaded, missing, head, at_init = _loading_record(hf_model)
    return ModelKind(family=family, attention=attention, architecture=architecture, loaded_from_checkpoint=loaded,
                     newly_initialized=missing, head=head, head_at_init=at_init)


def _hf_model(model):
    """The Hugging Face ``PreTrainedModel`` a bridge wraps, or None (native and legacy models)."""
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency of TransformerLens
        return None
    original = getattr(model, "original_model", None)
    return original if isinstance(original, PreTrainedModel) else None


def _is_masked_lm_class(architecture: str | None) -> bool:
    """A class transformers lists as a masked language model and not also as a causal one."""
    if not architecture:
        return False
    from transformers.models.auto import modeling_auto

    def names(mapping) -> set[str]:
        found = set()
        for value in mapping.values():
            found.update(value if isinstance(value, (list, tuple)) else [value])
        return found

    return architecture in names(modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES) and architecture not in names(
        modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def _clean(name: str) -> str:
    """A parameter's Hugging Face name, without the ``_original_component`` levels TransformerBridge inserts."""
    return name.replace("._original_component", "").replace("_original_component.", "")


def _loading_record(hf_model) -> tuple[bool, tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(loaded from a checkpoint, newly initialised parameters, head parameters, head tensors at initialisation)."""
    import torch

    parameters = list(hf_model.named_parameters(remove_duplicate=True))
    loaded = any(getattr(p, "_is_hf_initialized", False) for _, p in parameters)
    # Newly initialised: transformers initialised the owning module (marked it) but did not load the parameter.
    # Parameters an adapter made after loading (TransformerBridge's split q/k/v) have unmarked owners.
    missing = tuple(_clean(name) for name, p in parameters if loaded and not getattr(p, "_is_hf_initialized", False)
                    and getattr(_owner(hf_model, name), "_is_hf_initialized", False))
    prefix = getattr(hf_model, "base_model_prefix", "") or ""
    base = getattr(hf_model, prefix, None) if prefix else None
    if not isinstance(base, torch.nn.Module) or base is hf_model:
        return loaded, missing, (), ()
    # Parameters outside the base model: the head (tied weights are the base model's own tensors).
    base_ids = {id(p) for p in base.parameters()}
    head = [(name, p) for name, p in parameters if id(p) not in base_ids]
    if not loaded:
        return loaded, missing, tuple(_clean(name) for name, _ in head), ()
    constants = []
    for name, p in head:
        leaf = name.rpartition(".")[2]
        if leaf == "bias":
            constants.append((name, p, 0.0))
        elif leaf == "weight" and isinstance(_owner(hf_model, name), torch.nn.LayerNorm):
            constants.append((name, p, 1.0))
    at_init = ()
    if constants and all(bool(torch.all(p.detach() == value)) for _, p, value in constants):
        at_init = tuple(_clean(name) for name, _, _ in constants)
    return loaded, missing, tuple(_clean(name) for name, _ in head), at_init


def _owner(hf_model, name: str):
    """The module that holds parameter ``name``."""
    return hf_model.get_submodule(name.rpartition(".")[0]) if "." in name else hf_model


def _names(names, singular: str, plural: str) -> str:
    """``"a, b and 3 more were"``: the first names and the verb that agrees with them."""
    names = list(names)
    shown = ", ".join(names[:_SHOWN_NAMES])
    more = f" and {len(names) - _SHOWN_NAMES} more" if len(names) > _SHOWN_NAMES else ""
    return f"{shown}{more} {singular if len(names) == 1 else plural}"
