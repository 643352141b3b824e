"""The picture in a real browser: after .to(), each chip ends in the lane of the device torch puts its
tensor on, the way drawn by CSS transitions (none under reduced motion, where the before marks show
at once); a buffer made non-persistent leaves the state_dict() outline; pointing at a chip lights
its rows and code line; an experiment lights what torch touched; a student following a class sees
the same movement; the picture is on the first screen of a projector and stacks on a phone, and no
label overlaps another or is cut, for every preset. Checked against torch used directly."""

from __future__ import annotations

import itertools
import json
import re
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
import torch
import transformers
from playwright.sync_api import Browser, Page, expect

from app.architectures.catalogue import ARCHITECTURES
from tests.support.browser import Watch, open_context
from tests.support.cases import CUSTOM
from tests.support.reference import TUTORIAL_DEFAULTS, reference

# Where each chip of the visible picture is (the lane and outlines holding its face), its classes;
# which CSS transitions and animations run in the picture now; the before marks' opacity.
PICTURE = """() => {
  const svg = [...document.querySelectorAll('svg.diagram')].find(s => s.getBoundingClientRect().width > 0);
  const box = (el) => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const inside = (a, b) => a[0] >= b[0] - 0.5 && a[1] >= b[1] - 0.5
    && a[2] <= b[2] + 0.5 && a[3] <= b[3] + 0.5;
  const lanes = [...svg.querySelectorAll('rect.lane')].map(l => [l.dataset.device, box(l)]);
  const outlines = [...svg.querySelectorAll('rect.outline')].map(o => [o.classList[1], box(o)]);
  const where = (g) => {
    const b = box(g.querySelector('.face'));
    return {lane: (lanes.find(([, l]) => inside(b, l)) || [null])[0],
            outlines: outlines.filter(([, o]) => inside(b, o)).map(([t]) => t).sort(),
            classes: [...g.classList]};
  };
  const chips = {}, ghosts = {};
  const each = (selector, into) => svg.querySelectorAll(selector).forEach(g => {
    for (const n of JSON.parse(g.dataset.tensors)) into[n] = where(g);
  });
  each('.chip', chips);
  each('.ghost', ghosts);
  const running = document.getAnimations().filter(a => a.effect && a.effect.target && a.effect.target.closest
    && a.effect.target.closest('svg.diagram')).map(a => a.transitionProperty || a.animationName);
  const marks = [...svg.querySelectorAll('.before')].map(m => getComputedStyle(m).opacity);
  const was = [...svg.querySelectorAll('.before .was-device')].map(t => t.textContent);
  return {chips, ghosts, running, marks, was, variant: svg.id};
}"""

# Records, at every settle of an htmx swap, what CSS transitions and animations the picture runs.
WATCH_SWAPS = """() => { window.__swaps = []; document.addEventListener('htmx:afterSettle', () => {
  window.__swaps.push(document.getAnimations().filter(a => a.effect && a.effect.target
    && a.effect.target.closest && a.effect.target.closest('svg.diagram'))
    .map(a => a.transitionProperty || a.animationName)); }); }"""
SWAPPED = "() => window.__swaps.length > 0"
# The picture's motion is over: no transition or animation of it running.
SETTLED = """() => document.getAnimations().every(a => a.playState !== 'running' || !a.effect
  || !a.effect.target || !a.effect.target.closest || !a.effect.target.closest('svg.diagram'))"""

# Every text of the visible picture against every other and every chip face: overlaps; a chip's
# text outside its own face; a text outside the picture, or the picture outside the screen's width;
# the picture's text size in px (16 units an em, scaled as drawn).
LABELS = """() => {
  const svg = [...document.querySelectorAll('svg.diagram')].find(s => s.getBoundingClientRect().width > 0);
  const r = (el) => { const b = el.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
  const hit = (a, b) => a[0] < b[2] - 0.5 && b[0] < a[2] - 0.5 && a[1] < b[3] - 0.5 && b[1] < a[3] - 0.5;
  const inside = (a, b) => a[0] >= b[0] - 0.5 && a[1] >= b[1] - 0.5
    && a[2] <= b[2] + 0.5 && a[3] <= b[3] + 0.5;
  const name = (el) => el.textContent.trim().slice(0, 40);
  const texts = [...svg.querySelectorAll('text')].map(t => [name(t), r(t), t.closest('.chip, .ghost')]);
  const faces = [...svg.querySelectorAll('.face')].map(f => [name(f.closest('g')), r(f), f.closest('g')]);
  const bad = [];
  texts.forEach(([n, b, chip], i) => texts.slice(i + 1).forEach(([m, c]) => {
    if (hit(b, c)) bad.push(['text on text', n, m]);
  }));
  for (const [n, b, chip] of texts) for (const [m, f, g] of faces) {
    if (g === chip ? !inside(b, f) : hit(b, f)) {
      bad.push([g === chip ? 'out of its chip' : 'text on chip', n, m]);
    }
  }
  faces.forEach(([n, b], i) => faces.slice(i + 1).forEach(([m, c]) => {
    if (hit(b, c)) bad.push(['chip on chip', n, m]);
  }));
  const s = r(svg);
  for (const [n, b] of texts) if (!inside(b, s)) bad.push(['out of the picture', n]);
  if (s[0] < 0 || s[2] > innerWidth) bad.push(['picture beyond the screen', s]);
  const px = 16 * svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
  return {bad, px, box: s, page: document.documentElement.scrollWidth, lanes:
    [...svg.querySelectorAll('rect.lane')].map(l => r(l))};
}"""


def change(page: Page, selector: str, value: str) -> list[str]:
    """Choose ``value`` in a select; what ran in the picture when the swap settled, once its motion
    is over (waited for by events and conditions, never a sleep)."""
    page.evaluate(WATCH_SWAPS)
    page.select_option(selector, value)
    page.wait_for_function(SWAPPED)
    running = [name for swap in page.evaluate("() => window.__swaps") for name in swap]
    page.wait_for_function(SETTLED)
    return running


def test_a_move_takes_what_torch_tracks_and_leaves_the_plain_tensor(page: Page) -> None:
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto("/?preset=testmodel&device=cpu")
    before = page.evaluate(PICTURE)
    assert {c["lane"] for c in before["chips"].values()} == {"cpu"}
    running = change(page, "#device", "meta")
    assert running.count("transform") >= 6  # every chip's way drawn (its lane, or its lane's place)
    after = page.evaluate(PICTURE)
    moved = reference("testmodel", TUTORIAL_DEFAULTS["testmodel"]).to("meta")
    for name, tensor in {**moved.state_dict(), "buffer1": moved.buffer1}.items():
        assert after["chips"][name]["lane"] == str(tensor.device), name
    assert after["chips"]["buffer1"]["lane"] == "cpu" and "stayed" in after["chips"]["buffer1"]["classes"]
    for name in ("parameter1", "parameter2", "buffer2"):
        assert after["chips"][name]["lane"] == "meta" and "moved" in after["chips"][name]["classes"]
    assert after["was"] == ["cpu"] and set(after["marks"]) == {"1"}  # the lane says where they were
    # And back: every chip in the cpu lane, which says they came from meta.
    change(page, "#device", "cpu")
    back = page.evaluate(PICTURE)
    assert {c["lane"] for c in back["chips"].values()} == {"cpu"} and back["was"] == ["meta"]


@pytest.fixture
def still(browser: Browser, base_url: str, watch: Watch) -> Iterator[Page]:
    context = open_context(browser, base_url, watch, reduced_motion="reduce")
    yield context.new_page()
    context.close()


def test_reduced_motion_shows_the_end_state_and_the_before_marks_at_once(still: Page) -> None:
    still.set_viewport_size({"width": 1280, "height": 720})
    still.goto("/?preset=testmodel&device=cpu")
    assert change(still, "#device", "meta") == []  # nothing moves
    found = still.evaluate(PICTURE)
    assert found["chips"]["buffer1"]["lane"] == "cpu" and found["chips"]["buffer2"]["lane"] == "meta"
    assert found["was"] == ["cpu"] and found["marks"] == ["1"]
    assert change(still, "#style-buffer2", "non_persistent_buffer") == []
    found = still.evaluate(PICTURE)
    assert found["ghosts"]["buffer2"]["outlines"] == ["named_buffers", "state_dict"]
    assert found["marks"] == ["1"]  # the ghost: where buffer2 stood, shown at once


def test_a_buffer_made_non_persistent_leaves_the_state_dict_outline(page: Page) -> None:
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto("/?preset=testmodel&device=meta")
    assert page.evaluate(PICTURE)["chips"]["buffer2"]["outlines"] == ["named_buffers", "state_dict"]
    running = change(page, "#style-buffer2", "non_persistent_buffer")
    assert "transform" in running and "marks-in" in running  # it goes, then its ghost shows
    styles = {**TUTORIAL_DEFAULTS["testmodel"], "buffer2": "non_persistent_buffer"}
    model = reference("testmodel", styles)
    assert "buffer2" in dict(model.named_buffers()) and "buffer2" not in model.state_dict()
    found = page.evaluate(PICTURE)
    assert found["chips"]["buffer2"]["outlines"] == ["named_buffers"]
    assert "left" in found["chips"]["buffer2"]["classes"]
    assert found["ghosts"]["buffer2"]["outlines"] == ["named_buffers", "state_dict"]


def test_pointing_at_a_chip_lights_its_rows_and_code_line(page: Page) -> None:
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto("/?preset=testmodel&device=meta")
    page.locator("#wide-diagram .chip[data-member='buffer2']").hover()
    expect(page.locator("#state-dict tr[data-name='buffer2']")).to_have_class(re.compile("linked"))
    expect(page.locator("#named-buffers tr[data-name='buffer2']")).to_have_class(re.compile("linked"))
    expect(page.locator("#members-table tr[data-name='buffer2']")).to_have_class(re.compile("linked"))
    expect(page.locator("#code-text span[data-member='buffer2']").first).to_have_class(re.compile("linked"))
    expect(page.locator("#state-dict tr[data-name='parameter1']")).not_to_have_class(re.compile("linked"))
    # A layer's tensor has no member: its chip and its rows light each other by name.
    page.locator("#state-dict tr[data-name='linear.weight']").hover()
    chip = page.locator("#wide-diagram .chip[data-tensors='[\"linear.weight\"]']")
    expect(chip).to_have_class(re.compile("linked"))
    row = page.locator("#named-parameters tr[data-name='linear.weight']")
    expect(row).to_have_class(re.compile("linked"))
    expect(page.locator("#state-dict tr[data-name='buffer2']")).not_to_have_class(re.compile("linked"))
    # Focus does it too: tab onto a member's control, its chip lights.
    page.focus("#style-parameter1")
    expect(page.locator("#wide-diagram .chip[data-member='parameter1']")).to_have_class(re.compile("linked"))


def lit(page: Page) -> set[str]:
    return {n for n, c in page.evaluate(PICTURE)["chips"].items() if "hit" in c["classes"]}


def test_an_experiment_lights_the_chips_torch_touched(page: Page) -> None:
    page.set_viewport_size({"width": 1280, "height": 720})
    model = reference("testmodel", TUTORIAL_DEFAULTS["testmodel"])
    page.goto("/?preset=testmodel&device=cpu&experiment=save_load")
    assert lit(page) == set(model.state_dict())  # what the checkpoint carries comes back
    assert "miss" in page.evaluate(PICTURE)["chips"]["buffer1"]["classes"]
    expect(page.locator("#picture .legend")).to_contain_text("came back from the checkpoint")
    page.goto("/?preset=testmodel&device=cpu&experiment=cast&dtype=half")
    half = reference("testmodel", TUTORIAL_DEFAULTS["testmodel"]).half()
    assert lit(page) == {n for n, t in half.state_dict().items() if t.dtype == torch.half}
    assert half.buffer1.dtype == torch.float32 and "buffer1" not in lit(page)  # .half() skips it
    page.goto("/?preset=testmodel&device=cpu&experiment=step")
    assert lit(page) == {n for n, p in model.named_parameters() if p.requires_grad}  # SGD's


def test_a_student_sees_the_move_the_teacher_makes(browser: Browser, base_url: str, watch: Watch) -> None:
    teacher, student = (open_context(browser, base_url, watch, locale="en-US").new_page() for _ in range(2))
    teacher.goto("/?preset=testmodel&device=cpu")
    teacher.get_by_role("button", name="Start a class").click()
    expect(teacher).to_have_url(re.compile(r"/rooms/[A-Z0-9]{8}/teach$"))
    student.goto(teacher.locator(".join-url a").get_attribute("href"))
    student.get_by_role("button", name=re.compile("Join")).click()
    expect(student.locator("#follow svg.diagram.wide")).to_be_visible()
    student.evaluate(WATCH_SWAPS)
    teacher.get_by_role("link", name="Drive the class from the lab").click()
    teacher.wait_for_url(re.compile(r"/\?preset=testmodel"))
    teacher.select_option("#device", "meta")
    # The student's page is swapped (the state as it was, then meta): the chips' way is drawn.
    student.wait_for_function("() => window.__swaps.some(s => s.includes('transform'))")
    student.wait_for_function(SETTLED)
    found = student.evaluate(PICTURE)
    assert found["chips"]["buffer1"]["lane"] == "cpu" and found["chips"]["parameter1"]["lane"] == "meta"
    assert found["was"] == ["cpu"]  # marked against what the student's page showed
    for page in (teacher, student):
        page.context.close()


def presets(base_url: str) -> list[str]:
    with urllib.request.urlopen(base_url + "/api/presets") as answer:
        return [p["id"] for p in json.load(answer)]


def query(preset: str, **more: str) -> str:
    spec = {k: v for k, v in CUSTOM.items()} if preset == "custom" else {"preset": preset}
    return "/?" + urlencode({**spec, **more})


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
@pytest.mark.parametrize("present", [False, True], ids=["normal", "projector"])
def test_the_picture_is_on_a_projectors_first_screen(page: Page, present: bool, lang: str) -> None:
    """At 1280x720, with the members and the three tables: its labels 18 px at least when projected."""
    page.set_viewport_size({"width": 1280, "height": 720})
    for preset in ("mymodule", "testmodel", "custom"):
        page.goto(query(preset, device="meta", lang=lang, **({"present": "1"} if present else {})))
        steps = ["fresh", "moved"] if preset == "testmodel" else ["fresh"]
        for step in steps:  # and after a move, with its marks
            if step == "moved":
                change(page, "#device", "cpu")
            found = page.evaluate(LABELS)
            assert found["bad"] == [], (preset, step)
            assert found["box"][3] <= 720 and found["box"][2] <= 1280, (preset, step)
            for table in ("#named-parameters", "#named-buffers", "#state-dict"):
                box = page.locator(table).bounding_box()
                assert box["y"] + box["height"] <= 720, (preset, table, step)
            if present:
                assert found["px"] >= 18, (preset, found["px"])


def test_no_label_overlaps_or_is_cut_for_any_preset(page: Page, base_url: str) -> None:
    """Every preset (the tiny architectures too), fresh and after a move, projected at 1280x720 in
    both languages and on a 390 px phone, where the lanes stack and nothing scrolls sideways."""
    every = presets(base_url)
    assert {"custom", "llama_tiny"} <= set(every)
    for width, height, present in ((1280, 720, True), (390, 844, False)):
        page.set_viewport_size({"width": width, "height": height})
        for preset in every:
            for lang in ("en", "zh-CN"):
                page.goto(query(preset, device="cpu", lang=lang, **({"present": "1"} if present else {})))
                for step in ("fresh", "moved"):
                    if step == "moved":
                        change(page, "#device", "meta")
                    found = page.evaluate(LABELS)
                    assert found["bad"] == [], (preset, lang, width, step)
                    assert found["page"] <= width, (preset, lang, width, step)
                    lanes = found["lanes"]
                    if width < 600:  # a phone: one lane under the other
                        assert all(a[3] <= b[1] for a, b in itertools.pairwise(lanes))
                        assert page.evaluate(PICTURE)["variant"] == "narrow-diagram"


def test_llama_tiny_is_drawn_with_its_blocks_once(page: Page) -> None:
    """llama_tiny, built here by transformers: each of its tensors is a chip, and its alike decoder
    layers one box (layers.{0..N}) whose chips stand for every layer's tensor."""
    config = transformers.LlamaConfig(**ARCHITECTURES["llama_tiny"].config)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto("/?preset=llama_tiny&device=meta")
    found = page.evaluate(PICTURE)
    names = set(model.state_dict()) | {n for n, _ in model.named_buffers()}
    assert set(found["chips"]) == names
    last = config.num_hidden_layers - 1
    titles = page.locator("#wide-diagram .box-title text").all_text_contents()
    assert any(f"layers.{{0..{last}}}" in t and f"×{last + 1}" in t for t in titles)
    drawn = page.locator("#wide-diagram .chip[data-tensors*='layers.0.mlp.up_proj.weight']")
    assert json.loads(drawn.get_attribute("data-tensors")) == [
        f"model.layers.{i}.mlp.up_proj.weight" for i in range(last + 1)
    ]
    assert found["chips"]["model.rotary_emb.inv_freq"]["outlines"] == ["named_buffers"]  # non-persistent


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_a_projected_experiment_keeps_its_conclusion_facts_and_buttons_on_the_first_screen(
    page: Page, lang: str
) -> None:
    """Issue 21, the projected lab: choosing an experiment scrolls nothing away; its conclusion and
    facts sit above the tables, its buttons below them, all on the first screen of 1280x720."""
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto(f"/?preset=testmodel&device=cpu&present=1&lang={lang}")
    for experiment in ("save_load", "cast", "step"):
        page.evaluate(WATCH_SWAPS)
        page.locator(f"label[for='experiment-{experiment}']").click()
        page.wait_for_function(SWAPPED)
        expect(page.locator(".experiment-summary")).to_be_visible()
        assert page.evaluate("() => window.scrollY") == 0
        boxes = {
            name: page.locator(selector).bounding_box()
            for name, selector in {
                "summary": ".experiment-summary",
                "tables": ".tables",
                "buttons": "#experiment-controls .choices",
                "picture": "#wide-diagram",
            }.items()
        }
        assert all(b["y"] + b["height"] <= 720 for b in boxes.values()), (experiment, boxes)
        assert boxes["summary"]["y"] + boxes["summary"]["height"] <= boxes["tables"]["y"]
        assert page.locator(".experiment-summary .lead").inner_text()
        if experiment != "cast":  # a cast has no facts beyond its tensors' dtypes
            assert page.locator(".experiment-summary .facts dt").count() >= 1
        page.wait_for_function(SETTLED)


def test_an_experiment_on_a_phone_never_scrolls_sideways(page: Page) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    for experiment in ("forward", "step", "cast", "save_load", "load_into", "identity", "meta_roundtrip"):
        page.goto(f"/?preset=testmodel&device=cpu&experiment={experiment}")
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390, experiment
