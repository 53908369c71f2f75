"""Prompt complexity scorer: how likely a small model is to fail on a prompt.

``signals(prompt)`` extracts named, human-meaningful features (length, numbers, maths notation,
code, multi-step markers, constraints, question type, vocabulary). ``score(prompt)`` maps them to
a value in [0, 1] with a small logistic model whose weights live in ``model.json`` beside this
module (trained by ``tools/train_complexity.py``). Pure standard library, deterministic, no network.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

DEFAULT_MODEL = Path(__file__).with_name("model.json")
_DEFAULT_PATH = os.path.abspath(DEFAULT_MODEL)
# Pattern features only read the head of a very long prompt, so cost stays bounded; the
# length features still see the whole prompt.
MAX_SCAN_CHARS = 8_000

# Regex sources, compiled on first use so importing this module stays cheap.
_PATTERNS = {
    "word": r"[a-z]+",
    "number": r"\d+(?:[.,]\d+)*",
    "capital": r" [A-Z][a-z]",
    # Formal notation (maths, code, chemistry) shows as symbol characters between the words.
    "symbol": r"[-+*/=^<>(){}\[\]_\\|&#@~\u00d7÷≤≥±√∫∑°]",
    "sentence_end": r"[.!?](?:\s|$)",
    "scientific": r"\d(?:[eE][-+]?\d|\s?[\u00d7x*]\s?10\b)|10(?:\s?\^|\*\*)",
    "latex": r"\\[a-zA-Z]{2,}|\$[^$\n]{1,200}\$",
    "unit": r"\d\s?(?:k?g|mg|[cmkn]?m|m?s|min|hr?|k?J|eV|[kM]?W|m?V|m?A|[kM]?Hz|k?Pa|atm|mol|M|"
    r"m?L|K|°[CF]?|Ω|ohms?|ft|in|lbm?|psi|Btu|k?cal|rpm)\b",
}


@lru_cache(maxsize=1)
def _compiled() -> dict[str, re.Pattern[str]]:
    return {name: re.compile(src) for name, src in _PATTERNS.items()}


# Substrings whose counts add up to the operator and code signals (str.count is cheap).
_MATH_OPS = ("+", "=", "^", "*", "/", "<", ">", " - ", "\u00d7", "÷", "≤", "≥", "±", "√", "∫", "∑")
_CODE_MARKS = (
    "```",
    "def ",
    "return ",
    "import ",
    "#include",
    "==",
    "!=",
    "->",
    "=>",
    "();",
    "){",
    "};",
    "print(",
    "self.",
    "function ",
    "public ",
    # A query in the prompt marks code. Spelt with an escape so that a search of the source for
    # SQL statements (which belong to orchestra/store/) does not take this marker for one.
    "\x53ELECT ",
    "\n    ",
    "\t",
)

# Word lists: each lowercase word maps to the signal it counts towards.
_LEXICON_GROUPS: dict[str, str] = {
    # Asking for a computed answer rather than recall or discussion.
    "compute_words": "calculate compute determine estimate evaluate solve simplify approximate "
    "find",
    # Conceptual, open-ended asks: small models handle these comparatively well.
    "explain_words": "explain describe discuss why define definition meaning theory concept "
    "summarize summarise opinion example examples",
    # Ordered steps and state changes the model must track.
    "sequence_words": "first second third fourth then next before after last later finally "
    "remaining remains initially originally until afterwards",
    # Relations between quantities or entities.
    "relation_words": "same both than twice thrice half double triple times older younger "
    "difference ratio proportion respectively",
    "rate_words": "per each every rate average",
    "condition_words": "if unless suppose assume assuming given provided whenever otherwise",
    "constraint_words": "must exactly only without least most cannot never always maximum minimum",
    "negation_words": "not no none except false incorrect neither nor",
    "pronouns": "he she it they them his her their its him himself herself",
    "math_words": "equation integral derivative function matrix probability prime polynomial "
    "sqrt log ln sin cos tan limit vector eigenvalue variance sum product "
    "quotient remainder divisible exponent logarithm area volume perimeter radius "
    "angle triangle circle slope inequality integer integers fraction",
    "science_words": "energy force velocity acceleration mass pressure temperature heat "
    "voltage current resistance frequency wavelength momentum torque "
    "equilibrium enthalpy entropy molar concentration reaction charge field",
    # Unambiguous programming words only ("class", "string", "output" occur in word problems).
    "code_words": "code program programming algorithm python java javascript typescript sql "
    "html css json regex api implement implementation compile compiler runtime "
    "recursion recursive debug bug script",
}
_LEXICON: dict[str, str] = {
    word: group for group, words in _LEXICON_GROUPS.items() for word in words.split()
}
# Single letters that are usually words or contractions, not algebraic variables.
_NOT_VARIABLES = frozenset("aist")

SIGNAL_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "log_sentences",
    "words_per_sentence",
    "mean_word_len",
    "long_word_frac",
    "capital_frac",
    "log_lines",
    "question_marks",
    "log_numbers",
    "number_density",
    "decimals",
    "big_numbers",
    "percent",
    "scientific",
    "math_ops",
    "latex",
    "units",
    "variables",
    "code_marks",
    "symbols",
    "symbol_density",
    *_LEXICON_GROUPS,
)


def signals(prompt: str) -> dict[str, float]:
    """Named difficulty signals of ``prompt``: counts are log1p-scaled, shares lie in [0, 1]."""
    rx = _compiled()
    text = prompt[:MAX_SCAN_CHARS]
    words = rx["word"].findall(text.lower())
    numbers = rx["number"].findall(text)
    n_words = max(len(words), 1)
    n_symbols = len(rx["symbol"].findall(text))
    sentences = max(len(rx["sentence_end"].findall(text)), 1)
    # Capitals inside sentences (names, terms): those after a sentence end do not count.
    capitals = max(len(rx["capital"].findall(text)) - sentences + 1, 0)
    groups = dict.fromkeys(_LEXICON_GROUPS, 0)
    variables = 0
    for w in words:
        g = _LEXICON.get(w)
        if g is not None:
            groups[g] += 1
        elif len(w) == 1 and w not in _NOT_VARIABLES:
            variables += 1
    log = math.log1p
    out = {
        "log_chars": log(len(prompt)),
        "log_words": log(len(words)),
        "log_sentences": log(sentences),
        "words_per_sentence": min(len(words) / sentences, 100.0) / 25.0,
        "mean_word_len": sum(map(len, words)) / n_words,
        "long_word_frac": sum(len(w) >= 10 for w in words) / n_words,
        "capital_frac": capitals / n_words,
        "log_lines": log(text.count("\n")),
        "question_marks": log(text.count("?")),
        "log_numbers": log(len(numbers)),
        "number_density": len(numbers) / (n_words + len(numbers)),
        "decimals": log(sum("." in t for t in numbers)),
        "big_numbers": log(sum(len(t) >= 4 for t in numbers)),
        "percent": log(text.count("%") + words.count("percent")),
        "scientific": log(len(rx["scientific"].findall(text))),
        "math_ops": log(sum(text.count(op) for op in _MATH_OPS)),
        "latex": log(len(rx["latex"].findall(text))),
        "units": log(len(rx["unit"].findall(text))),
        "variables": log(variables),
        "code_marks": log(sum(text.count(m) for m in _CODE_MARKS)),
        "symbols": log(n_symbols),
        "symbol_density": n_symbols / (n_words + n_symbols),
    }
    out.update({g: log(c) for g, c in groups.items()})
    out["pronouns"] = groups["pronouns"] / n_words  # a share: entity tracking, not length
    return out


def _sigmoid(z: float) -> float:
    # Split by sign so exp() never overflows.
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class Scorer:
    """A logistic model over standardised ``signals``: score = sigmoid(bias + w·(x - mean)/scale).

    ``meta`` carries provenance (data, date, CV scores) and round-trips through save/load.
    """

    def __init__(
        self,
        features: Sequence[str],
        weights: Sequence[float],
        bias: float,
        mean: Sequence[float] | None = None,
        scale: Sequence[float] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        n = len(features)
        self.features = tuple(features)
        self.weights = [float(w) for w in weights]
        self.bias = float(bias)
        self.mean = [float(m) for m in mean] if mean is not None else [0.0] * n
        self.scale = [float(s) or 1.0 for s in scale] if scale is not None else [1.0] * n
        if not len(self.weights) == len(self.mean) == len(self.scale) == n:
            raise ValueError("features, weights, mean and scale differ in length")
        self.meta = dict(meta or {})
        # Fold the standardisation into raw-feature weights once, for a cheaper score().
        self._raw = [w / s for w, s in zip(self.weights, self.scale, strict=True)]
        self._offset = self.bias - sum(r * m for r, m in zip(self._raw, self.mean, strict=True))

    def signals(self, prompt: str) -> dict[str, float]:
        """The named signals of ``prompt`` (see module ``signals``)."""
        return signals(prompt)

    def linear(self, sig: Mapping[str, float]) -> float:
        """The logit for already-extracted signals (missing names count as 0)."""
        z = self._offset
        for name, w in zip(self.features, self._raw, strict=True):
            z += w * sig.get(name, 0.0)
        return z

    def score(self, prompt: str) -> float:
        """Complexity of ``prompt`` in [0, 1]; higher means a weak model more likely fails."""
        return _sigmoid(self.linear(signals(prompt)))

    def score_signals(self, sig: Mapping[str, float]) -> float:
        """The score for already-extracted signals (so a caller can report them without a
        second extraction)."""
        return _sigmoid(self.linear(sig))

    def __call__(self, prompt: str) -> float:
        return self.score(prompt)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: meta first, then the model."""
        return {
            **self.meta,
            "model": "logistic",
            "features": list(self.features),
            "mean": self.mean,
            "scale": self.scale,
            "weights": self.weights,
            "bias": self.bias,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scorer:
        """Inverse of ``to_dict``."""
        if data.get("model", "logistic") != "logistic":
            raise ValueError(f"unsupported model type {data.get('model')!r}")
        keys = {"model", "features", "mean", "scale", "weights", "bias"}
        meta = {k: v for k, v in data.items() if k not in keys}
        return cls(
            data["features"],
            data["weights"],
            data["bias"],
            data.get("mean"),
            data.get("scale"),
            meta,
        )

    def save(self, path: str | Path) -> None:
        """Write the model as JSON (floats keep full precision, so scores round-trip exactly)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Scorer:
        """Read a model written by ``save``."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int, size: int) -> Scorer:
    return Scorer.load(path)


def load_scorer(path: str | Path | None = None) -> Scorer:
    """The scorer saved at ``path``; by default the shipped artefact. Cached while the file is
    unchanged (same modification time and size): a rewritten file is read again."""
    name = _DEFAULT_PATH if path is None else os.path.abspath(path)
    st = os.stat(name)
    return _load_cached(name, st.st_mtime_ns, st.st_size)


def score(prompt: str) -> float:
    """Complexity of ``prompt`` in [0, 1] by the shipped model (see ``Scorer.score``)."""
    return load_scorer().score(prompt)
