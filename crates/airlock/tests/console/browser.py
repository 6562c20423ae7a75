"""Drives the console in a real browser (headless Chromium through chromedriver, selenium).

Run by tests/console_browser.rs, which starts the gateway, pulls an image through it and
passes: the console's base URL, the admin user and password, the proxy, the image's item
name (repository:tag), its size as the console writes it, and where screenshots go.
Exits non-zero with the reason on the first thing that is not as it should be.
"""

import os
import sys
import tempfile

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

base, user, password, proxy, item, size, shots = sys.argv[1:8]


def browser():
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="airlock-console-")
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # The gateway's certificate is self-signed for the test; nothing else is visited.
        "--ignore-certificate-errors",
        "--window-size=1280,1024",
        f"--user-data-dir={profile}",
    ]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    return driver


def fail(driver, why):
    driver.save_screenshot(os.path.join(shots, "console-failure.png"))
    sys.exit(f"{why}\nURL: {driver.current_url}\n{driver.page_source[:4000]}")


def log_in(driver, secret):
    WebDriverWait(driver, 10).until(ec.presence_of_element_located((By.ID, "user")))
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(secret)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()


def row_of(driver, text):
    """The table row that mentions text; None also while the page is being replaced (a row
    found on the old page goes stale under us)."""
    try:
        for row in driver.find_elements(By.CSS_SELECTOR, "tbody tr"):
            if text in row.text:
                return row
    except StaleElementReferenceException:
        return None
    return None


driver = browser()
try:
    # Not logged in: the console sends the browser to the login form.
    driver.get(base + "/ui/")
    if "/ui/login" not in driver.current_url:
        fail(driver, "an anonymous visit was not sent to the login form")

    # A wrong password is refused, with a message, and no session.
    log_in(driver, password + "-wrong")
    alert = WebDriverWait(driver, 10).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[role=alert]"))
    )
    if "wrong" not in alert.text.lower():
        fail(driver, f"the refusal does not say why: {alert.text!r}")
    if driver.get_cookie("airlock_session"):
        fail(driver, "a refused login set a session cookie")

    # The right one logs in, to the overview; the cookie is HttpOnly, Secure, Strict.
    log_in(driver, password)
    WebDriverWait(driver, 10).until(ec.url_matches(r"/ui/$"))
    cookie = driver.get_cookie("airlock_session")
    if not cookie or not cookie.get("httpOnly") or not cookie.get("secure"):
        fail(driver, f"the session cookie is not HttpOnly and Secure: {cookie}")
    if cookie.get("sameSite") != "Strict":
        fail(driver, f"the session cookie is not SameSite=Strict: {cookie}")
    driver.save_screenshot(os.path.join(shots, "console-overview.png"))

    # The proxy's page lists the image pulled moments before, with its size.
    driver.find_element(By.LINK_TEXT, proxy).click()
    search = WebDriverWait(driver, 10).until(
        ec.presence_of_element_located((By.NAME, "q"))
    )
    search.send_keys(item.split(":")[0])
    search.submit()
    WebDriverWait(driver, 10).until(ec.url_contains("q="))
    row = row_of(driver, item)
    if row is None:
        fail(driver, f"{item} is not listed")
    if size not in row.text:
        fail(driver, f"{item} is listed without its size {size}: {row.text!r}")
    if "pinned" in row.text.lower() and "not pinned" not in row.text.lower():
        fail(driver, f"{item} shows as pinned before it was: {row.text!r}")

    # Pin it (a form post with the session's CSRF token), and see it pinned.
    row.find_element(By.XPATH, ".//button[normalize-space()='Pin']").click()
    # The post answers with a redirect back to the page, marked done=pinned: wait for that
    # page, not the old one still on screen.
    WebDriverWait(driver, 10).until(ec.url_contains("done=pinned"))
    WebDriverWait(driver, 10).until(lambda d: row_of(d, item) is not None)
    row = row_of(driver, item)
    if row is None or "Unpin" not in row.text:
        fail(driver, f"{item} does not show as pinned after pinning")
    driver.save_screenshot(os.path.join(shots, "console-pinned.png"))

    # The audit view shows the pull: the manifest fetched from the upstream, and the pin.
    driver.get(base + "/ui/audit")
    text = driver.find_element(By.TAG_NAME, "main").text
    repository, tag = item.split(":")
    if f"/v2/{repository}/manifests/{tag}" not in text:
        fail(driver, "the pull is not in the audit view")
    if "pin" not in text:
        fail(driver, "the pin is not in the audit view")
    driver.save_screenshot(os.path.join(shots, "console-audit.png"))
    print("console: login refused and accepted, image listed with its size, pinned, audited")
finally:
    driver.quit()
