"""The review page for the browser tests: the real `harness data review` on loopback, headless Chromium driving it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.support.ci import ROOT, require

OUTPUT = ROOT / "tests" / "output"  # screenshots a person should look at
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def write_spec(folder: Path, n_train: int = 60) -> Path:
    """An experiment over n_train training pairs and 5 held-out ones, files beside it."""
    def rows(prefix: str, n: int) -> str:
        return "".join(json.dumps({
            "id": f"{prefix}{i}", "output": json.dumps({"bedrooms": 2 + i % 3, "area_sqft": 900 + 37 * i,
                                                        "garage_cars": i % 3}),
            "instruction": f"Extract the listing's facts as JSON.\nListing {prefix}{i}: a {2 + i % 3}-bed house, "
                           f"{900 + 37 * i} sq ft, garage for {i % 3} car(s), near Crawford park."}) + "\n"
            for i in range(n))

    (folder / "train.jsonl").write_text(rows("p", n_train))
    (folder / "heldout.jsonl").write_text(rows("h", 5))
    spec = folder / "reviewed.yaml"
    spec.write_text(f"description: review test\ndata:\n  train: {folder}/train.jsonl\n"
                    f"  heldout: {folder}/heldout.jsonl\n")
    return spec


@contextmanager
def review_server(spec: Path, *args: str, reviewer: str = "ann") -> Iterator[str]:
    """`harness data review SPEC --port 0` in a subprocess; yields the URL it prints; stopped by SIGINT."""
    env = {**os.environ, "HARNESS_REVIEWER": reviewer, "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "data", "review", str(spec), "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                raise AssertionError(f"review server exited {proc.returncode}:\n{''.join(seen)}")
            seen.append(line)
            found = re.search(r"open (http://127\.0\.0\.1:\d+/)", line)
            if found:
                yield found.group(1)
                return
        raise AssertionError(f"no URL from the review server:\n{''.join(seen)}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def browser() -> Iterator["object"]:
    """Headless Chromium from Debian's packages under Selenium."""
    require(CHROMIUM is not None and DRIVER is not None,
            "the browser test needs Debian's chromium and chromium-driver "
            "(.ci/run installs them: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
