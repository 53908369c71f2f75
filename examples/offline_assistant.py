"""An offline-first assistant: answers from the best model it can reach, from the device if need be.

    python examples/offline_assistant.py                   # a few sample questions
    python examples/offline_assistant.py "Who wrote Hamlet?" "What is 12 * 12?"

It uses the synchronous API, so it reads like any script. With no network and no API keys every
answer comes from the embedded local model; with keys or an edge box configured, harder questions
go there and everything is still recorded for `orchestra history` and `orchestra spend`.
"""

from __future__ import annotations

import argparse

from orchestra import OrchestraError, SyncOrchestra

QUESTIONS = (
    "What is the capital of France?",
    "What is the capital of Japan?",
    "How many days are in a week?",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("questions", nargs="*", default=QUESTIONS)
    parser.add_argument("--config", help="Orchestra config file")
    args = parser.parse_args()

    with SyncOrchestra(args.config) as orc:
        for question in args.questions:
            try:
                result = orc.complete(question, max_tokens=64)
            except OrchestraError as exc:  # nothing could answer: say so and go on
                print(f"? {question}\n! {exc}\n")
                continue
            print(f"? {question}\n> {result.text.strip()}")
            print(f"  [{result.model} on {result.tier}, {result.latency_ms:.0f} ms]\n")
        spend = orc.spend_summary()
    print(f"spent today: ${spend['today_usd']:.6f}")


if __name__ == "__main__":
    main()
