"""Deterministic multi-document QA tasks: records about projects and people, the answer in one or two of them.

A task is a function of (seed, difficulty, index) and the length options: documents needed for the answer
come first, distractor documents are added until the next one would exceed `context_chars`, then the order
is shuffled and the documents numbered [1], [2], ...

easy    one document, found by name:      "Who leads Falcon?"
medium  one document, found by a value:   "Which project is based in Oslo?" (that value is unique among the
        documents; distractors share the other values), with at least 4 documents
hard    two documents:                    "Where does the lead of Falcon live?" (project -> person) or
                                          "Which started earlier, Falcon or Heron?" (compare two projects)

Document styles: "record" (one line of ~45 characters: what fits 512 characters, the tiny policy's context)
and "article" (a paragraph of ~`article_chars` whose extra sentences carry no facts: for long contexts).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import NamedTuple

_WORDS = ("Falcon", "Heron", "Otter", "Lynx", "Raven", "Bison", "Cobra", "Eagle", "Gecko", "Hawk", "Ibis", "Koala",
          "Lemur", "Moose", "Newt", "Orca", "Panda", "Quail", "Robin", "Shark", "Tiger", "Viper", "Whale", "Zebra")
_ADJS = ("Blue", "Red", "Green", "Swift", "Silent", "Bright", "Dark", "Iron", "Gold", "Silver", "North", "South",
         "Early", "Late", "Wild", "Calm", "Deep", "High", "Lone", "Grand", "Quick", "Rapid", "Steady", "Clear")
_FIRST = ("Ann", "Ben", "Cara", "Dan", "Eva", "Finn", "Gia", "Hal", "Ivy", "Jon", "Kai", "Lea", "Max", "Nia",
          "Oli", "Pia", "Rex", "Sue", "Ted", "Uma", "Vic", "Wes", "Yan", "Zoe")
_LAST = ("Lee", "Kim", "Diaz", "Roy", "Hale", "Park", "Cole", "Ford", "Gray", "Hart", "Knox", "Lowe", "Mays",
         "Nash", "Orr", "Pike", "Reed", "Shaw", "Tate", "Vale", "Ward", "West", "York", "Zane")
# Long contexts need hundreds of distinct names: single words first (short, for the tiny policy), then pairs.
PROJECTS = _WORDS + tuple(f"{a} {w}" for a in _ADJS for w in _WORDS)
PEOPLE = _FIRST + tuple(f"{f} {s}" for f in _FIRST for s in _LAST)
CITIES = ("Oslo", "Rome", "Lima", "Kyiv", "Baku", "Doha", "Riga", "Bern", "Cork", "Faro", "Graz", "Nice", "Pisa",
          "Sofia", "Turin", "Tunis")
TEAMS = ("Red", "Blue", "Gold", "Gray", "Jade", "Navy", "Pink", "Teal")
YEARS = tuple(range(2001, 2025))
FILLER = ("The group meets every week to review its progress.", "Its plans were approved after a long review.",
          "Several partners joined during the second phase.", "Reports are shared with the board each quarter.",
          "The work builds on earlier studies in the field.", "Most of the staff work in small teams.",
          "A public summary is published every spring.", "New members get two weeks of training.",
          "The office is open to visitors on Fridays.", "Budgets are planned one year in advance.",
          "Feedback from users shaped the latest changes.", "An outside panel audits the results each year.")
MIN_DOCS = {"easy": 2, "medium": 4, "hard": 4}


@dataclass(frozen=True)
class Project:
    name: str
    lead: str
    city: str
    year: int


@dataclass(frozen=True)
class Person:
    name: str
    city: str
    team: str


class GenTask(NamedTuple):
    documents: tuple[str, ...]
    question: str
    answer: str
    response: str  # the reference: evidence (hard) and "Answer: ..."


def _doc(entity: Project | Person, k: int, style: str, r: random.Random, article_chars: int) -> str:
    if isinstance(entity, Project):
        if style == "record":
            return f"[{k}] {entity.name}: lead {entity.lead}, based in {entity.city}, started {entity.year}."
        text = (f"[{k}] {entity.name} is a project led by {entity.lead}. It is based in {entity.city} and started in "
                f"{entity.year}.")
    else:
        if style == "record":
            return f"[{k}] {entity.name}: lives in {entity.city}, team {entity.team}."
        text = f"[{k}] {entity.name} lives in {entity.city} and works on the {entity.team} team."
    # Article padding: sentences without names, cities, teams or years, so they never change the answer.
    while len(text) < article_chars:
        text += " " + r.choice(FILLER)
    return text


def generate(seed: int, difficulty: str, index: int, *, context_chars: int, style: str = "record",
             article_chars: int = 400, max_docs: int = 0) -> GenTask:
    """The task at `index` of one difficulty.

    >>> g = generate(0, "hard", 1, context_chars=360)
    >>> g == generate(0, "hard", 1, context_chars=360), sum(len(d) + 1 for d in g.documents) <= 360
    (True, True)
    >>> g.response.endswith("Answer: " + g.answer)
    True
    """
    r = random.Random(f"polyrl-long-context:{seed}:{difficulty}:{index}")
    # Names are drawn from a pool that grows with the context, so a long context never runs out of names.
    per_doc = 45 if style == "record" else max(article_chars, 90)
    room = max(24, 2 * context_chars // per_doc + 4)
    projects = iter(r.sample(PROJECTS[:room], min(room, len(PROJECTS))))
    people = iter(r.sample(PEOPLE[:room], min(room, len(PEOPLE))))

    def project(**fixed) -> Project:
        return Project(name=fixed.get("name") or next(projects), lead=fixed.get("lead") or r.choice(PEOPLE[:24]),
                       city=fixed.get("city") or r.choice(CITIES), year=fixed.get("year") or r.choice(YEARS))

    def person(**fixed) -> Person:
        return Person(name=fixed.get("name") or next(people), city=fixed.get("city") or r.choice(CITIES),
                      team=fixed.get("team") or r.choice(TEAMS))

    # needed: the documents holding the answer; avoid: values distractors must not repeat (unique lookups).
    avoid_city = avoid_year = avoid_team = None
    used_people: set[str] = set()
    if difficulty == "easy":
        kind = r.randrange(5)
        if kind < 3:
            p = project()
            needed = [p]
            question, answer = [(f"Who leads {p.name}?", p.lead), (f"Where is {p.name} based?", p.city),
                                (f"When did {p.name} start?", str(p.year))][kind]
        else:
            q = person()
            needed = [q]
            question, answer = ((f"Where does {q.name} live?", q.city) if kind == 3 else
                                (f"Which team is {q.name} on?", q.team))
        reference = f"Answer: {answer}"
    elif difficulty == "medium":
        kind = r.randrange(3)
        if kind == 0:
            p = project()
            needed, avoid_city = [p], p.city
            question, answer = f"Which project is based in {p.city}?", p.name
        elif kind == 1:
            p = project()
            needed, avoid_year = [p], p.year
            question, answer = f"Which project started in {p.year}?", p.name
        else:
            q = person()
            needed, avoid_team = [q], q.team
            question, answer = f"Who is on team {q.team}?", q.name
        reference = f"Answer: {answer}"
    elif difficulty == "hard":
        kind = r.randrange(3)
        if kind < 2:
            lead = person()
            p = project(lead=lead.name)
            needed = [p, lead]
            if kind == 0:
                question, answer = f"Where does the lead of {p.name} live?", lead.city
                fact = f"lives in {lead.city}"
            else:
                question, answer = f"Which team is the lead of {p.name} on?", lead.team
                fact = f"team {lead.team}"
            reference = f"{p.name} lead {lead.name}; {lead.name} {fact}. Answer: {answer}"
        else:
            a = project()
            b = project(year=r.choice([y for y in YEARS if y != a.year]))
            needed = [a, b]
            first = a if a.year < b.year else b
            question, answer = f"Which started earlier, {a.name} or {b.name}?", first.name
            reference = f"{a.name} {a.year}, {b.name} {b.year}. Answer: {answer}"
    else:
        raise ValueError(f"long_context: unknown difficulty {difficulty!r}")
    used_people |= {e.name for e in needed if isinstance(e, Person)}

    def distractor() -> Project | Person:
        if r.random() < 0.5:
            return project(city=r.choice([c for c in CITIES if c != avoid_city]),
                           year=r.choice([y for y in YEARS if y != avoid_year]))
        return person(team=r.choice([t for t in TEAMS if t != avoid_team]))

    entities = list(needed)
    # Measure with the final numbering width; documents are rendered again after shuffling.
    size = sum(len(_doc(e, 99, style, random.Random(0), article_chars)) + 1 for e in entities)
    while not max_docs or len(entities) < max_docs:
        try:
            d = distractor()
        except StopIteration:  # the name pools are exhausted (a context of ~1M characters)
            break
        cost = len(_doc(d, 99, style, random.Random(0), article_chars)) + 1
        if size + cost > context_chars and len(entities) >= MIN_DOCS[difficulty]:
            break
        entities.append(d)
        size += cost
    r.shuffle(entities)
    docs = tuple(_doc(e, k + 1, style, r, article_chars) for k, e in enumerate(entities))
    return GenTask(docs, question, answer, reference)
