"""The HTML report opens in headless Chromium with every plot loaded and visible."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from polyrec.bench.report import build_report, write_report
from polyrec.experiment import run_experiment

torch.set_num_threads(1)
BROWSER = next(
    (b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(BROWSER is None, reason="chromium not installed (apt-get install chromium)"),
]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio"]
# Counts the images that decoded (naturalWidth > 0) and take space on the page once loaded.
CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0
                         && i.getBoundingClientRect().width > 0);
  document.body.setAttribute("data-images", ok.length + "/" + imgs.length);
});
</script>"""


def chromium(*args: str) -> str:
    assert BROWSER is not None
    done = subprocess.run(
        [BROWSER, *FLAGS, *args], capture_output=True, text=True, timeout=90, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    data = {"n_users": 50, "n_items": 30, "n_interactions": 700, "seed": 0}
    for model, extra in (("pop", {}), ("bpr", {"epochs": 2, "factors": 8})):
        run_experiment(
            model,
            "synthetic",
            overrides={"dataset_options": data, **extra},
            out_dir=folder / "runs" / model,
            ks=(5, 10),
            progress=False,
        )
    report = build_report([folder / "runs"])
    assert len(report.sections[0].figures) == 3
    out = folder / "report.html"
    write_report(report, out)
    return out


def loaded_images(page: Path) -> tuple[int, int]:
    """(images decoded and laid out, images) of ``page`` in headless Chromium."""
    checked = page.with_name("checked.html")
    checked.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    dom = chromium("--virtual-time-budget=5000", "--dump-dom", checked.as_uri())
    found = re.search(r'data-images="(\d+)/(\d+)"', dom)
    assert found is not None, dom[:500]
    loaded, total = map(int, found.groups())
    return loaded, total


def test_every_plot_loads_in_chromium(report_html: Path) -> None:
    loaded, total = loaded_images(report_html)
    assert total == 3 and loaded == total


def test_peer_report_plots_load_in_chromium(tmp_path: Path) -> None:
    from test_report_peers import write_peer_file  # the tiny vs_recbole-shaped file

    report = build_report([write_peer_file(tmp_path)])
    page = tmp_path / "peers.html"
    write_report(report, page)
    loaded, total = loaded_images(page)
    assert total == 2 and loaded == total


def test_screenshot_shows_the_plots(report_html: Path) -> None:
    from PIL import Image

    shot = report_html.with_name("shot.png")
    chromium(f"--screenshot={shot}", "--window-size=1200,2000", report_html.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int32).reshape(-1, 3)
    # matplotlib's first two cycle colours (C0 blue, C1 orange) only appear inside the plots
    for rgb in ((31, 119, 180), (255, 127, 14)):
        close = np.abs(pixels - np.array(rgb)).max(axis=1) <= 12
        assert int(close.sum()) > 200, f"colour {rgb} not found in the screenshot"
