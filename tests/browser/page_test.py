#!/usr/bin/python3
"""The web page in headless Chromium against a real `ldaproj serve`.

Types a query, checks that answers and routing bars render, moves the
temperature slider and checks that the bars change, switches the method, and
saves a screenshot. Exits 77 (ctest: skipped) when Chromium is not installed;
run scripts/setup.sh to install it with chromium-driver and python3-selenium.

    tests/browser/page_test.py --cli build/ldaproj --source . --work build/browser_test
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

SKIP = 77
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
QUERY = "how do I get my password back"


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def trained_db(cli, source, work):
    """A trained demo database: the C++ tests' cached one when it is fresh, else built here."""
    cached = os.path.join(os.path.dirname(cli), "test-cache", "demo-trained.db")
    db = os.path.join(work, "demo.db")
    if os.path.exists(cached) and os.path.getmtime(cached) > os.path.getmtime(cli):
        shutil.copyfile(cached, db)
        return db
    if os.path.exists(db):
        os.remove(db)
    demo = os.path.join(source, "data", "demo")
    for step in (["import", "--db", db, os.path.join(demo, "clusters.json"), os.path.join(demo, "extra.jsonl")],
                 ["embed", "--quiet", "--db", db],
                 ["train", "--db", db]):
        subprocess.run([cli] + step, check=True, stdout=subprocess.DEVNULL)
    return db


def start_server(cli, db):
    proc = subprocess.Popen([cli, "serve", "--db", db, "--port", "0"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    marker = "http://127.0.0.1:"
    if marker not in line:
        proc.kill()
        fail("ldaproj serve did not report its address: " + line)
    port = int(line.split(marker, 1)[1].split("/", 1)[0])
    return proc, "http://127.0.0.1:%d" % port


def bar_weights(driver):
    """(cluster, data-weight, rendered pixel width) of every routing bar."""
    from selenium.webdriver.common.by import By
    return [(b.get_attribute("data-cluster"), float(b.get_attribute("data-weight")), b.size["width"])
            for b in driver.find_elements(By.CSS_SELECTOR, "#routing .bar")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cli", required=True, help="the ldaproj binary")
    parser.add_argument("--source", required=True, help="the source tree (for data/demo)")
    parser.add_argument("--work", required=True, help="scratch folder; the screenshot goes here")
    args = parser.parse_args()

    if not os.access(CHROMIUM, os.X_OK):
        print("SKIPPED: %s is not installed; run scripts/setup.sh (chromium, chromium-driver, "
              "python3-selenium) to run the browser test" % CHROMIUM)
        return SKIP
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError as e:
        fail("Chromium is installed but Selenium is not (%s); run scripts/setup.sh" % e)
    if not os.access(CHROMEDRIVER, os.X_OK):
        fail("Chromium is installed but %s is not; run scripts/setup.sh" % CHROMEDRIVER)

    os.makedirs(args.work, exist_ok=True)
    db = trained_db(os.path.abspath(args.cli), args.source, args.work)
    server, url = start_server(os.path.abspath(args.cli), db)
    driver = None
    try:
        with urllib.request.urlopen(url + "/v1/info") as response:
            info = json.load(response)

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--no-first-run", "--disable-extensions"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        # Bars are redrawn on every answer, so an element found a moment ago may be gone.
        wait = WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,))

        driver.get(url + "/")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-info") == "loaded")

        # The method switch lists what the server offers.
        offered = [r.get_attribute("value") for r in driver.find_elements(By.CSS_SELECTOR, "#method-options input")]
        expected = [m["name"] for m in info["methods"]]
        if offered != expected:
            fail("method switch shows %s, the server offers %s" % (offered, expected))

        # A query: answers with scores and routing bars.
        box = driver.find_element(By.ID, "query")
        box.send_keys(QUERY)
        box.send_keys(Keys.ENTER)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#answers li")) >= 3
                   and len(d.find_elements(By.CSS_SELECTOR, "#routing .bar")) >= 3)
        answers = driver.find_elements(By.CSS_SELECTOR, "#answers li")
        if "reset_password" not in answers[0].text:
            fail("the first answer for %r is not reset_password: %s" % (QUERY, answers[0].text))
        score = float(answers[0].find_element(By.CLASS_NAME, "score").text)
        if not 0.0 < score <= 1.0:
            fail("the first answer's score %s is not a cosine" % score)
        default_bars = bar_weights(driver)
        if default_bars[0][0] != "reset_password" or default_bars[0][2] <= 0:
            fail("the heaviest routing bar is not a visible reset_password bar: %s" % default_bars)

        # Temperature slider: to the flat end, the bars must change (the top one shrinks).
        slider = driver.find_element(By.ID, "temperature")
        slider.send_keys(Keys.END)
        wait.until(lambda d: driver.find_element(By.ID, "temperature-value").text == "2.0"
                   and bar_weights(d) and bar_weights(d)[0][1] < default_bars[0][1] - 0.2)
        flat_bars = bar_weights(driver)
        if not flat_bars[0][2] < default_bars[0][2]:
            fail("the top bar did not get narrower at τ=2: %s -> %s" % (default_bars, flat_bars))
        # ...and to the sharp end, the top head takes (nearly) everything.
        slider.send_keys(Keys.HOME)
        wait.until(lambda d: driver.find_element(By.ID, "temperature-value").text == "0.010"
                   and bar_weights(d) and bar_weights(d)[0][1] > default_bars[0][1])
        sharp_bars = bar_weights(driver)
        if not sharp_bars[0][2] > flat_bars[0][2]:
            fail("the top bar did not get wider at τ=0.01: %s -> %s" % (flat_bars, sharp_bars))
        print("top bar width: default %dpx, τ=2 %dpx, τ=0.01 %dpx"
              % (default_bars[0][2], flat_bars[0][2], sharp_bars[0][2]))

        # Back to the projection's own temperature for the screenshot.
        driver.execute_script(
            "const s = document.getElementById('temperature');"
            "s.value = String(Math.round(1000 * Math.log(arguments[0] / 0.01) / Math.log(200)));"
            "s.dispatchEvent(new Event('input'));", info["temperature"])
        wait.until(lambda d: bar_weights(d) and abs(bar_weights(d)[0][1] - default_bars[0][1]) < 0.05)

        # Another method: answers stay, routing says it does not apply.
        if "direct" in expected:
            driver.find_element(By.CSS_SELECTOR, "#method-options input[value='direct']").click()
            wait.until(lambda d: "does not route" in d.find_element(By.ID, "routing-note").text)
            if not driver.find_elements(By.CSS_SELECTOR, "#answers li"):
                fail("no answers with the direct method")
            if not driver.find_element(By.ID, "temperature").get_attribute("disabled"):
                fail("the temperature slider stays enabled for a method without routing")
            driver.find_element(By.CSS_SELECTOR, "#method-options input[value='multi-head']").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#routing .bar")) >= 3)

        errors = driver.find_element(By.ID, "status").text
        if errors:
            fail("the page shows an error: " + errors)
        shot = os.path.join(args.work, "page.png")
        driver.save_screenshot(shot)
        print("OK: answers and routing render, the slider changes the bars; screenshot " + shot)
        return 0
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
