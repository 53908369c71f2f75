"""Fitting and retraining the complexity scorer (agents/complexity_{training,data,retrain}.py)."""

from __future__ import annotations

import gzip
import math
import time
from pathlib import Path

import pytest

from orchestra.agents.complexity.data import (
    SHIPPED_DATA,
    ShippedData,
    load_shipped_data,
    write_shipped_data,
)
from orchestra.agents.complexity.retrain import auc, retrain
from orchestra.agents.complexity.scorer import DEFAULT_MODEL, Scorer, load_scorer, signals
from orchestra.agents.complexity.training import L2, Example, _calibrate, fit_logistic

MATHS_SEEN = (
    [
        f"A train travels {a} km at {b} km/h, then {c} km at {d} km/h. What is its average speed "
        f"over the whole trip, to two decimal places?"
        for a, b, c, d in (
            (120, 60, 80, 40),
            (300, 75, 45, 90),
            (64, 32, 210, 70),
            (18, 9, 150, 50),
        )
    ]
    + [
        f"Solve for x: {a}x^2 - {b}x + {c} = 0. Then compute the product of the roots times {d}."
        for a, b, c, d in ((3, 7, 2, 5), (2, 9, 4, 11), (5, 12, 1, 3), (7, 4, 6, 8))
    ]
    + [
        f"If {a}% of {b} apples are sold on Monday and {c} more on Tuesday, how many remain, given "
        f"that {d} were rotten?"
        for a, b, c, d in (
            (25, 480, 37, 12),
            (40, 1250, 115, 60),
            (15, 360, 22, 9),
            (60, 975, 48, 31),
        )
    ]
    + [
        f"Find the derivative of f(x) = {a}x^3 + {b}sin(x) - ln(x) and evaluate it at x = {c}."
        for a, b, c in ((4, 2, 3), (7, 5, 1.5), (2, 9, 0.25), (11, 3, 6))
    ]
    + [
        f"A rectangle's length is {a} cm more than twice its width; its area is {b} cm^2. "
        f"Determine the perimeter."
        for a, b in ((3, 119), (5, 250), (1, 300), (7, 468))
    ]
)
# Chit-chat about as long as the maths prompts: otherwise the feedback mostly teaches "long
# prompts fail", which also lifts every long shipped prompt, and recalibration on those cancels
# the rise of the maths prompts (measured: +0.00/-0.03/-0.02 with ~35-character chat).
CHAT_SEEN = [
    "Hi! How are you today? I hope the week has been kind to you and that you got some rest.",
    "Thanks, that was really helpful. I appreciate you taking the time to walk me through it.",
    "Tell me a fun fact about penguins, something I could share with my kids at dinner tonight.",
    "What's a good name for a golden retriever puppy? She is very playful and loves the garden.",
    "Good morning! Any plans for the weekend? I am thinking about a trip to the seaside myself.",
    "Write a short poem about the sea, the gulls, and the smell of salt on a windy afternoon.",
    "Can you recommend a cosy novel for a rainy day? I enjoy gentle stories with warm people.",
    "What is your favourite colour, and does it remind you of a place or a season in particular?",
    "Say hello to my friend Anna, who is visiting from Lisbon and loves hearing about local food.",
    "I just got back from a walk in the park, it was lovely and the trees are turning golden now.",
    "Describe a sunset in a few words, the kind you would see from a quiet hill in the summer.",
    "Suggest a name for my new cafe. It is small, bright, and sits on a corner near the river.",
    "Do you like cats or dogs better? My family is split down the middle and we argue about it.",
    "Tell me a joke about bananas that a seven year old would find funny at a birthday party.",
    "What should I cook for dinner tonight? I have some vegetables, rice, and a bit of cheese.",
    "Hello there, nice to meet you. I am new here and just wanted to say hi to everyone around.",
    "Explain why people enjoy music so much, in a friendly and relaxed way, without jargon.",
    "Give me a compliment, please. It has been a long day at work and I could use a smile.",
    "What is a nice greeting in Italian that I could use when I meet my new neighbours?",
    "Wish my sister a happy birthday and tell her we are all proud of her new job in town.",
]
MATHS_UNSEEN = [
    "A cyclist rides 42 km at 14 km/h and then 36 km at 18 km/h. Calculate her average speed "
    "for the whole ride.",
    "Solve 6x^2 + 5x - 21 = 0 and give the sum of the squares of the roots.",
    "If 35% of 860 tickets are sold in week one and 142 more in week two, how many are left?",
]
CHAT_UNSEEN = [
    "Hey, how was your day? Mine was quiet, I mostly read in the garden and had some tea.",
    "Tell me something nice about otters, like how they hold hands while they sleep.",
    "What's a fun hobby to try this summer? I like being outside and meeting new people.",
]

HARD_CODE = (
    "Write a Python function `median(xs)` that returns the median of a list in O(n) expected "
    "time:\n```python\ndef median(xs):\n    return quickselect(xs, len(xs) // 2)\n```"
)


@pytest.fixture(scope="module")
def shipped() -> ShippedData:
    return load_shipped_data()


@pytest.fixture(scope="module")
def base() -> Scorer:
    return Scorer.load(DEFAULT_MODEL)


def rows_of(prompts: list[str], label: float) -> list[tuple[dict[str, float], float]]:
    return [(signals(p), label) for p in prompts]


def _cols(rows: list[list[float]]) -> list[list[float]]:
    return [list(c) for c in zip(*rows, strict=True)]


# -- fitting ----------------------------------------------------------------------------------


def test_fit_logistic_prior_pulls_towards_the_prior() -> None:
    xs = [[-1.5, 0.2], [-1.0, -1.0], [-0.5, 0.4], [0.0, 1.1], [0.5, -0.3]]
    xs += [[1.0, 0.0], [1.5, 0.7], [-0.2, -0.6], [0.8, 0.9], [0.3, -1.2]]
    y = [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    cols = _cols(xs)
    free, _ = fit_logistic(cols, y, l2=0.01)
    assert free[0] > 1.0 and free[1] < -0.5  # what the data alone say
    assert fit_logistic(cols, y, l2=0.01, prior=[0.0, 0.0]) == fit_logistic(cols, y, l2=0.01)
    prior = [-2.0, 3.0]
    fits = [fit_logistic(cols, y, l2=l2, prior=prior)[0] for l2 in (0.01, 1.0, 100.0)]
    assert fits[-1] == pytest.approx(prior, abs=0.01)
    for j in range(2):  # the stronger the penalty, the closer to the prior
        dist = [abs(w[j] - prior[j]) for w in (free, *fits)]
        assert dist == sorted(dist, reverse=True) and dist[0] > dist[1]
    # Sign constraints still bind, whatever the prior says.
    signed, _ = fit_logistic(cols, y, l2=100.0, signs=[1, 0], prior=prior)
    assert signed[0] == 0.0 and signed[1] == pytest.approx(3.0, abs=0.01)


def test_weighted_calibration() -> None:
    lin = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0]
    target = [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    assert _calibrate(lin, target, [1.0] * len(lin)) == _calibrate(lin, target)
    # An integer weight is the same as repeating the row.
    weights = [1.0, 3.0, 1.0, 2.0, 1.0, 1.0, 2.0, 1.0]
    rep_lin = [v for v, w in zip(lin, weights, strict=True) for _ in range(int(w))]
    rep_t = [t for t, w in zip(target, weights, strict=True) for _ in range(int(w))]
    assert _calibrate(lin, target, weights) == pytest.approx(_calibrate(rep_lin, rep_t), rel=1e-7)
    # Weighting the positives up raises the intercept.
    up = [3.0 if t else 1.0 for t in target]
    assert _calibrate(lin, target, up)[1] > _calibrate(lin, target)[1]


def test_auc() -> None:
    assert auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert auc([1, 2, 3], [0, 1, 1]) == 1.0
    assert auc([3, 2, 1], [0, 1, 1]) == 0.0
    assert auc([5, 5, 5, 5], [0, 1, 0, 1]) == 0.5  # ties count half
    with pytest.raises(ValueError, match="positive and one negative"):
        auc([1, 2], [1, 1])


# -- shipped data -----------------------------------------------------------------------------


def test_shipped_data_round_trips_and_matches_signals(tmp_path: Path) -> None:
    prompts = [MATHS_SEEN[0], CHAT_SEEN[0], "", HARD_CODE]
    features = tuple(load_scorer().features)
    rows = [[signals(p)[f] for f in features] for p in prompts]
    examples = [
        Example(p, float(i % 2), f"g{i % 2}", None if i == 0 else 0.25 * i)
        for i, p in enumerate(prompts)
    ]
    path = tmp_path / "d.csv.gz"
    write_shipped_data(path, rows, examples, features)
    first = path.read_bytes()
    write_shipped_data(path, rows, examples, features)
    assert path.read_bytes() == first  # deterministic bytes
    header = gzip.decompress(first).decode().splitlines()[0]
    assert header == "group,label,weak_fail," + ",".join(features)
    data = load_shipped_data(path)
    assert data.features == features
    assert data.groups == ["g0", "g1", "g0", "g1"]
    assert data.labels == [0.0, 1.0, 0.0, 1.0]
    assert data.targets == [0.0, 0.25, 0.5, 0.75]  # weak_fail, or the label when absent
    for p, row in zip(prompts, data.rows, strict=True):
        sig = signals(p)
        assert row == pytest.approx([sig[f] for f in features], rel=5e-3, abs=1e-12)


def test_shipped_data_format(tmp_path: Path) -> None:
    path = tmp_path / "d.csv.gz"
    write_shipped_data(
        path, [[0.0, -0.0, 1234.5678, 0.000123456]], [Example("", 1.0, "g", 0.5)], "abcd"
    )
    assert gzip.decompress(path.read_bytes()).decode() == (
        "group,label,weak_fail,a,b,c,d\ng,1,0.5,0,0,1.23e+03,0.000123\n"
    )
    with pytest.raises(ValueError, match="2 signal rows for 1 examples"):
        write_shipped_data(path, [[0.0] * 4] * 2, [Example("", 1.0)], "abcd")


def test_shipped_data_file(shipped: ShippedData, base: Scorer) -> None:
    t0 = time.perf_counter()
    again = load_shipped_data()
    assert time.perf_counter() - t0 < 1.0
    assert again.features == shipped.features == base.features
    assert len(shipped.rows) == sum(base.meta["data"]["groups"].values())
    assert set(shipped.groups) == set(base.meta["group_weights"])
    assert all(0.0 <= t <= 1.0 for t in shipped.targets)
    assert SHIPPED_DATA.stat().st_size < 500_000


# -- retraining -------------------------------------------------------------------------------


def test_empty_feedback_reproduces_the_shipped_model(shipped: ShippedData, base: Scorer) -> None:
    out = retrain([], base=base, shipped=shipped)
    prompts = [*MATHS_UNSEEN, *CHAT_UNSEEN, HARD_CODE, "hi", ""]
    old = [base.score(p) for p in prompts]
    new = [out.scorer.score(p) for p in prompts]
    assert new == pytest.approx(old, abs=1e-2)
    assert sorted(range(len(prompts)), key=old.__getitem__) == sorted(
        range(len(prompts)), key=new.__getitem__
    )
    ratio = [n / o for n, o in zip(out.scorer.weights, base.weights, strict=True) if o]
    assert max(ratio) - min(ratio) < 1e-9  # same direction: the ranking cannot change
    assert out.report["feedback"] == 0 and out.report["share"] == 0.0
    assert out.scorer.meta["retrained"]["feedback"] == 0


# A user whose local model fails at code: the shipped data holds no code, so this is news.
CODE_SEEN = [
    f"Write a python function def f{i}(xs): that returns the {what} of a list, and "
    f"print(f{i}([1, 2, 3])) with a docstring."
    for i, what in enumerate(
        ("sum", "max", "min", "mean", "median", "mode", "range", "product", "length", "reverse") * 2
    )
]
PROSE_SEEN = [
    f"Write a short friendly note to my neighbour {name} thanking them for the {thing} they "
    "lent me last week."
    for name, thing in zip(
        ("Anna", "Ben", "Carl", "Dora", "Eve", "Finn", "Gus", "Hana", "Ivan", "Jo") * 2,
        ("ladder", "drill", "mower", "books", "tent", "bike", "saw", "pan", "chairs", "rake") * 2,
        strict=True,
    )
]
CODE_UNSEEN = [
    "Implement a function in python: def merge(a, b): return the sorted merge of two lists; "
    "include print(merge([1, 3], [2])).",
    "Fix this bug: for i in range(10): print(i) ; return i  -- why does the function return early?",
]
PROSE_UNSEEN = [
    "Write a short friendly note to my aunt Mary thanking her for the scarf.",
    "Write a friendly reminder to my colleague about tomorrow's lunch.",
]


def test_feedback_teaches_what_the_shipped_model_misses(shipped: ShippedData, base: Scorer) -> None:
    feedback = rows_of(CODE_SEEN, 1.0) + rows_of(PROSE_SEEN, 0.0)
    assert len(feedback) == 40
    out = retrain(feedback, base=base, shipped=shipped)
    for p in CODE_UNSEEN:
        assert out.scorer.score(p) > base.score(p) + 0.05
    for p in PROSE_UNSEEN:
        assert out.scorer.score(p) < base.score(p) - 0.03
    assert out.report["share"] == pytest.approx(40 / 90)
    assert out.report["l2"] == pytest.approx(L2 + 1 / 40)
    cv = out.report["cv"]
    assert cv["folds"] == 5
    assert 0.0 <= cv["auc_base"] <= 1.0 and cv["auc_retrained"] >= cv["auc_base"]
    # The weight of feedback scales its effect; weight 0 ignores it.
    light = retrain(feedback, base=base, shipped=shipped, weight=0.2).scorer
    none = retrain(feedback, base=base, shipped=shipped, weight=0.0).scorer
    p = CODE_UNSEEN[0]
    assert base.score(p) + 1e-2 > none.score(p) and light.score(p) < out.scorer.score(p)


def test_all_bad_feedback_raises_scores(shipped: ShippedData, base: Scorer) -> None:
    feedback = rows_of(CHAT_SEEN, 1.0)  # "local failed" on everything
    out = retrain(feedback, base=base, shipped=shipped)
    rep = out.report
    assert rep["positives"] == 20 and "cv" not in rep and "cv_skipped" in rep
    assert (
        rep["mean_score"]["shipped_rows"]["retrained"] > rep["mean_score"]["shipped_rows"]["base"]
    )
    assert (
        rep["mean_score"]["feedback_rows"]["retrained"] > rep["mean_score"]["feedback_rows"]["base"]
    )
    for p in [*MATHS_UNSEEN, *CHAT_UNSEEN, "hi"]:
        assert out.scorer.score(p) > base.score(p)


def test_cv_report_needs_enough_rows(shipped: ShippedData, base: Scorer) -> None:
    few = rows_of(MATHS_SEEN[:5], 1.0) + rows_of(CHAT_SEEN[:4], 0.0)  # 9 rows
    assert "cv" not in retrain(few, base=base, shipped=shipped).report
    lopsided = rows_of(MATHS_SEEN[:10], 1.0) + rows_of(CHAT_SEEN[:2], 0.0)  # 2 of one label
    assert "cv" not in retrain(lopsided, base=base, shipped=shipped).report
    enough = rows_of(MATHS_SEEN[:7], 1.0) + rows_of(CHAT_SEEN[:3], 0.0)
    cv = retrain(enough, base=base, shipped=shipped).report["cv"]
    assert cv["folds"] == 3  # min(5, rarer label)


def test_retrained_model_saves_loads_and_retrains_again(
    tmp_path: Path, shipped: ShippedData, base: Scorer
) -> None:
    feedback = rows_of(MATHS_SEEN[:6], 1.0) + rows_of(CHAT_SEEN[:6], 0.0)
    model = retrain(feedback, base=base, shipped=shipped, weight=2.0).scorer
    meta = model.meta["retrained"]
    assert (meta["feedback"], meta["positives"], meta["weight"]) == (12, 6, 2.0)
    assert meta["share"] == pytest.approx(2.0 * 12 / 62) and meta["pseudo_count"] == 50.0
    assert meta["base"]["trained"] == base.meta["trained"] and meta["date"]
    assert "apgr" not in model.meta  # the base's measurements do not describe this model
    path = tmp_path / "user_model.json"
    model.save(path)
    copy = Scorer.load(path)
    assert copy.meta == model.meta
    assert [copy.score(p) for p in MATHS_UNSEEN] == [model.score(p) for p in MATHS_UNSEEN]
    # The retrained model can be the base of the next retrain (it keeps the group weights).
    again = retrain(feedback, base=copy, shipped=shipped, weight=2.0).scorer
    assert again.weights == pytest.approx(model.weights, rel=1e-9)
    assert again.meta["retrained"]["base"]["retrained"]["feedback"] == 12


def test_load_scorer_notices_a_rewritten_file(tmp_path: Path, base: Scorer) -> None:
    path = tmp_path / "model.json"
    base.save(path)
    first = load_scorer(path)
    assert load_scorer(path) is first
    assert load_scorer(str(path)) is first
    retrained = retrain(rows_of(CHAT_SEEN, 1.0), base=base).scorer
    retrained.save(path)  # a different model (and size): read again
    second = load_scorer(path)
    assert second is not first
    assert second.meta["retrained"]["feedback"] == 20
    assert second.score("hi") == retrained.score("hi") != first.score("hi")


@pytest.mark.parametrize(
    ("feedback", "kwargs", "match"),
    [
        ([({}, 1.0)], {}, "row 0: empty or missing signals"),
        ([({"log_words": 2.0}, 1.5)], {}, r"label 1.5 outside \[0, 1\]"),
        ([({"log_words": 2.0}, -0.1)], {}, r"outside \[0, 1\]"),
        ([({"log_words": 2.0}, math.nan)], {}, r"outside \[0, 1\]"),
        ([({"log_words": math.inf}, 1.0)], {}, "non-finite"),
        ([({"log_words": 2.0},)], {}, r"expected \(signals, label\)"),
        ([({"log_words": 2.0}, 1.0)], {"weight": -1.0}, "weight must be"),
        ([({"log_words": 2.0}, 1.0)], {"pseudo_count": -5.0}, "pseudo_count must be"),
    ],
)
def test_bad_input(feedback: list, kwargs: dict, match: str, shipped: ShippedData) -> None:
    with pytest.raises(ValueError, match=match):
        retrain(feedback, shipped=shipped, **kwargs)


def test_base_without_group_weights(shipped: ShippedData, base: Scorer) -> None:
    old = Scorer(base.features, base.weights, base.bias, base.mean, base.scale, {"trained": "x"})
    with pytest.raises(ValueError, match="no 'group_weights'"):
        retrain([], base=old, shipped=shipped)


def test_feedback_the_shipped_model_already_ranks_right_changes_little(
    shipped: ShippedData, base: Scorer
) -> None:
    # Maths failing and chit-chat passing is what the shipped model already predicts: the
    # retrained model must keep that ranking and not lurch (hard labels once pulled 2:1).
    out = retrain(rows_of(MATHS_SEEN, 1.0) + rows_of(CHAT_SEEN, 0.0), base=base, shipped=shipped)
    for p in [*MATHS_UNSEEN, *CHAT_UNSEEN]:
        assert out.scorer.score(p) == pytest.approx(base.score(p), abs=0.1)
    assert min(map(out.scorer.score, MATHS_UNSEEN)) > max(map(out.scorer.score, CHAT_UNSEEN))


def test_hard_feedback_labels_cannot_outweigh_the_shipped_sources(
    shipped: ShippedData, base: Scorer
) -> None:
    # Perfectly separable 0/1 labels drive a logistic fit's weights long; the feedback source is
    # kept no longer than the shipped average, so its share alone sets how far it pulls.
    from orchestra.agents.complexity.retrain import _fit_feedback

    feedback = rows_of(MATHS_SEEN, 1.0) + rows_of(CHAT_SEEN, 0.0)
    stats = list(zip(base.features, base.mean, base.scale, strict=True))
    std = [[(sig.get(f, 0.0) - m) / s for f, m, s in stats] for sig, _ in feedback]
    groups = base.meta["group_weights"]
    prior = [sum(ws) / len(groups) for ws in zip(*groups.values(), strict=True)]
    fitted = _fit_feedback(std, [y for _, y in feedback], prior, [0] * len(prior))
    assert math.hypot(*fitted) == pytest.approx(math.hypot(*prior))
    assert fitted != pytest.approx(prior), "the direction still comes from the feedback"
