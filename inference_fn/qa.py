"""Extractive question answering with ``AutoTokenizer`` + ``AutoModelForQuestionAnswering``.

transformers 5.x removed ``pipeline("question-answering")``, so the span extraction is done here,
the same way the old pipeline did it and on both 4.x and 5.x: tokenize question and context as
a pair with offset mappings, cut long contexts into overlapping windows (``doc_stride`` tokens
of overlap, so an answer near a window edge is whole in at least one window), mask everything
that is not context using the tokenizer's sequence ids, and take the start/end pair with the
highest ``p(start) * p(end)`` among spans no longer than ``max_answer_len`` tokens. The answer
text is cut from the original context with the character offsets, so casing and spacing are
the user's, not the tokenizer's.

The work per request is bounded: the context is counted in tokens before any window is built and
refused past ``max_context_tokens`` (characters do not bound it: ``"." * 20000`` is 20,000
tokens), so at most :attr:`QuestionAnswerer.max_windows` windows exist, and they go through the
model ``batch_windows`` at a time, so peak memory is that of one batch, not of every window at once.
A fast tokenizer keeps its truncation and padding settings on one shared Rust object that every
call reconfigures, so concurrent calls mixed each other's settings (in the thread test, 2 to 8 of
24 unlocked calls sent a 708-token window to the model); tokenizer calls therefore take a lock.
The forward pass does not need it.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

INFO_FILE = "model_info.json"


class NoTokensError(ValueError):
    """The question or the context holds nothing the tokenizer keeps (control or zero-width characters)."""


class InputTooLongError(ValueError):
    """The request needs more work than one request may take; the message names the limit."""


class QuestionTooLongError(InputTooLongError):
    """The question leaves no room for the context in the model's window."""


class ContextTooLongError(InputTooLongError):
    """The context has more tokens than one request may run through the model."""


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    #: p(start) * p(end) within the winning window, as the old pipeline reported it.
    score: float
    #: Character offsets of the answer in the context.
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    score: float


def best_span(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    allowed: torch.Tensor,
    max_answer_len: int,
    normalize_over: torch.Tensor | None = None,
) -> Span | None:
    """The token span with the highest ``p(start) * p(end)`` among allowed tokens.

    The probabilities are softmaxes over ``normalize_over`` (default: the allowed tokens), so
    question tokens can neither win nor dilute the score. The old pipeline also kept ``[CLS]``
    in the denominator; :meth:`QuestionAnswerer.answer` does the same so scores stay comparable
    with the AWS sample's. Returns None when no token is allowed.
    """
    import torch

    if max_answer_len < 1:
        raise ValueError("max_answer_len must be >= 1")
    if not bool(allowed.any()):
        return None
    neg_inf = torch.tensor(float("-inf"), dtype=start_logits.dtype)
    denominator = allowed if normalize_over is None else normalize_over | allowed
    log_start = torch.log_softmax(torch.where(denominator, start_logits, neg_inf), dim=-1)
    log_end = torch.log_softmax(torch.where(denominator, end_logits, neg_inf), dim=-1)
    pair = log_start[:, None] + log_end[None, :]
    n = pair.shape[0]
    rows = torch.arange(n)[:, None]
    cols = torch.arange(n)[None, :]
    valid = (cols >= rows) & (cols - rows < max_answer_len) & allowed[:, None] & allowed[None, :]
    pair = torch.where(valid, pair, neg_inf)
    flat = int(torch.argmax(pair))
    start, end = divmod(flat, n)
    return Span(start, end, float(torch.exp(pair[start, end])))


def read_model_info(model_dir: Path, config: Any = None) -> dict[str, str | None]:
    """Name and version of the model, as written by download_model.py or tiny_model.py."""
    path = model_dir / INFO_FILE
    if path.is_file():
        info = json.loads(path.read_text(encoding="utf-8"))
        return {"name": info.get("name"), "version": info.get("version")}
    name = getattr(config, "_name_or_path", None) or model_dir.name
    return {"name": str(name), "version": None}


class QuestionAnswerer:
    """A loaded model and tokenizer; load once per process, call :meth:`answer` per request."""

    def __init__(
        self,
        tokenizer: Any,
        model: Any,
        *,
        info: dict[str, str | None] | None = None,
        max_seq_len: int = 384,
        doc_stride: int = 128,
        max_answer_len: int = 15,
        max_question_len: int = 64,
        max_context_tokens: int = 6_144,
        batch_windows: int = 8,
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError("a fast (tokenizers-backed) tokenizer is needed for offset mappings")
        self.tokenizer = tokenizer
        self.model = model.eval()
        self.info = info or {"name": None, "version": None}
        limits = [max_seq_len, getattr(model.config, "max_position_embeddings", max_seq_len)]
        model_max = getattr(tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and model_max < 1_000_000:
            limits.append(model_max)
        self.max_seq_len = min(limits)
        self.doc_stride = doc_stride
        self.max_answer_len = max_answer_len
        self.max_question_len = max_question_len
        if max_context_tokens < 1 or batch_windows < 1:
            raise ValueError("max_context_tokens and batch_windows must be >= 1")
        self.max_context_tokens = max_context_tokens
        self.batch_windows = batch_windows
        self._tokenizer_lock = threading.Lock()

    @classmethod
    def from_dir(cls, model_dir: str | Path, **options: Any) -> QuestionAnswerer:
        """Load from a local folder only: Lambda has no business talking to the hub at init."""
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no model in {path} (config.json missing); run `make model` first")
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForQuestionAnswering.from_pretrained(path, local_files_only=True)
        return cls(tokenizer, model, info=read_model_info(path, model.config), **options)

    def question_tokens(self, question: str) -> int:
        with self._tokenizer_lock:
            return self._count_tokens(question)

    def _count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"])

    def windows_for(self, context_tokens: int, question_tokens: int) -> int:
        """How many windows a context of ``context_tokens`` is cut into, as the tokenizer cuts it.

        Each window holds ``room`` context tokens and starts ``room - stride`` tokens after the last.
        """
        room = self.max_seq_len - question_tokens - 3
        stride = max(0, min(self.doc_stride, room // 2))
        if context_tokens <= room:
            return 1
        return 1 + math.ceil((context_tokens - room) / (room - stride))

    @property
    def max_windows(self) -> int:
        """The most windows one request can cost: the longest context with the longest question."""
        question = min(self.max_question_len, self.max_seq_len - 5)
        return self.windows_for(self.max_context_tokens, question)

    def _encode(self, question: str, context: str) -> Any:
        """Check the limits, then cut the pair into windows; one caller at a time (see the module doc)."""
        with self._tokenizer_lock:
            question_len = self._count_tokens(question)
            # [CLS] question [SEP] context [SEP]: the context needs at least a couple of tokens.
            room = self.max_seq_len - question_len - 3
            if question_len > self.max_question_len or room < 2:
                raise QuestionTooLongError(
                    f"question is {question_len} tokens; "
                    f"the limit is {min(self.max_question_len, self.max_seq_len - 5)}"
                )
            context_len = self._count_tokens(context)
            for name, text, count in (("question", question, question_len), ("context", context, context_len)):
                if count == 0:
                    raise NoTokensError(
                        f"field '{name}' has no text the model can read ({len(text)} characters, 0 tokens)"
                    )
            if context_len > self.max_context_tokens:
                raise ContextTooLongError(f"context is {context_len} tokens; the limit is {self.max_context_tokens}")
            stride = max(0, min(self.doc_stride, room // 2))
            encoded = self.tokenizer(
                question,
                context,
                truncation="only_second",
                max_length=self.max_seq_len,
                stride=stride,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
                padding="longest",
                return_tensors="pt",
            )
        return encoded

    def answer(self, question: str, context: str) -> Answer:
        import torch

        encoded = self._encode(question, context)
        input_ids = encoded["input_ids"]
        if input_ids.shape[1] > self.max_seq_len:  # never expected: the limits above were bypassed
            raise RuntimeError(f"a window of {input_ids.shape[1]} tokens; the model takes {self.max_seq_len}")
        offsets = encoded["offset_mapping"]
        starts, ends = [], []
        with torch.inference_mode():
            # A batch at a time: all windows at once took 1.55 GB for a 20,000-token context.
            for first in range(0, input_ids.shape[0], self.batch_windows):
                batch = slice(first, first + self.batch_windows)
                output = self.model(input_ids=input_ids[batch], attention_mask=encoded["attention_mask"][batch])
                starts.append(output.start_logits.float())
                ends.append(output.end_logits.float())
        start_logits, end_logits = torch.cat(starts), torch.cat(ends)
        best: tuple[Span, int] | None = None
        for window in range(offsets.shape[0]):
            ids = encoded.sequence_ids(window)
            allowed = torch.tensor([sid == 1 for sid in ids])
            cls = input_ids[window] == self.tokenizer.cls_token_id
            span = best_span(
                start_logits[window],
                end_logits[window],
                allowed,
                self.max_answer_len,
                normalize_over=cls,
            )
            if span is not None and (best is None or span.score > best[0].score):
                best = (span, window)
        if best is None:
            return Answer("", 0.0, 0, 0)
        span, window = best
        start_char = int(offsets[window, span.start, 0])
        end_char = int(offsets[window, span.end, 1])
        return Answer(context[start_char:end_char], span.score, start_char, end_char)
