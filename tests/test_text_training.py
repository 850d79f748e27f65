"""Training a language model on text: next_token_loss, the text:FILE data source, tokenizers, torchrun."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import alexdsl
from alexdsl.data import TextSource, open_source
from alexdsl.errors import AlexDSLError
from alexdsl.text import CharTokenizer, find_tokenizer, open_tokenizer, prompt_ids

TINY_LM = """network TinyLM
input ids: tokens(16, vocab=32)
embed: ids -> embedding(32, 32)
attention: sdpa(embed, embed, embed, heads=2, causal=true)
mixed: add(embed, attention)
head: linear(32)
loss: next_token_loss(head, ids) @train
"""
TEXT = "the quick brown fox jumps over the lazy dog. " * 60  # 28 distinct characters


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_char_tokenizer_round_trip_and_file(tmp_path):
    tokenizer = CharTokenizer.from_text(TEXT)
    assert tokenizer.vocab_size == len(set(TEXT)) == 28
    assert tokenizer.decode(tokenizer.encode("lazy fox")) == "lazy fox"
    with pytest.raises(AlexDSLError, match="outside the vocabulary: 'Q', 'Z'"):
        tokenizer.encode("QZ fox")
    tokenizer.save(tmp_path / "tokenizer.json")
    again = open_tokenizer(tmp_path / "tokenizer.json")
    assert again.encode("the dog") == tokenizer.encode("the dog")
    assert find_tokenizer(None, tmp_path / "weights.safetensors").decode([0, 1]) == tokenizer.decode([0, 1])
    assert find_tokenizer(None, tmp_path / "elsewhere" / "weights.safetensors") is None


def test_tokenizer_file_errors(tmp_path):
    with pytest.raises(AlexDSLError, match="no such tokenizer file"):
        open_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AlexDSLError, match="not a tokenizer.json"):
        open_tokenizer(bad)
    bad.write_text(json.dumps({"format": "alexdsl-char-vocabulary", "chars": ["a", "a"]}))
    with pytest.raises(AlexDSLError, match="distinct characters"):
        open_tokenizer(bad)


def test_prompt_ids():
    tokenizer = CharTokenizer.from_text("abc")
    assert prompt_ids(tokenizer, "cab", None) == [2, 0, 1]
    assert prompt_ids(None, None, [5, 6]) == [5, 6]
    with pytest.raises(AlexDSLError, match="one of them"):
        prompt_ids(tokenizer, "a", [1])
    with pytest.raises(AlexDSLError, match="needs a tokenizer"):
        prompt_ids(None, "a", None)


def test_text_source_windows_split_and_offsets(corpus):
    source = open_source(f"text:{corpus}", (16,), 0, vocab=32, seed=3)
    ids = np.asarray(CharTokenizer.from_text(TEXT).encode(TEXT))
    cut = int(len(ids) * 0.9)
    assert source.length(True) == cut // 16 - 1 and source.length(False) == (len(ids) - cut) // 16
    x, y = source.batch([0, 2], epoch=0, train=True)
    assert x.dtype == np.int64 and x.shape == (2, 16) and np.array_equal(x, y)
    offset = int(np.flatnonzero((ids[:64] == x[0, 0]) & (np.roll(ids[:64], -1) == x[0, 1]))[0])
    assert np.array_equal(x[1], ids[32 + offset:48 + offset])  # windows do not overlap
    shifted = [source.batch([0], epoch=e, train=True)[0][0] for e in range(6)]
    assert len({tuple(w) for w in shifted}) > 1  # each epoch draws its own offset
    val, _ = source.batch([0], epoch=5, train=False)
    assert np.array_equal(val[0], ids[cut:cut + 16])  # validation is the end of the text, fixed


def test_text_source_errors(corpus, tmp_path):
    with pytest.raises(AlexDSLError, match="character vocabulary has 28 tokens but the network's embedding takes 20"):
        TextSource(corpus, 16, 20)
    short = tmp_path / "short.txt"
    short.write_text("abc " * 10)
    with pytest.raises(AlexDSLError, match="too few"):
        TextSource(short, 16, 32)
    with pytest.raises(AlexDSLError, match="no such file"):
        TextSource(tmp_path / "missing.txt", 16, 32)
    with pytest.raises(AlexDSLError, match="input is token ids"):
        open_source(f"text:{corpus}", (3, 8, 8), 10)
    with pytest.raises(AlexDSLError, match="trains on text"):
        open_source("synthetic", (16,), 0, vocab=32)


def test_next_token_loss_shape_errors():
    with pytest.raises(AlexDSLError, match=r"one row of vocabulary scores per token: 16xV"):
        alexdsl.parse(TINY_LM.replace("loss: next_token_loss(head, ids)", "pooled: linear(8) | flatten\n"
                                      "loss: next_token_loss(pooled, ids)"))


def test_next_token_loss_is_the_shifted_cross_entropy():
    torch = pytest.importorskip("torch", reason="pip install torch (the torch extra) to run the torch backend")
    from alexdsl.backends.torch.codegen import build

    torch.manual_seed(0)
    module = build(alexdsl.parse(TINY_LM))
    ids = torch.randint(0, 32, (3, 16))
    logits = module(ids)
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 32), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(module.loss(logits, ids), expected)


def test_caffe_refuses_next_token_loss():
    from alexdsl.interop.caffe_export import export_prototxt

    with pytest.raises(AlexDSLError, match="op 'next_token_loss' has no Caffe layer"):
        export_prototxt(alexdsl.parse(TINY_LM))


def _trained(network_text: str, corpus: Path, out: Path, **options) -> list[dict]:
    pytest.importorskip("torch", reason="pip install torch (the torch extra) to train")
    from alexdsl.backends.torch.train import train

    result = train(alexdsl.parse(network_text), f"text:{corpus}", out, epochs=3, batch_size=8, lr=0.3,
                   progress=False, log=None, device="cpu", threads=1, **options)
    return result.history


def test_tiny_language_model_loss_falls_below_uniform(corpus, tmp_path):
    history = _trained(TINY_LM, corpus, tmp_path / "run")
    uniform = math.log(32)
    assert history[-1]["val_loss"] < 0.3 * uniform, history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    written = open_tokenizer(tmp_path / "run" / "tokenizer.json")
    assert written.decode(written.encode("lazy dog")) == "lazy dog"
    assert (tmp_path / "run" / "weights.safetensors").is_file()


def test_bpe_tokenizer_trains_and_travels_with_the_weights(corpus, tmp_path):
    pytest.importorskip("tokenizers", reason="pip install tokenizers (the text extra) for BPE tokenizers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"]))
    # BPE merges this repetitive text into few, long tokens: a longer text keeps enough windows of 16.
    (corpus.parent / "long.txt").write_text(TEXT * 8, encoding="utf-8")
    bpe.save(str(tmp_path / "bpe.json"))
    vocab = bpe.get_vocab_size()
    network = TINY_LM.replace("vocab=32", f"vocab={vocab}").replace("embedding(32,", f"embedding({vocab},") \
                     .replace("head: linear(32)", f"head: linear({vocab})")
    history = _trained(network, corpus.parent / "long.txt", tmp_path / "run", tokenizer=tmp_path / "bpe.json")
    assert history[-1]["val_loss"] < 0.3 * math.log(vocab), history
    written = find_tokenizer(None, tmp_path / "run" / "weights.safetensors")
    assert written.encode("the lazy dog") == bpe.encode("the lazy dog").ids
    assert written.decode(written.encode("the lazy dog")) == "the lazy dog"


def test_train_command_on_text_and_its_errors(corpus, tmp_path):
    pytest.importorskip("torch", reason="pip install torch (the torch extra) to train")
    from click.testing import CliRunner

    from alexdsl.cli.train import train_command

    source = tmp_path / "tiny.adsl"
    source.write_text(TINY_LM)
    runner = CliRunner()
    result = runner.invoke(train_command, [str(source), "--data", f"text:{corpus}", "--out", str(tmp_path / "o"),
                                           "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "tokenizer.json").is_file()
    from alexdsl.cli.generate import generate_command

    weights = str(tmp_path / "o" / "weights.safetensors")  # the tokenizer.json beside it turns text into ids
    for backend in ("cupy", "torch"):
        result = runner.invoke(generate_command, [str(source), "--weights", weights, "--prompt", "the ",
                                                  "--max-new-tokens", "5", "--backend", backend])
        assert result.exit_code == 0, result.output
        printed = result.output.splitlines()[-1]
        assert printed.startswith("the ") and len(printed) == len("the ") + 5, printed  # char level: 5 characters
        if backend == "cupy":
            first = printed
    assert printed == first  # greedy: both backends continue the prompt alike
    result = runner.invoke(generate_command, [str(source), "--prompt", "the "])
    assert result.exit_code != 0 and "--prompt needs a tokenizer" in result.output
    result = runner.invoke(train_command, [str(source), "--data", "synthetic", "--device", "cpu", "--quiet"])
    assert result.exit_code != 0 and "trains on text: --data text:FILE" in result.output
    source.write_text(TINY_LM.replace("loss: next_token_loss(head, ids) @train\n", ""))
    result = runner.invoke(train_command, [str(source), "--data", f"text:{corpus}", "--device", "cpu", "--quiet"])
    assert result.exit_code != 0 and "next_token_loss(<scores>, ids)" in result.output
    assert "Traceback" not in result.output


DDP_SCRIPT = """
import os, sys, torch
torch.set_num_threads(1)
import alexdsl
from alexdsl.backends.torch.train import train
source, corpus, out, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
result = train(alexdsl.load(source), "text:" + corpus, out, epochs=2, batch_size=batch, lr=0.3, progress=False,
               log=None, seed=2, device="cpu")
torch.save(result.module.state_dict(), os.path.join(out, f"rank{os.environ.get('RANK', '0')}.pt"))
"""


@pytest.mark.slow  # three training processes
def test_torchrun_two_gloo_processes_match_one_process_on_text(corpus, tmp_path):
    torch = pytest.importorskip("torch", reason="pip install torch (the torch extra) to train")
    from conftest import ROOT

    source = tmp_path / "tiny.adsl"
    source.write_text(TINY_LM)
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(ROOT) + ":" + env.get("PYTHONPATH", "")
    single, double = tmp_path / "single", tmp_path / "double"
    subprocess.run([sys.executable, str(script), str(source), str(corpus), str(single), "8"], env=env, check=True,
                   timeout=120)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             str(script), str(source), str(corpus), str(double), "4"], env=env, timeout=180,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reference = torch.load(single / "rank0.pt", weights_only=True)
    rank0 = torch.load(double / "rank0.pt", weights_only=True)
    rank1 = torch.load(double / "rank1.pt", weights_only=True)
    for key in reference:
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], reference[key], rtol=1e-4, atol=1e-5)
    history = [json.loads(line) for line in (double / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["val_loss"] < math.log(32) and (double / "tokenizer.json").is_file()
