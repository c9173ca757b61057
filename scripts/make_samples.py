#!/usr/bin/env python3
"""Generate the tiny, synthetic sample SFT datasets shipped in ``sft_ui/samples``.

The output is fully deterministic (``random.Random(1234)``, stdlib only, no
network), so running this script twice produces byte-identical files:

* ``chat.jsonl``  - TRL conversational format, one ``{"messages": [...]}`` per line.
* ``alpaca.json`` - the same knowledge as ``{"instruction", "input", "output"}`` records.

Usage (from the repository root)::

    python scripts/make_samples.py            # (re)write the files
    python scripts/make_samples.py --check    # exit 1 if the files are stale

The data is synthetic and released under CC0.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SEED = 1234
DEFAULT_OUT_DIR = Path(__file__).resolve().parent.parent / "sft_ui" / "samples"
MAX_WORDS = 60  # whole conversation, so that it fits in ~128 tokens
SYSTEM_FRACTION = 0.15
MULTI_TURN_FRACTION = 0.15
INPUT_FORM_PROBABILITY = 0.3  # share of alpaca records that use the "input" field

IDENTITY = "I am a tiny demo assistant trained with sft_ui."

SYSTEM_PROMPTS: list[str] = [
    "You are a helpful assistant.",
    "You are a helpful assistant. Answer briefly.",
    "You are a tiny demo assistant trained with sft_ui.",
    "Answer in one short sentence.",
    "You are a friendly tutor. Keep answers short and correct.",
    "You are a concise assistant.",
]


@dataclass(frozen=True)
class Item:
    """One question/answer pair plus its alpaca rendering."""

    topic: str
    question: str
    answer: str
    instruction: str
    input: str
    position: str = "any"  # "open" (greetings), "close" (thanks/bye) or "any"


def make_item(
    rng: random.Random,
    topic: str,
    question: str,
    answer: str,
    input_form: tuple[str, str] | None = None,
    position: str = "any",
) -> Item:
    """Build an item; with some probability use the (instruction, input) form for alpaca."""
    if input_form is not None and rng.random() < INPUT_FORM_PROBABILITY:
        instruction, inp = input_form
    else:
        instruction, inp = question, ""
    return Item(topic, question, answer, instruction, inp, position)


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------- #
# Knowledge tables (all facts checked by hand; keep them ASCII).
# --------------------------------------------------------------------------- #

# (country as used mid-sentence, capital)
CAPITALS: list[tuple[str, str]] = [
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Portugal", "Lisbon"),
    ("Japan", "Tokyo"),
    ("China", "Beijing"),
    ("India", "New Delhi"),
    ("Canada", "Ottawa"),
    ("Australia", "Canberra"),
    ("Brazil", "Brasilia"),
    ("Argentina", "Buenos Aires"),
    ("Mexico", "Mexico City"),
    ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"),
    ("Russia", "Moscow"),
    ("Norway", "Oslo"),
    ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"),
    ("Poland", "Warsaw"),
    ("Greece", "Athens"),
    ("Ireland", "Dublin"),
    ("Austria", "Vienna"),
    ("Hungary", "Budapest"),
    ("Peru", "Lima"),
    ("Chile", "Santiago"),
    ("Thailand", "Bangkok"),
    ("South Korea", "Seoul"),
    ("Turkey", "Ankara"),
    ("the United Kingdom", "London"),
    ("the United States", "Washington, D.C."),
    ("Belgium", "Brussels"),
    ("Cuba", "Havana"),
    ("Vietnam", "Hanoi"),
    ("Iceland", "Reykjavik"),
    ("the Czech Republic", "Prague"),
    ("Ghana", "Accra"),
    ("Nigeria", "Abuja"),
    ("Colombia", "Bogota"),
    ("New Zealand", "Wellington"),
    ("the Philippines", "Manila"),
    ("Iran", "Tehran"),
    ("Iraq", "Baghdad"),
    ("Saudi Arabia", "Riyadh"),
    ("Morocco", "Rabat"),
    ("Ethiopia", "Addis Ababa"),
    ("Ukraine", "Kyiv"),
    ("Romania", "Bucharest"),
    ("Venezuela", "Caracas"),
]

OPPOSITES: list[tuple[str, str]] = [
    ("hot", "cold"),
    ("big", "small"),
    ("up", "down"),
    ("happy", "sad"),
    ("fast", "slow"),
    ("open", "closed"),
    ("wet", "dry"),
    ("full", "empty"),
    ("early", "late"),
    ("in", "out"),
    ("left", "right"),
    ("day", "night"),
    ("win", "lose"),
    ("true", "false"),
    ("long", "short"),
    ("high", "low"),
    ("strong", "weak"),
    ("rich", "poor"),
    ("clean", "dirty"),
    ("thick", "thin"),
    ("loud", "quiet"),
    ("push", "pull"),
    ("buy", "sell"),
    ("above", "below"),
    ("first", "last"),
    ("always", "never"),
    ("inside", "outside"),
    ("young", "old"),
    ("yes", "no"),
    ("question", "answer"),
    ("start", "finish"),
    ("north", "south"),
    ("east", "west"),
    ("love", "hate"),
    ("safe", "dangerous"),
]

PLURALS: list[tuple[str, str]] = [
    ("cat", "cats"),
    ("dog", "dogs"),
    ("box", "boxes"),
    ("child", "children"),
    ("mouse", "mice"),
    ("man", "men"),
    ("woman", "women"),
    ("foot", "feet"),
    ("tooth", "teeth"),
    ("goose", "geese"),
    ("person", "people"),
    ("baby", "babies"),
    ("city", "cities"),
    ("leaf", "leaves"),
    ("knife", "knives"),
    ("wolf", "wolves"),
    ("bus", "buses"),
    ("church", "churches"),
    ("dish", "dishes"),
    ("potato", "potatoes"),
    ("tomato", "tomatoes"),
    ("sheep", "sheep"),
    ("deer", "deer"),
    ("ox", "oxen"),
    ("book", "books"),
    ("apple", "apples"),
    ("glass", "glasses"),
    ("hero", "heroes"),
    ("wife", "wives"),
    ("story", "stories"),
    ("key", "keys"),
    ("toy", "toys"),
    ("house", "houses"),
    ("fox", "foxes"),
    ("party", "parties"),
]

# (thing as used mid-sentence, color, full answer sentence)
COLORS: list[tuple[str, str, str]] = [
    ("grass", "green", "Grass is green."),
    ("a clear daytime sky", "blue", "A clear daytime sky is blue."),
    ("fresh snow", "white", "Fresh snow is white."),
    ("a ripe banana", "yellow", "A ripe banana is yellow."),
    ("coal", "black", "Coal is black."),
    ("a ripe tomato", "red", "A ripe tomato is usually red."),
    ("milk", "white", "Milk is white."),
    ("a lemon", "yellow", "A ripe lemon is yellow."),
    ("a carrot", "orange", "A carrot is usually orange."),
    ("milk chocolate", "brown", "Milk chocolate is brown."),
    ("a crow", "black", "A crow is black."),
    ("a ripe strawberry", "red", "A ripe strawberry is red."),
    ("a pumpkin", "orange", "A pumpkin is usually orange."),
    ("an eggplant", "purple", "An eggplant is usually dark purple."),
    ("a lime", "green", "A lime is green."),
    ("a fire truck", "red", "A fire truck is usually red."),
    ("an orange", "orange", "An orange is orange."),
    ("a leaf in summer", "green", "A leaf in summer is usually green."),
    ("a cherry", "red", "A ripe cherry is usually red."),
    ("a polar bear", "white", "A polar bear looks white."),
    ("a flamingo", "pink", "A flamingo is pink."),
    ("an egg yolk", "yellow", "An egg yolk is yellow."),
]

# (singular big unit, plural big unit, plural small unit, factor)
UNITS: list[tuple[str, str, str, int]] = [
    ("kilometer", "kilometers", "meters", 1000),
    ("meter", "meters", "centimeters", 100),
    ("centimeter", "centimeters", "millimeters", 10),
    ("kilogram", "kilograms", "grams", 1000),
    ("liter", "liters", "milliliters", 1000),
    ("hour", "hours", "minutes", 60),
    ("minute", "minutes", "seconds", 60),
    ("day", "days", "hours", 24),
    ("week", "weeks", "days", 7),
    ("year", "years", "months", 12),
    ("foot", "feet", "inches", 12),
    ("yard", "yards", "feet", 3),
    ("metric ton", "metric tons", "kilograms", 1000),
    ("pound", "pounds", "ounces", 16),
    ("decade", "decades", "years", 10),
    ("century", "centuries", "years", 100),
    ("dozen", "dozen", "eggs", 12),
]

UNIT_FACTS: list[tuple[str, str, str, str]] = [
    # (question, answer, alpaca instruction, alpaca input); input "" -> question form only
    ("How many centimeters are in one inch?", "One inch is exactly 2.54 centimeters.", "", ""),
    ("How many days are in a leap year?", "A leap year has 366 days.", "", ""),
    ("How many days are in a normal year?", "A normal year has 365 days.", "", ""),
    ("How many seconds are in one hour?", "There are 3600 seconds in one hour.", "", ""),
    ("How many yards are in one mile?", "There are 1760 yards in one mile.", "", ""),
    ("How many grams are in half a kilogram?", "There are 500 grams in half a kilogram.", "", ""),
]

SOUNDS: list[tuple[str, str, str]] = [
    # (animal, verb phrase, sound word)
    ("dog", "barks", "Woof"),
    ("cat", "meows", "Meow"),
    ("cow", "moos", "Moo"),
    ("duck", "quacks", "Quack"),
    ("sheep", "bleats", "Baa"),
    ("pig", "oinks", "Oink"),
    ("horse", "neighs", "Neigh"),
    ("lion", "roars", "Roar"),
    ("owl", "hoots", "Hoot"),
    ("snake", "hisses", "Hiss"),
    ("frog", "croaks", "Ribbit"),
    ("bee", "buzzes", "Buzz"),
    ("rooster", "crows", "Cock-a-doodle-doo"),
    ("mouse", "squeaks", "Squeak"),
    ("wolf", "howls", "Awoo"),
    ("donkey", "brays", "Hee-haw"),
]

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
ORDINALS = [
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
    "eleventh",
    "twelfth",
]
MONTH_DAYS: dict[str, str] = {
    "January": "January has 31 days.",
    "February": "February has 28 days, or 29 in a leap year.",
    "March": "March has 31 days.",
    "April": "April has 30 days.",
    "June": "June has 30 days.",
    "September": "September has 30 days.",
    "October": "October has 31 days.",
    "December": "December has 31 days.",
}

SPELL_WORDS: list[str] = [
    "apple",
    "house",
    "water",
    "green",
    "tiger",
    "river",
    "happy",
    "school",
    "friend",
    "garden",
    "yellow",
    "planet",
    "window",
    "pencil",
    "banana",
    "family",
    "summer",
    "winter",
    "rabbit",
    "doctor",
    "music",
    "bread",
    "cloud",
    "light",
    "table",
    "chair",
    "mother",
    "orange",
]

DEFINITIONS: list[tuple[str, str]] = [
    ("noun", "A noun is a word that names a person, place, or thing."),
    ("verb", "A verb is a word that describes an action or a state."),
    ("adjective", "An adjective is a word that describes a noun."),
    ("planet", "A planet is a large body that orbits a star."),
    ("mammal", "A mammal is a warm-blooded animal that feeds its young with milk."),
    ("triangle", "A triangle is a shape with three sides and three corners."),
    ("square", "A square is a shape with four equal sides and four right angles."),
    ("island", "An island is a piece of land surrounded by water."),
    ("volcano", "A volcano is a mountain that can erupt hot lava, ash, and gas."),
    ("river", "A river is a large natural stream of fresh water."),
    ("library", "A library is a place where people can borrow and read books."),
    ("dictionary", "A dictionary is a book that lists words and their meanings."),
    ("thermometer", "A thermometer is a tool that measures temperature."),
    ("calendar", "A calendar is a chart that shows the days, weeks, and months of a year."),
    ("vowel", "A vowel is one of the letters a, e, i, o, and u."),
    ("prime number", "A prime number is a whole number greater than 1 that is divisible only by 1 and itself."),
    ("even number", "An even number is a whole number that can be divided by 2 with no remainder."),
    ("odd number", "An odd number is a whole number that leaves a remainder of 1 when divided by 2."),
    ("herbivore", "A herbivore is an animal that eats only plants."),
    ("carnivore", "A carnivore is an animal that eats meat."),
    ("omnivore", "An omnivore is an animal that eats both plants and meat."),
    ("desert", "A desert is a very dry area that gets little rain."),
    ("peninsula", "A peninsula is land that is almost surrounded by water."),
    ("synonym", "A synonym is a word with the same or a similar meaning as another word."),
    ("antonym", "An antonym is a word with the opposite meaning of another word."),
    ("habitat", "A habitat is the natural home of an animal or plant."),
    ("photosynthesis", "Photosynthesis is how plants use sunlight, water, and carbon dioxide to make food."),
    ("fraction", "A fraction is a number that shows a part of a whole, like 1/2."),
]

# (question, answer, position)
GREETINGS: list[tuple[str, str, str]] = [
    ("Hello!", "Hello! How can I help you today?", "open"),
    ("Hi there.", "Hi! What can I do for you?", "open"),
    ("Good morning!", "Good morning! How can I help you?", "open"),
    ("Good evening.", "Good evening! What would you like to know?", "open"),
    ("Hey, how are you?", "I am doing well, thank you. How can I help you?", "open"),
    ("How are you today?", "I am fine, thank you for asking. What can I do for you?", "open"),
    ("Nice to meet you.", "Nice to meet you too! How can I help?", "open"),
    ("Sorry to bother you.", "No problem at all. What do you need?", "open"),
    ("Thank you!", "You are welcome!", "close"),
    ("Thanks for your help.", "You are welcome. I am happy to help!", "close"),
    ("Thanks a lot, that was useful.", "I am glad it helped!", "close"),
    ("Goodbye!", "Goodbye! Have a nice day.", "close"),
    ("See you later.", "See you later! Take care.", "close"),
    ("Good night.", "Good night! Sleep well.", "close"),
]

IDENTITY_QA: list[tuple[str, str]] = [
    ("Who are you?", IDENTITY),
    ("What are you?", IDENTITY),
    ("Introduce yourself.", "Hello! " + IDENTITY),
    ("What is your name?", IDENTITY + " I do not have a personal name."),
    ("Are you a human?", "No. " + IDENTITY),
    ("Who made you?", IDENTITY),
    ("Tell me about yourself.", IDENTITY + " I answer short, simple questions."),
    ("What can you do?", IDENTITY + " I can answer simple questions about words, numbers, and places."),
    ("Are you a big language model?", "No. " + IDENTITY),
]


# --------------------------------------------------------------------------- #
# Topic generators. Each returns a list of items; the RNG only picks templates
# and numbers, so the output is deterministic for a fixed seed.
# --------------------------------------------------------------------------- #


def gen_capitals(rng: random.Random) -> list[Item]:
    templates = [
        "What is the capital of {c}?",
        "What's the capital city of {c}?",
        "Which city is the capital of {c}?",
        "Name the capital of {c}.",
        "Tell me the capital of {c}.",
        "What city is the capital of {c}?",
    ]
    items = []
    for country, capital in CAPITALS:
        q = rng.choice(templates).format(c=country)
        if rng.random() < 0.5:
            a = f"The capital of {country} is {capital}."
        else:
            a = f"{capital} is the capital of {country}."
        bare = country.removeprefix("the ")
        items.append(make_item(rng, "capital", q, a, ("Name the capital city of the given country.", bare)))
    return items


def gen_addition(rng: random.Random, count: int = 40) -> list[Item]:
    templates = [
        "What is {a} plus {b}?",
        "What is {a} + {b}?",
        "Add {a} and {b}.",
        "Calculate {a} + {b}.",
        "What do you get if you add {a} and {b}?",
        "What is the sum of {a} and {b}?",
    ]
    seen: set[tuple[int, int]] = set()
    items = []
    while len(items) < count:
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        q = rng.choice(templates).format(a=a, b=b)
        ans = f"{a} + {b} = {a + b}."
        items.append(make_item(rng, "addition", q, ans, ("Add the two numbers.", f"{a} and {b}")))
    return items


def gen_multiplication(rng: random.Random, count: int = 40) -> list[Item]:
    templates = [
        "What is {a} times {b}?",
        "What is {a} x {b}?",
        "Multiply {a} by {b}.",
        "Calculate {a} * {b}.",
        "What is the product of {a} and {b}?",
        "What is {a} multiplied by {b}?",
    ]
    seen: set[tuple[int, int]] = set()
    items = []
    while len(items) < count:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        q = rng.choice(templates).format(a=a, b=b)
        ans = f"{a} x {b} = {a * b}."
        items.append(make_item(rng, "multiplication", q, ans, ("Multiply the two numbers.", f"{a} and {b}")))
    return items


def gen_even_odd(rng: random.Random, count: int = 16) -> list[Item]:
    templates = [
        "Is {n} even or odd?",
        "Is the number {n} odd or even?",
        "Tell me if {n} is even or odd.",
    ]
    numbers = rng.sample(range(1, 101), count)
    items = []
    for n in numbers:
        q = rng.choice(templates).format(n=n)
        ans = f"{n} is {'even' if n % 2 == 0 else 'odd'}."
        items.append(make_item(rng, "even_odd", q, ans, ("Say whether the number is even or odd.", str(n))))
    return items


def gen_opposites(rng: random.Random) -> list[Item]:
    templates = [
        "What is the opposite of {w}?",
        'What is the opposite of the word "{w}"?',
        "Give me the opposite of {w}.",
        "What word means the opposite of {w}?",
        "What is an antonym of {w}?",
    ]
    items = []
    for left, right in OPPOSITES:
        w, o = (left, right) if rng.random() < 0.7 else (right, left)
        q = rng.choice(templates).format(w=w)
        ans = f"The opposite of {w} is {o}."
        items.append(make_item(rng, "opposite", q, ans, ("Give the opposite of the word.", w)))
    return items


def gen_plurals(rng: random.Random) -> list[Item]:
    templates = [
        "What is the plural of {w}?",
        'What is the plural form of "{w}"?',
        "How do you say more than one {w}?",
        "Give the plural of the word {w}.",
    ]
    items = []
    for singular, plural in PLURALS:
        q = rng.choice(templates).format(w=singular)
        if singular == plural:
            ans = f"The plural of {singular} is also {plural}."
        else:
            ans = f"The plural of {singular} is {plural}."
        items.append(make_item(rng, "plural", q, ans, ("Give the plural form of the word.", singular)))
    return items


def gen_colors(rng: random.Random) -> list[Item]:
    templates = [
        "What color is {t}?",
        "What colour is {t}?",
        "Which color is {t}?",
        "Tell me the color of {t}.",
    ]
    items = []
    for thing, _color, sentence in COLORS:
        q = rng.choice(templates).format(t=thing)
        items.append(make_item(rng, "color", q, sentence, ("Name the usual color of the given thing.", thing)))
    return items


def gen_units(rng: random.Random) -> list[Item]:
    templates = [
        "How many {small} are in {qty}?",
        "How many {small} are there in {qty}?",
        "Convert {qty} to {small}.",
        "{Qty} is how many {small}?",
    ]
    items = []
    for singular, plural, small, factor in UNITS:
        n_big = rng.randint(2, 9)
        for n in (1, n_big):
            if singular == "dozen":
                qty = "a dozen" if n == 1 else f"{n} dozen"
            else:
                qty = f"one {singular}" if n == 1 else f"{n} {plural}"
            if singular == "dozen":
                q = "How many is a dozen?" if n == 1 else f"How many eggs are in {qty} eggs?"
                ans = "A dozen is 12." if n == 1 else f"{cap(qty)} eggs is {n * factor} eggs."
                items.append(make_item(rng, "unit", q, ans))
                continue
            q = rng.choice(templates).format(small=small, qty=qty, Qty=cap(qty))
            ans = f"{cap(qty)} is {n * factor} {small}."
            items.append(make_item(rng, "unit", q, ans, ("Convert the quantity.", f"{qty} to {small}")))
    for q, ans, _ins, _inp in UNIT_FACTS:
        items.append(make_item(rng, "unit", q, ans))
    return items


def gen_sounds(rng: random.Random) -> list[Item]:
    templates = [
        "What sound does a {a} make?",
        "What noise does a {a} make?",
        "How does a {a} sound?",
        "What does a {a} say?",
    ]
    items = []
    for animal, verb, word in SOUNDS:
        q = rng.choice(templates).format(a=animal)
        ans = f'A {animal} {verb}. It sounds like "{word}!"'
        if rng.random() < 0.5:
            ans = f"A {animal} {verb}."
        items.append(make_item(rng, "sound", q, ans, ("Say what sound the animal makes.", animal)))
    return items


def gen_calendar(rng: random.Random) -> list[Item]:
    items = []
    after_t = ["What day comes after {d}?", "Which day is after {d}?", "What is the day after {d}?"]
    before_t = ["What day comes before {d}?", "Which day is before {d}?", "What is the day before {d}?"]
    for i, day in enumerate(DAYS):
        nxt, prv = DAYS[(i + 1) % 7], DAYS[(i - 1) % 7]
        items.append(
            make_item(
                rng,
                "calendar",
                rng.choice(after_t).format(d=day),
                f"The day after {day} is {nxt}.",
                ("Name the day that comes after the given day.", day),
            )
        )
        items.append(
            make_item(
                rng,
                "calendar",
                rng.choice(before_t).format(d=day),
                f"The day before {day} is {prv}.",
                ("Name the day that comes before the given day.", day),
            )
        )
    month_after_t = ["What month comes after {m}?", "Which month follows {m}?", "What is the month after {m}?"]
    for i, month in enumerate(MONTHS):
        nxt = MONTHS[(i + 1) % 12]
        items.append(
            make_item(
                rng,
                "calendar",
                rng.choice(month_after_t).format(m=month),
                f"The month after {month} is {nxt}.",
                ("Name the month that comes after the given month.", month),
            )
        )
    nth_t = [
        "What is the {o} month of the year?",
        "Which month is the {o} month of the year?",
        "Name the {o} month of the year.",
    ]
    for i, month in enumerate(MONTHS):
        items.append(
            make_item(
                rng,
                "calendar",
                rng.choice(nth_t).format(o=ORDINALS[i]),
                f"The {ORDINALS[i]} month of the year is {month}.",
            )
        )
    days_t = ["How many days does {m} have?", "How many days are in {m}?"]
    for month, ans in MONTH_DAYS.items():
        items.append(make_item(rng, "calendar", rng.choice(days_t).format(m=month), ans))
    items.append(make_item(rng, "calendar", "How many days are in a week?", "There are 7 days in a week."))
    items.append(make_item(rng, "calendar", "How many months are in a year?", "There are 12 months in a year."))
    return items


def gen_spelling(rng: random.Random) -> list[Item]:
    templates = [
        "How do you spell {w}?",
        'Spell the word "{w}" letter by letter.',
        "Can you spell {w}?",
        "Spell {w} one letter at a time.",
    ]
    items = []
    for word in SPELL_WORDS:
        q = rng.choice(templates).format(w=word)
        ans = f"{cap(word)} is spelled {'-'.join(word.upper())}."
        items.append(make_item(rng, "spelling", q, ans, ("Spell the word letter by letter.", word)))
    return items


def gen_definitions(rng: random.Random) -> list[Item]:
    templates = [
        "What is {art} {w}?",
        "Define {w}.",
        'What does "{w}" mean?',
        "Explain what {art} {w} is in one sentence.",
    ]
    items = []
    for word, ans in DEFINITIONS:
        art = "an" if word[0] in "aeiou" else "a"
        template = rng.choice(templates)
        if word == "photosynthesis":
            template = "What is photosynthesis?"
        q = template.format(w=word, art=art)
        items.append(make_item(rng, "definition", q, ans, ("Define the word.", word)))
    return items


def gen_greetings(rng: random.Random) -> list[Item]:
    return [make_item(rng, "greeting", q, a, position=pos) for q, a, pos in GREETINGS]


def gen_identity(rng: random.Random) -> list[Item]:
    return [make_item(rng, "identity", q, a) for q, a in IDENTITY_QA]


GENERATORS: list[Callable[[random.Random], list[Item]]] = [
    gen_capitals,
    gen_addition,
    gen_multiplication,
    gen_even_odd,
    gen_opposites,
    gen_plurals,
    gen_colors,
    gen_units,
    gen_sounds,
    gen_calendar,
    gen_spelling,
    gen_definitions,
    gen_greetings,
    gen_identity,
]


# --------------------------------------------------------------------------- #
# Assembly
# --------------------------------------------------------------------------- #


def word_count(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"].split()) for m in messages)


def build_pool(rng: random.Random) -> list[Item]:
    pool: list[Item] = []
    seen: set[str] = set()
    for gen in GENERATORS:
        for item in gen(rng):
            if item.question in seen:
                raise ValueError(f"duplicate question: {item.question!r}")
            seen.add(item.question)
            pool.append(item)
    return pool


def build_conversations(rng: random.Random, pool: list[Item]) -> list[list[Item | str]]:
    """Return conversations as lists: optional system prompt (str) followed by items."""
    items = list(pool)
    rng.shuffle(items)
    total = int(len(items) / (1 + MULTI_TURN_FRACTION))
    n_multi = round(total * MULTI_TURN_FRACTION)
    n_system = round(total * SYSTEM_FRACTION)

    convs: list[list[Item | str]] = []
    # Multi-turn: pair items; greetings open, thanks/goodbye close.
    order = {"open": 0, "any": 1, "close": 2}
    for _ in range(n_multi):
        first = items.pop()
        for j in range(len(items) - 1, -1, -1):
            cand = items[j]
            same_side = first.position == cand.position and first.position != "any"
            words = len((first.question + " " + first.answer + " " + cand.question + " " + cand.answer).split())
            if not same_side and words < MAX_WORDS:
                second = items.pop(j)
                break
        else:  # pragma: no cover - pool is large enough
            raise RuntimeError("could not pair a multi-turn conversation")
        pair = sorted([first, second], key=lambda it: order[it.position])
        convs.append(list(pair))
    # Single-turn, some with a system prompt. "close" items (thanks/bye) read
    # oddly on their own but are still fine single-turn examples.
    for i in range(total - n_multi):
        item = items.pop()
        if i < n_system:
            convs.append([rng.choice(SYSTEM_PROMPTS), item])
        else:
            convs.append([item])
    rng.shuffle(convs)
    return convs


def to_messages(conv: list[Item | str]) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    for part in conv:
        if isinstance(part, str):
            messages.append({"role": "system", "content": part})
        else:
            messages.append({"role": "user", "content": part.question})
            messages.append({"role": "assistant", "content": part.answer})
    return messages


def render(seed: int = SEED) -> tuple[str, str, dict[str, int]]:
    """Return (chat_jsonl_text, alpaca_json_text, stats)."""
    rng = random.Random(seed)
    pool = build_pool(rng)
    convs = build_conversations(rng, pool)

    chat_lines: list[str] = []
    alpaca: list[dict[str, str]] = []
    stats = {"conversations": 0, "system": 0, "multi_turn": 0, "single_turn": 0, "alpaca": 0}
    for conv in convs:
        messages = to_messages(conv)
        if word_count(messages) >= MAX_WORDS:
            raise ValueError(f"conversation too long: {messages}")
        chat_lines.append(json.dumps({"messages": messages}, ensure_ascii=True))
        turns = [p for p in conv if isinstance(p, Item)]
        stats["conversations"] += 1
        stats["system"] += isinstance(conv[0], str)
        stats["multi_turn" if len(turns) > 1 else "single_turn"] += 1
        for item in turns:
            alpaca.append({"instruction": item.instruction, "input": item.input, "output": item.answer})
    stats["alpaca"] = len(alpaca)

    chat_text = "\n".join(chat_lines) + "\n"
    alpaca_text = json.dumps(alpaca, ensure_ascii=True, indent=1) + "\n"
    for text in (chat_text, alpaca_text):
        text.encode("ascii")  # raises if anything non-ASCII slipped in
    return chat_text, alpaca_text, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="output folder (default: sft_ui/samples)")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the files on disk differ")
    args = parser.parse_args(argv)

    chat_text, alpaca_text, stats = render()
    outputs = {"chat.jsonl": chat_text, "alpaca.json": alpaca_text}

    if args.check:
        stale = [
            name
            for name, text in outputs.items()
            if not (args.out_dir / name).is_file() or (args.out_dir / name).read_text(encoding="ascii") != text
        ]
        for name in stale:
            print(f"stale: {args.out_dir / name}", file=sys.stderr)
        return 1 if stale else 0

    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in outputs.items():
        with open(args.out_dir / name, "w", encoding="ascii", newline="\n") as fh:
            fh.write(text)
    print(" ".join(f"{k}={v}" for k, v in stats.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
