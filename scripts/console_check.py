#!/usr/bin/env python3
"""Drives the tidings console in headless Chromium (Debian's chromium + chromium-driver, through
selenium from PyPI) against a running `tidings serve`: signs in, submits a job, waits for its
rows, traces a receiver, runs a SQL query, previews a template, opens the job, then checks the
read-only token cannot submit. Writes a screenshot of each page and fails on any error in the
page's console. Called by dataflows/tests/console.rs.

Usage: console_check.py URL OPERATOR_TOKEN READ_TOKEN JOB_PATH RECEIVER SCREENSHOT_DIR
"""
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

url, op_token, read_token, job_path, receiver, shots = sys.argv[1:7]
os.makedirs(shots, exist_ok=True)

options = webdriver.ChromeOptions()
options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,900"]:
    options.add_argument(arg)
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(
    service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=options)
wait = WebDriverWait(driver, 60)
failures = []


def console_errors(step):
    for entry in driver.get_log("browser"):
        if entry["level"] == "SEVERE":
            failures.append(f"{step}: console error: {entry['message']}")


def shot(name):
    path = os.path.join(shots, f"{name}.png")
    driver.save_screenshot(path)
    print(f"screenshot {path}")


def text(css):
    return driver.find_element(By.CSS_SELECTOR, css).text


def check(cond, what):
    if not cond:
        failures.append(what)


try:
    # Sign in.
    driver.get(url + "/")
    wait.until(EC.visibility_of_element_located((By.ID, "token")))
    check("Sign in" in driver.page_source, "the login page has no Sign in")
    shot("login")
    driver.find_element(By.ID, "token").send_keys(op_token)
    driver.find_element(By.ID, "signin").click()
    wait.until(EC.visibility_of_element_located((By.ID, "submit-path")))
    console_errors("login")

    # Submit the job; wait until its file is read (stopped) and its rows are there.
    driver.find_element(By.ID, "submit-path").send_keys(job_path)
    driver.find_element(By.ID, "submit-job").click()
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#jobs tr[data-job='demo']")))
    deadline = time.time() + 90
    while "stopped" not in text("#jobs tr[data-job='demo']"):
        check(time.time() < deadline, "the job did not finish in 90 s")
        if time.time() > deadline:
            break
        time.sleep(0.5)
    shot("jobs")
    console_errors("jobs")

    # Trace a receiver: its timeline of states.
    driver.get(f"{url}/#/trace?receiver={receiver}")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#timeline tbody tr")))
    timeline = text("#timeline")
    check("RECEIVE" in timeline, f"the trace of {receiver} has no RECEIVE: {timeline}")
    check(receiver in timeline, f"the trace does not show {receiver}")
    shot("trace")
    console_errors("trace")

    # SQL: the default GROUP BY state, as a table and a chart.
    driver.get(f"{url}/#/sql")
    wait.until(EC.element_to_be_clickable((By.ID, "sql-run"))).click()
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#sql-result tbody tr")))
    result = text("#sql-result")
    check("RECEIVE" in result and "state" in result, f"SQL result: {result}")
    check(len(driver.find_elements(By.ID, "chart")) == 1, "no chart beside the SQL result")
    shot("sql")
    console_errors("sql")

    # Templates: preview template 1 with its variables.
    driver.get(f"{url}/#/templates")
    wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "button[data-template='1']"))).click()
    wait.until(EC.visibility_of_element_located((By.ID, "do-preview")))
    for field in driver.find_elements(By.CSS_SELECTOR, "#editor input[name]"):
        field.send_keys("4711")
    driver.find_element(By.ID, "do-preview").click()
    wait.until(EC.visibility_of_element_located((By.ID, "rendered")))
    check("4711" in text("#rendered"), f"rendered: {text('#rendered')}")
    check("shield" in text("#rules"), "the preview shows no rules")
    shot("templates")
    console_errors("templates")

    # The job's page.
    driver.get(f"{url}/#/job/demo")
    wait.until(EC.visibility_of_element_located((By.ID, "job-state")))
    check(text("#job-state") == "stopped", f"job state {text('#job-state')}")
    shot("job")
    console_errors("job")

    # The read-only token reads but cannot submit (the refusal is expected: its network error
    # in the console is not a page error).
    driver.find_element(By.ID, "logout").click()
    wait.until(EC.visibility_of_element_located((By.ID, "token")))
    driver.find_element(By.ID, "token").send_keys(read_token)
    driver.find_element(By.ID, "signin").click()
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#jobs tr[data-job='demo']")))
    console_errors("read-only sign-in")
    driver.find_element(By.ID, "submit-path").send_keys(job_path)
    driver.find_element(By.ID, "submit-job").click()
    wait.until(EC.visibility_of_element_located((By.ID, "error")))
    check("read-only" in text("#error"), f"read-only submit: {text('#error')}")
    shot("read-only")
    for entry in driver.get_log("browser"):
        if entry["level"] == "SEVERE" and "403" not in entry["message"]:
            failures.append(f"read-only: console error: {entry['message']}")
except Exception as e:  # a timeout names the page it happened on
    shot("failure")
    failures.append(f"{type(e).__name__}: {e} (at {driver.current_url})")
finally:
    driver.quit()

for f in failures:
    print(f"FAIL {f}", file=sys.stderr)
sys.exit(1 if failures else 0)
