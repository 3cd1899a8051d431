"""The web page in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``) and Selenium.

The page runs on 127.0.0.1 with a scripted LLM that streams and the echo generators (plus a second,
"untrained" text-to-image generator to switch to). Chromium resolves no host but 127.0.0.1, so the page is
proven to work offline. Each step saves a screenshot under the test's tmp dir.

Without Chromium these tests skip, naming the command that installs it; with MODAVERSE_REQUIRE_BROWSER=1
(CI, see .ci/run) they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

gradio = pytest.importorskip("gradio")

from modaverse_echo import EchoAudio, EchoEdit, EchoImage, EchoSpeech, EchoVideo  # noqa: E402

from modaverse_agent.agent import ModaVerseAgent  # noqa: E402
from modaverse_agent.conversation import Conversation  # noqa: E402
from modaverse_agent.llm_io import LLMRequest, PieceStream  # noqa: E402
from modaverse_agent.response import TextDelta  # noqa: E402
from modaverse_agent.zoo import Zoo  # noqa: E402

INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
REQUIRE_ENV = "MODAVERSE_REQUIRE_BROWSER"
LOCAL = ["127.0.0.1", "::1", "localhost"]
pytestmark = pytest.mark.allow_hosts(LOCAL)
MAX_UPLOAD = 2 * 1024 * 1024
STEP_S = 0.02  # seconds per streamed piece (3 characters)
GRADIO_ENV = ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED", "HF_HUB_DISABLE_TELEMETRY")

REPLIES = {
    "draw": ("Here is the picture you asked for.", "text-to-image"),
    "sound": ("Listen to this.", "text-to-audio"),
    "video": ("A short clip.", "text-to-video"),
    "slow": ("This answer takes its time, word after word. " * 60, "text-to-image"),  # 12 s: stopped early
    "steady": ("This answer streams for a few seconds, word after word. " * 14, "text-to-image"),
}


class KeywordLLM:
    """Streams a meta-response picked by a keyword of the request, three characters per ``STEP_S``."""

    output_format = "json"
    sees_media = False
    model_name = "scripted-keyword-llm"

    def respond(self, request: LLMRequest) -> str:
        for word, (text, task) in REPLIES.items():
            if word in request.instruction.lower():
                return json.dumps({"text": text, "invocations": [{"task": task, "prompt": request.instruction}]})
        return json.dumps({"text": "Hello! I can draw, play sounds and make videos.", "invocations": []})

    def stream(self, request: LLMRequest) -> PieceStream:
        raw = self.respond(request)

        def pieces() -> Iterator[str]:
            for i in range(0, len(raw), 3):
                time.sleep(STEP_S)
                yield raw[i : i + 3]

        return PieceStream(pieces())


class AltImage(EchoImage):
    """A second text-to-image generator on "untrained" weights, to switch to in the zoo panel."""

    name = "echo-image-alt"
    description = "The echo image generator under another name (untrained)."
    priority: ClassVar[int] = -200

    @property
    def untrained(self) -> bool:
        return True

    def real_weights_hint(self) -> str | None:
        return "modaverse zoo set text-to-image echo-image"


@pytest.fixture(autouse=True)
def connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every host this process connects to during the test (the page's server runs in it)."""
    seen: list[str] = []
    connect = socket.socket.connect

    def recording(sock: socket.socket, address: Any) -> Any:
        seen.append(str(address[0]) if isinstance(address, tuple) else "unix")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", recording)
    return seen


def _browser() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else shutil.which("chromedriver")
    missing = [n for n, p in (("chromium", chromium), ("chromedriver", driver)) if not p]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install selenium)")
    if missing:
        message = f"the browser tests need {', '.join(missing)}; install them with: {INSTALL}"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(message)
        pytest.skip(message)
    assert chromium and driver
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The page on 127.0.0.1 (one answer at a time, so a second tab waits in the queue)."""
    _browser()
    from modaverse_agent.serving.web import build_web_app, launch_web

    root = tmp_path_factory.mktemp("web")
    out = root / "out"
    zoo = Zoo([EchoImage(), EchoAudio(), EchoSpeech(), EchoVideo(), EchoEdit(), AltImage()])
    agent = ModaVerseAgent(KeywordLLM(), zoo, output_dir=out, timeout=30, seed=0)
    # time to first token in-process: the same answer through the conversation, no page
    start = time.perf_counter()
    first = next(e for e in Conversation(agent).stream("draw a cat") if isinstance(e, TextDelta))
    in_process = time.perf_counter() - start
    assert first.text
    saved_env = {k: os.environ.get(k) for k in GRADIO_ENV}
    page = build_web_app(agent, concurrency=1, max_upload_bytes=MAX_UPLOAD)
    port = _free_port()
    launch_web(page, host="127.0.0.1", port=port, block=False, quiet=True)
    yield {"url": f"http://127.0.0.1:{port}/", "out": out, "root": root, "ttft_in_process": in_process}
    page.close()
    for key, value in saved_env.items():  # build_web_app set them for this process
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def browser(site: dict[str, Any]) -> Iterator[Any]:
    """Headless Chromium that resolves no host but 127.0.0.1 (the page must work offline)."""
    _, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = site["root"] / "downloads"
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-device-for-media-stream",  # a test microphone (a beep) and camera (a moving pattern)
        "--use-fake-ui-for-media-stream",  # grant them without a prompt
        "--disable-crash-reporter",
        "--disable-breakpad",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.set_page_load_timeout(30)
    driver.downloads = downloads
    yield driver
    driver.quit()


class Person:
    """What a person does on the page, with a screenshot per step."""

    def __init__(self, driver: Any, shots: Path) -> None:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        self.d, self.shots, self.n = driver, shots, 0
        # the page re-renders as answers stream: an element found a moment ago may be replaced
        self.wait = WebDriverWait(driver, 20, poll_frequency=0.02, ignored_exceptions=[StaleElementReferenceException])
        shots.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str) -> Path:
        self.n += 1
        path = self.shots / f"{self.n:02d}-{name}.png"
        self.d.save_screenshot(str(path))
        return path

    def open(self, url: str) -> float:
        from selenium.webdriver.common.by import By

        start = time.perf_counter()
        self.d.get(url)
        self.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#prompt textarea"))
        return time.perf_counter() - start

    def css(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.d.find_elements(By.CSS_SELECTOR, selector)

    def chat_text(self) -> str:
        return self.d.execute_script("return document.querySelector('#chat').innerText")

    def attach(self, *paths: Path) -> None:
        before = len(self.css("#prompt .thumbnail-item, #prompt .thumbnail-image, #prompt img"))
        self.css("#prompt input[type=file]")[0].send_keys("\n".join(str(p) for p in paths))
        self.wait.until(
            lambda d: len(self.css("#prompt .thumbnail-item, #prompt .thumbnail-image, #prompt img")) > before
        )

    def send(self, text: str) -> float:
        """Type ``text`` and press Enter; returns the time it was sent."""
        from selenium.webdriver.common.keys import Keys

        box = self.css("#prompt textarea")[0]
        self.wait.until(lambda d: box.is_enabled())
        box.send_keys(text)
        sent = time.perf_counter()
        box.send_keys(Keys.ENTER)
        return sent

    def until_text(self, text: str) -> None:
        self.wait.until(lambda d: text in self.chat_text())

    def answers_done(self, count: int) -> None:
        """Wait until ``count`` answers have their closed details panel."""
        self.wait.until(lambda d: self.chat_text().count("Details: meta-response") >= count)


def _fetch(url: str) -> tuple[int, str, bytes]:
    import httpx

    r = httpx.get(url, timeout=10)
    return r.status_code, r.headers.get("content-type", ""), r.content


def _jpeg(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (96, 64), (20, 120, 210)).save(path, quality=90)
    return path


def test_a_person_attaches_a_photo_and_gets_a_picture_a_sound_and_a_clip(
    site: dict[str, Any], browser: Any, tmp_path: Path, connections: list[str]
) -> None:
    import base64

    p = Person(browser, tmp_path / "screens")
    load_s = p.open(site["url"])
    p.shot("page-loaded")
    urls = set()
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.add(message["params"]["request"]["url"])
    remote = [u for u in urls if not u.startswith((site["url"], "data:", "blob:"))]
    assert urls and not remote, f"the page fetched from elsewhere: {remote}"

    p.attach(_jpeg(tmp_path / "photo.jpg"))
    p.shot("photo-attached")
    sent = p.send("Please draw a cat like this photo")
    p.until_text("Here")
    ttft_page = time.perf_counter() - sent
    p.shot("text-streaming")
    p.answers_done(1)
    p.shot("picture-answer")
    made = [i for i in p.css("#chat img") if "echo-image" in (i.get_attribute("src") or "")]
    assert made, "no generated <img> in the chat"
    status, mime, body = _fetch(made[0].get_attribute("src"))
    assert status == 200 and mime == "image/png" and body.startswith(b"\x89PNG")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", made[0]) == 64
    uploaded = [i for i in p.css("#chat img") if (i.get_attribute("src") or "").endswith("photo.jpg")]
    assert uploaded and _fetch(uploaded[0].get_attribute("src"))[1] == "image/jpeg"
    out = str(site["out"].resolve())
    for img in (made[0], uploaded[0]):  # the upload and the picture are served from the output dir
        assert img.get_attribute("src").split("/file=", 1)[1].startswith(out + "/")
    assert (site["out"] / ".gradio" / "vibe_edit_history").is_dir()  # Gradio's own folder is in there too

    p.send("Now make a sound of rain")
    p.answers_done(2)
    # Gradio's chat plays audio in its waveform player (its <audio> stays off the DOM): check the player's
    # file, then that the browser's own <audio> loads and decodes it
    links = [a.get_attribute("href") for a in p.css("#chat a[href$='.wav']")]
    assert links, "no generated audio in the chat"
    status, mime, body = _fetch(links[-1])
    assert status == 200 and mime in ("audio/wav", "audio/x-wav") and body[:4] == b"RIFF"
    duration = browser.execute_async_script(
        "const done = arguments[arguments.length - 1]; const a = document.createElement('audio');"
        "a.onloadedmetadata = () => done(a.duration); a.onerror = () => done(-1); a.src = arguments[0];"
        "document.body.appendChild(a);",
        links[-1],
    )
    assert 0.9 < duration < 1.1
    p.shot("sound-answer")

    p.send("And a video of waves")
    p.answers_done(3)
    videos = [v for v in p.css("#chat video") if "echo-video" in (v.get_attribute("src") or "")]
    assert videos, "no generated <video> in the chat"
    status, mime, body = _fetch(videos[-1].get_attribute("src"))
    assert status == 200 and mime == "video/mp4" and body[4:8] == b"ftyp"
    p.wait.until(lambda d: d.execute_script("return arguments[0].readyState", videos[-1]) >= 1)
    p.shot("video-answer")

    titles = [t for t in p.css("#chat .thought-group .title") if "Details" in t.text]
    browser.execute_script("arguments[0].scrollIntoView()", titles[-1])
    titles[-1].click()
    p.until_text("echo-video.mp4")
    browser.execute_script("arguments[0].scrollIntoView()", p.css("#chat .thought-group")[-1])
    text = p.chat_text()
    assert "text-to-video" in text and "Meta-response" in text and "first text" in text
    assert "no media encoder" in text  # the note is in plain sight, not only in the panel
    p.shot("details-open")

    p.wait.until(lambda d: p.css("#download")[0].is_enabled())
    p.css("#download")[0].click()
    p.wait.until(lambda d: list(browser.downloads.glob("*.json")))
    saved = json.loads(next(browser.downloads.glob("*.json")).read_text())
    assert [t["role"] for t in saved["turns"]] == ["user", "assistant"] * 3
    assert [m["origin"] for m in saved["media"]] == ["attached", "generated", "generated", "generated"]
    shot = base64.b64decode(browser.get_screenshot_as_base64())
    assert shot[:4] == b"\x89PNG"
    assert connections and set(connections) <= {"127.0.0.1", "::1", "unix"}, f"connected to {set(connections)}"
    print(
        f"\npage load {load_s:.2f} s; time to first streamed token: page {ttft_page:.3f} s, "
        f"in-process {site['ttft_in_process']:.3f} s; screenshots in {p.shots}"
    )


def test_a_zoo_switch_changes_the_next_answers_generator(site: dict[str, Any], browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    p = Person(browser, tmp_path / "screens")
    p.open(site["url"])
    assert "echo-image" in p.d.find_element(By.ID, "zoo-table").text
    p.css("#zoo-text-to-image input")[0].click()
    option = p.wait.until(lambda d: p.css("li[role=option][aria-label^='echo-image-alt']"))
    option[0].click()
    p.wait.until(lambda d: "echo-image-alt" in d.find_element(By.ID, "zoo-table").text)
    p.shot("zoo-switched")
    assert "untrained" in p.d.find_element(By.ID, "zoo-table").text
    p.send("draw a boat")
    p.answers_done(1)
    p.until_text("echo-image-alt on untrained tiny weights")  # the note says which generator ran, untrained
    p.shot("answer-from-switched-generator")
    details = p.css("#chat [aria-label*='echo-image-alt (untrained)']")
    assert details, "the details panel does not name the switched generator"


def test_bad_uploads_show_a_message_and_the_conversation_goes_on(
    site: dict[str, Any], browser: Any, tmp_path: Path
) -> None:
    p = Person(browser, tmp_path / "screens")
    p.open(site["url"])
    corrupt = tmp_path / "holiday.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + os.urandom(2000))
    p.attach(corrupt)
    p.send("hello there")
    p.until_text("Not attached")
    p.until_text("Hello! I can draw")
    assert "holiday.jpg" in p.chat_text()
    p.shot("corrupt-upload")
    big = tmp_path / "huge.png"
    big.write_bytes(b"\x89PNG" + b"\x00" * (MAX_UPLOAD + 1024))
    p.css("#prompt input[type=file]")[0].send_keys(str(big))
    p.wait.until(lambda d: "exceed the maximum allowed size" in d.execute_script("return document.body.innerText"))
    assert "huge.png" in browser.execute_script("return document.body.innerText")  # Gradio's toast names it
    p.shot("too-large-upload")
    p.send("draw a cat")
    p.answers_done(2)
    assert [i for i in p.css("#chat img") if "echo-image" in (i.get_attribute("src") or "")]
    p.shot("conversation-goes-on")


def test_stop_ends_the_answer_and_the_next_message_works(site: dict[str, Any], browser: Any, tmp_path: Path) -> None:
    p = Person(browser, tmp_path / "screens")
    p.open(site["url"])
    p.send("a slow one, please")
    p.until_text("word after word")
    clicked = time.perf_counter()
    p.css("#stop")[0].click()
    p.until_text("Stopped.")
    stop_s = time.perf_counter() - clicked
    p.shot("stopped")
    frozen = p.chat_text()
    time.sleep(1.0)
    assert p.chat_text() == frozen, "the answer went on after stop"
    assert REPLIES["slow"][0].strip() not in frozen
    assert not [i for i in p.css("#chat img") if "echo-image" in (i.get_attribute("src") or "")]
    print(f"\nstop: the answer ended {stop_s:.2f} s after the click")
    p.send("draw a cat")
    p.answers_done(1)
    assert [i for i in p.css("#chat img") if "echo-image" in (i.get_attribute("src") or "")]
    p.shot("after-stop")


def test_two_tabs_share_one_queue_with_a_visible_position(site: dict[str, Any], browser: Any, tmp_path: Path) -> None:
    p = Person(browser, tmp_path / "screens")
    p.open(site["url"])
    first = browser.current_window_handle
    p.send("a steady one, please")
    p.until_text("word after word")
    browser.switch_to.new_window("tab")
    p.open(site["url"])
    p.send("hello from the second tab")
    p.wait.until(lambda d: "queue: 1/1" in d.execute_script("return document.body.innerText"))
    assert "hello from the second tab" in p.chat_text()  # the message shows while it waits
    p.shot("second-tab-queued")
    p.until_text("Hello! I can draw")
    p.shot("second-tab-answered")
    browser.close()
    browser.switch_to.window(first)
    p.answers_done(1)
    assert "word after word" in p.chat_text() and "Stopped." not in p.chat_text()


def test_the_microphone_and_the_webcam_attach_to_the_next_message(
    site: dict[str, Any], browser: Any, tmp_path: Path
) -> None:
    p = Person(browser, tmp_path / "screens")
    p.open(site["url"])

    def button(scope: str, label: str) -> Any:
        return p.wait.until(
            lambda d: [b for b in p.css(f"{scope} button") if label in (b.get_attribute("aria-label") or b.text)]
        )[0]

    button("#prompt", "Record audio").click()
    button("#prompt", "Start recording").click()
    time.sleep(0.5)
    button("#prompt", "Stop recording").click()
    button("#prompt", "Attach audio")  # the recording is ready
    p.shot("microphone-recorded")
    camera = next(e for e in p.css("button") if e.text.startswith("Camera:"))
    browser.execute_script("arguments[0].scrollIntoView()", camera)
    camera.click()
    button("#cam-image", "Access Webcam").click()
    # a capture before the camera's first frame takes nothing: wait for a playing video first
    p.wait.until(
        lambda d: d.execute_script(
            "const v = document.querySelector('#cam-image video');return !!v && v.readyState >= 2 && v.videoWidth > 0;"
        )
    )
    p.shot("webcam-live")
    button("#cam-image", "capture photo").click()
    p.wait.until(lambda d: [i for i in p.css("#cam-image img") if "/file=" in (i.get_attribute("src") or "")])
    p.shot("webcam-photo-taken")
    p.send("what do you make of these?")
    p.answers_done(1)
    text = p.chat_text()
    assert "did not see or hear image_1, audio_1" in text or "did not see or hear audio_1, image_1" in text
    assert [i for i in p.css("#chat img") if (i.get_attribute("src") or "").endswith("image.png")]
    taken = [i for i in p.css("#cam-image img") if "/file=" in (i.get_attribute("src") or "")]
    assert not taken, "the photo stays attached after it was sent"
    p.shot("microphone-and-webcam-sent")


def test_without_chromium_the_tests_skip_naming_the_install_command_or_fail_in_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(os.path, "exists", lambda path: False)
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y chromium chromium-driver"):
        _browser()
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium chromium-driver"):
        _browser()
