"""
The web console in a real browser: Debian's Chromium driven by Playwright's library.

Each test starts a real Rhetor (simulated provider, streaming slowed by
``simulated_chunk_delay`` so that it can be seen) on an ephemeral port in a
background thread, and opens the console at ``/ui/`` in a new tab of one
headless Chromium shared by the whole module. Nothing downloads a browser:
Chromium is ``/usr/bin/chromium`` (``RHETOR_TEST_CHROMIUM`` to use another),
installed by ``.ci/run`` when missing. Every test leaves a screenshot in
``test-artifacts/console/`` (kept out of git), passing or failing.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from rhetor.routing._plan import TaskConfig
from rhetor.runtime import default_backends
from tests.helpers import ServerInfo, settings_for
from tests.server_thread import ServerThread

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("RHETOR_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
# The flags the issue asks for; Playwright adds --headless and a user-data directory it is given.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
KEY = "console-browser-key"
# simulated-echo made dear, so that every reply costs something the views can show.
PRICES = {"simulated/simulated-echo": {"input_per_mtok": 1000, "output_per_mtok": 2000}}
# Playwright's wait for each expectation: generous, because CI's two cores are shared.
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """One headless Chromium for the module, with a new, empty user-data directory."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"the console's browser tests need Debian's Chromium at {CHROMIUM}: "
            "apt-get install -y chromium (.ci/run does), or set RHETOR_TEST_CHROMIUM"
        )
    profile = tmp_path_factory.mktemp("chromium-profile")
    assert not any(profile.iterdir())
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A new tab; afterwards its screenshot is saved, and any uncaught page error fails the test."""
    tab = browser.new_page()
    tab.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield tab
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
        tab.close()
    assert not errors, f"the console threw: {errors}"


@pytest.fixture
def serve(tmp_path: Path) -> Callable[..., Any]:
    """``with serve(**settings) as server:`` a real Rhetor whose simulated-echo has a price."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))

    @contextmanager
    def serving(all_providers: bool = False, **overrides: Any) -> Iterator[ServerInfo]:
        fields: dict[str, Any] = {"simulated_chunk_delay": 0.05, "price_overrides": prices}
        fields.update(overrides)
        settings = settings_for(tmp_path, **fields)
        kwargs: dict[str, Any] = {}
        if all_providers:
            # Anthropic and OpenAI without keys, Ollama at a port nothing listens on: all down.
            kwargs["backends"] = default_backends(settings, TaskConfig.load(settings.task_config))
        with ServerThread(settings, **kwargs) as server:
            yield server

    return serving


def http(server: ServerInfo, key: str | None = None) -> httpx.Client:
    """A plain HTTP client of the test server, to check what the console shows."""
    headers = {"X-API-Key": key} if key else {}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=10)


def open_console(page: Page, server: ServerInfo, view: str = "chat") -> None:
    page.goto(f"{server.base_url}/ui/#{view}")
    expect(page.locator(f'#nav a[data-view="{view}"]')).to_have_class(re.compile("active"))


def chat(page: Page, text: str) -> None:
    page.fill("#chat-input", text)
    page.click("#chat-send")


def test_a_chat_reply_streams_with_the_typing_indicator_and_shows_its_model(
    page: Page, serve: Callable[..., Any]
) -> None:
    """The reply grows chunk by chunk under "Thinking...", which then goes; it names model and cost."""
    with serve(simulated_chunk_delay=0.1) as server:
        open_console(page, server)
        chat(page, "Tell me about the Tekton system and its components please")
        typing = page.locator(".typing-indicator")
        expect(typing).to_be_visible()
        expect(typing).to_contain_text("Thinking")
        # A reply still marked partial with text in it: it is streaming, not arriving whole.
        partial = page.locator(".message.assistant.partial .content")
        expect(partial).not_to_be_empty()
        expect(page.locator("#chat-cancel")).to_be_enabled()
        reply = page.locator(".message.assistant").last
        expect(reply.locator(".reply-model")).to_have_text("Model: simulated-echo (simulated)")
        expect(typing).to_be_hidden()
        expect(page.locator(".message.assistant.partial")).to_have_count(0)
        expect(reply.locator(".content")).to_have_text(
            "[simulated] You said: Tell me about the Tekton system and its components please"
        )
        expect(reply.locator(".reply-tokens")).to_contain_text("tokens")
        expect(reply.locator(".reply-cost")).to_have_text(re.compile(r"^\$0\.\d+$"))
        expect(page.locator("#chat-send")).to_be_enabled()
        expect(page.locator("#chat-cancel")).to_be_disabled()


def test_after_a_request_the_spend_view_shows_its_cost(
    page: Page, serve: Callable[..., Any]
) -> None:
    """The reply's cost is the day's spend, the chart's total and the latest request's cost."""
    with serve() as server:
        open_console(page, server)
        chat(page, "What does this cost?")
        cost_text = page.locator(".message.assistant .reply-cost").last
        expect(cost_text).to_have_text(re.compile(r"^\$0\.\d+$"))
        cost = cost_text.inner_text()
        with http(server) as client:
            spent = client.get("/budget").json()["periods"]["daily"]["spent"]
        assert cost == f"${spent:g}" and spent > 0

        page.click('#nav a[data-view="spend"]')
        daily = page.locator('.card[data-period="daily"]')
        expect(daily.locator(".spent")).to_have_text(cost)
        expect(daily.locator(".limit")).to_have_text("none")
        expect(page.locator(".chart .bar text.value").last).to_have_text(cost)
        expect(page.locator(".chart rect title").first).to_contain_text(f"simulated: {cost}")
        expect(page.locator("#spend-totals tbody tr")).to_have_count(1)
        expect(page.locator("#spend-totals .cost")).to_have_text(cost)
        latest = page.locator(".requests tbody tr")
        expect(latest).to_have_count(1)
        expect(latest.locator(".cost")).to_have_text(cost)
        expect(latest).to_contain_text("simulated-echo")

        page.select_option("#spend-group", "component")
        expect(page.locator(".legend")).to_contain_text("rhetor-console")


def test_the_spend_view_lists_requests_other_clients_made(
    page: Page, serve: Callable[..., Any]
) -> None:
    """Another client's requests are listed newest first with their cost and status; Refresh brings new ones."""
    with serve() as server, http(server) as client:
        client.post("/message", json={"message": "from hermes", "component": "hermes"})
        open_console(page, server, "spend")
        rows = page.locator(".requests tbody tr")
        expect(rows).to_have_count(1)
        [entry] = client.get("/budget/entries").json()["entries"]
        expect(rows.first.locator(".component")).to_have_text("hermes")
        expect(rows.first).to_contain_text("simulated-echo")
        expect(rows.first.locator(".cost")).to_have_text(f"${entry['cost']:g}")
        expect(rows.first.locator(".status")).to_have_text("ok")

        # A stream another client leaves after its first chunk: billed as partial.
        body = {"message": " ".join(["word"] * 60), "component": "ergon"}
        with client.stream("POST", "/stream", json=body) as stream:
            next(line for line in stream.iter_lines() if line.startswith("data: "))
        deadline = time.monotonic() + WAIT_MS / 1000
        while len(client.get("/budget/entries").json()["entries"]) < 2:
            assert time.monotonic() < deadline, "the left stream was never billed"
            time.sleep(0.05)
        expect(rows).to_have_count(1)  # the console is not told of other clients' requests
        page.click("#spend-refresh")
        expect(rows).to_have_count(2)
        expect(rows.first.locator(".component")).to_have_text("ergon")
        expect(rows.first).to_have_attribute("data-status", "partial")
        expect(rows.first.locator(".status")).to_have_text("partial: cut off mid-stream")
        expect(rows.nth(1).locator(".component")).to_have_text("hermes")


def test_a_template_is_created_edited_and_rendered(page: Page, serve: Callable[..., Any]) -> None:
    """A template made in the console renders with its variables and keeps its versions."""
    with serve() as server:
        open_console(page, server, "library")
        page.click("#template-new")
        page.fill("#template-name", "greeting")
        page.fill("#template-content", "Hello {name}, welcome to {place}.")
        page.fill("#template-optional", "place")
        page.fill("#template-defaults", '{"place": "Tekton"}')
        page.click("#template-save")
        expect(page.locator('#template-list [data-template="greeting"]')).to_be_visible()
        page.fill('[data-variable="name"]', "Ada")
        page.click("#template-render")
        expect(page.locator("#template-rendered")).to_have_text("Hello Ada, welcome to Tekton.")

        page.fill("#template-content", "Hi {name}, from {place}.")
        page.click("#template-save")
        expect(page.locator(".notice")).to_have_text("Saved: version 2.")
        expect(page.locator("#template-versions li")).to_have_count(2)
        page.fill('[data-variable="name"]', "Grace")
        page.fill('[data-variable="place"]', "Rhetor")
        page.click("#template-render")
        expect(page.locator("#template-rendered")).to_have_text("Hi Grace, from Rhetor.")

        page.fill('[data-variable="name"]', "")
        page.click("#template-render")
        expect(page.locator(".error")).to_contain_text("name")
        with http(server) as client:
            stored = client.get("/templates/greeting").json()
    assert stored["current_version"] == 2 and stored["optional"] == ["place"]


def test_a_wrong_api_key_shows_the_servers_error_and_the_right_one_stays_in_the_tab(
    page: Page, browser: BrowserContext, serve: Callable[..., Any]
) -> None:
    """The console asks for the key, shows Rhetor's refusal, and keeps a good key in sessionStorage only."""
    with serve(api_key=KEY) as server:
        with http(server, "wrong-key") as client:
            refusal = client.get("/providers").json()["error"]["message"]
        page.goto(f"{server.base_url}/ui/")
        expect(page.locator(".overlay")).to_be_visible()
        page.fill("#api-key", "wrong-key")
        page.click(".key-form button[type=submit]")
        problem = page.locator(".key-problem .error")
        expect(problem).to_contain_text(refusal)
        expect(problem).to_contain_text("unauthorized")
        assert page.evaluate("sessionStorage.length") == 0

        page.fill("#api-key", KEY)
        page.click(".key-form button[type=submit]")
        expect(page.locator(".overlay")).to_have_count(0)
        assert page.evaluate("sessionStorage.getItem('rhetor.console.apiKey')") == KEY
        assert page.evaluate("localStorage.length") == 0
        assert page.evaluate("document.cookie") == ""
        # The key works for streaming too (the WebSocket carries it as ?api_key=).
        chat(page, "Hello with a key")
        expect(page.locator(".message.assistant .reply-model")).to_be_visible()

        page.reload()
        expect(page.locator("#chat-input")).to_be_visible()
        expect(page.locator(".overlay")).to_have_count(0)
        other = browser.new_page()
        try:
            other.goto(f"{server.base_url}/ui/")
            expect(other.locator(".overlay")).to_be_visible()
        finally:
            other.close()

        page.click("text=Forget key")
        expect(page.locator(".overlay")).to_be_visible()
        assert page.evaluate("sessionStorage.length") == 0


def test_a_budget_refusal_shows_as_a_clear_message(page: Page, serve: Callable[..., Any]) -> None:
    """Limits set in the Spend view refuse a dear model; the chat says so, with the server's words."""
    with serve() as server:
        open_console(page, server, "spend")
        page.select_option("#budget-policy", "enforce")
        page.select_option("#limit-period", "daily")
        page.fill("#limit-amount", "0.0001")
        page.click("#limit-set")
        expect(page.locator('.card[data-period="daily"] .limit')).to_have_text("$0.0001")
        with http(server) as client:
            budget = client.get("/budget").json()
        assert budget["policy"] == "enforce" and budget["periods"]["daily"]["limit"] == 0.0001

        page.click('#nav a[data-view="chat"]')
        page.select_option("#chat-model", label="simulated-echo")
        chat(page, "Please answer with the dear model")
        refusal = page.locator(".budget-refusal")
        expect(refusal).to_be_visible()
        expect(refusal).to_contain_text("Over budget: the request was refused.")
        expect(refusal).to_contain_text("the daily budget, limit $0.0001, spent $0.")
        expect(refusal).to_contain_text("daily budget $0.0001 would be exceeded")
        expect(refusal).to_contain_text("budget_exceeded")
        expect(page.locator(".message.assistant")).to_have_count(0)
        expect(page.locator(".typing-indicator")).to_be_hidden()
        expect(page.locator("#chat-send")).to_be_enabled()


def test_cancel_stops_a_streaming_reply(page: Page, serve: Callable[..., Any]) -> None:
    """Cancel ends the stream on the server; the text so far stays, marked incomplete."""
    with serve(simulated_chunk_delay=0.2) as server:
        open_console(page, server)
        chat(page, " ".join(["word"] * 60))
        expect(page.locator(".message.assistant.partial .content")).not_to_be_empty()
        page.click("#chat-cancel")
        expect(page.locator(".chat-error .notice")).to_contain_text("Cancelled")
        expect(page.locator(".message.assistant.incomplete")).to_have_count(1)
        expect(page.locator(".typing-indicator")).to_be_hidden()
        expect(page.locator("#chat-send")).to_be_enabled()
        with http(server) as client:
            usage = client.get("/budget/usage").json()["usage"]
    # Billed for what streamed before the cancel: one partial charge, far short of the whole
    # reply (over 60 tokens, 12 s of chunks).
    assert [row["requests"] for row in usage] == [1]
    assert 0 < usage[0]["output_tokens"] < 40


def test_contexts_are_listed_searched_viewed_summarized_and_deleted(
    page: Page, serve: Callable[..., Any]
) -> None:
    """A stored conversation can be found, read, summarized and deleted from the console."""
    with serve(simulated_chunk_delay=0.0) as server:
        with http(server) as client:
            client.post("/message", json={"message": "A zebra crossing", "context_id": "ui:zebra"})
            client.post("/message", json={"message": "Another turn", "context_id": "ui:zebra"})
        open_console(page, server, "contexts")
        expect(page.locator('#context-list [data-context="ui:zebra"]')).to_contain_text(
            "4 messages"
        )
        page.fill("#context-search", "zebra")
        page.click(".side form button[type=submit]")
        page.locator(".hits button.item").first.click()
        detail = page.locator("#context-detail")
        expect(detail.locator(".transcript li")).to_have_count(4)
        expect(detail).to_contain_text("A zebra crossing")
        detail.locator("button", has_text="Summarize").click()
        expect(detail.locator(".summary")).to_contain_text("Summary:")
        delete = detail.locator("button", has_text="Delete")
        delete.click()
        delete.click()
        expect(detail).to_contain_text("Deleted ui:zebra.")
        expect(page.locator(".hits")).to_contain_text('No message matches "zebra".')
        expect(page.locator('#context-list [data-context="ui:zebra"]')).to_have_count(0)
        with http(server) as client:
            assert client.get("/contexts/ui:zebra").status_code == 404


def test_providers_show_availability_with_reasons_and_set_the_active_model(
    page: Page, serve: Callable[..., Any]
) -> None:
    """Down providers say why; making a model active goes to the server and shows at once."""
    with serve(all_providers=True, ollama_base_url="http://127.0.0.1:1") as server:
        open_console(page, server, "providers")
        anthropic = page.locator('tr[data-provider="anthropic"]')
        expect(anthropic.locator(".badge")).to_have_text("unavailable")
        expect(anthropic.locator(".reason")).to_have_text("ANTHROPIC_API_KEY not set")
        simulated = page.locator('tr[data-provider="simulated"]')
        expect(simulated.locator(".badge").first).to_have_text("available")
        simulated.locator("li", has_text="simulated-summary").locator("button").click()
        expect(simulated.locator("li", has_text="simulated-summary")).to_contain_text("active")
        with http(server) as client:
            assert client.get("/providers").json()["active_model"] == "simulated-summary"


def test_spend_over_time_splits_the_three_periods_into_disjoint_stretches(
    page: Page, serve: Callable[..., Any]
) -> None:
    """The chart's stretches are the periods' differences, whichever of week and month began first."""
    with serve() as server:
        open_console(page, server)
        buckets = page.evaluate(
            """async () => {
              const { spendOverTime } = await import('./chart.js');
              const row = (key, cost) => ({ key, cost, requests: 1 });
              const now = new Date('2026-12-03T12:00:00Z');
              const windows = [
                { period: 'daily', start: new Date('2026-12-03T00:00:00Z'), rows: [row('a', 1), row('b', 0.5)] },
                { period: 'weekly', start: new Date('2026-11-30T00:00:00Z'), rows: [row('a', 4), row('b', 0.5)] },
                { period: 'monthly', start: new Date('2026-12-01T00:00:00Z'), rows: [row('a', 3), row('b', 0.5)] },
              ];
              const split = spendOverTime(windows, now);
              // A week starting with the month leaves nothing between them: no empty stretch.
              const together = spendOverTime([
                { period: 'daily', start: new Date('2026-12-01T00:00:00Z'), rows: [row('a', 2)] },
                { period: 'weekly', start: new Date('2026-12-01T00:00:00Z'), rows: [row('a', 2)] },
                { period: 'monthly', start: new Date('2026-12-01T00:00:00Z'), rows: [row('a', 2)] },
              ], now);
              const plain = (result) => result.buckets.map((b) => [b.from.toISOString(), Object.fromEntries(b.costs)]);
              return { split: plain(split), keys: split.keys, together: plain(together) };
            }"""
        )
    assert buckets["split"] == [
        ["2026-11-30T00:00:00.000Z", {"a": 1, "b": 0}],
        ["2026-12-01T00:00:00.000Z", {"a": 2, "b": 0}],
        ["2026-12-03T00:00:00.000Z", {"a": 1, "b": 0.5}],
    ]
    assert buckets["keys"] == ["a", "b"]
    assert buckets["together"] == [["2026-12-01T00:00:00.000Z", {"a": 2}]]


def test_a_system_prompt_is_created_edited_and_deleted(
    page: Page, serve: Callable[..., Any]
) -> None:
    """A component's default system prompt is made, changed and removed from the console."""
    with serve() as server:
        open_console(page, server, "library")
        page.click('[data-tab="prompts"]')
        page.click("#prompt-new")
        page.fill("#prompt-name", "terse")
        page.fill("#prompt-component", "ergon")
        page.fill("#prompt-content", "You are terse.")
        page.check("#prompt-default")
        page.click("#prompt-save")
        expect(page.locator(".notice")).to_have_text("Created.")
        expect(page.locator("#prompt-list")).to_contain_text("ergon · default")
        page.fill("#prompt-content", "You are very terse.")
        page.click("#prompt-save")
        expect(page.locator(".notice")).to_have_text("Saved.")
        with http(server) as client:
            (stored,) = client.get("/prompts", params={"component": "ergon"}).json()["prompts"]
        assert stored["content"] == "You are very terse." and stored["is_default"] is True
        delete = page.locator("#prompt-editor button", has_text="Delete prompt")
        delete.click()
        delete.click()
        expect(page.locator("#prompt-editor")).to_contain_text("Deleted terse.")
        expect(page.locator("#prompt-list")).to_contain_text("No system prompts yet.")


def test_the_docs_page_renders_the_api_from_this_origin_alone(
    page: Page, serve: Callable[..., Any]
) -> None:
    """/docs shows the routes and the WebSocket frames, and asks no other site for anything."""
    with serve() as server:
        requested: list[str] = []
        refused: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        page.on(
            "console",
            lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.goto(f"{server.base_url}/docs")
        expect(page.locator("h1").first).to_contain_text("Rhetor")
        expect(page.get_by_text("One message to a model", exact=False).first).to_be_attached()
        expect(page.get_by_text("WebSocket", exact=True).first).to_be_attached()
    origin = server.base_url
    assert [url for url in requested if not url.startswith((origin, "blob:", "data:"))] == []
    assert refused == []
