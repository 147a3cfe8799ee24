"""The web page in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by
Selenium): it loads, recommendations render with titles, a click is stored. Run with
``pytest -m browser``; skipped when Chromium, its driver or Selenium is missing."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from polyrec.data.synthetic import make_synthetic
from polyrec.models.classic.bpr import BPRMF

pytestmark = pytest.mark.browser
uvicorn = pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from polyrec.serve.app import create_app  # noqa: E402
from polyrec.serve.service import ServeConfig  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
KEY = "browser-key-0123456789"


@pytest.fixture
def server(tmp_path: Path):
    torch.set_num_threads(1)
    data = make_synthetic(40, 30, 600, seed=1)
    run = tmp_path / "run"
    BPRMF(factors=8, epochs=2, batch_size=256).fit(data).save(run / "model")
    assert data.item_data is not None
    pd.DataFrame({"item": data.item_ids.external, "title": data.item_data["title"]}).to_parquet(
        run / "items.parquet", index=False
    )
    app = create_app(ServeConfig(runs=[run], db=f"sqlite:///{tmp_path}/db", api_keys=[KEY]))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/", app.state.service.store
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason="chromium/chromedriver missing")
def test_page_recommends_and_records_a_click(server):
    url, store = server
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(DRIVER), options=options)
    try:
        wait = WebDriverWait(driver, 20)
        driver.get(url)
        wait.until(lambda d: len(Select(d.find_element(By.ID, "user")).options) > 1)
        Select(driver.find_element(By.ID, "user")).select_by_value("3")
        driver.find_element(By.ID, "k").clear()
        driver.find_element(By.ID, "k").send_keys("5")
        driver.find_element(By.ID, "apikey").send_keys(KEY)
        driver.find_element(By.ID, "go").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li")) == 5)
        first = driver.find_element(By.CSS_SELECTOR, "#results li")
        assert first.find_element(By.CLASS_NAME, "title").text  # a title, not only an id
        item = first.get_attribute("data-item")
        first.find_element(By.CLASS_NAME, "click").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "recorded click"))
        assert store.count_events(user_id="3", item_id=item) == 1

        # an ad-hoc history with an unknown id renders too, and says what it ignored
        Select(driver.find_element(By.ID, "user")).select_by_value("")
        driver.find_element(By.ID, "history").send_keys("1, 2, not-an-item")
        driver.find_element(By.ID, "go").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "summary"), "not-an-item"))
        assert len(driver.find_elements(By.CSS_SELECTOR, "#results li")) == 5
    finally:
        driver.quit()
