"""Reviewing a dataset in a real browser: a batch decided by keyboard, the decisions kept across a reload and a
restarted server, the audit log and the reviewed dataset on disk, the held-out split's own mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.review import OUTPUT, browser, review_server, write_spec


def _wait(driver, condition, timeout=15):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # a decision redraws its card: an element found a moment ago may be gone
    return WebDriverWait(driver, timeout, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
                         ).until(lambda d: condition(d))


def _badge(driver, i: int) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f"#pair-{i} .badge").text.lower()


def _press(driver, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()


def test_a_batch_reviewed_in_the_browser_survives_a_reload_and_a_restart(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    spec = write_spec(tmp_path, n_train=60)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with browser() as driver:
        with review_server(spec) as url:
            driver.get(url)
            _wait(driver, lambda d: d.find_elements(By.ID, "pair-49"))
            assert "Batch 1 of 2" in driver.page_source and "0 of 60" in driver.find_element(By.ID, "counts").text
            _press(driver, "k")  # keep pair 0; the focus moves on to pair 1
            _wait(driver, lambda d: _badge(d, 0).startswith("kept"))
            editor = driver.find_element(By.CSS_SELECTOR, "#pair-1 textarea")
            editor.click()
            editor.send_keys(Keys.END, " (checked against the listing)")
            editor.send_keys(Keys.CONTROL, Keys.ENTER)  # save the fix
            _wait(driver, lambda d: _badge(d, 1).startswith("fixed"))
            _press(driver, "d")
            _wait(driver, lambda d: _badge(d, 2).startswith("deleted"))
            for i in range(3, 50):
                _press(driver, "k")
                _wait(driver, lambda d, i=i: _badge(d, i).startswith("kept"))
            _wait(driver, lambda d: d.find_elements(By.ID, "closed"))
            assert "1 / 2 batches closed" in driver.find_element(By.ID, "batchcount").text
            driver.execute_script("window.scrollTo(0, 0)")
            driver.save_screenshot(str(OUTPUT / "review-batch.png"))

            driver.refresh()  # the page forgets nothing: the decisions come from the log
            _wait(driver, lambda d: d.find_elements(By.ID, "pair-2"))
            assert [_badge(driver, i).split(" ")[0] for i in range(3)] == ["kept", "fixed", "deleted"]
            assert driver.find_element(By.CSS_SELECTOR, "#pair-1 textarea").get_attribute("value").endswith(
                "(checked against the listing)")

        with review_server(spec, reviewer="bob") as url:  # a new server resumes at the first open batch
            driver.get(url)
            _wait(driver, lambda d: "Batch 2 of 2" in d.page_source and d.find_elements(By.ID, "pair-0"))
            assert _badge(driver, 0) == "undecided" and "50 of 60" in driver.find_element(By.ID, "counts").text
            _press(driver, "k")
            _wait(driver, lambda d: _badge(d, 0).startswith("kept · bob"))
            driver.find_element(By.ID, "reread").click()
            _wait(driver, lambda d: "Rereading 20 random reviewed pairs" in d.page_source)
            assert len(driver.find_elements(By.CSS_SELECTOR, ".pair")) == 20
            driver.save_screenshot(str(OUTPUT / "review-reread.png"))

    log = [json.loads(line) for line in (tmp_path / "train.jsonl.review.jsonl").read_text().splitlines()]
    assert len(log) == 51 and [e["decision"] for e in log[:3]] == ["keep", "fix", "delete"]
    assert {e["reviewer"] for e in log} == {"ann", "bob"} and log[-1]["batch"] == 1
    reviewed = [json.loads(line) for line in (tmp_path / "train.jsonl.reviewed.jsonl").read_text().splitlines()]
    assert [r["id"] for r in reviewed] == ["p0", "p1", *[f"p{i}" for i in range(3, 51)]]
    assert reviewed[1]["reference"].endswith("(checked against the listing)")
    diff = subprocess.run([sys.executable, "-m", "harness", "data", "review", str(spec), "--diff"],
                          capture_output=True, text=True, check=True).stderr
    assert [json.loads(line)["id"] for line in diff.splitlines()] == ["p1", "p2"]

    # The file changed under the review: the server refuses to start, naming the pair and the log line.
    train = tmp_path / "train.jsonl"
    train.write_text(train.read_text().replace("Listing p5:", "Listing p5 (edited):"))
    proc = subprocess.run([sys.executable, "-m", "harness", "data", "review", str(spec), "--port", "0",
                           "--reviewer", "ann"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "300"})
    assert proc.returncode == 2 and "pair 'p5'" in proc.stderr and "changed on disk" in proc.stderr
    assert "train.jsonl.review.jsonl:6" in proc.stderr and "Traceback" not in proc.stderr


def test_the_held_out_split_is_frozen_first_and_reviewed_only_in_its_own_mode(tmp_path):
    from selenium.webdriver.common.by import By

    spec = write_spec(tmp_path, n_train=3)
    with browser() as driver:
        with review_server(spec) as url:
            assert (tmp_path / "heldout.jsonl.frozen.json").exists()  # frozen before the training side is shown
            driver.get(url)
            _wait(driver, lambda d: d.find_elements(By.ID, "pair-2"))
            assert not driver.find_element(By.ID, "note").is_displayed()
            assert "h0" not in driver.find_element(By.ID, "main").text
        with review_server(spec, "--heldout") as url:
            driver.get(url)
            _wait(driver, lambda d: d.find_elements(By.ID, "pair-4"))
            note = driver.find_element(By.ID, "note")
            assert note.is_displayed() and "--force" in note.text and "re-freeze" in note.text
            _press(driver, "d")
            _wait(driver, lambda d: _badge(d, 0).startswith("deleted"))
            driver.save_screenshot(str(OUTPUT / "review-heldout.png"))
    assert json.loads((tmp_path / "heldout.jsonl.review.jsonl").read_text())["mode"] == "heldout"
    # the frozen split is untouched: the held-out file itself is never rewritten by a review
    check = subprocess.run([sys.executable, "-m", "harness", "check", str(spec)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
