#!/usr/bin/env python3
"""Generate the synthetic sample tasks shipped in ``tasks_data/``.

Every example is built from templates and word lists written by hand in this file: no corpus
is read or copied. The script is deterministic (one fixed seed per task, no set iteration, no
clock), uses the standard library only, and writes the same bytes on every run.

    python tasks_data/generate.py            # (re)write the task YAMLs and JSONL files here
    python tasks_data/generate.py --check    # regenerate into a temp dir, compare, exit 1 on drift
    python tasks_data/generate.py --out DIR  # write somewhere else

Tasks written (one ``<task>.yaml`` plus ``<task>/{train,validation,test}.jsonl`` each):

* ``news_tagging`` - token task, heads ``ner`` (IOB2: PER, LOC, ORG, MISC) and ``pos`` (UPOS);
* ``reviews``      - single-text classification, head ``sentiment`` (negative/neutral/positive);
* ``questions``    - TREC-like question classification, heads ``coarse`` and ``fine``;
* ``similarity``   - sentence-pair regression, head ``score`` in [0, 5];
* ``topics``       - multilabel classification, head ``topics`` (1-2 of five topics).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import random
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20261124
SPLIT_SIZES = (("train", 400), ("validation", 120), ("test", 120))
HEADER = (
    "# Synthetic sample task, written by tasks_data/generate.py"
    " (edit the generator, not this file).\n"
)

UPOS = "ADJ ADP ADV AUX CCONJ DET INTJ NOUN NUM PART PRON PROPN PUNCT SCONJ SYM VERB X".split()


# --------------------------------------------------------------------------------------------
# helpers


def words(text: str) -> list[str]:
    """Split a ``|``-separated word list."""
    return [w.strip() for w in text.split("|") if w.strip()]


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def pick_weighted(rng: random.Random, weighted: list[tuple[str, int]]) -> str:
    total = sum(w for _, w in weighted)
    roll = rng.randrange(total)
    for value, weight in weighted:
        if roll < weight:
            return value
        roll -= weight
    raise AssertionError("unreachable")


class SplitRandom(random.Random):
    """A seeded ``Random`` whose ``choice`` can hold material out of the train split.

    With ``holdout`` set (while drawing train examples), ``choice`` never returns every fifth
    item of a list of five or more (templates, names, products, fillers). Validation and test
    draw from the full lists, so they include unseen phrasings and names: the labels stay
    noise-free, yet evaluation measures generalisation rather than template recall. Choices that
    decide a label use :meth:`choice_any`, which ignores ``holdout``.
    """

    holdout = False

    def choice(self, seq):
        if self.holdout and len(seq) >= 5:
            seq = [x for i, x in enumerate(seq) if i % 5 != 4]
        return super().choice(seq)

    def choice_any(self, seq):
        return super().choice(seq)


def build_splits(rng: SplitRandom, make, key) -> dict[str, list[dict]]:
    """Draw unique examples (by ``key``) split by split; no example is in two splits."""
    seen: set = set()
    splits: dict[str, list[dict]] = {}
    for split, size in SPLIT_SIZES:
        rng.holdout = split == "train"
        rows: list[dict] = []
        attempts = 0
        while len(rows) < size:
            attempts += 1
            if attempts > 200 * size:
                raise RuntimeError(
                    f"could not draw {size} unique {split} examples ({len(rows)} so far)"
                )
            row = make(rng)
            k = key(row)
            if k in seen:
                continue
            seen.add(k)
            rows.append(row)
        splits[split] = rows
    rng.holdout = False
    return splits


# --------------------------------------------------------------------------------------------
# 1. news_tagging: NER (IOB2) + UPOS over short news sentences

FIRST_NAMES = words(
    "Maria|James|Aisha|Kenji|Olga|Pedro|Fatima|Liam|Sofia|David|Amara|Lars|Priya|Tomas|"
    "Hannah|Omar|Elena|Victor|Ingrid|Rahul|Grace|Mateo|Yuki|Samuel|Leila|Noah|Zara|Ivan|"
    "Clara|Kwame|Lucia|Anders|Mei|Felix|Nadia|Diego"
)
LAST_NAMES = words(
    "Lopez|Smith|Okafor|Tanaka|Petrova|Alvarez|Haddad|Murphy|Rossi|Cohen|Mensah|Nilsson|"
    "Sharma|Novak|Becker|Farouk|Ivanova|Dubois|Larsen|Gupta|Herrera|Sato|Adeyemi|Rahimi|"
    "Walsh|Khan|Morozov|Fischer|Moreau|Kowalski|Nakamura|Osei|Lindqvist|Costa|Brennan"
)
# Locations: cities, countries and regions (multi-word ones included).
LOCATIONS = words(
    "New York|Paris|Buenos Aires|Lagos|Tokyo|Berlin|Cairo|Mumbai|Sao Paulo|Toronto|Nairobi|"
    "Madrid|Sydney|Oslo|Seoul|Lima|Istanbul|Hong Kong|Mexico City|Cape Town|Los Angeles|Rome|"
    "Vienna|Jakarta|Manila|Chicago|Dublin|Warsaw|France|Brazil|Japan|Kenya|Canada|India|"
    "Germany|South Africa|New Zealand|Argentina|Egypt|Norway|United States|Sri Lanka|Poland|"
    "Vietnam|Texas|Bavaria|Ontario|Sicily|Scotland|Rio de Janeiro"
)
ORG_PREFIXES = words(
    "Acme|Northwind|Globex|Initech|Silverline|Redwood|Orion|Pinecrest|Brightstar|Ironbridge|"
    "Helix|Vantage|Crescent|Greenfield|Apex|Meridian|Bluewater|Sterling|Kestrel|Nimbus"
)
ORG_SUFFIXES = words(
    "Corporation|Bank|Group|Motors|Energy|Airlines|Labs|Foods|Media|Holdings|Systems|"
    "Pharmaceuticals|Telecom|Capital|Insurance|Logistics"
)
ORG_FIXED = words(
    "United Nations|World Health Organization|European Union|Red Cross|Interpol|UNESCO|FIFA|"
    "NATO|Harvard University|Stanford University|McGill University|World Bank|Amnesty "
    "International|"
    "Reuters|Greenpeace"
)
TEAM_PREFIXES = words("Eastfield|Kingsport|Westbury|Ashford|Millbrook|Stonehaven|Fairview|Oakridge")
TEAM_SUFFIXES = words("Rovers|Wanderers|Athletic|United|Rangers|Falcons")
NATIONALITIES = words(
    "French|Brazilian|Japanese|Kenyan|Canadian|German|Indian|Mexican|Norwegian|Egyptian|"
    "Italian|Polish|Argentine|Spanish|Nigerian|Korean"
)
EVENTS = words(
    "Olympic Games|World Cup|Champions League|Super Bowl|Davis Cup|Commonwealth Games|"
    "Boston Marathon|Africa Cup of Nations"
)
PRIZES = words("Nobel Prize|Pulitzer Prize|Booker Prize|Fields Medal|Turing Award|Golden Globe")
LANGUAGES = words("English|Spanish|Swahili|Arabic|Mandarin|Portuguese|Hindi|Russian|Korean")
DAYS = words("Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday")
MONTHS = words(
    "January|February|March|April|May|June|July|August|September|October|November|December"
)
NUMBER_WORDS = words("two|three|four|five|six|seven|eight|ten|twelve")

# Phrase slots are written as "word/UPOS" tokens.
PHRASES = {
    "ADJ": words(
        "major/ADJ|large/ADJ|small/ADJ|recent/ADJ|annual/ADJ|local/ADJ|national/ADJ|strong/ADJ|"
        "surprising/ADJ|record/ADJ|modest/ADJ|unexpected/ADJ|early/ADJ|quarterly/ADJ"
    ),
    "PLACE_NOUN": words(
        "museum/NOUN|stadium/NOUN|bridge/NOUN|airport/NOUN|library/NOUN|hospital/NOUN|"
        "factory/NOUN|new/ADJ terminal/NOUN|train/NOUN station/NOUN|concert/NOUN hall/NOUN"
    ),
    "DOC_NOUN": words("report/NOUN|study/NOUN|survey/NOUN|review/NOUN|analysis/NOUN|forecast/NOUN"),
    "DEAL_NOUN": words("deal/NOUN|merger/NOUN|partnership/NOUN|agreement/NOUN|takeover/NOUN"),
    "PLAN_NOUN": words("plan/NOUN|budget/NOUN|proposal/NOUN|decision/NOUN|tax/NOUN|policy/NOUN"),
    "JUDGEMENT": words(
        "unfair/ADJ|necessary/ADJ|ambitious/ADJ|realistic/ADJ|risky/ADJ|too/ADV expensive/ADJ|"
        "very/ADV popular/ADJ|long/ADJ overdue/ADJ"
    ),
    "ROLE": words(
        "engineer/NOUN|director/NOUN|consultant/NOUN|analyst/NOUN|lawyer/NOUN|spokesperson/NOUN|"
        "senior/ADJ adviser/NOUN|chief/ADJ economist/NOUN"
    ),
    "TOPIC": words(
        "trade/NOUN|climate/NOUN change/NOUN|energy/NOUN prices/NOUN|border/NOUN security/NOUN|"
        "the/DET budget/NOUN|water/NOUN shortages/NOUN|public/ADJ health/NOUN|new/ADJ tariffs/NOUN|"
        "food/NOUN prices/NOUN"
    ),
    "MOVED": words("rose/VERB|fell/VERB|jumped/VERB|dropped/VERB|climbed/VERB|slipped/VERB"),
    "SAID": words("said/VERB|announced/VERB|confirmed/VERB|reported/VERB|claimed/VERB"),
    "COMMODITY": words(
        "oil/NOUN|coffee/NOUN|wheat/NOUN|gold/NOUN|rice/NOUN|cotton/NOUN|copper/NOUN"
    ),
    "PERIOD": words("week/NOUN|month/NOUN|year/NOUN|quarter/NOUN|summer/NOUN|winter/NOUN"),
    "WEATHER": words("storm/NOUN|flood/NOUN|heat/NOUN wave/NOUN|snowstorm/NOUN|earthquake/NOUN"),
}


def _tok(spec: str) -> list[tuple[str, str]]:
    out = []
    for item in spec.split():
        word, _, tag = item.rpartition("/")
        assert word and tag in UPOS, f"bad token spec {item!r}"
        out.append((word, tag))
    return out


def _propn(text: str) -> list[tuple[str, str]]:
    return [(w, "PROPN") for w in text.split()]


def _person(rng):
    if rng.random() < 0.2:
        return _propn(rng.choice(LAST_NAMES))
    return _propn(f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}")


def _org(rng):
    if rng.random() < 0.35:
        return _propn(rng.choice(ORG_FIXED))
    return _propn(f"{rng.choice(ORG_PREFIXES)} {rng.choice(ORG_SUFFIXES)}")


def _event(rng):
    # "Africa Cup of Nations": the "of" inside a name is still ADP.
    return [(w, "ADP" if w == "of" else "PROPN") for w in rng.choice(EVENTS).split()]


def _number(rng):
    if rng.random() < 0.3:
        return [(rng.choice(NUMBER_WORDS), "NUM")]
    return [
        (
            str(rng.choice([rng.randint(2, 99), rng.randint(100, 950), rng.randint(1, 9) * 1000])),
            "NUM",
        )
    ]


def _lower_number(rng):
    return [(rng.choice(NUMBER_WORDS), "NUM")]


def _percent(rng):
    value = rng.choice([str(rng.randint(1, 15)), f"{rng.randint(1, 9)}.{rng.randint(1, 9)}"])
    return [(value, "NUM")]


# slot -> (entity type or None, generator of [(word, upos)])
TOKEN_SLOTS = {
    "PER": ("PER", _person),
    "LOC": (
        "LOC",
        lambda rng: [(w, "ADP" if w == "de" else "PROPN") for w in rng.choice(LOCATIONS).split()],
    ),
    "ORG": ("ORG", _org),
    "TEAM": ("ORG", lambda rng: _propn(f"{rng.choice(TEAM_PREFIXES)} {rng.choice(TEAM_SUFFIXES)}")),
    "NAT": ("MISC", lambda rng: [(rng.choice(NATIONALITIES), "ADJ")]),
    "EVENT": ("MISC", _event),
    "PRIZE": ("MISC", lambda rng: _propn(rng.choice(PRIZES))),
    "LANG": ("MISC", lambda rng: _propn(rng.choice(LANGUAGES))),
    "DAY": (None, lambda rng: [(rng.choice(DAYS), "PROPN")]),
    "MONTH": (None, lambda rng: [(rng.choice(MONTHS), "PROPN")]),
    "YEAR": (None, lambda rng: [(str(rng.randint(1950, 2025)), "NUM")]),
    "NUM": (None, _number),
    "NUMW": (None, _lower_number),
    "PCT": (None, _percent),
    "SCORE": (None, lambda rng: [(f"{rng.randint(1, 5)}-{rng.randint(0, 3)}", "NUM")]),
    "AGE": (None, lambda rng: [(f"{rng.randint(19, 78)}-year-old", "ADJ")]),
    **{
        name: (None, (lambda options: lambda rng: _tok(rng.choice(options)))(opts))
        for name, opts in PHRASES.items()
    },
}

NEWS_TEMPLATES = [
    "{PER} visited/VERB {LOC} on/ADP {DAY} ./PUNCT",
    "{ORG} reported/VERB a/DET {ADJ} profit/NOUN of/ADP {NUM} million/NUM dollars/NOUN ./PUNCT",
    "{PER} ,/PUNCT the/DET chief/ADJ executive/NOUN of/ADP {ORG} ,/PUNCT resigned/VERB on/ADP "
    "{DAY} ./PUNCT",
    "The/DET {NAT} team/NOUN won/VERB the/DET {EVENT} in/ADP {LOC} ./PUNCT",
    "Officials/NOUN in/ADP {LOC} said/VERB the/DET {PLACE_NOUN} would/AUX open/VERB in/ADP "
    "{MONTH} ./PUNCT",
    "{ORG} plans/VERB to/PART build/VERB a/DET new/ADJ factory/NOUN near/ADP {LOC} ./PUNCT",
    "{PER} told/VERB reporters/NOUN that/SCONJ {ORG} will/AUX hire/VERB {NUM} workers/NOUN ./PUNCT",
    "Police/NOUN arrested/VERB {NUM} people/NOUN after/ADP protests/NOUN in/ADP {LOC} ./PUNCT",
    "{PER} scored/VERB twice/ADV as/SCONJ {TEAM} beat/VERB {TEAM} {SCORE} ./PUNCT",
    "The/DET {DEAL_NOUN} between/ADP {ORG} and/CCONJ {ORG} was/AUX approved/VERB on/ADP {DAY} "
    "./PUNCT",
    "{PER} was/AUX born/VERB in/ADP {LOC} in/ADP {YEAR} ./PUNCT",
    "{PER} and/CCONJ {PER} met/VERB in/ADP {LOC} to/PART discuss/VERB {TOPIC} ./PUNCT",
    "Shares/NOUN of/ADP {ORG} {MOVED} {PCT} percent/NOUN on/ADP {DAY} ./PUNCT",
    "A/DET {ADJ} {WEATHER} hit/VERB {LOC} last/ADJ night/NOUN ./PUNCT",
    "The/DET {NAT} minister/NOUN ,/PUNCT {PER} ,/PUNCT arrived/VERB in/ADP {LOC} on/ADP {DAY} "
    "./PUNCT",
    "{PER} joined/VERB {ORG} as/ADP a/DET {ROLE} in/ADP {YEAR} ./PUNCT",
    "{ORG} opened/VERB its/PRON first/ADJ office/NOUN in/ADP {LOC} ./PUNCT",
    "Thousands/NOUN of/ADP fans/NOUN watched/VERB the/DET {EVENT} final/NOUN in/ADP {LOC} ./PUNCT",
    "{PER} won/VERB the/DET {PRIZE} in/ADP {YEAR} ./PUNCT",
    "According/VERB to/ADP {ORG} ,/PUNCT prices/NOUN in/ADP {LOC} rose/VERB sharply/ADV ./PUNCT",
    "{PER} {SAID} the/DET {PLAN_NOUN} was/AUX {JUDGEMENT} ./PUNCT",
    "Flights/NOUN from/ADP {LOC} to/ADP {LOC} were/AUX cancelled/VERB on/ADP {DAY} ./PUNCT",
    "{ORG} signed/VERB a/DET {NUM} million/NUM dollar/NOUN contract/NOUN with/ADP {ORG} ./PUNCT",
    "The/DET {ADJ} {DOC_NOUN} was/AUX published/VERB by/ADP {ORG} in/ADP {MONTH} ./PUNCT",
    "{PER} ,/PUNCT a/DET {AGE} {ROLE} from/ADP {LOC} ,/PUNCT was/AUX injured/VERB ./PUNCT",
    "Voters/NOUN in/ADP {LOC} will/AUX elect/VERB a/DET new/ADJ mayor/NOUN in/ADP {MONTH} ./PUNCT",
    "{PER} leads/VERB the/DET {NAT} delegation/NOUN at/ADP the/DET {ORG} meeting/NOUN ./PUNCT",
    "Why/ADV did/AUX {ORG} leave/VERB {LOC} ?/PUNCT",
    "{ORG} and/CCONJ {ORG} agreed/VERB to/PART merge/VERB ./PUNCT",
    "{PER} speaks/VERB {LANG} and/CCONJ {LANG} ./PUNCT",
    "It/PRON rained/VERB heavily/ADV in/ADP {LOC} for/ADP {NUMW} days/NOUN ./PUNCT",
    "{PER} 's/PART new/ADJ book/NOUN about/ADP {LOC} sold/VERB {NUM} copies/NOUN ./PUNCT",
    "The/DET {EVENT} will/AUX be/AUX held/VERB in/ADP {LOC} in/ADP {YEAR} ./PUNCT",
    "{TEAM} signed/VERB {NAT} striker/NOUN {PER} on/ADP {DAY} ./PUNCT",
    "{NUM} {NAT} tourists/NOUN were/AUX rescued/VERB near/ADP {LOC} ./PUNCT",
    "Researchers/NOUN at/ADP {ORG} published/VERB a/DET {ADJ} {DOC_NOUN} on/ADP {TOPIC} ./PUNCT",
    "{PER} met/VERB {PER} at/ADP the/DET headquarters/NOUN of/ADP {ORG} ./PUNCT",
    "Prices/NOUN of/ADP {COMMODITY} {MOVED} in/ADP {LOC} this/DET {PERIOD} ./PUNCT",
    "The/DET president/NOUN of/ADP {LOC} ,/PUNCT {PER} ,/PUNCT praised/VERB {ORG} ./PUNCT",
    "Workers/NOUN at/ADP {ORG} went/VERB on/ADP strike/NOUN in/ADP {LOC} ./PUNCT",
    "On/ADP {DAY} ,/PUNCT {PER} {SAID} that/SCONJ {ORG} would/AUX leave/VERB {LOC} ./PUNCT",
    "{LANG} is/AUX now/ADV taught/VERB in/ADP every/DET school/NOUN in/ADP {LOC} ./PUNCT",
    "In/ADP {MONTH} ,/PUNCT {ORG} moved/VERB its/PRON headquarters/NOUN to/ADP {LOC} ./PUNCT",
    "{PER} will/AUX coach/VERB {TEAM} next/ADJ season/NOUN ./PUNCT",
    "The/DET {ADJ} {DOC_NOUN} by/ADP {PER} warns/VERB about/ADP {TOPIC} ./PUNCT",
    "{NAT} police/NOUN found/VERB the/DET missing/ADJ hikers/NOUN near/ADP {LOC} on/ADP {DAY} "
    "./PUNCT",
    "Did/AUX {PER} really/ADV leave/VERB {ORG} ?/PUNCT",
    "She/PRON moved/VERB from/ADP {LOC} to/ADP {LOC} in/ADP {YEAR} ./PUNCT",
]


def make_news(rng: random.Random) -> dict:
    template = rng.choice(NEWS_TEMPLATES)
    tokens: list[str] = []
    ner: list[str] = []
    pos: list[str] = []
    for piece in template.split():
        if piece.startswith("{"):
            entity, produce = TOKEN_SLOTS[piece[1:-1]]
            for i, (word, tag) in enumerate(produce(rng)):
                tokens.append(word)
                pos.append(tag)
                ner.append("O" if entity is None else ("B-" if i == 0 else "I-") + entity)
        else:
            ((word, tag),) = _tok(piece)
            tokens.append(word)
            pos.append(tag)
            ner.append("O")
    tokens[0] = cap(tokens[0])  # "two Indian tourists ..." at the start of a sentence
    for i in range(len(tokens) - 1):  # "a unexpected profit" -> "an unexpected profit"
        if tokens[i] in ("a", "A") and tokens[i + 1][:1].lower() in "aeiou":
            tokens[i] += "n"
    return {"tokens": tokens, "ner": ner, "pos": pos}


# --------------------------------------------------------------------------------------------
# 2. reviews: product review sentiment (negative / neutral / positive)

ITEMS = words(
    "headset|phone case|laptop|charger|speaker|keyboard|camera|smartwatch|tablet|router|"
    "blender|coffee maker|frying pan|kettle|toaster|backpack|jacket|desk chair|lamp|"
    "vacuum cleaner|mattress|water bottle|printer|board game|suitcase|monitor|microwave|drill|"
    "tent|umbrella|rice cooker|bike lock"
)
ASPECTS = words("build quality|price|design|packaging|finish|size|weight|setup|material|color")
POS_ADJ = words(
    "great|excellent|fantastic|wonderful|amazing|superb|brilliant|sturdy|reliable|impressive|lovely"
)
NEG_ADJ = words(
    "awful|terrible|flimsy|useless|disappointing|poor|faulty|horrible|unreliable|dreadful|shoddy"
)
NEU_ADJ = words("okay|average|acceptable|ordinary|unremarkable|fine")
INTENSIFIERS = ["", "", "really ", "truly ", "very ", "absolutely ", "quite "]
RELATIONS = words(
    "son|daughter|wife|husband|mother|father|sister|brother|roommate|neighbor|grandmother"
)
COLORS = words("black|white|grey|blue|red|green|silver|navy")
REVIEW_DAYS = words("Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|the weekend")
SMALL_NUMBERS = words("two|three|four|five|six|ten")

REVIEW_TEMPLATES = {
    "positive": [
        "The {item} works perfectly.",
        "I absolutely love this {item}.",
        "This {item} is {intens}{pos}.",
        "{Pos} {item}, the {aspect} is {pos2}.",
        "The {item} exceeded all my expectations.",
        "Highly recommend this {item} to anyone.",
        "Best {item} I have ever owned.",
        "I have no complaints about this {item} at all.",
        "Works like a charm and the {aspect} is {pos}.",
        "My {relation} loves the new {item}.",
        "Worth every penny, the {item} is {intens}{pos}.",
        "The {aspect} is {pos} and the {item} was easy to set up.",
        "So glad I bought this {item}, it is {pos}.",
        "After {n} months the {item} still works like new.",
        "I expected to be disappointed, but the {item} is {pos}.",
        "Not cheap, but the {item} is worth every penny.",
        "I was worried about the {aspect}, but it turned out {pos}.",
    ],
    "negative": [
        "The {item} stopped working after {n} days.",
        "This {item} is {intens}{neg}.",
        "{Neg} {item}, the {aspect} is {neg2}.",
        "Do not buy this {item}.",
        "I want a refund, the {item} broke within a week.",
        "Worst {item} I have ever owned.",
        "The {item} is not worth the money.",
        "Really disappointed with this {item}.",
        "The {aspect} is {neg} and customer support never replied.",
        "Returned the {item} after {n} days because it kept failing.",
        "My {relation} hated the {item}.",
        "I regret buying this {item}, it is {neg}.",
        "The {item} fell apart the first time I used it.",
        "Save your money, this {item} is {neg}.",
        "Looks {pos} in the photos, but the {item} broke on day one.",
        "The {aspect} is nice, but the {item} stopped working after {n} days.",
        "I wanted to love this {item}, but it is {neg}.",
    ],
    "neutral": [
        "The {item} arrived on {day}.",
        "It is {a_neu} {neu} {item}, nothing special.",
        "The {item} does what it says.",
        "I bought this {item} for my {relation}.",
        "The {item} comes in {color} and {color2}.",
        "The {item} is {neu}, not great but not bad either.",
        "I have only used the {item} {n} times so far.",
        "The {aspect} is about what you would expect for {a_item} {item}.",
        "The {item} is smaller than the one I had before.",
        "Delivery took {n} days and the {item} looks as described.",
        "Three stars, the {item} is {neu}.",
        "Neither good nor bad, the {item} is just {neu}.",
        "The {item} replaced an older one that we had for years.",
        "It is a {color} {item} with a {aspect} similar to most others.",
        "Some parts of the {item} are good and some are bad.",
        "The {item} works, but I have no strong feelings about it.",
    ],
}
REVIEW_OPENERS = [
    "I bought this last month.",
    "Ordered this for the new apartment.",
    "Got it on sale.",
    "Second purchase from this brand.",
    "Bought it as a gift.",
    "Picked this up in {day_plain}.",
]
REVIEW_CLOSERS = {
    "positive": ["Would buy again.", "Five stars.", "Very happy.", "Love it."],
    "negative": ["One star.", "Never again.", "Avoid.", "Very unhappy."],
    "neutral": ["Three stars.", "Time will tell.", "It will do for now.", "We will see."],
}


def make_review(rng: random.Random) -> dict:
    label = pick_weighted(rng, [("negative", 36), ("neutral", 28), ("positive", 36)])
    pos, pos2 = rng.sample(POS_ADJ, 2)
    neg, neg2 = rng.sample(NEG_ADJ, 2)
    color, color2 = rng.sample(COLORS, 2)
    neu = rng.choice(NEU_ADJ)
    item = rng.choice(ITEMS)
    fill = {
        "item": item,
        "a_item": article(item),
        "aspect": rng.choice(ASPECTS),
        "pos": pos,
        "pos2": pos2,
        "Pos": cap(pos),
        "neg": neg,
        "neg2": neg2,
        "Neg": cap(neg),
        "neu": neu,
        "a_neu": article(neu),
        "intens": rng.choice(INTENSIFIERS),
        "relation": rng.choice(RELATIONS),
        "color": color,
        "color2": color2,
        "day": rng.choice(REVIEW_DAYS),
        "n": rng.choice(SMALL_NUMBERS),
    }
    parts = [rng.choice(REVIEW_TEMPLATES[label]).format(**fill)]
    if rng.random() < 0.3:
        opener = rng.choice(REVIEW_OPENERS).format(
            day_plain=rng.choice(words("the spring|the autumn|a hurry|store"))
        )
        parts.insert(0, opener)
    if rng.random() < 0.25:
        parts.append(rng.choice(REVIEW_CLOSERS[label]))
    if len(" ".join(parts).split()) > 18 and len(parts) > 1:
        parts.pop(0)  # keep reviews short: drop the opener (or the closer)
    return {"text": " ".join(parts), "sentiment": label}


# --------------------------------------------------------------------------------------------
# 3. questions: TREC-like question classification (coarse + fine)

Q_COUNTRIES = words(
    "France|Japan|Brazil|Kenya|Canada|India|Mexico|Egypt|Norway|Italy|Australia|Peru|Vietnam|"
    "Germany|Spain|Argentina|Turkey|Thailand|Morocco|Chile|Ghana|Sweden"
)
Q_CITIES = words(
    "Paris|Tokyo|Cairo|Lima|Rome|Toronto|Nairobi|Berlin|Madrid|Sydney|Mumbai|Istanbul|Bangkok|"
    "Santiago|Oslo|Lisbon|Vienna|Prague|Seoul|Dublin|Chicago|Marseille"
)
Q_CONTINENTS = words("Africa|Asia|Europe|South America|North America|Oceania")
Q_LANDMARKS = words(
    "the Eiffel Tower|the Colosseum|the Statue of Liberty|Big Ben|the Golden Gate Bridge|"
    "the Brandenburg Gate|the Acropolis|the Kremlin|the Louvre|the Taj Mahal|Machu Picchu|"
    "the Alhambra|Petra|Angkor Wat|the Parthenon|the Blue Mosque"
)
Q_PEOPLE = words(
    "Albert Einstein|Marie Curie|Nelson Mandela|Frida Kahlo|Mahatma Gandhi|Leonardo da Vinci|"
    "Wolfgang Amadeus Mozart|Isaac Newton|Cleopatra|Charles Darwin|Ada Lovelace|Pablo Picasso|"
    "William Shakespeare|Simon Bolivar|Jane Austen"
)
Q_HOLIDAYS = words("Christmas|Thanksgiving|Diwali|Easter|Hanukkah|Lunar New Year|Ramadan|Halloween")

Q_ACRONYMS = words(
    "NASA|UNESCO|DNA|HTML|GPS|FIFA|NATO|UNICEF|CEO|ATM|LED|PDF|USB|NBA|RAM|SCUBA|RADAR|OPEC|IQ|CPU"
)
Q_TERMS = words(
    "photosynthesis|a black hole|a mortgage|a haiku|a volcano|a metaphor|a vaccine|an algorithm|"
    "a tariff|a glacier|a sonnet|inflation|democracy|a hurricane|an atom|a recession|osmosis|"
    "a palindrome|a monsoon|a galaxy|an enzyme|a fjord|a sonar|an allergy|a budget deficit"
)
Q_REASONS = [
    ("do", "cats", "purr"),
    ("does", "ice", "float on water"),
    ("do", "leaves", "change color in autumn"),
    ("is", "the sky", "blue"),
    ("did", "the Roman Empire", "fall"),
    ("do", "birds", "migrate south"),
    ("does", "the moon", "change shape"),
    ("are", "flamingos", "pink"),
    ("do", "people", "yawn"),
    ("did", "the Titanic", "sink"),
    ("does", "bread", "rise"),
    ("do", "onions", "make you cry"),
    ("is", "the ocean", "salty"),
    ("do", "we", "dream"),
    ("does", "metal", "rust"),
    ("do", "stars", "twinkle"),
    ("did", "the dinosaurs", "die out"),
    ("do", "zebras", "have stripes"),
    ("does", "thunder", "follow lightning"),
    ("do", "cats", "hate water"),
    ("are", "some people", "left-handed"),
    ("did", "the stock market crash in 1929", ""),
    ("does", "the Leaning Tower of Pisa", "lean"),
]
Q_CAUSES = words(
    "earthquakes|rainbows|hiccups|the tides|jet lag|static electricity|tsunamis|acid rain|"
    "the northern lights|thunder|the seasons|sunburn"
)
Q_TASKS = words(
    "bake bread|tie a tie|change a flat tire|learn French quickly|remove rust from metal|"
    "grow tomatoes|make cold brew coffee|train a puppy|write a cover letter|fold a paper crane|"
    "clean a cast iron pan|start a vegetable garden|save money on groceries|improve your memory|"
    "fix a leaking tap|tune a guitar|poach an egg|set up a fish tank|build a birdhouse|"
    "remove a wine stain|sharpen a kitchen knife|stop snoring"
)
Q_ANIMAL_KINDS = words("animal|bird|fish|mammal|insect|reptile")
Q_ANIMAL_DESCS = words(
    "is native to {country}|is the national symbol of {country}|lives the longest|"
    "can sleep standing up|has the strongest bite|is the largest in the world|builds dams|"
    "eats only bamboo|lives in the deep sea|can see in the dark|carries its young in a pouch|"
    "is the fastest on land"
)
Q_ANIMAL_NAMES = words(
    "a narwhal|an axolotl|a pangolin|a platypus|a capybara|an okapi|a quokka|a tapir|an aye-aye"
)
Q_FOOD_KINDS = words("dish|fruit|cheese|dessert|drink|spice|vegetable|soup|bread")
Q_FOOD_PAIRS = words("grilled fish|red wine|roast chicken|fresh bread|rice|pancakes|cheese")
Q_COLOR_THINGS = words(
    "a ripe banana|the flag of {country}|the planet Mars|an emerald|a flamingo|a ripe lime|"
    "the inside of a kiwi fruit|a fire truck in {country}|a polar bear's skin|a ruby|the Dead Sea"
)
Q_BASIC_COLORS = words("red|blue|yellow|white|black|green")
Q_CONCEPTS = words("luck|mourning|royalty|danger|peace|wealth")
Q_SPORT_EQUIP = words(
    "a shuttlecock|a puck|a bat and ball|an oval ball|a cue|a javelin|a racket|a saddle|a stone "
    "and brooms"
)
Q_VENUES = words("Wimbledon|Augusta|Le Mans|Lord's|Daytona|Madison Square Garden")
Q_BOOKS = words(
    "Hamlet|Pride and Prejudice|War and Peace|Don Quixote|The Odyssey|Moby Dick|"
    "One Hundred Years of Solitude|Things Fall Apart|The Little Prince|Frankenstein|Jane Eyre|"
    "The Divine Comedy"
)
Q_PAINTINGS = words(
    "the Mona Lisa|The Starry Night|The Scream|Guernica|The Night Watch|The Birth of Venus|Water "
    "Lilies"
)
Q_INVENTIONS = words(
    "telephone|light bulb|printing press|steam engine|World Wide Web|radio|bicycle|television|"
    "dishwasher|telescope|battery|microwave oven"
)
Q_FIRSTS = words(
    "walk on the moon|climb Mount Everest|fly solo across the Atlantic|reach the South Pole|"
    "swim the English Channel|orbit the Earth|win two Nobel Prizes|sail around the world alone"
)
Q_DISCOVERIES = words(
    "penicillin|gravity|radium|the electron|X-rays|insulin|the planet Neptune|oxygen"
)
Q_MUSIC = words(
    "the Moonlight Sonata|The Four Seasons|The Magic Flute|Swan Lake|the Ninth Symphony|Carmen"
)
Q_FIELDS = words("modern physics|geometry|medicine|economics|computer science|history|genetics")
Q_PRODUCTS = words("iPhone|PlayStation|Walkman|Big Mac|Model T|Kindle|Game Boy|Beetle")
Q_TOURNAMENTS = words(
    "World Cup|Super Bowl|NBA Finals|Champions League|Stanley Cup|Rugby World Cup"
)
Q_SONGS = words(
    "Yesterday|Bohemian Rhapsody|Hotel California|Wonderwall|Dancing Queen|Smells Like Teen "
    "Spirit|Hey Jude"
)
Q_ORG_DESCS = words(
    "awards the Nobel Prizes|runs the Olympic Games|sets the rules of international football|"
    "monitors world health|protects world heritage sites|lends money to poor countries"
)
Q_NICKNAMES = words(
    "the Big Apple|the City of Light|the Eternal City|the Windy City|the City of Angels|the Pink "
    "City"
)
Q_THINGS_FAMOUS = words("tulips|maple syrup|fjords|kangaroos|tango|sushi|olive oil|chocolate|tea")
Q_EVENTS_PAST = words(
    "the Berlin Wall fall|World War II end|the Titanic sink|humans first land on the moon|"
    "the first iPhone come out|the French Revolution begin|the internet become public|"
    "women first vote in {country}|{country} become independent"
)
Q_COUNTABLE = [
    ("players", "a football team"),
    ("bones", "the human body"),
    ("states", "the United States"),
    ("keys", "a piano"),
    ("planets", "the solar system"),
    ("countries", "Africa"),
    ("strings", "a violin"),
    ("cards", "a standard deck"),
    ("teeth", "an adult mouth"),
    ("days", "a leap year"),
    ("players", "a rugby team"),
    ("squares", "a chess board"),
    ("moons", "Jupiter"),
    ("official languages", "{country}"),
    ("time zones", "Russia"),
]
Q_PRICES = words(
    "a cup of coffee|a liter of gasoline|a movie ticket|a new car|a loaf of bread|a liter of milk|"
    "a train ticket|a taxi ride"
)
Q_FILMS = words("Titanic|Avatar|Star Wars|Jurassic Park|Frozen|The Lion King|Toy Story")
Q_JOBS = words("teacher|nurse|pilot|software engineer|firefighter|dentist|plumber")
Q_RIVERS = words("Nile|Amazon|Danube|Mississippi|Yangtze|Thames|Congo|Rhine")
Q_MOUNTAINS = words("Mount Everest|Mount Kilimanjaro|Mont Blanc|Mount Fuji|Denali|Aconcagua")
Q_DEEP = words("the Mariana Trench|Lake Baikal|the Dead Sea|Loch Ness|the Pacific Ocean")
Q_DURATION_TASKS = words(
    "fly from {city} to {city2}|learn to drive|get a passport|digest a meal|grow an oak tree|"
    "travel by train from {city} to {city2}|recover from a broken leg|charge an electric car"
)
Q_LIVING = words("elephants|tortoises|house cats|parrots|goldfish|horses|honey bees|blue whales")
Q_LASTED = words(
    "the Hundred Years War|World War I|the Apollo 11 mission|the Cold War|the reign of Queen "
    "Victoria|the Ming dynasty"
)
Q_WILD = words("penguins|pandas|koalas|polar bears|snow leopards|orangutans")

FINE_WEIGHTS = [
    ("ABBR:expansion", 4),
    ("DESC:definition", 8),
    ("DESC:reason", 5),
    ("DESC:manner", 6),
    ("ENTY:animal", 4),
    ("ENTY:food", 4),
    ("ENTY:color", 3),
    ("ENTY:sport", 3),
    ("HUM:individual", 11),
    ("HUM:group", 5),
    ("LOC:city", 6),
    ("LOC:country", 6),
    ("LOC:other", 5),
    ("NUM:date", 8),
    ("NUM:count", 8),
    ("NUM:money", 4),
    ("NUM:distance", 4),
    ("NUM:period", 4),
]
# Declared in the YAML but never generated: exercises metrics over the full vocabulary.
FINE_UNUSED = ["ENTY:plant", "NUM:temperature"]
COARSE_LABELS = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]


def _question(rng: random.Random, fine: str) -> str:
    c = rng.choice
    country, city = c(Q_COUNTRIES), c(Q_CITIES)
    city2 = c([x for x in Q_CITIES if x != city])
    which = c(["What", "Which"])
    if fine == "ABBR:expansion":
        a = c(Q_ACRONYMS)
        return c(
            [
                f"What does {a} stand for?",
                f"What is the full form of {a}?",
                f"What is {a} short for?",
                f"What do the letters {a} stand for?",
                f"What does the abbreviation {a} mean?",
            ]
        )
    if fine == "DESC:definition":
        term = c(Q_TERMS)
        bare = term.split(" ", 1)[1] if term.split(" ", 1)[0] in ("a", "an") else term
        return c(
            [
                f"What is {term}?",
                f"What is the definition of {bare}?",
                f"What does the word {bare} mean?",
                f"Can you define {bare}?",
                f"What is meant by the term {bare}?",
                f"What exactly is {term}?",
            ]
        )
    if fine == "DESC:reason":
        if rng.random() < 0.3:
            cause = c(Q_CAUSES)
            return c([f"What causes {cause}?", f"What is the cause of {cause}?"])
        aux, subj, pred = c(Q_REASONS)
        core = f"{aux} {subj} {pred}".strip()
        return c([f"Why {core}?", f"Why {core}?", f"For what reason {core}?"])
    if fine == "DESC:manner":
        task = c(Q_TASKS)
        return c(
            [
                f"How do you {task}?",
                f"How can I {task}?",
                f"What is the best way to {task}?",
                f"How does one {task}?",
                f"What steps should I follow to {task}?",
            ]
        )
    if fine == "ENTY:animal":
        if rng.random() < 0.25:
            return f"What kind of animal is {c(Q_ANIMAL_NAMES)}?"
        return f"{which} {c(Q_ANIMAL_KINDS)} {c(Q_ANIMAL_DESCS).format(country=country)}?"
    if fine == "ENTY:food":
        kind = c(Q_FOOD_KINDS)
        return c(
            [
                f"What {kind} is most popular in {country}?",
                f"Which {kind} is traditionally served at {c(Q_HOLIDAYS)}?",
                f"What {kind} goes best with {c(Q_FOOD_PAIRS)}?",
                f"What is the national dish of {country}?",
                f"What do people in {country} usually eat for breakfast?",
            ]
        )
    if fine == "ENTY:color":
        c1, c2 = rng.sample(Q_BASIC_COLORS, 2)
        return c(
            [
                f"What color is {c(Q_COLOR_THINGS).format(country=country)}?",
                f"What color do you get when you mix {c1} and {c2}?",
                f"Which color represents {c(Q_CONCEPTS)} in {country}?",
                f"What colour is {c(Q_COLOR_THINGS).format(country=country)}?",
            ]
        )
    if fine == "ENTY:sport":
        return c(
            [
                f"What sport is played with {c(Q_SPORT_EQUIP)}?",
                f"Which sport uses {c(Q_SPORT_EQUIP)}?",
                f"What sport is most popular in {country}?",
                f"Which sport is played at {c(Q_VENUES)}?",
                f"What is the national sport of {country}?",
            ]
        )
    if fine == "HUM:individual":
        return c(
            [
                f"Who wrote {c(Q_BOOKS)}?",
                f"Who painted {c(Q_PAINTINGS)}?",
                f"Who invented the {c(Q_INVENTIONS)}?",
                f"Who was the first person to {c(Q_FIRSTS)}?",
                f"Who discovered {c(Q_DISCOVERIES)}?",
                f"Who composed {c(Q_MUSIC)}?",
                f"Which scientist discovered {c(Q_DISCOVERIES)}?",
                f"Who was the first president of {country}?",
                f"Who is known as the father of {c(Q_FIELDS)}?",
                f"Which author wrote {c(Q_BOOKS)}?",
            ]
        )
    if fine == "HUM:group":
        return c(
            [
                f"Which company makes the {c(Q_PRODUCTS)}?",
                f"What team won the {rng.randint(1970, 2022)} {c(Q_TOURNAMENTS)}?",
                f"Which band recorded the song {c(Q_SONGS)}?",
                f"What organization {c(Q_ORG_DESCS)}?",
                f"Which company first sold the {c(Q_PRODUCTS)}?",
            ]
        )
    if fine == "LOC:city":
        return c(
            [
                f"What is the capital of {country}?",
                f"Which city is the capital of {country}?",
                f"In which city is {c(Q_LANDMARKS)}?",
                f"What city is {c(Q_LANDMARKS)} in?",
                f"What city hosted the {rng.randint(1960, 2020)} Olympic Games?",
                f"What is the largest city in {country}?",
                f"Which city is known as {c(Q_NICKNAMES)}?",
            ]
        )
    if fine == "LOC:country":
        return c(
            [
                f"Which country is {c(Q_LANDMARKS)} in?",
                f"In which country is {city} located?",
                f"What country is {city} in?",
                f"Which country has the largest population in {c(Q_CONTINENTS)}?",
                f"What country is famous for {c(Q_THINGS_FAMOUS)}?",
                f"Which country borders {country} to the {c(words('north|south|east|west'))}?",
            ]
        )
    if fine == "LOC:other":
        return c(
            [
                f"Where is {c(Q_LANDMARKS)}?",
                f"Which river flows through {city}?",
                f"What is the highest mountain in {c(Q_CONTINENTS)}?",
                f"Where do {c(Q_WILD)} live in the wild?",
                f"Where can you see the northern lights in {c(Q_CONTINENTS)}?",
                f"Which lake is the largest in {c(Q_CONTINENTS)}?",
                f"Where is the source of the {c(Q_RIVERS)}?",
            ]
        )
    if fine == "NUM:date":
        return c(
            [
                f"When was {c(Q_PEOPLE)} born?",
                f"What year did {c(Q_EVENTS_PAST).format(country=country)}?",
                f"When did {c(Q_EVENTS_PAST).format(country=country)}?",
                f"On what date is {c(Q_HOLIDAYS)} celebrated?",
                f"In what year was {c(Q_BOOKS)} published?",
                f"When was the {c(Q_INVENTIONS)} invented?",
                f"When did {c(Q_PEOPLE)} die?",
            ]
        )
    if fine == "NUM:count":
        things, whole = c(Q_COUNTABLE)
        whole = whole.format(country=country)
        return c(
            [
                f"How many {things} are there in {whole}?",
                f"How many {things} does {whole} have?",
                f"What is the number of {things} in {whole}?",
                f"How many people live in {city}?",
                f"How many {things} are in {whole}?",
            ]
        )
    if fine == "NUM:money":
        return c(
            [
                f"How much does {c(Q_PRICES)} cost in {country}?",
                f"How much money did {c(Q_FILMS)} make?",
                f"What is the average salary of a {c(Q_JOBS)} in {country}?",
                f"What is the price of {c(Q_PRICES)} in {city}?",
                f"How much did it cost to make {c(Q_FILMS)}?",
            ]
        )
    if fine == "NUM:distance":
        return c(
            [
                f"How far is {city} from {city2}?",
                f"How long is the {c(Q_RIVERS)}?",
                f"How tall is {c(Q_LANDMARKS)}?",
                f"How high is {c(Q_MOUNTAINS)}?",
                f"What is the distance between {city} and {city2}?",
                f"How deep is {c(Q_DEEP)}?",
            ]
        )
    if fine == "NUM:period":
        return c(
            [
                f"How long does it take to {c(Q_DURATION_TASKS).format(city=city, city2=city2)}?",
                f"How long do {c(Q_LIVING)} live?",
                f"How long did {c(Q_LASTED)} last?",
                f"What is the average lifespan of {c(Q_LIVING)}?",
            ]
        )
    raise KeyError(fine)


def make_question(rng: random.Random) -> dict:
    fine = pick_weighted(rng, FINE_WEIGHTS)
    return {"text": _question(rng, fine), "coarse": fine.split(":")[0], "fine": fine}


# --------------------------------------------------------------------------------------------
# 4. similarity: sentence pairs scored 0-5 by how the second sentence was derived
#
# A sentence realises a frame (agent, action, object, [place], [time]) through one of four
# surface templates; "a|b" lists synonyms, a leading "+" marks a plural object.

SIM_TIMES = [
    "this morning|early today",
    "last night|yesterday evening",
    "on Sunday",
    "after lunch",
    "at noon|at midday",
    "on Friday afternoon",
    "last week",
    "before dinner",
]
SIM_DOMAINS = {
    "cooking": {
        "agents": ["a chef|a cook", "a woman|a lady", "my grandmother|my grandma", "the students"],
        "actions": [
            (
                "cooked|prepared|made",
                ["a pot of soup|some soup", "pasta|spaghetti", "rice", "a curry"],
            ),
            ("sliced|cut", ["+onions", "the bread|the loaf", "+tomatoes", "a watermelon"]),
            ("baked", ["a cake", "+cookies|+biscuits", "a loaf of bread", "an apple pie"]),
        ],
        "places": ["in the kitchen", "at the restaurant", "in a small cafe|in a little cafe"],
    },
    "sports": {
        "agents": ["a young boy|a little boy", "the players|the athletes", "a girl", "the coach"],
        "actions": [
            ("kicked", ["a ball|the football", "a tin can"]),
            ("threw|tossed", ["a frisbee", "a baseball", "a tennis ball"]),
            ("won", ["the match|the game", "the race", "a trophy"]),
        ],
        "places": ["in the park", "on the field|on the pitch", "at the stadium", "on the beach"],
    },
    "travel": {
        "agents": [
            "the tourists|the travelers",
            "a family",
            "an old man|an elderly man",
            "two backpackers",
        ],
        "actions": [
            ("boarded", ["a train", "the bus", "a ferry", "a small plane"]),
            ("visited|toured", ["the museum", "the old castle", "a temple", "the market"]),
            ("booked|reserved", ["a hotel room|a room", "+two tickets", "a table for four"]),
        ],
        "places": [
            "in the city center|downtown",
            "near the harbor|by the harbor",
            "at the station",
        ],
    },
    "office": {
        "agents": [
            "the manager|the boss",
            "two employees|two workers",
            "an engineer",
            "the new intern",
        ],
        "actions": [
            ("wrote|drafted", ["a report", "an email|an e-mail", "a short memo"]),
            (
                "fixed|repaired",
                ["the printer", "the laptop|the notebook computer", "the coffee machine"],
            ),
            ("signed", ["the contract|the agreement", "+the forms", "a letter"]),
        ],
        "places": ["in the office", "at the meeting", "at home"],
    },
    "animals": {
        "agents": ["a dog|a hound", "the cat", "a horse", "a goat"],
        "actions": [
            ("chased|pursued", ["a squirrel", "the mail carrier", "+two ducks"]),
            ("ate|devoured", ["its food", "+some apples", "a carrot"]),
            ("carried", ["a stick", "a toy", "an old shoe"]),
        ],
        "places": ["in the yard|in the backyard", "by the river|near the river", "on the farm"],
    },
    "music": {
        "agents": ["a musician|a performer", "the band|the group", "a student", "an old singer"],
        "actions": [
            ("played|performed", ["a song|a tune", "a sad ballad", "a jazz piece"]),
            ("sang", ["a ballad", "the national anthem", "a lullaby"]),
            ("recorded", ["a new album", "a short song|a short tune", "a demo"]),
        ],
        "places": ["on stage|on the stage", "in the street", "at the concert hall", "in a studio"],
    },
}
PAST_PARTICIPLES = {
    "ate": "eaten",
    "threw": "thrown",
    "wrote": "written",
    "sang": "sung",
    "made": "made",
    "cut": "cut",
    "won": "won",
}
SIM_DERIVATIONS = [
    ("paraphrase", 22),
    ("drop", 12),
    ("minor", 12),
    ("agent", 10),
    ("object", 10),
    ("agent_object", 8),
    ("action", 6),
    ("same_domain", 8),
    ("other_domain", 12),
]
SIM_SCORES = {
    "drop": 4.0,
    "drop_both": 3.6,
    "minor": 3.2,
    "minor_both": 2.8,
    "agent": 2.8,
    "object": 2.4,
    "agent_object": 2.0,
    "action": 1.6,
    "same_domain": 1.0,
    "other_domain": 0.0,
}


def _frame(rng: random.Random, domain: str) -> dict:
    d = SIM_DOMAINS[domain]
    action = rng.randrange(len(d["actions"]))
    return {
        "domain": domain,
        "agent": rng.choice(d["agents"]),
        "action": action,
        "object": rng.choice(d["actions"][action][1]),
        "place": rng.choice(d["places"]) if rng.random() < 0.6 else None,
        "time": rng.choice(SIM_TIMES) if rng.random() < 0.5 else None,
    }


def _realise(rng: random.Random, frame: dict, avoid: tuple | None = None) -> tuple[str, tuple]:
    """Render a frame; returns the sentence and (template, synonym choices) for comparison."""
    d = SIM_DOMAINS[frame["domain"]]
    verbs_spec = d["actions"][frame["action"]][0]
    for _ in range(50):
        choice = {
            "agent": rng.choice(words(frame["agent"])),
            "verb": rng.choice(words(verbs_spec)),
            "object": rng.choice(words(frame["object"])),
            "place": rng.choice(words(frame["place"])) if frame["place"] else "",
            "time": rng.choice(words(frame["time"])) if frame["time"] else "",
        }
        templates = ["active", "passive"]
        if frame["time"]:
            templates.append("time_first")
        if frame["place"]:
            templates.append("place_first")
        template = rng.choice(templates)
        signature = (template, tuple(sorted(choice.items())))
        if avoid is None or signature != avoid:
            break
    obj = choice["object"]
    plural = obj.startswith("+")
    obj = obj.lstrip("+")
    verb = choice["verb"]
    place = f" {choice['place']}" if choice["place"] else ""
    time = f" {choice['time']}" if choice["time"] else ""
    if template == "active":
        text = f"{choice['agent']} {verb} {obj}{place}{time}"
    elif template == "passive":
        pp = PAST_PARTICIPLES.get(verb, verb)
        text = f"{obj} {'were' if plural else 'was'} {pp} by {choice['agent']}{place}{time}"
    elif template == "time_first":
        text = f"{choice['time']}, {choice['agent']} {verb} {obj}{place}"
    else:
        text = f"{choice['place']}, {choice['agent']} {verb} {obj}{time}"
    return cap(text) + ".", signature


def _other(rng: random.Random, options: list[str], current: str) -> str:
    return rng.choice([o for o in options if o != current])


def make_pair(rng: SplitRandom) -> dict:
    domains = list(SIM_DOMAINS)
    domain = rng.choice_any(domains)
    d = SIM_DOMAINS[domain]
    a = _frame(rng, domain)
    kind = pick_weighted(rng, SIM_DERIVATIONS)
    b = dict(a)
    if kind == "paraphrase":
        score_key = None
    elif kind == "drop":
        if not a["place"] and not a["time"]:
            a["place"] = b["place"] = rng.choice(d["places"])
        present = [k for k in ("place", "time") if a[k]]
        if len(present) == 2 and rng.random() < 0.3:
            b["place"] = b["time"] = None
            score_key = "drop_both"
        else:
            b[rng.choice(present)] = None
            score_key = "drop"
    elif kind == "minor":
        if not a["place"] and not a["time"]:
            a["place"] = b["place"] = rng.choice(d["places"])
        present = [k for k in ("place", "time") if a[k]]
        changed = present if (len(present) == 2 and rng.random() < 0.3) else [rng.choice(present)]
        for k in changed:
            b[k] = _other(rng, d["places"] if k == "place" else SIM_TIMES, a[k])
        score_key = "minor_both" if len(changed) == 2 else "minor"
    elif kind in ("agent", "object", "agent_object"):
        if kind in ("agent", "agent_object"):
            b["agent"] = _other(rng, d["agents"], a["agent"])
        if kind in ("object", "agent_object"):
            b["object"] = _other(rng, d["actions"][a["action"]][1], a["object"])
        score_key = kind
    elif kind == "action":
        b["action"] = _other(rng, list(range(len(d["actions"]))), a["action"])
        b["object"] = rng.choice(d["actions"][b["action"]][1])
        score_key = "action"
    elif kind == "same_domain":
        b = _frame(rng, domain)
        b["agent"] = _other(rng, d["agents"], a["agent"])
        b["action"] = _other(rng, list(range(len(d["actions"]))), a["action"])
        b["object"] = rng.choice(d["actions"][b["action"]][1])
        score_key = "same_domain"
    else:
        b = _frame(rng, rng.choice_any([x for x in domains if x != domain]))
        score_key = "other_domain"
    text_a, sig_a = _realise(rng, a)
    text_b, sig_b = _realise(rng, b, avoid=sig_a)
    if score_key is None:
        # Same content: 5.0, less 0.2 for each slot that uses a different synonym.
        changed = sum(1 for x, y in zip(sig_a[1], sig_b[1], strict=True) if x != y)
        score = max(4.4, 5.0 - 0.2 * changed)
    else:
        score = SIM_SCORES[score_key]
        if score_key == "other_domain" and a["time"] and a["time"] == b["time"]:
            score = 0.4  # unrelated, but they share when it happened
    if rng.random() < 0.5:
        text_a, text_b = text_b, text_a
    return {"text_a": text_a, "text_b": text_b, "score": round(score, 1)}


# --------------------------------------------------------------------------------------------
# 5. topics: multilabel news snippets (1-2 of business, health, politics, sports, technology)

TOPIC_LABELS = ["business", "health", "politics", "sports", "technology"]
T_FILL = {
    "team": words(
        "Eastfield Rovers|Kingsport United|the Westbury Falcons|Ashford Athletic|Millbrook "
        "Rangers|the Oakridge Wanderers"
    ),
    "company": words(
        "Acme|Northwind|Globex|Initech|Silverline|Redwood Foods|Orion Motors|Brightstar Retail"
    ),
    "pharma": words("Meridian Pharma|Crescent Biotech|Apex Pharma|Novagen|Sterling Health"),
    "techco": words("Nimbus|Helix Labs|Vantage Software|Kestrel Devices|Pixelwave|Quantix"),
    "country": words("France|Japan|Brazil|Kenya|Canada|India|Mexico|Norway|Poland|Vietnam"),
    "device": words("smartphone|laptop|tablet|smartwatch|headset|home robot|electric scooter"),
    "disease": words("diabetes|heart disease|asthma|skin cancer|malaria|dementia|the flu"),
    "sport": words("tennis|football|basketball|rugby|cycling|cricket|hockey|swimming"),
    "n": words("two|three|four|five|six|ten|twelve|twenty"),
    "num": words("12|25|40|75|150|300|500|800"),
    "pct": words("2|3|4|5|6|8|11|15"),
    "day": words("Monday|Tuesday|Wednesday|Thursday|Friday|the weekend"),
    "event": words("World Cup|Olympics|national championship|league final|cup final|marathon"),
    "law": words("housing|education|pension|immigration|climate|transport|tax"),
    "body": words("parliament|the senate|the city council|lawmakers|the cabinet"),
    "habit": words("poor sleep|sugary drinks|long commutes|daily walks|eating fish|loud music"),
    "ward": words("children's ward|cancer unit|maternity ward|emergency room|mental health clinic"),
}
TOPIC_TEMPLATES = {
    ("sports",): [
        "{team} beat {team2} in the {event} on {day}.",
        "The {sport} star broke the world record in front of a home crowd.",
        "{team} fans celebrated the league title in the streets.",
        "The coach praised her players after their {n}th straight win.",
        "A teenage runner won the {event} in record time.",
        "{team} will face {team2} in the semi-final next week.",
        "The goalkeeper saved a penalty in the final minute of the match.",
        "The {sport} season opens on {day} with {n} new teams.",
    ],
    ("politics",): [
        "{body_cap} passed a new {law} bill on {day}.",
        "Voters in {country} head to the polls next week.",
        "The prime minister faced tough questions from opposition leaders.",
        "The senator announced she will run for governor.",
        "Diplomats from {n} countries met to discuss the border dispute.",
        "The opposition party called for an early election in {country}.",
        "The president vetoed the {law} reform passed by {body}.",
        "Protesters marched to the parliament to demand new elections.",
    ],
    ("technology",): [
        "{techco} unveiled a new {device} with a faster chip.",
        "The latest software update fixes several security bugs.",
        "Engineers built a robot that can fold laundry.",
        "A new app lets users translate street signs with their camera.",
        "Researchers tested a battery that charges in {n} minutes.",
        "{techco} released an open source version of its AI model.",
        "The new {device} runs for {n} days on a single charge.",
        "Hackers found a flaw in a popular web browser.",
    ],
    ("health",): [
        "Doctors recommend at least {n} hours of sleep each night.",
        "A new study links {habit} to a higher risk of {disease}.",
        "The hospital opened a new {ward} on {day}.",
        "Flu cases rose sharply across {country} this winter.",
        "Nurses say drinking more water helps patients recover faster.",
        "A trial found the new treatment cut {disease} symptoms in half.",
        "Health experts urge parents to vaccinate children before school starts.",
        "Eating more vegetables may protect against {disease}, researchers say.",
    ],
    ("business",): [
        "Shares of {company} rose {pct} percent after strong earnings.",
        "{company} agreed to buy {company2} for {n} billion dollars.",
        "The startup raised {num} million dollars from investors.",
        "Retail sales fell for the {n}th month in a row.",
        "{company} will cut {num} jobs to reduce costs.",
        "The central bank kept interest rates unchanged on {day}.",
        "Investors worry that rising costs will hurt profits at {company}.",
        "{company} opened {n} new stores across {country}.",
    ],
    ("business", "sports"): [
        "{team} signed a {num} million dollar sponsorship deal with {company}.",
        "Ticket sales for the {event} brought in record profits.",
        "{company} bought the naming rights to the {team} stadium.",
        "Investors paid {n} billion dollars to buy {team}.",
        "The {sport} league signed a new television deal worth {num} million dollars.",
    ],
    ("business", "politics"): [
        "The government raised taxes on large companies like {company}.",
        "{body_cap} approved new rules for banks and investors.",
        "The trade minister blamed the new tariffs for falling company profits.",
        "The prime minister met business leaders to discuss the {law} plan.",
        "Regulators in {country} blocked the merger of {company} and {company2}.",
    ],
    ("business", "technology"): [
        "Shares of {techco} jumped after it launched a new {device}.",
        "{techco} will invest {n} billion dollars in new chip factories.",
        "Sales of the new {device} from {techco} beat analyst forecasts.",
        "{company} bought the software startup {techco} for {num} million dollars.",
    ],
    ("health", "technology"): [
        "A new app helps doctors detect {disease} earlier.",
        "Researchers used AI to design a new drug for {disease}.",
        "The smartwatch can now warn users about irregular heartbeats.",
        "Hospitals are testing robots that deliver medicine to patients.",
    ],
    ("health", "politics"): [
        "The health minister announced free vaccines for all children.",
        "{body_cap} voted to ban smoking in public parks.",
        "The government will fund {n} new hospitals in {country}.",
        "Lawmakers debated a tax on sugary drinks to fight {disease}.",
    ],
    ("health", "sports"): [
        "The striker will miss the rest of the season with a knee injury.",
        "Doctors cleared the {sport} star to play again after a concussion.",
        "{team} hired a nutrition expert to keep players healthy.",
        "The marathon runner collapsed from heat stroke but is recovering in hospital.",
    ],
    ("politics", "technology"): [
        "The government plans new laws to regulate AI chatbots.",
        "Lawmakers questioned {techco} executives about user privacy.",
        "{country} will ban the use of facial recognition by police.",
        "The minister wants every school to teach coding by next year.",
    ],
    ("politics", "sports"): [
        "The president congratulated the national team after the {event} win.",
        "{country} will boycott the {event} over the border dispute.",
        "The mayor promised public money for a new {team} stadium.",
    ],
    ("business", "health"): [
        "Drug maker {pharma} reported record profits from its {disease} medicine.",
        "Shares of {pharma} fell after its {disease} drug failed a trial.",
        "The insurance company raised prices for patients with {disease}.",
    ],
}


def make_topic(rng: SplitRandom) -> dict:
    keys = list(TOPIC_TEMPLATES)
    singles = [k for k in keys if len(k) == 1]
    pairs = [k for k in keys if len(k) == 2]
    labels = rng.choice_any(singles) if rng.random() < 0.6 else rng.choice_any(pairs)
    fill = {name: rng.choice(options) for name, options in T_FILL.items()}
    fill["team2"] = _other(rng, T_FILL["team"], fill["team"])
    fill["company2"] = _other(rng, T_FILL["company"], fill["company"])
    fill["body_cap"] = cap(fill["body"])
    text = cap(rng.choice(TOPIC_TEMPLATES[labels]).format(**fill))
    text = text.replace("twoth", "second").replace("threeth", "third").replace("fiveth", "fifth")
    text = text.replace("twelveth", "twelfth").replace("twentyth", "twentieth")
    return {"text": text, "topics": sorted(labels)}


# --------------------------------------------------------------------------------------------
# task registry, YAML, validation, writing

TASKS = {
    "news_tagging": {
        "make": make_news,
        "key": lambda r: tuple(r["tokens"]),
        "yaml": """name: news_tagging
type: token
heads:
  - {name: ner, type: tagging, scheme: IOB2}
  - {name: pos, type: tagging}
text_fields: [tokens]
train: news_tagging/train.jsonl
validation: news_tagging/validation.jsonl
test: news_tagging/test.jsonl
""",
    },
    "reviews": {
        "make": make_review,
        "key": lambda r: r["text"],
        "yaml": """name: reviews
type: sequence
heads:
  - name: sentiment
    type: classification
    labels: [negative, neutral, positive]
text_fields: [text]
train: reviews/train.jsonl
validation: reviews/validation.jsonl
test: reviews/test.jsonl
""",
    },
    "questions": {
        "make": make_question,
        "key": lambda r: r["text"],
        "yaml": "name: questions\ntype: sequence\nheads:\n"
        f"  - name: coarse\n    type: classification\n    labels: [{', '.join(COARSE_LABELS)}]\n"
        "  - name: fine\n    type: classification\n"
        "    # Two fine labels (ENTY:plant, NUM:temperature) never occur in the data.\n"
        "    labels:\n"
        + "".join(
            f"      - {label}\n" for label in sorted([f for f, _ in FINE_WEIGHTS] + FINE_UNUSED)
        )
        + "text_fields: [text]\n"
        "train: questions/train.jsonl\nvalidation: questions/validation.jsonl\ntest: "
        "questions/test.jsonl\n",
    },
    "similarity": {
        "make": make_pair,
        "key": lambda r: (r["text_a"], r["text_b"]),
        "yaml": """name: similarity
type: sequence
heads:
  - {name: score, type: regression}
text_fields: [text_a, text_b]
train: similarity/train.jsonl
validation: similarity/validation.jsonl
test: similarity/test.jsonl
""",
    },
    "topics": {
        "make": make_topic,
        "key": lambda r: r["text"],
        "yaml": """name: topics
type: sequence
heads:
  - name: topics
    type: multilabel
    labels: [business, health, politics, sports, technology]
text_fields: [text]
train: topics/train.jsonl
validation: topics/validation.jsonl
test: topics/test.jsonl
""",
    },
}


def _validate(task: str, splits: dict[str, list[dict]]) -> None:
    """Cheap structural checks so a broken template fails here, not in training."""
    fine_vocab = {f for f, _ in FINE_WEIGHTS} | set(FINE_UNUSED)
    for split, rows in splits.items():
        for row in rows:
            where = f"{task}/{split}: {row}"
            if task == "news_tagging":
                n = len(row["tokens"])
                assert 5 <= n <= 22 and len(row["ner"]) == n and len(row["pos"]) == n, where
                assert all(t in UPOS for t in row["pos"]), where
                for i, tag in enumerate(row["ner"]):
                    assert tag == "O" or tag[:2] in ("B-", "I-"), where
                    if tag.startswith("I-"):
                        assert row["ner"][i - 1][2:] == tag[2:], where
            elif task == "similarity":
                assert 0.0 <= row["score"] <= 5.0 and row["text_a"] != row["text_b"], where
            elif task == "questions":
                assert row["fine"] in fine_vocab and row["fine"].startswith(row["coarse"] + ":"), (
                    where
                )
            elif task == "topics":
                assert 1 <= len(row["topics"]) <= 2 and set(row["topics"]) <= set(TOPIC_LABELS), (
                    where
                )
            for field in ("text", "text_a", "text_b"):
                if field in row:
                    assert 3 <= len(row[field].split()) <= 22, where
    # A name that can stand alone as an entity must not be a word of another type's names, or
    # its NER label would be ambiguous (shared words inside multi-word names, like "United" in
    # "United States" and "United Nations", are fine: the full name decides).
    names = {
        "PER": [FIRST_NAMES, LAST_NAMES],
        "LOC": [LOCATIONS],
        "ORG": [ORG_PREFIXES, ORG_SUFFIXES, TEAM_PREFIXES, TEAM_SUFFIXES, ORG_FIXED],
        "MISC": [NATIONALITIES, LANGUAGES, EVENTS, PRIZES],
    }
    standalone = {
        "PER": LAST_NAMES,
        "LOC": [x for x in LOCATIONS if " " not in x],
        "ORG": [x for x in ORG_FIXED if " " not in x],
        "MISC": NATIONALITIES + LANGUAGES,
    }
    for group, alone in standalone.items():
        for other, lists in names.items():
            if other == group:
                continue
            other_words = {w.lower() for lst in lists for x in lst for w in x.split()}
            clash = sorted(w for w in alone if w.lower() in other_words)
            assert not clash, f"{group} names {clash} also occur in {other} names"


def generate(out: Path) -> list[Path]:
    """Write every task under ``out``; returns the written paths (relative to ``out``)."""
    written = []
    for index, (task, spec) in enumerate(TASKS.items()):
        rng = SplitRandom(SEED + 1000 * index)
        splits = build_splits(rng, spec["make"], spec["key"])
        _validate(task, splits)
        (out / task).mkdir(parents=True, exist_ok=True)
        for split, rows in splits.items():
            path = Path(task) / f"{split}.jsonl"
            data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            (out / path).write_bytes(data.encode("utf-8"))
            written.append(path)
        path = Path(f"{task}.yaml")
        (out / path).write_bytes((HEADER + spec["yaml"]).encode("utf-8"))
        written.append(path)
    return written


def check(shipped: Path) -> int:
    """Regenerate into a temp dir; 0 when every generated file matches the shipped copy."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        stale = []
        for path in generate(fresh):
            if not (shipped / path).is_file() or not filecmp.cmp(
                fresh / path, shipped / path, shallow=False
            ):
                stale.append(str(path))
    if stale:
        print(
            "tasks_data is out of date; run `python tasks_data/generate.py`. Differs:",
            ", ".join(stale),
        )
        return 1
    print("tasks_data matches generate.py")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=HERE, help="folder to write into (default: next to this script)"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the files in --out differ from a fresh run"
    )
    args = parser.parse_args(argv)
    if args.check:
        return check(args.out)
    for path in generate(args.out):
        print(args.out / path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
