"""What a finished study leaves for its reader, on one two-seed micro study: seeds pooled as
replicates, the tidy metrics.csv, the verdict per method, a single run's own report, and the HTML
report as a real browser renders it."""

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_study_resume import micro_config

from reversalkit import cli
from reversalkit.study import Study
from reversalkit.tasks import REGISTRY


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs") / "p"
    cfg = micro_config(root).with_overrides(["iterations=2", "methods=[sft]", "seeds=[0, 1]",
                                             "bootstrap=200"])
    results = Study(cfg, print_summary=False).run()
    yield cfg, root, results
    REGISTRY.unregister("easysum")


def _greedy(root: Path, seed: int, node: str) -> dict[str, float]:
    path = root / f"seed{seed}" / "nodes" / node / "eval" / "id.greedy.jsonl.gz"
    with gzip.open(path, "rt") as fh:
        return {r["id"]: float(r["correct"]) for r in map(json.loads, fh)}


@pytest.mark.timeout(400)
def test_seeds_run_as_replicates_and_pool(pooled):
    """Each seed a full study in seed<N>/, pooled values equal each seed's own, the pooled paired CI
    of pass@1(M_t) - pass@1(M1) is the mean over problems of the seed-averaged difference."""
    cfg, root, res = pooled
    own = {s: json.loads((root / f"seed{s}" / "results.json").read_text()) for s in (0, 1)}
    assert res["seeds"] == [0, 1]
    for it in (0, 1):
        row = res["methods"]["sft"][it]
        assert row["pass1"]["id"]["seeds"] == [own[s]["methods"]["sft"][it]["eval"]["id"]["pass1"]["mean"]
                                               for s in (0, 1)]
    # the two replicates differ (own M1 init, data order, samples)
    w = [(root / f"seed{s}" / "nodes" / "m1" / "model" / "model.safetensors").read_bytes() for s in (0, 1)]
    assert w[0] != w[1]
    diffs = [np.mean([_greedy(root, s, "m1-s")[p] - _greedy(root, s, "m1")[p] for s in (0, 1)])
             for p in _greedy(root, 0, "m1")]
    gain = res["methods"]["sft"][1]["gain"]["id"]["pooled"]
    assert gain["mean"] == pytest.approx(float(np.mean(diffs)), abs=1e-12) and gain["n"] == len(diffs)
    assert gain["lo"] <= gain["mean"] <= gain["hi"]
    p1 = [res["methods"]["sft"][it]["pass1"]["id"]["seeds"] for it in (0, 1)]
    seed_gains = res["methods"]["sft"][1]["gain"]["id"]["seeds"]
    assert [g["mean"] for g in seed_gains] == pytest.approx([p1[1][s] - p1[0][s] for s in (0, 1)], abs=1e-12)
    # a rerun resumes everything
    again = []
    Study(cfg, on_event=lambda k, n: again.append(k), print_summary=False).run()
    assert "step_start" not in again


def test_metrics_csv_reads_back_with_pandas(pooled):
    pd = pytest.importorskip("pandas")
    _, root, res = pooled
    df = pd.read_csv(root / "metrics.csv")
    assert list(df.columns) == ["method", "iteration", "seed", "metric", "value"]
    assert not df.duplicated(["method", "iteration", "seed", "metric"]).any()
    p1 = df[(df.metric == "pass1_greedy_id")].set_index(["iteration", "seed"])["value"]
    for it, entry in zip((1, 2), res["methods"]["sft"]):
        assert [p1[(it, s)] for s in (0, 1)] == entry["pass1"]["id"]["seeds"]
    delta = df[(df.metric == "delta_pass1_greedy_id") & (df.iteration == 2)].set_index("seed")["value"]
    assert list(delta) == pytest.approx([g["mean"] for g in res["methods"]["sft"][1]["gain"]["id"]["seeds"]])
    sampled = df[(df.metric == "pass_at_1_sampled_id")].set_index(["iteration", "seed"])["value"]
    assert [sampled[(1, s)] for s in (0, 1)] == res["methods"]["sft"][0]["pass_k"]["1"]["seeds"]
    assert {"pass_at_4_sampled_id", "train_coverage", "improved"} <= set(df.metric)


def test_pooled_report_opens_with_the_verdict(pooled):
    _, root, res = pooled
    md = (root / "report" / "report.md").read_text()
    head = md[md.index("## What it found"):md.index("## Main table")]
    assert ("| method | progress | Δ pass@1 id, best iterate | Δ pass@1 id, last iterate | "
            "Δ pass@4 id, last") in head
    row = next(line for line in head.splitlines() if line.startswith("| sft |"))
    gain = res["methods"]["sft"][1]["gain"]["id"]["pooled"]
    assert f"M2: {gain['mean']:+.3f} [{gain['lo']:+.3f}, {gain['hi']:+.3f}]" in row
    assert row.split(" | ")[1] == ("yes" if gain["lo"] > 0 else "no")
    assert "reversal signals: " in head
    pk = res["methods"]["sft"][1]["gain_pass_k"]
    assert pk["k"] == 4 and pk["lo"] <= pk["mean"] <= pk["hi"]


def test_a_single_run_report_has_its_verdict_and_csv(pooled, capsys):
    _, root, _ = pooled
    run = root / "seed0"
    (run / "metrics.csv").unlink()  # written by the study; the report command rewrites it
    assert cli.main(["-q", "report", str(run)]) == 0
    assert "report:" in capsys.readouterr().out
    md = (run / "report" / "report.md").read_text()
    assert md.index("## What it found") < md.index("## Best iterate per method")
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0] == "method,iteration,seed,metric,value" and all(",0," in ln for ln in lines[1:])


def _browser():
    """(chromium, chromedriver) paths, or None."""
    found = [shutil.which(n) for n in ("chromium", "chromium-browser")]
    browser = next((p for p in found if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.timeout(180)
@pytest.mark.parametrize("which", ["pooled", "single"])
def test_html_report_renders_in_a_real_browser(pooled, which):
    """Every image of index.html loads (decoded, non-zero size) and the verdict table is there."""
    paths = _browser()
    if paths is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: install Debian's chromium and chromium-driver "
                        "(.ci/run does with apt-get)")
        pytest.skip("no chromium + chromedriver here (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    _, root, _ = pooled
    page = (root if which == "pooled" else root / "seed0") / "report" / "index.html"
    if which == "single":
        assert cli.main(["-q", "report", str(root / "seed0")]) == 0
    opts = webdriver.ChromeOptions()
    opts.binary_location = paths[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--allow-file-access-from-files"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(paths[1]), options=opts)
    try:
        driver.get(page.resolve().as_uri())
        images = driver.find_elements(By.TAG_NAME, "img")
        assert images, "the report shows no figure"
        for img in images:
            ok = driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
            assert ok, f"image {img.get_attribute('src')} did not load"
            assert img.get_attribute("alt"), f"image {img.get_attribute('src')} has no alt text"
        table = driver.find_element(By.ID, "verdict")
        assert "sft" in table.text and "reversal signals" in table.text
    finally:
        driver.quit()
