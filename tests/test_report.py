"""The report pages in a real browser (Debian's chromium through selenium; skipped where it is absent), and the
annotated video decoded back and compared with the original, pixel by pixel."""

import base64
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import MEDIA, save_tiny_weights
from mediagen import ffmpeg
from PIL import Image

import dfer_cli as dfer
from dfer_cli.errors import DferError
from dfer_cli.report.spans import file_spans, mood_at
from dfer_cli.report.timeline import x_of

GRID = MEDIA / "grid"
H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac")
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FPS = 25


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    weights = save_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny")
    return dfer.load_model(weights, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Two GRID speakers side by side with the right one's voice (H.264, which chromium plays), and one alone."""
    folder = tmp_path_factory.mktemp("media")
    pair, single = folder / "pair.mp4", folder / "single.mp4"
    ffmpeg("-i", GRID / "bbaf2n.mpg", "-i", GRID / "lbax4n.mpg", "-filter_complex", "[0:v][1:v]hstack=inputs=2[v]",
           "-map", "[v]", "-map", "1:a", *H264, "-shortest", pair)
    ffmpeg("-i", GRID / "sbia1a.mpg", *H264, single)
    return {"pair": pair, "single": single}


@pytest.fixture(scope="module")
def records(model, media) -> dict[str, dict]:
    pair = model.predict(media["pair"], window=1, workers=0)[0]
    single = model.predict(media["single"], workers=0)[0]
    assert pair.status == single.status == "ok"
    failed = dfer.FileResult.failed(str(media["pair"].with_name("gone.mp4")), "no such file")
    return {"pair": pair.to_dict(), "single": single.to_dict(), "failed": failed.to_dict()}


# --- in the browser ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    profile = tempfile.mkdtemp(prefix="dfer-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1400",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(browser, page: Path) -> None:
    browser.get_log("browser"), browser.get_log("performance")  # what earlier pages left
    browser.get(page.as_uri())
    browser.execute_async_script("""
        const done = arguments[arguments.length - 1], video = document.getElementById('video');
        if (!video || video.readyState >= 1 || video.error) return done();
        video.addEventListener('loadedmetadata', () => done()); video.addEventListener('error', () => done());""")


def _requests(browser) -> list[str]:
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _errors(browser) -> list[dict]:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_a_page_loads_nothing_from_anywhere_and_shows_every_person(browser, records, tmp_path):
    page = tmp_path / "report" / "pair.html"
    (written,) = dfer.write_report([records["pair"]], page)
    assert written == page
    _open(browser, page)
    assert _errors(browser) == []
    video = Path(records["pair"]["path"]).resolve().as_uri()
    urls = _requests(browser)
    assert page.as_uri() in urls and video in urls  # the video really loaded, by its relative path
    assert [u for u in urls if u not in (page.as_uri(), video) and not u.startswith("data:")] == []
    cards = browser.find_elements("css selector", ".person-card")
    assert len(cards) == len(records["pair"]["people"]) == 2
    assert all(c.find_element("css selector", "img.face").get_attribute("src").startswith("data:image/jpeg")
               for c in cards)
    assert browser.execute_script("return document.getElementById('video').error") is None
    assert browser.find_elements("css selector", ".banner") == []  # tiny test weights are not 'untrained'
    summary = browser.find_element("css selector", ".summary").text.split("\n")
    assert records["pair"]["precision"] == "fp32" and summary[summary.index("precision") + 1] == "fp32"
    shot = np.asarray(Image.open(io.BytesIO(base64.b64decode(browser.get_screenshot_as_base64()))).convert("RGB"))
    assert shot.std() > 20 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 500  # not a blank page
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:  # printed: the cards and lanes stay, the video and the buttons go
        assert not browser.find_element("id", "video").is_displayed()
        assert browser.find_element("id", "timeline").is_displayed() and cards[0].is_displayed()
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})


def _click_at(browser, lane_css: str, t: float, duration: float) -> None:
    """A real mouse click on the lane at time t, through the SVG's own screen transform."""
    from selenium.webdriver.common.action_chains import ActionChains

    lane = browser.find_element("css selector", lane_css)
    x, y = browser.execute_script("""
        const [lane, x] = arguments, svg = document.getElementById('timeline'), box = lane.getBoundingClientRect();
        const p = svg.createSVGPoint(); p.x = x; p.y = 0; const q = p.matrixTransform(svg.getScreenCTM());
        return [q.x - (box.left + box.width / 2), 0];""", lane, x_of(t, duration))
    ActionChains(browser).move_to_element_with_offset(lane, round(x), round(y)).click().perform()


def test_clicking_a_lane_seeks_the_video_and_the_cursor_follows(browser, records, tmp_path):
    page = tmp_path / "pair.html"
    dfer.write_report(records["pair"], page)
    _open(browser, page)
    duration = float(browser.find_element("id", "timeline").get_attribute("data-duration"))
    for lane, t in ((".lane-face .lane-bg", 1.5), (".lane-speech .lane-bg", 0.6)):
        _click_at(browser, lane, t, duration)
        # One CSS pixel of the axis is duration / its width in pixels: well under a frame (0.04 s) here.
        assert browser.execute_script("return document.getElementById('video').currentTime") == pytest.approx(
            t, abs=1 / FPS)
    browser.execute_async_script("""
        const done = arguments[arguments.length - 1], video = document.getElementById('video');
        video.addEventListener('seeked', () => requestAnimationFrame(() => done()), {once: true});
        video.currentTime = 2.0;""")
    cursor = float(browser.find_element("id", "cursor").get_attribute("x1"))
    assert cursor == pytest.approx(x_of(2.0, duration), abs=0.5)
    timeline = browser.find_element("id", "timeline")
    timeline.send_keys("\ue012")  # ArrowLeft, on the focused axis: a second back
    assert browser.execute_script("return document.getElementById('video').currentTime") == pytest.approx(1.0,
                                                                                                          abs=1 / FPS)
    assert _errors(browser) == []


def test_the_index_sorts_and_lists_the_failed_files(browser, records, tmp_path):
    folder = tmp_path / "site"
    shifted = dict(records["single"], confidence=0.9)  # a second confidence, so that the order means something
    written = dfer.write_report([records["pair"], shifted, records["failed"]], folder)
    assert [p.name for p in written] == ["pair.html", "single.html", "index.html"]
    _open(browser, folder / "index.html")
    assert _errors(browser) == []

    def column(n: int) -> list[str]:
        return [r.find_elements("css selector", "td")[n].get_attribute("data-value")
                for r in browser.find_elements("css selector", "#files tbody tr")]

    header = browser.find_elements("css selector", "#files thead th button.sort")[2]  # confidence
    header.click()
    ascending = [float(v) for v in column(2)]
    assert ascending == sorted(ascending) and len(ascending) == 2
    header.send_keys("\ue007")  # Enter: the header is a button, reachable from the keyboard
    assert [float(v) for v in column(2)] == sorted(ascending, reverse=True)
    failed = browser.find_element("css selector", ".failed").text
    assert "gone.mp4" in failed and "no such file" in failed
    links = [a.get_attribute("href") for a in browser.find_elements("css selector", "#files a")]
    assert sorted(Path(u).name for u in links) == ["pair.html", "single.html"]


def test_a_moved_page_says_where_it_looked_for_the_video(browser, records, tmp_path):
    page = tmp_path / "a" / "pair.html"
    dfer.write_report(records["pair"], page)
    moved = tmp_path / "elsewhere" / "deeper" / "pair.html"
    moved.parent.mkdir(parents=True)
    shutil.move(page, moved)
    _open(browser, moved)
    note = browser.find_element("id", "video-missing")
    assert note.is_displayed() and "--copy-video" in note.text


def test_copy_video_makes_a_folder_that_moves_whole(browser, records, tmp_path):
    page = tmp_path / "a" / "pair.html"
    dfer.write_report(records["pair"], page, copy_video=True)
    assert (page.parent / "pair-video.mp4").stat().st_size == Path(records["pair"]["path"]).stat().st_size
    shutil.move(page.parent, tmp_path / "b")
    _open(browser, tmp_path / "b" / "pair.html")
    assert not browser.find_element("id", "video-missing").is_displayed()
    assert browser.execute_script("return document.getElementById('video').duration") > 2


# --- the page's content, without a browser ----------------------------------------------------------------

def test_untrained_weights_get_the_banner_and_every_page_the_caveat(records, tmp_path):
    untrained = dict(records["single"], weights="untrained (random weights: the emotions are meaningless)")
    dfer.write_report([untrained, records["pair"]], tmp_path / "r")
    assert "the emotions are meaningless" in (tmp_path / "r" / "single.html").read_text()
    assert 'class="banner"' not in (tmp_path / "r" / "pair.html").read_text()
    assert 'class="banner"' in (tmp_path / "r" / "index.html").read_text()
    for page in (tmp_path / "r").glob("*.html"):
        assert "reads expressions, not felt emotions" in page.read_text()


def test_persons_with_appearances_and_cuts_get_gaps_and_a_cuts_lane(records, tmp_path):
    record = json.loads(json.dumps(records["pair"]))
    record["cuts"] = [1.5]
    record["people"][0]["appearances"] = [[0.0, 1.5]]  # person 0 leaves at the cut
    spans = file_spans(record)
    assert spans.cuts == (1.5,)
    first = spans.persons[0]
    assert mood_at(first, 1.0) is not None and mood_at(first, 2.0) is None
    html = dfer.write_report(record, tmp_path / "p.html")[0].read_text()
    assert html.count('class="cut"') == 1 and "cuts</text>" in html
    # predict looks for cuts in every file: one without any has the lane, saying so.
    assert "cuts (none found)" in dfer.write_report(records["pair"], tmp_path / "q.html")[0].read_text()


def test_a_user_file_is_never_overwritten(records, tmp_path):
    mine = tmp_path / "notes.html"
    mine.write_text("my notes")
    with pytest.raises(DferError, match="not a report page dfer wrote"):
        dfer.write_report(records["pair"], mine)
    assert mine.read_text() == "my notes"
    ours = tmp_path / "ours.html"
    dfer.write_report(records["pair"], ours)
    dfer.write_report(records["single"], ours)  # its own page: replaced
    assert "single.mp4" in ours.read_text()
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("a user's site")
    with pytest.raises(DferError, match="index.html: exists"):
        dfer.write_report([records["pair"], records["single"]], tmp_path / "site")
    assert not (tmp_path / "site" / "pair.html").exists()  # refused before anything was written
    (tmp_path / "film.mp4").write_bytes(b"a user's film")
    with pytest.raises(DferError, match="not an annotated video dfer wrote"):
        dfer.write_annotated(records["pair"], tmp_path / "film.mp4", progress=False)
    assert (tmp_path / "film.mp4").read_bytes() == b"a user's film"


# --- the annotated video ----------------------------------------------------------------------------------

def _frames(path: Path) -> tuple[list[np.ndarray], list[float]]:
    with av.open(str(path)) as container:
        frames = [(f.to_ndarray(format="rgb24"), float(f.time)) for f in container.decode(video=0)]
    return [f for f, _ in frames], [t for _, t in frames]


def test_the_annotated_video_draws_on_the_boxes_and_nowhere_else(records, tmp_path):
    record = records["pair"]
    (out,) = dfer.write_annotated(record, tmp_path / "pair.mp4", progress=False)
    original, times = _frames(Path(record["path"]))
    drawn, drawn_times = _frames(out)
    assert len(drawn) == len(original) and drawn_times == pytest.approx(times, abs=1e-3)
    with av.open(str(out)) as a, av.open(record["path"]) as b:
        assert a.metadata["comment"] == "annotated by dfer"
        assert a.streams.video[0].codec_context.name == "h264"
        assert a.streams.audio[0].sample_rate == b.streams.audio[0].sample_rate
        duration = [float(s.streams.video[0].duration * s.streams.video[0].time_base) for s in (a, b)]
        assert duration[0] == pytest.approx(duration[1], abs=1 / FPS)
    height, width = original[0].shape[:2]
    assert drawn[0].shape[1] == width and drawn[0].shape[0] > height  # the strip under the picture
    spans = file_spans(record)
    for k in range(0, len(original), 10):
        changed = np.abs(drawn[k][:height].astype(int) - original[k].astype(int)).max(axis=2) > 60
        near = np.zeros_like(changed)
        for person in spans.persons:
            mood = mood_at(person, times[k])
            assert mood is not None and mood.box is not None
            x0, y0, x1, y1 = (round(v) for v in mood.box)
            border = np.r_[changed[y0:y1, x0 - 1:x0 + 2].ravel(), changed[y0 - 1:y0 + 2, x0:x1].ravel()]
            assert border.mean() > 0.5, (k, person.number)  # the box is drawn on the picture
            near[max(y0 - 40, 0):y1 + 12, max(x0 - 12, 0):x1 + 12] = True  # the box, its tag above
        assert changed[~near].mean() < 0.002, k  # and nothing else changed, beyond the encoder's noise
    untrained = dict(record, weights="untrained (random weights: the emotions are meaningless)")
    (noted,) = dfer.write_annotated(untrained, tmp_path / "untrained.mp4", progress=False)
    with av.open(str(noted)) as container:  # a line more under the strip says so, on every frame
        assert container.streams.video[0].height > drawn[0].shape[0]


def test_annotate_folder_and_report_from_the_command_line(media, tmp_path, model):
    weights = save_tiny_weights(tmp_path / "tiny")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("pair", "single"):
        shutil.copy(media[name], inputs / f"{name}.mp4")
    run = subprocess.run([sys.executable, "-m", "dfer_cli", "predict", str(inputs), "--weights", str(weights),
                          "--report", str(tmp_path / "out"), "--annotate", str(tmp_path / "out"), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["index.html", "pair.html", "pair.mp4", "single.html", "single.mp4"]
    assert "report -> " in run.stderr and "annotated -> " in run.stderr
    mine = tmp_path / "mine.html"
    mine.write_text("mine")
    refused = subprocess.run([sys.executable, "-m", "dfer_cli", "predict", str(inputs / "single.mp4"), "--weights",
                              str(weights), "--report", str(mine)], capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and "exists and is not dfer's" in refused.stderr  # before any analysis
    assert mine.read_text() == "mine"


def test_pages_in_a_folder_are_named_for_their_videos_without_clashes():
    from dfer_cli.report.targets import names_in_folder

    names = names_in_folder(["a/talk.mp4", "b/talk.mkv", "index.mp4", "c/my film (1).mov", "/x/??.mp4"], ".html",
                            reserved=["index.html"])
    assert names == ["talk.html", "talk-2.html", "index-2.html", "my_film_1.html", "video.html"]
