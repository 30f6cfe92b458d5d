"""The console in Chromium, over a real server with an API key and real partners.

Each test makes its own messages (ids and destinations of its own), waits for them through
the API, then asserts on what the page shows and on what the API says after a click.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from tests.browser.conftest import KEY, SENDER
from tests.browser.hostile import HOSTILE_BODY, HostilePartner
from tests.e2e.api_client import Api, ServerProcess
from tests.partner import Partner

FAST = {"initialDelaySeconds": 0.2, "maxDelaySeconds": 0.5}


def submit(api: Api, message_id: str, url: str, *, attempts: int = 1,
           **fields: Any) -> None:
    response = api.submit({"messageId": message_id, "targetUrl": url,
                           "body": {"id": message_id},
                           "retryPolicy": {"maxAttempts": attempts, **FAST}, **fields})
    assert response.status_code == 202, response.text


def open_console(page: Page, server: ServerProcess, view: str = "messages") -> None:
    """Open the console and type the key, as a person would."""
    page.goto(f"{server.base_url}/console#/{view}")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#login-key", KEY)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#who-sender")).to_have_text(f"Sender: {SENDER}")
    expect(page.locator("#view")).to_be_visible()


def statuses(api: Api) -> Counter[str]:
    return Counter(m["status"] for page in api.pages(api.list, limit=500)
                   for m in page["items"])


def test_login_keeps_the_key_in_session_storage_only(
        page: Page, server: ServerProcess, screenshots: Path) -> None:
    page.goto(f"{server.base_url}/console")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#nav")).to_be_hidden()
    page.screenshot(path=screenshots / "0-login.png")

    page.fill("#login-key", "not-a-key")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#flash")).to_contain_text("The API key was refused")
    expect(page.locator("#login")).to_be_visible()

    page.fill("#login-key", KEY)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#who-sender")).to_have_text(f"Sender: {SENDER}")
    assert page.evaluate("sessionStorage.getItem('notify-relay.key')") == KEY
    assert page.evaluate("localStorage.length") == 0
    assert page.evaluate("document.cookie") == ""
    assert page.context.cookies() == []
    assert KEY not in page.url

    page.reload()  # the same tab keeps the key
    expect(page.locator("#who-sender")).to_have_text(f"Sender: {SENDER}")
    page.click("#sign-out")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('notify-relay.key')") is None


def clear_filters(page: Page) -> None:
    """Clear, and wait for the page it opens: filled before that page came (the hash's
    change renders it later, on a loaded machine after the fill), a field was replaced by
    an empty one, and the search showed every message (CI, 2026-12-08)."""
    page.click("#filters button:text('Clear')")  # the hash changes at once, the page later
    expect(page).to_have_url(re.compile(r"#/messages$"))
    expect(page.locator("#counts button[data-status='']")).to_have_class(
        re.compile(r"\bselected\b"))
    for field in ("#filter-id", "#filter-destination"):
        expect(page.locator(field)).to_have_value("")


def test_messages_counts_filters_and_live_counts(
        page: Page, server: ServerProcess, api: Api, site_partner: Partner,
        screenshots: Path) -> None:
    for n in range(3):
        submit(api, f"list-ok-{n}", site_partner.url("/ok"), destination="list-ok")
    submit(api, "list-bad-0", site_partner.url("/status/404"), destination="list-bad")
    for n in range(3):
        api.wait_for(f"list-ok-{n}", {"DELIVERED"})
    api.wait_for("list-bad-0", {"FAILED"})
    expected = statuses(api)

    open_console(page, server)
    counts = page.locator("#counts")
    for status in ("DELIVERED", "FAILED"):
        expect(counts.locator(f"button[data-status={status}] .count")).to_have_text(
            str(expected[status]))
    expect(counts.locator("button[data-status=''] .count")).to_have_text(
        str(sum(expected.values())))
    expect(page.locator("#messages tr[data-id=list-ok-0]")).to_be_visible()
    page.screenshot(path=screenshots / "1-messages.png", full_page=True)

    # filter by status: a click on its count
    counts.locator("button[data-status=FAILED]").click()
    expect(page).to_have_url(re.compile(r"status=FAILED"))
    rows = page.locator("#messages tr")
    expect(rows).to_have_count(min(expected["FAILED"], 50))
    expect(rows.locator(".badge")).to_have_text(["FAILED"] * min(expected["FAILED"], 50))
    expect(page.locator("#messages tr[data-id=list-bad-0]")).to_be_visible()

    # search by id and by destination
    clear_filters(page)
    page.fill("#filter-id", "list-ok-")
    page.click("#filters button[type=submit]")
    expect(rows).to_have_count(3)
    clear_filters(page)
    page.fill("#filter-destination", "list-bad")
    page.click("#filters button[type=submit]")
    expect(page.locator("#messages tr")).to_have_count(1)
    expect(page.locator("#messages tr td.id")).to_have_text("list-bad-0")

    # by time: nothing was created in the future, everything after 2000
    clear_filters(page)
    page.fill("#filter-since", "2100-01-01T00:00")
    page.click("#filters button[type=submit]")
    expect(page.locator("#messages-summary")).to_have_text("No messages match.")
    page.fill("#filter-since", "2000-01-01T00:00")
    page.fill("#filter-destination", "list-ok")
    page.click("#filters button[type=submit]")
    expect(rows).to_have_count(3)

    # the counts follow the server without a reload
    submit(api, "list-ok-late", site_partner.url("/ok"), destination="list-ok")
    api.wait_for("list-ok-late", {"DELIVERED"})
    expect(counts.locator("button[data-status=DELIVERED] .count")).to_have_text(
        str(expected["DELIVERED"] + 1))


def test_message_page_shows_attempts_and_the_partner_response_as_text(
        page: Page, server: ServerProcess, api: Api, hostile: HostilePartner,
        screenshots: Path) -> None:
    note = '<img src=x onerror="window.__pwned=4">'
    submit(api, "hostile-0", hostile.url("/hook"), destination="hostile",
           headers={"X-Note": note, "Authorization": "Bearer partner-secret-value"})
    api.wait_for("hostile-0", {"FAILED"})

    open_console(page, server, "message/hostile-0")
    expect(page.locator("#message-status")).to_have_text("FAILED")
    attempt = page.locator("#attempts tr[data-number='1']")
    expect(attempt).to_contain_text("GIVE_UP")
    expect(attempt).to_contain_text("400")
    # the partner's body and headers, shown as the text they are
    expect(attempt.locator("pre.body")).to_have_text(HOSTILE_BODY)
    expect(attempt.locator("table.headers")).to_contain_text('text/html"><svg onload=')
    # the sender's headers: hostile text shown as text, credentials redacted by the API
    headers = page.locator("#message-headers")
    expect(headers).to_contain_text(note)
    expect(headers).to_contain_text("Authorization")
    expect(headers).not_to_contain_text("partner-secret-value")
    timeline = page.locator("#timeline li")
    expect(timeline).to_have_count(3)
    expect(timeline.nth(0)).to_contain_text("accepted")
    expect(timeline.nth(1)).to_contain_text("attempt 1: GIVE_UP (HTTP 400)")
    expect(timeline.nth(2)).to_contain_text("failed (dead letter)")
    expect(page.locator("#retry")).to_be_enabled()
    expect(page.locator("#cancel")).to_be_disabled()
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#view img, #view script, #view svg").count() == 0
    page.screenshot(path=screenshots / "2-message.png", full_page=True)


def test_retry_a_failed_message(page: Page, server: ServerProcess, api: Api,
                                site_partner: Partner) -> None:
    site_partner.failing.add("retry")
    submit(api, "retry-0", site_partner.url("/switch/retry"), destination="retry")
    api.wait_for("retry-0", {"FAILED"})
    site_partner.failing.discard("retry")

    open_console(page, server, "message/retry-0")
    expect(page.locator("#message-status")).to_have_text("FAILED")
    page.click("#retry")
    expect(page.locator("#flash")).to_contain_text("Retried")
    expect(page.locator("#message-status")).to_have_text("DELIVERED")
    expect(page.locator("#attempts tbody tr")).to_have_count(2)
    assert api.get("retry-0").json()["status"] == "DELIVERED"


def test_cancel_a_retrying_message(page: Page, server: ServerProcess, api: Api,
                                   site_partner: Partner, screenshots: Path) -> None:
    response = api.submit({"messageId": "cancel-0", "destination": "cancel",
                           "targetUrl": site_partner.url("/status/503"),
                           "retryPolicy": {"maxAttempts": 5, "initialDelaySeconds": 60}})
    assert response.status_code == 202, response.text
    api.wait_for("cancel-0", {"RETRYING"})

    open_console(page, server, "message/cancel-0")
    expect(page.locator("#message-status")).to_have_text("RETRYING")
    expect(page.locator("#timeline li").last).to_contain_text("next attempt due")
    expect(page.locator("#retry")).to_be_disabled()
    page.click("#cancel")
    expect(page.locator("#flash")).to_contain_text("Cancelled")
    expect(page.locator("#message-status")).to_have_text("CANCELLED")
    expect(page.locator("#cancel")).to_be_disabled()
    expect(page.locator("#retry")).to_be_enabled()
    assert api.get("cancel-0").json()["status"] == "CANCELLED"
    page.screenshot(path=screenshots / "3-cancelled.png", full_page=True)

    page.click("#cancel", force=True)  # disabled: nothing is sent
    expect(page.locator("#message-status")).to_have_text("CANCELLED")


def test_replay_the_dead_letters_of_a_destination(
        page: Page, server: ServerProcess, api: Api, site_partner: Partner,
        screenshots: Path) -> None:
    site_partner.failing.add("replay")
    for n in range(2):
        submit(api, f"replay-{n}", site_partner.url("/switch/replay"), destination="replay")
    submit(api, "replay-other", site_partner.url("/status/410"), destination="replay-other")
    for message_id in ("replay-0", "replay-1", "replay-other"):
        api.wait_for(message_id, {"FAILED"})
    site_partner.failing.discard("replay")

    open_console(page, server, "replay")
    page.fill("#replay-destination", "replay")
    page.click("#replay-form button[type=submit]")
    expect(page.locator("#dead-letter-count")).to_have_text("2 dead letters")
    expect(page.locator("#dead-letters tr[data-id]")).to_have_count(2)
    page.screenshot(path=screenshots / "4-replay.png", full_page=True)
    page.click("#replay")
    expect(page.locator("#replay-result")).to_have_text("Replayed 2 dead letters.")
    for n in range(2):
        assert api.wait_for(f"replay-{n}", {"DELIVERED"})["attemptCount"] == 2
    assert api.get("replay-other").json()["status"] == "FAILED"  # another destination


def test_pause_and_resume_a_destination(page: Page, server: ServerProcess, api: Api,
                                        site_partner: Partner, screenshots: Path) -> None:
    submit(api, "pause-0", site_partner.url("/ok"), destination="pause")
    api.wait_for("pause-0", {"DELIVERED"})

    open_console(page, server, "destinations")
    row = page.locator("#destinations tr[data-destination=pause]")
    expect(row.locator(".state")).to_have_text("CLOSED")
    expect(row.locator(".is-paused")).to_have_text("no")
    row.locator("button.pause").click()
    expect(row.locator(".is-paused")).to_have_text("paused")
    expect(page.locator("#flash")).to_have_text("Paused pause.")
    assert api.destination("pause").json()["paused"] is True

    # a message for a paused destination waits: it shows as pending
    submit(api, "pause-1", site_partner.url("/ok"), destination="pause")
    expect(row.locator(".pending")).to_have_text("1")
    page.screenshot(path=screenshots / "5-destinations.png", full_page=True)

    row.locator("button.resume").click()
    expect(row.locator(".is-paused")).to_have_text("no")
    assert api.destination("pause").json()["paused"] is False
    api.wait_for("pause-1", {"DELIVERED"})
    expect(row.locator(".pending")).to_have_text("0")


def test_activity_chart(page: Page, server: ServerProcess, api: Api,
                        site_partner: Partner, screenshots: Path) -> None:
    submit(api, "chart-ok", site_partner.url("/ok"), destination="chart")
    submit(api, "chart-bad", site_partner.url("/status/422"), destination="chart")
    api.wait_for("chart-ok", {"DELIVERED"})
    api.wait_for("chart-bad", {"FAILED"})

    open_console(page, server, "activity")
    chart = page.locator("#chart svg.chart")
    expect(chart).to_be_visible()
    expect(chart.locator("g[data-minute]")).to_have_count(60)
    expect(chart.locator("rect.delivered").first).to_be_visible()
    expect(chart.locator("rect.failed").first).to_be_visible()
    activity = api.http.get("/console/api/activity").json()["minutes"]
    delivered = sum(m["delivered"] for m in activity)
    failed = sum(m["failed"] for m in activity)
    assert delivered >= 1
    assert failed >= 1
    expect(page.locator("#activity-totals")).to_have_text(
        f"Last 60 minutes: {delivered} delivered, {failed} failed.")
    drawn = sum(int(c) for c in chart.locator("rect.delivered").evaluate_all(
        "rects => rects.map(r => r.dataset.count)"))
    assert drawn == delivered
    page.screenshot(path=screenshots / "6-activity.png", full_page=True)


def test_without_keys_the_console_asks_for_a_sender_only(
        page: Page, tmp_path: Path, site_partner: Partner, screenshots: Path) -> None:
    with ServerProcess(tmp_path / "relay.db", "--allow-networks", "127.0.0.0/8") as keyless, \
            Api(keyless.base_url) as api:
        submit(api, "ops-0", site_partner.url("/ok"), senderId="ops", destination="ops")
        api.wait_for("ops-0", {"DELIVERED"}, senderId="ops")

        page.goto(f"{keyless.base_url}/console")
        expect(page.locator("#login")).to_be_hidden()
        expect(page.locator("#sender")).to_have_value("default")
        expect(page.locator("#sign-out")).to_be_hidden()
        expect(page.locator("#counts button[data-status=''] .count")).to_have_text("0")

        page.fill("#sender", "ops")
        page.click("#sender-form button[type=submit]")
        expect(page.locator("#counts button[data-status=DELIVERED] .count")).to_have_text("1")
        assert page.evaluate("sessionStorage.getItem('notify-relay.sender')") == "ops"
        assert page.evaluate("sessionStorage.getItem('notify-relay.key')") is None
        page.screenshot(path=screenshots / "7-keyless.png", full_page=True)
        page.click("#messages a:text('ops-0')")
        expect(page.locator("#message-status")).to_have_text("DELIVERED")

        # a change from the console's own page passes the key-less server's origin check
        page.click("#nav a[data-view=destinations]")
        page.locator("#destinations tr[data-destination=ops] button.pause").click()
        expect(page.locator("#flash")).to_have_text("Paused ops.")
        assert api.destination("ops", senderId="ops").json()["paused"] is True
