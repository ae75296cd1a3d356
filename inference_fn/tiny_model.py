"""Build a tiny DistilBERT question-answering model offline, for tests and the offline demo.

The real model (``distilbert-base-cased-distilled-squad``) needs the Hugging Face hub, which this
machine cannot reach. The tiny one goes through exactly the same code path (``AutoTokenizer`` +
``AutoModelForQuestionAnswering`` from a folder) but is randomly initialised, so its answers are
meaningless, except in *wired* mode: there the transformer blocks are made pass-through and
the QA head reads token identity, so the start logit is high exactly on ``answer_start`` tokens
and the end logit exactly on ``answer_end`` tokens. That gives tests an answer span they can
know in advance without training anything.

The tokenizer is built with the ``tokenizers`` library (WordPiece, BERT normaliser) and saved as
a plain fast tokenizer, which both transformers 4.x and 5.x load through ``AutoTokenizer``.
"""

from __future__ import annotations

import argparse
import json
import logging
import string
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
WORDS_TEXT = """
the a an of in on at to is was are be and or for with by from as it its this that what who when
where which why how many much capital city country river mountain name year born paris france
london england berlin germany rome italy madrid spain lambda function model answer question
context data capture extension aws cloud server python language created first largest
longest flows through sea north south east west old new people live there called
"""
WORDS = tuple(WORDS_TEXT.split())
#: Wired-mode signal on a marked token before normalisation; unmarked tokens get logit 0 exactly.
WIRED_LOGIT = 10.0
INFO_FILE = "model_info.json"


def build_vocab(extra_words: tuple[str, ...] = ()) -> list[str]:
    """Special tokens, words, characters and ``##`` continuations, without duplicates.

    A duplicate entry leaves a hole in the id space and the tokenizer refuses to save it
    ("The OrderedVocab you are attempting to save contains holes").
    """
    pieces = [
        *WORDS,
        *extra_words,
        *string.ascii_lowercase,
        *string.digits,
        *string.punctuation,
        *(f"##{c}" for c in string.ascii_lowercase + string.digits),
    ]
    return list(dict.fromkeys([*SPECIAL_TOKENS, *(word.lower() for word in pieces)]))


def _build_tokenizer(vocab: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ids = {token: index for index, token in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=512,
    )


def _wire(model: Any, token_ids: dict[str, list[int]], vocab_size: int, dim: int) -> None:
    """Make logits depend on token identity only (see the module docstring)."""
    import torch

    with torch.no_grad():
        embeddings = model.distilbert.embeddings
        embeddings.position_embeddings.weight.zero_()
        for norm in (embeddings.LayerNorm, *_layer_norms(model)):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
        for block in model.distilbert.transformer.layer:
            # With the attention and feed-forward outputs at zero, each block is x -> LN(LN(x)).
            block.attention.out_lin.weight.zero_()
            block.attention.out_lin.bias.zero_()
            block.ffn.lin2.weight.zero_()
            block.ffn.lin2.bias.zero_()
        # Zero-mean, unit-variance rows are fixed points of LayerNorm, so the head sees them as is.
        # Dimensions 0 and 1 carry the start and end signals; they are 0 for unmarked tokens.
        table = torch.randn(vocab_size, dim)
        table[:, :2] = 0.0
        for column, ids in enumerate((token_ids["start"], token_ids["end"])):
            table[ids, column] = WIRED_LOGIT
        table[:, 2:] -= table.sum(dim=1, keepdim=True) / (dim - 2)
        table /= table.std(dim=1, unbiased=False, keepdim=True)
        embeddings.word_embeddings.weight.copy_(table)
        model.qa_outputs.weight.copy_(torch.eye(2, dim))
        model.qa_outputs.bias.zero_()


def _layer_norms(model: Any) -> list[Any]:
    norms = []
    for block in model.distilbert.transformer.layer:
        norms += [block.sa_layer_norm, block.output_layer_norm]
    return norms


def build_tiny_model(
    out_dir: Path | str,
    *,
    seed: int = 0,
    answer_start: str | None = None,
    answer_end: str | None = None,
    max_position_embeddings: int = 512,
) -> Path:
    """Write a tiny DistilBERT QA model + tokenizer to ``out_dir`` and return the folder.

    ``answer_start``/``answer_end`` (single vocabulary words, lower case) switch on wired mode;
    give both or neither.
    """
    import torch
    from transformers import DistilBertConfig, DistilBertForQuestionAnswering
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    if (answer_start is None) != (answer_end is None):
        raise ValueError("give both answer_start and answer_end, or neither")
    markers = tuple(w.lower() for w in (answer_start, answer_end) if w is not None)
    for word in markers:
        if not word.isalnum():
            raise ValueError(f"marker {word!r} must be a single alphanumeric word")
    vocab = build_vocab(markers)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = DistilBertConfig(
        vocab_size=len(vocab),
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=max_position_embeddings,
    )
    model = DistilBertForQuestionAnswering(config).eval()
    wired = bool(markers)
    if wired:
        index = {token: i for i, token in enumerate(vocab)}
        _wire(model, {"start": [index[markers[0]]], "end": [index[markers[1]]]}, len(vocab), config.dim)
    model.save_pretrained(out)
    _build_tokenizer(vocab).save_pretrained(out)
    _make_tokenizer_portable(out)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    info = {
        "name": "tiny-distilbert-qa" + ("-wired" if wired else ""),
        "version": f"seed{seed}" + (f"-{markers[0]}-{markers[1]}" if wired else ""),
        "source": "inference_fn.tiny_model (random weights: answers are meaningless)",
    }
    (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    logger.info("tiny model (%d tokens, wired=%s) written to %s", len(vocab), wired, out)
    return out


def _make_tokenizer_portable(out: Path) -> None:
    """transformers 5.x records its own backend class name, which 4.x does not know."""
    path = out / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("backend", None)
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inference_fn.tiny_model",
        description="Build a tiny, randomly initialised DistilBERT QA model offline (answers are meaningless).",
    )
    parser.add_argument("out_dir", type=Path, help="folder to write the model into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--answer-start", help="wired mode: the word the answer starts at")
    parser.add_argument("--answer-end", help="wired mode: the word the answer ends at")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        build_tiny_model(args.out_dir, seed=args.seed, answer_start=args.answer_start, answer_end=args.answer_end)
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
