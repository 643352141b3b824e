"""One screen for a projected classroom: at 1280x720 and 1920x1080, projector mode on and off,
for every preset in both languages, the controls, the members table, the picture of the module and
the three tables are inside the viewport, none overlaps another and no cell's content is cut. On a
390 px phone the page never scrolls sideways."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser

from app.lab.presets import PRESETS
from tests.support.browser import Watch, open_context
from tests.support.cases import CUSTOM

# The lab's own presets: a real architecture registered as a preset (by whichever test module imported
# the catalogue first) has dozens of members and is never meant to fit one screen.
LABS = {p: {"preset": p} for p in PRESETS if not PRESETS[p].custom and PRESETS[p].make is None}
LABS |= {"custom": CUSTOM}
# The controls, the members, the three tables and the picture of the module (issue 22).
BOXES = ["#preset", "#device", "#members-table", "#named-parameters", "#named-buffers", "#state-dict"]
BOXES += ["#wide-diagram"]

# What the page must show without scrolling, and where each box is; cells whose content is wider
# than the cell (cut, or spilling onto a neighbour).
MEASURE = """(selectors) => {
  const box = (el) => { const r = el.getBoundingClientRect();
    return {top: r.top, left: r.left, bottom: r.bottom, right: r.right}; };
  const boxes = {};
  for (const s of selectors) boxes[s] = box(document.querySelector(s));
  document.querySelectorAll('#members-table select').forEach((el) => { boxes['#' + el.id] = box(el); });
  const cut = [];
  document.querySelectorAll('#members-table th, #members-table td, .tables th, .tables td').forEach((el) => {
    if (el.offsetParent !== null && el.scrollWidth > el.clientWidth + 1) cut.push(el.textContent.trim());
  });
  document.querySelectorAll('.tables .scroll, #members-table').forEach((el) => {
    const scroller = el.closest('.scroll');
    if (scroller && scroller.scrollWidth > scroller.clientWidth + 1) cut.push('scrolls: ' + el.id);
  });
  return {boxes, cut, width: innerWidth, height: innerHeight,
          pageWidth: document.documentElement.scrollWidth};
}"""


def overlap(a: dict, b: dict) -> bool:
    return (
        a["left"] < b["right"]
        and b["left"] < a["right"]
        and a["top"] < b["bottom"]
        and b["top"] < a["bottom"]
    )


@pytest.fixture(scope="module")
def layout_context(browser: Browser, base_url: str):
    watch = Watch(base_url)
    context = open_context(browser, base_url, watch)
    yield context
    context.close()
    assert watch.errors == [] and watch.outside == []


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
@pytest.mark.parametrize("present", [False, True], ids=["normal", "projector"])
@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)], ids=["1280x720", "1920x1080"])
@pytest.mark.parametrize("lab", list(LABS))
def test_the_lab_fits_one_screen(layout_context, lab: str, size: tuple[int, int], present: bool, lang: str):
    page = layout_context.new_page()
    page.set_viewport_size({"width": size[0], "height": size[1]})
    query = {**LABS[lab], "device": "meta", "lang": lang, **({"present": "1"} if present else {})}
    page.goto("/?" + urlencode(query))
    page.wait_for_load_state("load")
    found = page.evaluate(MEASURE, BOXES)
    page.close()
    outside = [
        name
        for name, b in found["boxes"].items()
        if b["bottom"] > found["height"] or b["right"] > found["width"] or b["left"] < 0
    ]
    assert outside == [], f"below or beside the first screen: {outside} ({found['boxes']})"
    tables = [found["boxes"][s] for s in BOXES[2:]]
    n = len(tables)
    assert not [(i, j) for i in range(n) for j in range(i + 1, n) if overlap(tables[i], tables[j])]
    assert found["cut"] == []
    assert found["pageWidth"] <= size[0]


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
@pytest.mark.parametrize("lab", list(LABS))
def test_a_phone_never_scrolls_sideways(layout_context, lab: str, lang: str):
    page = layout_context.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/?" + urlencode({**LABS[lab], "device": "meta", "lang": lang}))
    page.wait_for_load_state("load")
    found = page.evaluate(MEASURE, BOXES)
    page.close()
    assert found["pageWidth"] <= 390
    for name in ("#preset", "#device", *(n for n in found["boxes"] if n.startswith("#style-"))):
        assert found["boxes"][name]["right"] <= 390, name
