"""Screenshots of the pages for the README, against a running `./prefloop up` (the demo project):

    python docs/screenshot.py URL USER PASSWORD [JOB_ID]

USER must manage the demo project (the admin `./prefloop up` prints does). Writes, next to this
file: annotation-page.png (desktop), annotation-phone.png (390 px wide), comparisons-page.png
and, with JOB_ID, job-page.png."""

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

url, user, password = sys.argv[1:4]
job = sys.argv[4] if len(sys.argv) > 4 else None
slug = "hh-demo"
here = Path(__file__).parent


def log_in(page):
    page.goto(f"{url}/login/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    with page.expect_navigation():
        page.keyboard.press("Enter")


with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
    desktop = browser.new_page(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
    log_in(desktop)
    desktop.goto(f"{url}/p/{slug}/annotate/")
    desktop.wait_for_selector("#workspace[data-comparison]")
    desktop.keyboard.press("2")
    desktop.keyboard.press("w")
    desktop.screenshot(path=str(here / "annotation-page.png"))

    desktop.goto(f"{url}/p/{slug}/comparisons/")
    desktop.screenshot(path=str(here / "comparisons-page.png"))
    if job:
        desktop.goto(f"{url}/p/{slug}/jobs/{job}/")
        desktop.screenshot(path=str(here / "job-page.png"), full_page=True)

    phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=1, is_mobile=True,
                             has_touch=True)
    log_in(phone)
    phone.goto(f"{url}/p/{slug}/annotate/")
    phone.wait_for_selector("#workspace[data-comparison]")
    phone.screenshot(path=str(here / "annotation-phone.png"))
    browser.close()
