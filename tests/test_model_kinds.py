"""Model kinds, answer tokenization, Hugging Face loading options and quiet loading (issue 16).

Every model here is built and saved offline: a BERT-style encoder saved
without its masked-LM head (with a real ``BertTokenizer``, which wraps every
input in ``[CLS] ... [SEP]``), Llama-style decoders with grouped-query
attention (saved in bfloat16; one saved without its untied ``lm_head``), a
Phi decoder whose head bias is exactly its initial zero, and a GPT-2 with a
head loaded from its checkpoint. What circuitcheck detects is checked against
transformers' own loading report (``output_loading_info=True``), a fresh
initialisation, and plain forward passes.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformer_lens.head_detector import detect_head
from transformer_lens.model_bridge import TransformerBridge
from transformers.utils import logging as hf_logging

import circuitcheck
from circuitcheck import ModelKindError, ModelSpecError, tasks
from circuitcheck.model.kinds import STILL_WORKS
from circuitcheck.model.sources import with_checkpoint
from circuitcheck.zoo.tokenizer import build_tokenizer
from circuitcheck_plugins import huggingface_source

BERT_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz",
              "paris", "london", "the", "capital", "of", "france", "is"]


def _llama_config(**extra):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
                       bos_token_id=0, eos_token_id=0, pad_token_id=2, **extra)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A BERT-style sentence encoder: ``BertModel`` saved without a masked-LM head, and a real ``BertTokenizer``."""
    from transformers import BertConfig, BertModel, BertTokenizer

    directory = tmp_path_factory.mktemp("tiny-bert-encoder")
    (directory / "vocab.txt").write_text("\n".join(BERT_WORDS) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(BERT_WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config, add_pooling_layer=False).save_pretrained(directory)
    BertTokenizer(str(directory / "vocab.txt")).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def bert(bert_dir):
    return circuitcheck.load_model(str(bert_dir), device="cpu")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """A Llama-style decoder with grouped-query attention (4 query heads, 2 key/value heads), saved in bfloat16."""
    from transformers import LlamaForCausalLM

    directory = tmp_path_factory.mktemp("tiny-llama-bf16")
    torch.manual_seed(0)
    LlamaForCausalLM(_llama_config()).to(torch.bfloat16).save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def headless_llama_dir(tmp_path_factory):
    """The Llama decoder's body saved alone (``LlamaModel``): its untied ``lm_head`` is not in the checkpoint."""
    from transformers import LlamaModel

    directory = tmp_path_factory.mktemp("tiny-llama-no-head")
    torch.manual_seed(0)
    LlamaModel(_llama_config()).save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)
    return directory


def _save_phi(directory, head_bias: torch.Tensor | None):
    from transformers import PhiConfig, PhiForCausalLM

    torch.manual_seed(0)
    config = PhiConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       max_position_embeddings=64, bos_token_id=0, eos_token_id=0)
    model = PhiForCausalLM(config)
    if head_bias is not None:
        with torch.no_grad():
            model.lm_head.bias.copy_(head_bias)
    model.save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)
    return config


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A GPT-2 whose head (tied to its embeddings) is loaded from its checkpoint; large init so ablations matter."""
    from transformers import GPT2Config, GPT2LMHeadModel

    directory = tmp_path_factory.mktemp("tiny-gpt2-kinds")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=64, n_positions=64, initializer_range=0.3,
                               bos_token_id=0, eos_token_id=0)).save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)
    return directory


def _bert_task(model):
    clean = model.to_tokens(["a b c d a b c d", "e f g h e f g h"])
    return tasks.from_tokens(clean, clean.flip(0), answers=[8, 9], wrong_answers=[9, 8])


# 1. Encoders and untrained heads: detected, and causal and lens claims refused -------------------------------------


def test_an_encoder_saved_without_its_head_is_detected_as_transformers_reports_it(bert, bert_dir):
    from transformers import BertForMaskedLM

    kind = circuitcheck.model_kind(bert)
    oracle, info = BertForMaskedLM.from_pretrained(str(bert_dir), output_loading_info=True)
    assert info["missing_keys"], "the oracle must report the head missing"
    # The same tensors (the decoder's bias is tied to cls.predictions.bias: two names, one parameter).
    assert {id(oracle.get_parameter(name)) for name in kind.head_newly_initialized} == {
        id(oracle.get_parameter(name)) for name in info["missing_keys"]}
    assert kind.family == "encoder" and kind.attention == "bidirectional" and kind.architecture == "BertForMaskedLM"
    assert kind.head_status == "newly initialised" and not kind.is_language_model


def test_the_encoder_really_is_not_causal(bert, gpt2_dir):
    """Changing the last token changes the encoder's logits at the first position; a causal decoder's stay put."""
    gpt2 = circuitcheck.load_model(str(gpt2_dir), device="cpu")
    for model, causal in ((bert, False), (gpt2, True)):
        tokens = model.to_tokens(["a b c d"])
        changed = tokens.clone()
        changed[0, -1] = int(tokens[0, -2])
        first, second = model(tokens)[0, 0], model(changed)[0, 0]
        assert torch.allclose(first, second, atol=1e-5) is causal
        assert (circuitcheck.model_kind(model).family == "decoder") is causal


@pytest.mark.parametrize("claim", ["necessary", "sufficient", "path", "minimal", "complete", "faithful", "lens",
                                   "direct_effect", "top_direct_effects", "copying_head"])
def test_causal_and_lens_claims_are_refused_on_the_encoder_with_what_was_found(bert, bert_dir, claim):
    task = _bert_task(bert)
    calls = {
        "necessary": lambda: circuitcheck.check_necessary("L0H0", model=bert, task=task),
        "sufficient": lambda: circuitcheck.check_sufficient("L0H0 L1H1", model=bert, task=task),
        "path": lambda: circuitcheck.check_path("L0H0", "L1H1", model=bert, task=task),
        "minimal": lambda: circuitcheck.check_minimal("L0H0 L1H1", model=bert, task=task),
        "complete": lambda: circuitcheck.check_complete("L0H0 L1H1", model=bert, task=task),
        "faithful": lambda: circuitcheck.check_faithful("L0H0 L1H1", model=bert, task=task),
        "lens": lambda: circuitcheck.check_logit_lens_converges_by(0, model=bert, tokens=task.clean),
        "direct_effect": lambda: circuitcheck.check_direct_effect("L1H1", min_share=0.1, model=bert, task=task),
        "top_direct_effects": lambda: circuitcheck.check_top_direct_effects("L1H1", model=bert, task=task),
        "copying_head": lambda: circuitcheck.check_copying_head(1, 1, min_score=0.5, model=bert),
    }
    with pytest.raises(ModelKindError) as raised:
        calls[claim]()
    message = str(raised.value)
    assert f"model {str(bert_dir)!r} is an encoder (BertForMaskedLM) with bidirectional attention" in message
    assert "its language-model head is untrained: cls.predictions.bias" in message
    assert "not in the checkpoint and newly initialised at load" in message
    assert STILL_WORKS in message


def test_assertions_are_refused_too(bert):
    with pytest.raises(ModelKindError, match="causal claims .* need a causal language model"):
        circuitcheck.assert_necessary("L0H0", min_drop=0.5, model=bert, task=_bert_task(bert))


def test_head_pattern_claims_keep_working_on_the_encoder(bert):
    prompts = ["a b c d e a b c d e", "the capital of france is the capital"]
    ours = torch.tensor(circuitcheck.head_scores(bert, "previous_token", prompts=prompts).to_numpy())
    theirs = detect_head(bert, prompts, "previous_token_head", exclude_bos=True)
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=0)
    result = circuitcheck.assert_previous_token_head(0, 0, max_score=1.0, model=bert)
    assert result.passed and 0.0 <= result.value <= 1.0


def test_a_decoder_saved_without_its_untied_head_is_refused(headless_llama_dir):
    from transformers import LlamaForCausalLM

    model = circuitcheck.load_model(str(headless_llama_dir), device="cpu")
    kind = circuitcheck.model_kind(model)
    _, info = LlamaForCausalLM.from_pretrained(str(headless_llama_dir), output_loading_info=True)
    assert set(info["missing_keys"]) == {"lm_head.weight"} == set(kind.head_newly_initialized)
    assert kind.family == "decoder" and kind.attention == "causal"
    with pytest.raises(ModelKindError, match=r"its language-model head is untrained: lm_head.weight was not in the checkpoint"):
        circuitcheck.check_necessary("L0H0", model=model, task=tasks.induction(model, n_prompts=4, seq_len=6))


def test_a_head_saved_exactly_as_initialised_is_refused_and_a_trained_one_is_not(tmp_path):
    from transformers import PhiForCausalLM

    config = _save_phi(tmp_path / "at-init", head_bias=None)
    fresh = PhiForCausalLM(config).lm_head.bias
    untrained = circuitcheck.load_model(str(tmp_path / "at-init"), device="cpu")
    assert torch.equal(untrained.original_model.lm_head.bias.detach(), fresh.detach())  # what a fresh init gives
    kind = circuitcheck.model_kind(untrained)
    assert kind.head_at_init == ("lm_head.bias",) and kind.head_status == "at initialisation"
    with pytest.raises(ModelKindError, match=r"lm_head.bias holds exactly the values initialisation gives"):
        circuitcheck.check_logit_lens_converges_by(0, model=untrained, prompt="a b c d")

    _save_phi(tmp_path / "trained", head_bias=torch.linspace(-0.5, 0.5, config.vocab_size))
    trained = circuitcheck.model_kind(circuitcheck.load_model(str(tmp_path / "trained"), device="cpu"))
    assert trained.head_status == "trained" and trained.is_language_model and not trained.head_at_init


def test_a_decoder_with_its_head_from_the_checkpoint_runs_causal_claims(gpt2_dir):
    model = circuitcheck.load_model(str(gpt2_dir), device="cpu")
    kind = circuitcheck.model_kind(model)
    assert kind.is_language_model and kind.head_status == "trained" and not kind.newly_initialized
    result = circuitcheck.check_necessary("L1H0 L1H1 L1H2 L1H3", model=model, task=tasks.induction(model, n_prompts=8, seq_len=8))
    assert math.isfinite(result.value)  # measured, not refused


def test_models_built_by_hand_are_unaffected(random_model, zoo_tokenizer_dir):
    """The zoo, a TransformerLens-native bridge and a Hugging Face model made from a config: no checkpoint, no refusal."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from circuitcheck.zoo.tokenizer import load_tokenizer

    zoo_model = circuitcheck.load_model("zoo:induction-2l", device="cpu")
    torch.manual_seed(0)
    from_config = TransformerBridge.boot_transformers(
        str(zoo_tokenizer_dir), hf_model=GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=32)),
        tokenizer=load_tokenizer(zoo_tokenizer_dir), device="cpu")
    for model in (zoo_model, random_model, from_config):
        kind = circuitcheck.model_kind(model)
        assert kind.is_language_model and kind.head_status == "unknown" and not kind.loaded_from_checkpoint
    result = circuitcheck.check_necessary("L1H3", model=zoo_model, task=tasks.induction(zoo_model, n_prompts=8, seq_len=8))
    assert result.value > 0.5


# 2. Answers tokenized without special tokens ----------------------------------------------------------------------


def test_answers_are_tokenized_without_special_tokens(bert):
    assert bert.tokenizer("paris")["input_ids"] == [2, BERT_WORDS.index("paris"), 3]  # [CLS] paris [SEP]
    task = tasks.from_prompts(bert, ["the capital of france is [MASK]"], ["the capital of london is [MASK]"],
                              answers=["paris"], wrong_answers=["london"])
    assert task.answers.tolist() == [BERT_WORDS.index("paris")]
    assert task.wrong_answers.tolist() == [BERT_WORDS.index("london")]


def test_an_answer_of_several_tokens_shows_the_tokens_it_became(bert):
    with pytest.raises(circuitcheck.CircuitCheckError) as raised:
        tasks.from_prompts(bert, ["a b c"], ["a b d"], answers=["paris london"], wrong_answers=["d"])
    message = str(raised.value)
    assert "answer 'paris london' is 2 tokens; answers must be single tokens" in message
    assert f"it became 'paris' ({BERT_WORDS.index('paris')}), 'london' ({BERT_WORDS.index('london')})" in message
    assert "[SEP]" not in message


# 3. Loading options: dtype, device_map, n_devices -----------------------------------------------------------------


@pytest.mark.parametrize("query, expected", [
    ("dtype=bfloat16", {"dtype": torch.bfloat16}),
    ("dtype=bf16", {"dtype": torch.bfloat16}),
    ("dtype=float16", {"dtype": torch.float16}),
    ("dtype=half", {"dtype": torch.float16}),
    ("dtype=float32", {"dtype": torch.float32}),
    ("device_map=auto", {"device_map": "auto"}),
    ("device_map=balanced_low_0", {"device_map": "balanced_low_0"}),
    ("device_map=cpu", {"device_map": "cpu"}),
    ("n_devices=1", {"n_devices": 1}),
    ("dtype=bfloat16&device_map=auto", {"dtype": torch.bfloat16, "device_map": "auto"}),
])
def test_loading_options_parse_to_boot_transformers_arguments(query, expected):
    assert huggingface_source.parse_options(query, f"hf:m?{query}") == expected


@pytest.mark.parametrize("query, message", [
    ("dtype=int8", r"dtype 'int8' is not valid: use float32, float16 or bfloat16"),
    ("dtype", r"option 'dtype' is not KEY=VALUE"),
    ("dtype=", r"option 'dtype=' is not KEY=VALUE"),
    ("precision=bf16", r"unknown option 'precision'; the Hugging Face source takes dtype, device_map, n_devices"),
    ("dtype=bf16&dtype=fp16", r"option 'dtype' is given twice \('bf16' and 'fp16'\)"),
    ("device_map=everywhere", r"device_map 'everywhere' is neither a placement strategy \(auto, balanced, balanced_low_0, "
                              r"sequential\) nor a device this machine has"),
    ("n_devices=0", r"n_devices '0' is not valid: give a whole number of CUDA devices, 1 or more"),
    ("n_devices=two", r"n_devices 'two' is not valid"),
    ("n_devices=4096", r"n_devices=4096 needs 4096 CUDA devices; this machine has \d+"),
    ("device_map=auto&n_devices=2", r"give device_map or n_devices, not both"),
])
def test_a_bad_loading_option_is_a_clear_error(query, message):
    with pytest.raises(ModelSpecError, match=message) as raised:
        huggingface_source.parse_options(query, f"hf:m?{query}")
    assert str(raised.value).startswith(f"model spec 'hf:m?{query}': ")


def test_a_bad_option_on_a_local_directory_is_an_error_before_loading(llama_dir):
    with pytest.raises(ModelSpecError, match=r"dtype 'bfloat61' is not valid"):
        circuitcheck.load_model(f"{llama_dir}?dtype=bfloat61", device="cpu")


def test_the_options_reach_boot_transformers(llama_dir, monkeypatch):
    seen = {}
    boot = TransformerBridge.boot_transformers

    def recording(name, **kwargs):
        seen.update(kwargs, name=name)
        return boot(name, **kwargs)

    monkeypatch.setattr(TransformerBridge, "boot_transformers", staticmethod(recording))
    model = circuitcheck.load_model(f"hf:{llama_dir}?dtype=bfloat16&device_map=auto", device="cpu")
    assert seen["name"] == str(llama_dir) and seen["dtype"] is torch.bfloat16 and seen["device_map"] == "auto"
    assert seen["device"] is None  # the map places the model; device and device_map are exclusive in TransformerLens
    assert next(model.parameters()).dtype is torch.bfloat16
    seen.clear()
    circuitcheck.load_model(str(llama_dir), device="cpu")
    assert seen["device"] == "cpu" and "dtype" not in seen and "device_map" not in seen


def test_a_grouped_query_llama_saved_in_bf16_loads_in_bfloat16(llama_dir):
    from transformers import LlamaForCausalLM

    model = circuitcheck.load_model(f"{llama_dir}?dtype=bfloat16", device="cpu")
    assert model.circuitcheck_spec == f"{llama_dir}?dtype=bfloat16"
    assert getattr(model, "circuitcheck_checkpoint", None) is None
    assert model.cfg.dtype is torch.bfloat16 and model.cfg.n_heads == 4 and model.cfg.n_key_value_heads == 2
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert circuitcheck.model_kind(model).is_language_model
    tokens = model.to_tokens(["a b c d a b c d"])
    reference = LlamaForCausalLM.from_pretrained(str(llama_dir), dtype=torch.bfloat16, attn_implementation="eager").eval()
    with torch.no_grad():
        expected = reference(tokens).logits
    logits = model(tokens)
    assert logits.dtype is torch.bfloat16
    torch.testing.assert_close(logits, expected, atol=2e-2, rtol=2e-2)
    default = circuitcheck.load_model(str(llama_dir), device="cpu")
    assert next(default.parameters()).dtype is torch.float32  # without the option: TransformerLens's float32
    scores = circuitcheck.head_scores(model, "previous_token", prompts=["a b c d e a b c d e"])
    assert scores.shape == (2, 4)


def test_a_checkpoint_goes_before_the_options():
    assert with_checkpoint("hf:org/model?dtype=bfloat16", "step100") == "hf:org/model@step100?dtype=bfloat16"
    assert with_checkpoint("runs/ckpt-{checkpoint}?dtype=bf16", "7") == "runs/ckpt-7?dtype=bf16"
    with pytest.raises(ModelSpecError, match="already names a checkpoint"):
        with_checkpoint("hf:org/model@main?dtype=bfloat16", "step100")


# 4. Quiet loading ------------------------------------------------------------------------------------------------


@pytest.fixture
def progress_bars_on():
    """transformers' progress bars switched on for the test (as in a fresh process), restored after."""
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    yield
    (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def test_loading_prints_no_progress_bar_and_leaves_the_switch_as_it_was(llama_dir, capfd, progress_bars_on):
    TransformerBridge.boot_transformers(str(llama_dir), device="cpu")
    assert "Loading weights" in capfd.readouterr().err  # transformers itself shows one here
    circuitcheck.load_model(str(llama_dir), device="cpu")
    captured = capfd.readouterr()
    assert "Loading weights" not in captured.err and "it/s" not in captured.err
    assert hf_logging.is_progress_bar_enabled()
