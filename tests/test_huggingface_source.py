"""The Hugging Face model source, offline: a tiny GPT-2 saved locally and loaded by spec."""

import pytest
import torch
from transformer_lens.head_detector import detect_head

import circuitcheck
from circuitcheck import ModelSpecError
from circuitcheck.zoo.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    directory = tmp_path_factory.mktemp("tiny-gpt2")
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=64, n_positions=64, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def gpt2(gpt2_dir):
    return circuitcheck.load_model(str(gpt2_dir), device="cpu")


def test_a_local_directory_loads_as_a_model_spec(gpt2, gpt2_dir):
    assert gpt2.circuitcheck_spec == str(gpt2_dir)
    assert not gpt2.training
    assert gpt2.cfg.n_layers == 2 and gpt2.cfg.n_heads == 4
    assert gpt2.to_tokens("a b c a b")[0].tolist() == [0, 3, 4, 5, 3, 4]


def test_head_scores_run_on_the_loaded_model_and_match_head_detector(gpt2):
    prompts = ["a b c d e a b c d e", "the cat sat on the mat the cat sat"]
    ours = torch.tensor(circuitcheck.head_scores(gpt2, "induction", prompts=prompts).to_numpy())
    theirs = detect_head(gpt2, prompts, "induction_head", exclude_bos=True)
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=0)


def test_head_assertions_run_on_the_loaded_model(gpt2):
    result = circuitcheck.assert_previous_token_head(0, 0, max_score=1.0, model=gpt2)
    assert result.passed and 0.0 <= result.value <= 1.0


def test_the_hf_prefix_names_the_same_source(gpt2_dir):
    model = circuitcheck.load_model(f"hf:{gpt2_dir}", device="cpu")
    assert model.cfg.d_vocab == 64


def test_a_directory_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelSpecError, match="holds no config.json, so it is not a saved Hugging Face model"):
        circuitcheck.load_model(str(tmp_path), device="cpu")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelSpecError, match="could not load model .*: no usable Hugging Face model was found in that directory"):
        circuitcheck.load_model(str(tmp_path), device="cpu")


def test_a_file_is_not_a_model_directory(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"")
    with pytest.raises(ModelSpecError, match="is a file, not a directory"):
        circuitcheck.load_model(str(path), device="cpu")


def test_a_hub_name_without_network_or_cache_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSpecError, match="could not load model 'circuitcheck-test/no-such-model': HF_HUB_OFFLINE is set and it is not in the local"):
        circuitcheck.load_model("circuitcheck-test/no-such-model", device="cpu")


def test_the_source_records_the_model_kind_at_load(gpt2):
    kind = gpt2.circuitcheck_kind
    assert kind is circuitcheck.model_kind(gpt2)
    assert kind.family == "decoder" and kind.head_status == "trained" and kind.is_language_model
