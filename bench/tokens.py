# ruff: noqa: RUF001, E501 - sample texts in many scripts, one line each
"""How close Orchestra's local token count is to real tokenizers, by script.

    python bench/tokens.py

Orchestra counts tokens without a tokenizer (`orchestra.spend.estimate.count_tokens`): for a
provider that reports no usage, and to size budget reservations. This compares it with OpenAI's
tokenizers (tiktoken's cl100k_base and o200k_base, read from LiteLLM's bundled copies, offline)
on real prompts (the routing data, English) and on other scripts and shapes of text. A ratio
above 1 over-counts (safe for a budget); below 1 under-counts.
"""

from __future__ import annotations

import csv
import gzip
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

from orchestra.spend.estimate import count_tokens  # noqa: E402

ROUTING = REPO.parent / "shared" / "data" / "routing"

SAMPLES = {
    "chinese": "人工智能正在改变我们的生活方式。请用简单的语言解释量子计算的基本原理，并举例说明它的应用。"
    * 3,
    "japanese": "東京は日本の首都です。今日の天気はとても良いので、公園で散歩をしましょう。機械学習について説明してください。"
    * 3,
    "korean": "안녕하세요. 오늘 날씨가 정말 좋네요. 인공지능의 미래에 대해 설명해 주세요. 감사합니다."
    * 3,
    "russian": "Объясните, пожалуйста, как работает квантовый компьютер и чем он отличается от обычного."
    * 3,
    "arabic": "مرحبا، كيف حالك؟ أريد أن أتعلم المزيد عن الذكاء الاصطناعي وتطبيقاته في الحياة اليومية."
    * 3,
    "hindi": "नमस्ते, आप कैसे हैं? कृपया मुझे कृत्रिम बुद्धिमत्ता के बारे में सरल भाषा में समझाएं।" * 3,
    "greek": "Καλημέρα! Μπορείτε να μου εξηγήσετε πώς λειτουργεί η τεχνητή νοημοσύνη;" * 3,
    "emoji": "Great job 🎉🎉 see you soon 😀👍🏽 love it ❤️🔥 " * 5,
    "python": (
        "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + "
        "fib(n - 2)\n\nprint([fib(i) for i in range(10)])\n"
    )
    * 3,
    "json": '{"id": 42, "name": "widget", "tags": ["a", "b", "c"], "price": 19.99, "ok": true}' * 4,
    "numbers": " ".join(str(n * 7919 % 100000) for n in range(200)),
    "base64 key": "sk-proj-" + "Zx9Qw2Lm8Rt5Yp3Vb7Nc1Kd4Hf6Gj0Ts" * 4,
    "short words": "a b c d e f g h i j k l m n o p q r s t u v w x y z " * 8,
}


def encoders() -> dict[str, object]:
    import importlib.util

    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.origin is not None, "LiteLLM is not installed"
    bundled = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bundled))
    import tiktoken

    return {name: tiktoken.get_encoding(name) for name in ("cl100k_base", "o200k_base")}


def routing_prompts(limit: int = 400) -> list[str]:
    out: list[str] = []
    for name in ("gsm8k_mixtral_gpt4.csv.gz", "mmlu_pro_correctness.csv.gz"):
        with gzip.open(ROUTING / name, "rt", encoding="utf-8") as f:
            rows = zip(range(limit // 2), csv.DictReader(f), strict=False)
            out += [row.get("prompt") or row["question"] for _, row in rows]
    return out


def main() -> None:
    encs = encoders()
    print(f"{'text':<14}" + "".join(f"{n:>22}" for n in encs) + "   (ours / theirs)")
    if ROUTING.is_dir():
        prompts = routing_prompts()
        cells = []
        for enc in encs.values():
            ratios = [count_tokens(p) / len(enc.encode(p)) for p in prompts]  # type: ignore[attr-defined]
            cells.append(f"min {min(ratios):.2f} med {statistics.median(ratios):.2f}")
        print(
            f"{'routing data':<14}"
            + "".join(f"{c:>22}" for c in cells)
            + f"   {len(prompts)} prompts"
        )
    for name, text in SAMPLES.items():
        cells = [f"{count_tokens(text) / len(enc.encode(text)):.2f}" for enc in encs.values()]  # type: ignore[attr-defined]
        print(f"{name:<14}" + "".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
