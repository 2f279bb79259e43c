#!/usr/bin/env python3
"""Drives the tidings console in headless Chromium (Debian's chromium + chromium-driver, through
selenium from PyPI) against a running `tidings serve`: signs in, submits a job, waits for its
rows, traces a receiver, runs a SQL query, previews a template, opens the job, then checks the
read-only token cannot submit. Writes a screenshot of each page and fails on any error in the
page's console. Called by dataflows/tests/console.rs.

Then submits a Kafka job (KAFKA_JOB_PATH, named `live`), edits its template 1 in the editor
and checks the saved version, and opens its page while it runs (rate and lag charts).

Usage: console_check.py URL OPERATOR_TOKEN READ_TOKEN JOB_PATH RECEIVER SCREENSHOT_DIR KAFKA_JOB_PATH
"""
import os
import shutil
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

url, op_token, read_token, job_path, receiver, shots, kafka_job = sys.argv[1:8]
os.makedirs(shots, exist_ok=True)

options = webdriver.ChromeOptions()
options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# A profile of its own, new each run (a default profile left locked or half-written by an
# earlier Chromium made one CI run's browser exit at start), and no background connections to
# Google's hosts, which this machine's closed network refuses.
profile = tempfile.mkdtemp(prefix="tidings-console-chromium-")
for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,900", f"--user-data-dir={profile}", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]:
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
    # Pages that refresh replace their elements: read again if it went stale meanwhile.
    for _ in range(20):
        try:
            return driver.find_element(By.CSS_SELECTOR, css).text
        except StaleElementReferenceException:
            time.sleep(0.1)
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

    # Submit the job; wait until its file is read (stopped) and its rows are there. What is
    # typed survives the list's refresh (every 3 s) first.
    driver.find_element(By.ID, "submit-path").send_keys(job_path)
    drawn = driver.find_element(By.CSS_SELECTOR, "#jobs tbody").get_attribute("data-refreshes")
    WebDriverWait(driver, 15).until(lambda d: d.find_element(
        By.CSS_SELECTOR, "#jobs tbody").get_attribute("data-refreshes") != drawn)
    typed = driver.find_element(By.ID, "submit-path").get_attribute("value")
    check(typed == job_path, f"the jobs list's refresh wiped what was typed: {typed!r}")
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

    # Reports: the template funnel of every day, as a table and a chart.
    driver.get(f"{url}/#/reports")
    wait.until(EC.element_to_be_clickable((By.ID, "report-run"))).click()
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#report-result tbody tr")))
    funnel = text("#report-result")
    check("RECEIVE" in funnel, f"the funnel report: {funnel}")
    check(len(driver.find_elements(By.ID, "chart")) == 1, "no chart beside the report")
    shot("reports")
    console_errors("reports")

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

    # A Kafka job: submit it, pick it, edit its template 1 (a change record through its door).
    driver.get(f"{url}/#/jobs")
    wait.until(EC.visibility_of_element_located((By.ID, "submit-path"))).send_keys(kafka_job)
    driver.find_element(By.ID, "submit-job").click()
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#jobs tr[data-job='live']")))
    driver.execute_script(
        "sessionStorage.setItem('tidings-job', 'live'); location.hash = '#/templates';")
    wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "button[data-template='1']"))).click()
    editor = wait.until(EC.visibility_of_element_located((By.ID, "template-json")))
    edited = editor.get_attribute("value").replace("hi {$v}", "hello again {$v}")
    check("hello again" in edited, f"the editor does not hold the template: {editor.get_attribute('value')}")
    editor.clear()
    editor.send_keys(edited)
    driver.find_element(By.ID, "save-template").click()
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#editor #saved")))
    saved = text("#editor #saved")
    check("version 1" in saved, f"saved: {saved}")
    cells = driver.find_elements(By.CSS_SELECTOR, "#templates tr[data-row='1'] td")
    check(len(cells) > 6 and cells[6].text == "1",
          f"the list does not show version 1: {[c.text for c in cells]}")
    # The preview renders the new version.
    driver.find_element(By.CSS_SELECTOR, "button[data-template='1']").click()
    wait.until(EC.visibility_of_element_located((By.ID, "do-preview")))
    for field in driver.find_elements(By.CSS_SELECTOR, "#editor input[name]"):
        field.send_keys("x")
    driver.find_element(By.ID, "do-preview").click()
    wait.until(EC.visibility_of_element_located((By.ID, "rendered")))
    check("hello again x" in text("#rendered"), f"rendered after the edit: {text('#rendered')}")
    # A test send through the job's send API answers the messageId.
    driver.find_element(By.ID, "test-receiver").send_keys("13800138000")
    driver.find_element(By.ID, "test-send").click()
    wait.until(EC.visibility_of_element_located((By.ID, "sent")))
    check("sent: messageId " in text("#sent") and len(text("#sent")) > 20, f"test send: {text('#sent')}")
    shot("template-edit")
    console_errors("template edit")

    # The test send's receiver traced live from Redis (fed once its rows are durable).
    driver.get(f"{url}/#/trace?receiver=13800138000")
    deadline = time.time() + 60
    live = ""
    while time.time() < deadline:
        found = driver.find_elements(By.ID, "redis-timeline")
        live = text("#redis-timeline") if found else ""
        if "SEND_SUCCESS" in live:
            break
        time.sleep(1)
        wait.until(EC.element_to_be_clickable((By.ID, "trace-run"))).click()
    check("SEND_SUCCESS" in live, f"the Redis trace of the test send: {live!r}")
    shot("live-trace")
    console_errors("live trace")

    # The running job's page: watermark, lag, and the rate and lag charts (two refreshes).
    driver.get(f"{url}/#/job/live")
    wait.until(EC.presence_of_element_located((By.ID, "rate-chart")))
    wait.until(lambda d: any(f"{n} samples" in text("#lag-chart") for n in (2, 3, 4)))
    check(text("#job-state") in ("starting", "running"), f"live job state {text('#job-state')}")
    shot("live-job")
    console_errors("live job")

    # Live state: the test send's receiver's frequency count (by its template) and dedup
    # windows (by its template and variables), from the running job's admin API.
    driver.get(f"{url}/#/state")
    wait.until(EC.visibility_of_element_located((By.ID, "state-receiver"))).send_keys("13800138000")
    driver.find_element(By.ID, "state-template").send_keys("1")
    driver.find_element(By.ID, "state-frequency").click()
    wait.until(lambda d: "count_that_day" in text("#state-out"))
    check(not driver.find_element(By.ID, "error").is_displayed(), f"frequency: {text('#error')}")
    driver.find_element(By.ID, "state-variables").send_keys('{"v": "x"}')
    driver.find_element(By.ID, "state-content").click()
    wait.until(lambda d: "admissions_ms" in text("#state-out"))
    check(not driver.find_element(By.ID, "error").is_displayed(), f"dedup windows: {text('#error')}")
    shot("live-state")
    console_errors("live state")

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
    shutil.rmtree(profile, ignore_errors=True)

for f in failures:
    print(f"FAIL {f}", file=sys.stderr)
sys.exit(1 if failures else 0)
