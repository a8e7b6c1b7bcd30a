"""Screenshot of the annotation page for the README: `python docs/screenshot.py URL USER PASSWORD`
against a running `./prefloop up` (the demo project)."""

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

url, user, password = sys.argv[1:4]
with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
    page = browser.new_page(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
    page.goto(f"{url}/login/?next=/p/hh-demo/annotate/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.keyboard.press("Enter")
    page.wait_for_selector("#workspace[data-comparison]")
    page.keyboard.press("2")
    page.keyboard.press("w")
    page.screenshot(path=str(Path(__file__).with_name("annotation-page.png")), full_page=False)
    browser.close()
