"""Synthetic chat prompts and preference pairs whose better answer is known (the embedded judge's data, issue 7).

The CPU default has no real GenRM checkpoint, so polyrl trains a tiny judge itself (genrm/build_judge.py) on
comparisons it can label without a model: a chat prompt asks for a reply about a topic word; a response that
mentions the word is helpful (score 5), one that does not is not (score 1). The chat environment's embedded
task set uses the same prompts (environments/chat), so the judge is trained on the distribution it judges.
Helpful responses come in short and padded forms alike, so the judge learns content, not length: length is what
group relative length control is there to act on.
"""

from __future__ import annotations

import random
import re
import string

from genrm.judge import build_prompt, format_judgement, split_thinking

TOPICS = (
    "apple", "river", "cloud", "tiger", "piano", "bread", "stone", "candle", "garden", "rocket", "winter", "castle",
    "pepper", "violin", "forest", "mirror", "rabbit", "silver", "tomato", "window", "dragon", "island", "lemon",
    "marble", "ocean", "pencil", "rain", "sugar", "tunnel", "wolf", "basket", "camera", "desert", "engine",
    "feather", "glacier", "hammer", "jungle", "kettle", "ladder", "magnet", "needle", "orange", "planet",
    "quilt", "saddle", "teapot", "umbrella", "valley", "wagon", "yogurt", "zebra", "anchor", "bridge", "cactus",
    "dolphin", "eagle", "falcon", "guitar", "harbor", "iron", "jacket", "kite", "lantern", "meadow", "noodle",
    "onion", "parrot", "rose", "salmon", "thunder", "velvet", "walnut", "coffee", "spider", "honey", "button",
    "carpet", "helmet", "pillow",
)
PROMPTS = (
    "Write a short reply about {w}.",
    "Tell me something about {w}.",
    "Say one sentence on {w}.",
    "Chat with me about {w}.",
)
GOOD = ("{w}.", "I like {w}.", "Sure, {w} is nice.", "Here is a thought on {w}.", "{w} is great!",
        "Let me tell you: {w} matters.", "Yes, {w}, of course.", "A fact: {w} is common.")
FILLER = (" It is a fine topic.", " Many people agree.", " That is all I know.", " Thanks for asking!",
          " I hope this helps you today.", " More could be said.")


def chat_prompt(rng: random.Random, word: str | None = None) -> tuple[str, str]:
    """(prompt text, topic word)."""
    word = word or rng.choice(TOPICS)
    return rng.choice(PROMPTS).format(w=word), word


def _padded(rng: random.Random, text: str) -> str:
    return text + "".join(rng.choice(FILLER) for _ in range(rng.choice((0, 0, 1, 2, 3))))


def good_response(rng: random.Random, word: str) -> str:
    return _padded(rng, rng.choice(GOOD).format(w=word))


def bad_response(rng: random.Random, word: str) -> str:
    """Unhelpful: about another topic, off-task output of the kind the tiny policy writes, or nothing."""
    kind = rng.random()
    if kind < 0.5:
        other = rng.choice([t for t in TOPICS if t != word])
        return _padded(rng, rng.choice(GOOD).format(w=other))
    if kind < 0.7:
        return rng.choice((f"\\boxed{{{rng.randint(0, 99)}}}", f'{{"id{rng.randint(0, 9)}": {rng.randint(0, 99)}}}',
                           f"{rng.randint(1, 50)} + {rng.randint(1, 50)}"))
    if kind < 0.9:
        return "".join(rng.choice(string.ascii_lowercase + " ") for _ in range(rng.randint(1, 40))).strip() or "ok"
    return ""


def maybe_think(rng: random.Random, word: str, response: str, p: float = 0.3) -> str:
    """Some responses carry a thinking part; the judge never sees it (judge.build_prompt strips it)."""
    if rng.random() >= p:
        return response
    return f"<think>The topic is {word}.</think>{response}"


_WORDS = re.compile(r"[a-z]+")
_TOPIC_SET = frozenset(TOPICS)


def subject(answer: str) -> str:
    """The first topic word of an answer, or "nothing": what the judge's critique says the answer is about.

    >>> subject("Sure, river is nice."), subject("\\boxed{12}")
    ('river', 'nothing')
    """
    return next((w for w in _WORDS.findall(answer.lower()) if w in _TOPIC_SET), "nothing")


def critique(word: str, answer_a: str, answer_b: str) -> tuple[str, float, float, str]:
    """(critique, score A, score B, ranking) of two answer parts to a prompt about `word`: helpful (5) when the
    answer is about the topic, else 1. The critique writes the prompt's topic, then each answer's subject and
    whether it is the topic, so each decision compares two words the judge has just written: asked to say
    "A mentions river, B does not" directly, the tiny judge mixed up A and B or named the wrong topic (held-out
    ranking accuracy 38-83%).

    >>> critique("river", "I like river.", "wolf is great!")
    ('The prompt asks about river. A is about river, on topic. B is about wolf, off topic.', 5, 1, 'A')
    """
    sub_a, sub_b = subject(answer_a), subject(answer_b)
    on_a, on_b = sub_a == word, sub_b == word
    verdict = lambda on: "on topic" if on else "off topic"  # noqa: E731
    text = f"The prompt asks about {word}. A is about {sub_a}, {verdict(on_a)}. B is about {sub_b}, {verdict(on_b)}."
    sa, sb = (5 if on_a else 1), (5 if on_b else 1)
    return text, sa, sb, "A" if sa > sb else "B" if sb > sa else "tie"


def preference_example(rng: random.Random, max_response_chars: int) -> dict:
    """One labelled comparison: the judge's user message, the target output, and the labels."""
    prompt, word = chat_prompt(rng)
    a_good, b_good = rng.random() < 0.5, rng.random() < 0.5
    a = maybe_think(rng, word, good_response(rng, word) if a_good else bad_response(rng, word))
    b = maybe_think(rng, word, good_response(rng, word) if b_good else bad_response(rng, word))
    text, sa, sb, rank = critique(word, split_thinking(a)[1], split_thinking(b)[1])
    return {"user": build_prompt(prompt, a, b, max_response_chars=max_response_chars),
            "target": format_judgement(text, sa, sb, rank), "a_good": sa == 5, "b_good": sb == 5,
            "ranking": rank}
