"""The browser half of scripts/check-console: drives /console with playwright and Debian's chromium.

    console_browser.py API_URL ADMIN_KEY CHROMIUM OUT_DIR SERVER_LOG

Prints one line per check and ends with "N passed, N failed"; exits 1 on any failure.
"""

import json
import re
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

from playwright.sync_api import expect, sync_playwright

API, ADMIN, CHROMIUM, OUT, SERVER_LOG = sys.argv[1:6]
CONSOLE = API + "/console"
expect.set_options(timeout=20_000)

passed = failed = 0
blocked = []
secrets = [ADMIN]
console_errors = []
allowed_403 = [False]


def report(name, fn):
    global passed, failed
    try:
        fn()
        passed += 1
        print(f"check-console: ok   {name}", flush=True)
    except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
        failed += 1
        print(f"check-console: FAIL {name}: {e}", flush=True)
        traceback.print_exc(limit=3)


def call(method, path, key, body=None):
    """The public API, from outside the browser."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(API + "/api/v1" + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + key)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode() or "null")


class Receiver(BaseHTTPRequestHandler):
    """A webhook endpoint that accepts every delivery."""

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=receiver.serve_forever, daemon=True).start()
RECEIVER = f"http://127.0.0.1:{receiver.server_address[1]}/agentq-events"

SCRIPT = {
    "steps": [
        {"reply": "You said: {{input}}"},
        {"tool": "send_email", "arguments": {"to": "ana@example.com", "subject": "Your order"},
         "result": {"sent": True}, "requires_approval": True},
        {"reply": "Email sent."},
    ]
}


def on_route(route):
    url = route.request.url
    if urlparse(url).hostname == "127.0.0.1":
        route.continue_()
    else:
        blocked.append(url)
        route.abort()


def on_console(msg):
    if msg.type != "error":
        return
    if allowed_403[0] and "status of 403" in msg.text:
        return
    console_errors.append(msg.text)


def no_overflow(page):
    over = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert over <= 0, f"{page.url} is {over} px wider than the window"


# Every visible control has an accessible name (a label, aria-label(ledby), or its text).
UNNAMED = """() => [...document.querySelectorAll('input, select, textarea, button, a[href]')]
  .filter((el) => el.offsetParent !== null && el.type !== 'hidden')
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
    && !el.getAttribute('aria-labelledby') && !(el.textContent || '').trim())
  .map((el) => el.outerHTML.slice(0, 120))"""


def shoot(page, name):
    """Screenshots at 1440 px and 375 px, each without horizontal overflow, every control named."""
    unnamed = page.evaluate(UNNAMED)
    assert not unnamed, f"controls without an accessible name on {name}: {unnamed}"
    for width, height, tag in ((1440, 900, "desktop"), (375, 800, "mobile")):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(150)
        no_overflow(page)
        page.screenshot(path=f"{OUT}/{name}-{tag}.png", full_page=True)
    page.set_viewport_size({"width": 1440, "height": 900})


def visit(page, hash_, heading):
    page.goto(CONSOLE + hash_)
    expect(page.get_by_role("heading", level=1)).to_contain_text(heading)


def main():
    state = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                  "--disable-background-networking", "--disable-component-update", "--no-first-run"],
        )
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.route("**/*", on_route)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=API)
        page = context.new_page()
        page.on("console", on_console)
        page.on("pageerror", lambda e: console_errors.append(f"page error: {e}"))

        def sign_in(key=ADMIN):
            page.goto(CONSOLE)
            expect(page.get_by_role("heading", name="Sign in to the agentq console")).to_be_visible()
            # By keyboard: the field has the focus, Enter submits.
            expect(page.get_by_label("API key")).to_be_focused()
            page.keyboard.type(key)
            page.keyboard.press("Enter")
            expect(page.get_by_role("heading", level=1)).to_have_text("Agents")
            stored = page.evaluate("JSON.stringify(sessionStorage)")
            assert key in stored, "the key is not in session storage"
            assert key not in page.url
            assert page.context.cookies() == [], "the console set a cookie"

        def sign_in_page():
            page.goto(CONSOLE)
            expect(page.get_by_label("API key")).to_be_visible()
            shoot(page, "00-sign-in")
            # A wrong key is refused with the API's message, and stays signed out.
            page.get_by_label("API key").fill("aq_not_a_real_key_000000000000000")
            allowed_403[0] = True  # the refused probe is a 401 the browser logs as such
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("alert")).to_be_visible()
            allowed_403[0] = False
            console_errors[:] = [e for e in console_errors if "status of 401" not in e]
            sign_in()
            shoot(page, "01-agents-empty")

        report("sign in with an API key (session storage, no cookie, no key in the URL)", sign_in_page)

        def create_agent():
            page.get_by_label("Name").fill("Support bot")
            page.get_by_label("Runtime").select_option("scripted")
            page.get_by_label("Config (JSON)").fill(json.dumps(SCRIPT, indent=2))
            page.get_by_role("button", name="Create agent").click()
            expect(page.get_by_role("heading", level=1)).to_contain_text("Support bot")
            state["agent"] = page.url.rsplit("/", 1)[1]
            assert re.fullmatch(r"[0-9a-f-]{36}", state["agent"]), page.url
            st, body = call("GET", f"/agents/{state['agent']}", ADMIN)
            assert st == 200 and body["runtime"] == "scripted", (st, body)
            shoot(page, "02-agent")

        report("create an agent", create_agent)

        def api_tab_generate_and_revoke():
            aid = state["agent"]
            page.get_by_role("link", name="API", exact=True).click()
            expect(page.get_by_text(f"/api/mcp/agents/{aid}/stream-http").first).to_be_visible()
            expect(page.get_by_text(f"/api/mcp/agents/{aid}/sse").first).to_be_visible()
            expect(page.get_by_text(f"/api/v1/agents/{aid}/chat/stream").first).to_be_visible()
            expect(page.get_by_label("Python example", exact=True)).to_contain_text(f"{API}/api/v1/agents/{aid}/chat")
            expect(page.get_by_label("JavaScript example", exact=True)).to_contain_text("send_message")
            page.get_by_label("Name").fill("Main website")
            page.get_by_label("30 days").check()
            page.get_by_role("button", name="Generate key").click()
            secret = page.locator("#new-key").inner_text().strip()
            assert secret.startswith("aq_"), secret
            secrets.append(secret)
            expect(page.get_by_text("It is shown ONLY once")).to_be_visible()
            page.get_by_role("button", name="Copy the new key").click()
            assert page.evaluate("navigator.clipboard.readText()") == secret, "the copy button did not copy the key"
            row = page.get_by_role("row").filter(has_text="Main website")
            expect(row).to_contain_text(secret[:11])
            expect(row).to_contain_text("active")
            shoot(page, "03-agent-api-key-shown-once")
            st, _ = call("GET", f"/agents/{aid}", secret)
            assert st == 200, f"the new key does not work: {st}"
            st, keys = call("GET", "/api-keys", ADMIN)
            made = next(k for k in keys["data"] if k["name"] == "Main website")
            assert made["agent_ids"] == [aid], made
            assert made["expires_at"], "the 30 days lifetime was not applied"
            # Shown once: gone after a reload.
            page.reload()
            expect(page.get_by_role("row").filter(has_text="Main website")).to_be_visible()
            assert secret not in page.content(), "the secret is shown again"
            # By keyboard: the confirmation takes the focus.
            page.get_by_role("button", name="Revoke Main website").focus()
            page.keyboard.press("Enter")
            expect(page.get_by_role("button", name="Yes, revoke")).to_be_focused()
            page.keyboard.press("Enter")
            expect(page.get_by_role("row").filter(has_text="Main website")).to_contain_text("revoked")
            st, body = call("GET", f"/agents/{aid}", secret)
            assert st == 401 and body["code"] == "api_key_revoked", (st, body)
            shoot(page, "04-agent-api-key-revoked")

        report("generate a key on the agent's API tab, seen once; revoke it and the API refuses it",
               api_tab_generate_and_revoke)

        def keys_page():
            visit(page, "#/keys", "API keys")
            for label in ("Permanent", "1 year", "90 days", "30 days", "1 week"):
                expect(page.get_by_label(label, exact=True)).to_be_visible()
            expect(page.get_by_role("row").filter(has_text="console-admin")).to_be_visible()
            shoot(page, "05-keys")

        report("the team's keys page: lifetimes and the keys table", keys_page)

        run_page = context.new_page()
        run_page.on("console", on_console)
        run_page.on("pageerror", lambda e: console_errors.append(f"page error: {e}"))

        def chat_and_stream():
            aid = state["agent"]
            page.goto(f"{CONSOLE}#/agents/{aid}/chat")
            page.get_by_label("Message").fill("where is my order?")
            page.get_by_role("button", name="Send").click()
            steps = page.get_by_role("list", name="Run steps")
            expect(steps).to_contain_text("You said: where is my order?")
            expect(steps).to_contain_text("calls send_email")
            expect(steps).to_contain_text("waiting for a person to approve send_email")
            link = page.get_by_role("link", name=re.compile(r"^[0-9a-f]{8}$")).first
            state["run"] = link.get_attribute("href").rsplit("/", 1)[1]
            shoot(page, "06-agent-chat-streaming")
            # The run's page, open in a second tab, follows the run live. A tab has its own
            # session storage, so the second tab signs in too.
            run_page.set_viewport_size({"width": 1440, "height": 900})
            run_page.goto(f"{CONSOLE}#/runs/{state['run']}")
            run_page.get_by_label("API key").fill(ADMIN)
            run_page.get_by_role("button", name="Sign in").click()
            expect(run_page.locator("#run-status")).to_have_text("waiting approval")
            expect(run_page.get_by_role("list", name="Steps")).to_contain_text("approval requested")

        report("chat with the agent and watch the run stream", chat_and_stream)

        def approve():
            aid = state["agent"]
            visit(page, "#/approvals", "Approvals")
            card = page.get_by_role("article", name="Approval for send_email")
            expect(card).to_have_count(1)
            expect(card).to_contain_text("ana@example.com")
            # Live: a second run waiting for approval appears without a reload.
            st, _ = call("POST", f"/agents/{aid}/runs", ADMIN, {"input": "second"})
            assert st == 202, st
            expect(card).to_have_count(2)
            shoot(page, "07-approvals-pending")
            first = page.get_by_role("article", name="Approval for send_email").filter(
                has=page.get_by_role("link", name=state["run"][-8:]))
            first.get_by_label("Comment (optional)").fill("Checked with the customer.")
            first.get_by_role("button", name="Approve send_email").click()
            expect(card).to_have_count(1)
            decided = page.get_by_role("row").filter(has_text="Checked with the customer.")
            expect(decided).to_contain_text("approved")
            # The run's page sees it finish, live.
            expect(run_page.locator("#run-status")).to_have_text("succeeded", timeout=30_000)
            expect(run_page.locator("#run-output")).to_contain_text("Email sent.")
            expect(run_page.get_by_role("list", name="Steps")).to_contain_text("Email sent.")
            run_page.bring_to_front()
            shoot(run_page, "08-run-succeeded")
            page.bring_to_front()
            # Reject the other one, so every run ends.
            other = page.get_by_role("article", name="Approval for send_email")
            other.get_by_role("button", name="Reject send_email").click()
            expect(page.get_by_text("Nothing waits for you.")).to_be_visible()
            shoot(page, "09-approvals-decided")

        report("approve a waiting approval and see the run finish", approve)
        run_page.close()

        def runs_page():
            visit(page, "#/runs", "Runs")
            expect(page.get_by_role("link", name=state["run"][-8:])).to_be_visible()
            page.get_by_label("Status").select_option("succeeded")
            page.get_by_role("button", name="Filter").click()
            expect(page.get_by_role("link", name=state["run"][-8:])).to_be_visible()
            expect(page.get_by_role("cell", name="failed")).to_have_count(0)
            shoot(page, "10-runs")

        report("runs list with filters", runs_page)

        def cancel():
            st, slow = call("POST", "/agents", ADMIN, {"name": "Slow bot", "runtime": "scripted",
                                                       "config": {"steps": [{"sleep_ms": 60000}, {"reply": "late"}]}})
            assert st == 201, (st, slow)
            st, run = call("POST", f"/agents/{slow['id']}/runs", ADMIN, {"input": "wait"})
            assert st == 202, (st, run)
            visit(page, f"#/runs/{run['id']}", "Run")
            expect(page.locator("#run-status")).to_have_text(re.compile("queued|running"))
            page.get_by_role("button", name="Cancel run").click()
            expect(page.locator("#run-status")).to_have_text("cancelled", timeout=30_000)
            assert call("GET", f"/runs/{run['id']}", ADMIN)[1]["status"] == "cancelled"
            shoot(page, "10-run-cancelled")

        report("cancel a run from its page", cancel)

        def agents_pause_resume():
            visit(page, "#/agents", "Agents")
            page.get_by_role("button", name="Pause Support bot").click()
            expect(page.get_by_role("button", name="Resume Support bot")).to_be_visible()
            assert call("GET", f"/agents/{state['agent']}", ADMIN)[1]["status"] == "paused"
            page.get_by_role("button", name="Resume Support bot").click()
            expect(page.get_by_role("button", name="Pause Support bot")).to_be_visible()
            shoot(page, "11-agents")

        report("agents list: pause and resume", agents_pause_resume)

        def webhooks():
            visit(page, "#/webhooks", "Webhooks")
            page.get_by_label("URL").fill(RECEIVER)
            page.get_by_role("button", name="Add endpoint").click()
            expect(page.get_by_text("whsec_")).to_be_visible()
            page.get_by_role("link", name="Open it").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Webhook endpoint")
            page.get_by_role("button", name="Send test event").click()
            expect(page.get_by_role("cell", name="webhook.test").first).to_be_visible()
            for _ in range(40):
                if page.get_by_role("cell", name="succeeded").count():
                    break
                page.wait_for_timeout(500)
                page.reload()
                expect(page.get_by_role("heading", level=1)).to_have_text("Webhook endpoint")
            expect(page.get_by_role("cell", name="succeeded").first).to_be_visible()
            page.get_by_role("button", name=re.compile("^Attempts of delivery")).first.click()
            expect(page.get_by_role("cell", name="200").first).to_be_visible()
            page.get_by_role("button", name=re.compile("^Retry delivery")).first.click()
            shoot(page, "12-webhook-deliveries")
            visit(page, "#/webhooks", "Webhooks")
            shoot(page, "12-webhooks")

        report("webhooks: add an endpoint, send a test event, see its delivery and attempts, retry", webhooks)

        def hooks():
            visit(page, "#/hooks", "Inbound hooks")
            page.get_by_label("Signature scheme").select_option("none")
            page.get_by_label("Description").fill("contact form")
            page.get_by_role("button", name="Create hook").click()
            expect(page.get_by_role("row").filter(has_text="contact form")).to_contain_text(f"{API}/hooks/")
            shoot(page, "13-hooks")

        report("inbound hooks with their public URL", hooks)

        def logs_usage_audit_notifications():
            visit(page, "#/logs", "Request logs")
            page.get_by_label("Text in path or body").fill("approvals")
            page.get_by_role("button", name="Search").click()
            expect(page.get_by_role("cell", name="/api/v1/approvals").first).to_be_visible()
            shoot(page, "14-request-logs")
            visit(page, "#/usage", "Usage")
            expect(page.get_by_role("img", name=re.compile("Runs per day"))).to_be_visible()
            shoot(page, "15-usage")
            visit(page, "#/audit", "Audit log")
            expect(page.get_by_role("cell", name="api_key.revoked")).to_be_visible()
            shoot(page, "16-audit")
            visit(page, "#/notifications", "Notifications")
            expect(page.locator("#unread")).to_be_visible()
            expect(page.get_by_role("cell", name="Approval requested").first).to_be_visible()
            shoot(page, "17-notifications")
            page.get_by_role("button", name="Mark all read").click()
            expect(page.locator("#unread")).to_be_hidden()

        report("request logs (search), usage chart, audit log, notifications (unread count)",
               logs_usage_audit_notifications)

        def dark_mode():
            light = page.evaluate("getComputedStyle(document.body).backgroundColor")
            page.emulate_media(color_scheme="dark")
            dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert light != dark, f"the page ignores the system's dark mode ({light})"
            visit(page, f"#/agents/{state['agent']}/api", "Support bot")
            shoot(page, "20-dark-agent-api")
            page.emulate_media(color_scheme="light")

        report("dark mode follows the system", dark_mode)

        def mobile_menu():
            page.set_viewport_size({"width": 375, "height": 800})
            visit(page, f"#/agents/{state['agent']}", "Support bot")
            expect(page.get_by_role("link", name="API", exact=True)).to_be_visible()
            pages = page.get_by_role("navigation", name="Console pages")
            expect(pages).to_be_hidden()
            menu = page.get_by_role("button", name="Menu")
            expect(menu).to_have_attribute("aria-expanded", "false")
            menu.focus()
            page.keyboard.press("Enter")
            expect(pages).to_be_visible()
            expect(menu).to_have_attribute("aria-expanded", "true")
            pages.get_by_role("link", name="Approvals").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Approvals")
            expect(pages).to_be_hidden()
            page.set_viewport_size({"width": 1440, "height": 900})
            expect(pages).to_be_visible()

        report("at 375 px the pages are behind a Menu button; an agent's tabs stay visible", mobile_menu)

        def restricted():
            aid = state["agent"]
            st, other = call("POST", "/agents", ADMIN, {"name": "Other team bot", "runtime": "scripted",
                                                        "config": {"steps": [{"reply": "other"}]}})
            assert st == 201, st
            call("POST", f"/agents/{other['id']}/runs", ADMIN, {"input": "theirs"})
            st, k = call("POST", "/api-keys", ADMIN, {
                "name": "support only", "agent_ids": [aid],
                "scopes": ["agents:read", "runs:read", "keys:read", "usage:read", "notifications:read", "signals:write"]})
            assert st == 201, (st, k)
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_label("API key")).to_be_visible()
            allowed_403[0] = True
            sign_in(k["key"])
            expect(page.get_by_role("link", name="Support bot")).to_be_visible()
            expect(page.get_by_text("Other team bot")).to_have_count(0)
            shoot(page, "18-restricted-agents")
            visit(page, "#/runs", "Runs")
            expect(page.get_by_role("link", name=state["run"][-8:])).to_be_visible()
            expect(page.get_by_text("Other team bot")).to_have_count(0)
            visit(page, "#/approvals", "Approvals")
            expect(page.get_by_role("row").filter(has_text="approved")).to_have_count(1)
            visit(page, "#/keys", "API keys")
            expect(page.get_by_role("row").filter(has_text="console-admin")).to_have_count(0)
            expect(page.get_by_role("row").filter(has_text="support only")).to_have_count(1)
            visit(page, "#/usage", "Usage")
            expect(page.get_by_text("Other team bot")).to_have_count(0)
            visit(page, "#/webhooks", "Webhooks")
            expect(page.get_by_text("Out of scope for this API key.")).to_be_visible()
            shoot(page, "19-restricted-out-of-scope")
            visit(page, "#/audit", "Audit log")
            expect(page.get_by_text("Out of scope for this API key.")).to_be_visible()
            allowed_403[0] = False

        report("a key limited to one agent sees only it, and out-of-scope pages say so", restricted)

        def headers():
            with urllib.request.urlopen(CONSOLE, timeout=10) as r:
                csp = r.headers["Content-Security-Policy"]
                assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, csp
                assert r.headers["X-Frame-Options"] == "DENY"

        report("the console is served with a strict CSP and no framing", headers)

        browser.close()

    def clean():
        assert not blocked, f"requests left 127.0.0.1: {blocked}"
        assert not console_errors, f"console errors: {console_errors}"
        with open(SERVER_LOG, encoding="utf-8", errors="replace") as f:
            log = f.read()
        leaked = [s[:11] for s in secrets if s in log]
        assert not leaked, f"the server log holds API keys: {leaked}"

    report("no request left 127.0.0.1, the console logged no error, no key reached the server log", clean)


try:
    main()
except Exception:  # noqa: BLE001 - a crash is a failure, counted
    traceback.print_exc()
    failed += 1
receiver.shutdown()
print(f"check-console: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
