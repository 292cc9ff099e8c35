"""The page in a real browser (Debian's chromium through Playwright) against ``imagegen serve`` on the demo model:
generate with Ctrl+Enter and watch progress and a live preview, queue and cancel, reuse settings from history, drop
a PNG to fill the form, paint a mask and inpaint, errors next to their field, the API key prompt, a phone screen."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from imagegen.metadata import write_image
from support.server_harness import ServerProcess, wait_job

pytestmark = pytest.mark.slow

#: Enough steps on the demo model (64x64, ~10 ms a step) for a job to be watched while it runs.
LONG_STEPS = 150
TIMEOUT_MS = 60_000

# Records, from before a job is submitted, whether the page ever showed a live preview and a partial progress bar
# (both are gone again once the job ends).
_WATCH = """() => {
  window.__seen = { previews: 0, progress: 0 };
  const preview = document.getElementById("preview");
  new MutationObserver(() => {
    if (!preview.hidden && preview.src.startsWith("data:image/jpeg")) window.__seen.previews += 1;
  }).observe(preview, { attributes: true });
  const bar = document.getElementById("current-progress");
  new MutationObserver(() => {
    if (bar.value > 0 && bar.value < 1) window.__seen.progress += 1;
  }).observe(bar, { attributes: true });
}"""


@pytest.fixture(scope="module")
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    return make_server()


@pytest.fixture
def page(browser: Any, server: ServerProcess) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    yield page
    context.close()
    assert problems == [], problems  # no uncaught script error in any test


def _jobs(server: ServerProcess, **params: Any) -> list[dict[str, Any]]:
    return server.get("/v1/jobs", params={"limit": 100, **params}).json()["data"]


def _generate(page: Any, prompt: str, *, steps: int | None = None) -> None:
    page.fill("#prompt", prompt)
    page.fill("#num_inference_steps", "" if steps is None else str(steps))
    page.focus("#prompt")
    page.keyboard.press("Control+Enter")


def _open_in_history(page: Any, prompt: str) -> None:
    """Generate ``prompt`` (12 steps), wait for it in the history and open its detail dialog."""
    _generate(page, prompt, steps=12)
    page.wait_for_function(
        "(p) => [...document.querySelectorAll('#history figcaption')].some(c => c.textContent.includes(p))", arg=prompt
    )
    page.locator("#history figure", has_text=prompt).first.locator("img").click()


def _submit_one_job(page: Any, server: ServerProcess) -> dict[str, Any]:
    """Click the form's button; the one job it queued, once it has ended."""
    before = {job["id"] for job in _jobs(server)}
    shown = page.locator("#gallery img").count()
    page.click("#submit")
    # The page puts the result in its gallery once the job has ended.
    page.wait_for_function("(n) => document.querySelectorAll('#gallery img').length > n", arg=shown)
    new = [job for job in _jobs(server) if job["id"] not in before]
    assert len(new) == 1
    return wait_job(server.get, new[0]["id"])


def test_ctrl_enter_generates_with_progress_and_a_live_preview(page: Any, server: ServerProcess, screenshots) -> None:
    page.evaluate(_WATCH)
    _generate(page, "a red circle", steps=LONG_STEPS)
    page.wait_for_selector("#gallery img")
    page.wait_for_function("document.querySelector('#gallery img').naturalWidth > 0")
    seen = page.evaluate("window.__seen")
    assert seen["progress"] >= 1, seen
    assert seen["previews"] >= 1, seen
    job = _jobs(server, status="succeeded")[0]
    assert job["request"]["prompt"] == "a red circle"
    assert job["request"]["preview_every"] == LONG_STEPS // 10  # about ten previews a run
    assert page.is_hidden("#preview")  # the result replaces the preview
    # The demo model draws what was asked: the image in the gallery is mostly red where it is not background.
    pixels = np.asarray(Image.open(io.BytesIO(httpx.get(job["images"][0]).content)).convert("RGB")).astype(int)
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
    assert red.mean() > 0.02
    page.screenshot(path=str(screenshots / "page-generate.png"))


def test_queue_three_jobs_and_cancel_one(page: Any, server: ServerProcess) -> None:
    for word in ("first", "second", "third"):
        _generate(page, f"a blue square {word}", steps=LONG_STEPS)
        page.wait_for_function(
            "(word) => [...document.querySelectorAll('#queue li')].some(li => li.textContent.includes(word))",
            arg=word,
        )
    third = page.locator("#queue li", has_text="third")
    third.get_by_role("button", name="cancel").click()
    squares = [job for job in _jobs(server) if "square" in job["request"]["prompt"]]
    ids = {job["request"]["prompt"].split()[-1]: job["id"] for job in squares}
    ended = {word: wait_job(server.get, job_id)["status"] for word, job_id in ids.items()}
    assert ended == {"first": "succeeded", "second": "succeeded", "third": "cancelled"}
    # The queue empties and the two results are in the history.
    page.wait_for_function("document.querySelectorAll('#queue li').length === 0")
    page.wait_for_function(
        "document.querySelectorAll('#history figcaption').length >= 2"
        " && [...document.querySelectorAll('#history figcaption')].some(c => c.textContent.includes('second'))"
    )


def test_reuse_settings_from_history(page: Any, server: ServerProcess) -> None:
    _open_in_history(page, "a green triangle at the top")
    job = next(j for j in _jobs(server, status="succeeded") if j["request"]["prompt"] == "a green triangle at the top")
    assert f"Seed: {job['seeds'][0]}," in page.inner_text("#detail-infotext")
    # The form is changed after the run; reusing the settings brings the job's back.
    page.evaluate("""() => {
      document.getElementById("prompt").value = "something else";
      document.getElementById("num_inference_steps").value = "";
    }""")
    page.click("#detail [data-action=reuse]")
    assert page.input_value("#prompt") == "a green triangle at the top"
    assert page.input_value("#seed") == str(job["seeds"][0])
    assert page.input_value("#num_inference_steps") == "12"


def test_dropping_a_png_fills_the_form(page: Any) -> None:
    buffer = io.BytesIO()
    infotext = (
        "a yellow cross on the left\nNegative prompt: blurry\n"
        "Steps: 33, Sampler: DDIM, CFG scale: 5, Seed: 4242, Size: 64x64"
    )
    write_image(Image.new("RGB", (64, 64), "yellow"), infotext, buffer)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    page.evaluate(
        """(encoded) => {
          const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], "old.png", { type: "image/png" }));
          document.getElementById("gallery").dispatchEvent(
            new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }""",
        encoded,
    )
    page.wait_for_function("document.getElementById('prompt').value === 'a yellow cross on the left'")
    assert page.input_value("#negative_prompt") == "blurry"
    assert page.input_value("#num_inference_steps") == "33"
    assert page.input_value("#seed") == "4242"
    assert page.input_value("#guidance_scale") == "5"
    assert page.input_value("#sampler") == "DDIM"


def test_paint_a_mask_and_inpaint(page: Any, server: ServerProcess) -> None:
    _open_in_history(page, "a purple circle")
    page.click("#detail [data-action=inpaint]")
    page.wait_for_selector("#mask-canvas", state="visible")
    page.wait_for_selector("#detail", state="hidden")
    assert page.is_checked("#use-mask")
    box = page.locator("#mask-canvas").bounding_box()
    assert box is not None
    assert box["width"] > 50
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.5, steps=8)
    page.mouse.up()
    page.fill("#prompt", "a white square")
    ended = _submit_one_job(page, server)
    assert ended["status"] == "succeeded", ended
    assert ended["request"]["init_image"] is True
    assert ended["request"]["mask"] is True
    assert "Mask blur" in ended["infotexts"][0] or "Denoising strength" in ended["infotexts"][0]


def test_an_api_error_is_shown_next_to_its_field(page: Any) -> None:
    _generate(page, "a red circle", steps=500)  # over the server's --max-steps (150)
    slot = page.locator("[data-error-for=num_inference_steps]")
    slot.wait_for(state="visible")
    assert "150" in slot.inner_text()
    assert "field-invalid" in (page.get_attribute("#num_inference_steps", "class") or "")
    page.fill("#num_inference_steps", "10")
    page.keyboard.press("Control+Enter")
    slot.wait_for(state="hidden")


def test_with_api_keys_the_page_asks_for_one_and_never_puts_it_in_a_url(
    browser: Any, make_server: Callable[..., ServerProcess]
) -> None:
    guarded = make_server("--api-key", "s3cret-key")
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.goto(guarded.url + "/")
    page.wait_for_selector("#key-dialog[open]")
    assert page.locator("#model option").count() == 0  # nothing loads without a key
    page.fill("#key-input", "wrong")
    page.click("#key-dialog button.primary")
    page.wait_for_function("!document.getElementById('key-error').hidden")
    assert "not accepted" in page.inner_text("#key-error")
    page.fill("#key-input", "s3cret-key")
    page.click("#key-dialog button.primary")
    page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    assert page.evaluate("sessionStorage.getItem('imagegen.apiKey')") == "s3cret-key"
    _generate(page, "a cyan square", steps=8)
    page.wait_for_selector("#gallery img")
    assert not any("s3cret" in url for url in urls), urls
    context.close()


def test_a_390px_phone_screen_cuts_nothing_off(browser: Any, server: ServerProcess, screenshots) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    time.sleep(0.5)  # the first queue and history refresh
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    # No visible control sticks out of the screen.
    outside = page.evaluate(
        """() => [...document.querySelectorAll('button, input, select, textarea, progress, img, h1, label')]
          .filter((e) => e.offsetParent !== null)
          .map((e) => [e.id || e.tagName, e.getBoundingClientRect()])
          .filter(([, r]) => r.left < -0.5 || r.right > 390.5)
          .map(([name, r]) => `${name}: ${Math.round(r.left)}..${Math.round(r.right)}`)"""
    )
    assert outside == []
    page.screenshot(path=str(screenshots / "page-phone.png"))
    context.close()


def test_upscale_a_result(page: Any, server: ServerProcess) -> None:
    _open_in_history(page, "an orange triangle")
    page.click("#detail [data-action=upscale]")
    page.wait_for_selector("#upscaler", state="visible")
    assert page.inner_text("#submit") == "Upscale"
    page.select_option("#upscaler", "Lanczos")
    page.fill("#upscale-scale", "2")
    ended = _submit_one_job(page, server)
    assert ended["status"] == "succeeded", ended
    assert ended["request"]["operation"] == "upscale"
    with Image.open(io.BytesIO(httpx.get(ended["images"][0]).content)) as image:
        assert image.size == (128, 128)
