"""The lab page as a teaching instrument: the whole diff, linked views, the why and the glossary,
experiments where the user looks, English-free Chinese pages, embedding, and the defects found
by trying it as a new user would."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from app.lab.presets import PRESETS
from tests.support.browser import assert_tables_match_torch, mark_page, still_same_page
from tests.support.reference import TUTORIAL_DEFAULTS

# Words a Chinese page may show in Latin letters: torch's own names and units, never UI text.
TORCH_WORDS = {
    "torch", "nn", "cpu", "meta", "cuda", "dtype", "SGD", "GiB", "Parameter", "Buffer", "ModuleList",
    "Sequential", "BatchNorm", "MyModule", "TestModel", "True", "False", "English", "Linear", "Embedding",
    "Conv2d", "grad", "requires", "persistent", "to", "half", "double", "bfloat16", "train", "eval",
    "None", "strict", "Adam", "float32", "float64", "float16", "x86", "aarch64", "unknown", "CPU", "GPU",
    "Python", "python", "training",
    "Llama", "ResNet", "ViT", "Transformer",  # the tiny architectures' names (the lab's presets list them)
}  # fmt: skip
# A Latin token, whole: torch names carry dots, underscores, digits or a call (named_buffers()).
TOKEN = re.compile(r"[A-Za-z_][\w.]*(?:\(\))?")


def visible_ui_text(page: Page) -> list[str]:
    """Text the user reads, outside code, torch's messages (code elements) and hidden parts."""
    return page.evaluate(
        """() => {
      const out = [];
      const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
      while (walker.nextNode()) {
        const node = walker.currentNode;
        const el = node.parentElement;
        const skipped = 'code, pre, kbd, script, .visually-hidden, [hidden], dialog:not([open]), [lang=en]';
        if (!el || el.closest(skipped)) continue;
        if (el.offsetParent === null) continue;
        const text = node.textContent.trim();
        if (text) out.push(text);
      }
      for (const el of document.querySelectorAll('option')) {
        if (el.closest('select').offsetParent !== null) out.push(el.textContent.trim());
      }
      return out;
    }"""
    )


def english_words(texts: list[str]) -> set[str]:
    words = set()
    for text in texts:
        for word in TOKEN.findall(text):
            torch_name = re.search(r"[_.()0-9]", word) or re.search(r"[A-Z]{2}", word) or len(word) < 2
            torch_name = torch_name or word.endswith(("Error", "Exception"))  # torch's exception types
            if not torch_name and word not in TORCH_WORDS:
                words.add(word)
    return words


def test_chinese_pages_show_no_english_ui_text(page: Page) -> None:
    queries = [f"/?lang=zh-CN&preset={p}&device=meta" for p in PRESETS if not PRESETS[p].custom]
    queries += [
        "/?lang=zh-CN&preset=custom&style.w=buffer&style.a.b=parameter",
        "/?lang=zh-CN&preset=testmodel&experiment=step",
        "/?lang=zh-CN&preset=testmodel&experiment=load_into&into.buffer2=non_persistent_buffer",
        "/?lang=zh-CN&preset=testmodel&device=meta&experiment=meta_roundtrip",
        "/?lang=zh-CN&preset=testmodel&experiment=cast&dtype=half",
    ]
    # The picture names a real model's submodules as its code does (model, mlp, layers).
    submodules = {
        part for p in PRESETS.values() if p.make for n, _ in p.make().named_modules() for part in n.split(".")
    }
    for query in queries:
        page.goto(query)
        # Presets name their own member names in Latin letters (buffer1, register_parameter), and
        # the picture its module by its class name (TestModel), as the code does.
        found = english_words(visible_ui_text(page))
        names = {m.name for p in PRESETS.values() for m in p.members}
        names |= {p.class_name for p in PRESETS.values()} | submodules
        assert found - names - {"linear", "bn", "embed", "head", "blocks", "pe"} == set(), query


def test_a_device_change_marks_every_changed_cell_and_says_it_in_words(page: Page) -> None:
    page.goto("/?preset=testmodel&device=cpu")
    page.select_option("#device", "meta")
    cell = page.locator("#state-dict tr[data-name='buffer2'] td.changed")
    expect(cell.locator(".was")).to_have_text("cpu")
    expect(cell.locator(".now")).to_have_text("meta")
    after = page.locator("#members-table tr[data-name='parameter1'] td.device.changed")
    expect(after.locator(".was")).to_have_text("cpu")
    stayed = page.locator("#members-table tr[data-name='buffer1'] td.device")
    expect(stayed).not_to_have_class(re.compile("changed"))  # it did not move: nothing changed there
    announce = page.locator("#announce")
    expect(announce).to_contain_text("buffer1: stays on cpu.")
    expect(announce).to_contain_text("buffer2: now on meta.")


def test_a_style_change_marks_flags_matrix_cells_and_says_which_tables(page: Page) -> None:
    page.goto("/?preset=testmodel&device=meta")
    page.select_option("#style-buffer1", "non_persistent_buffer")
    flag = page.locator("#members-table tr[data-name='buffer1'] td.changed[data-label='named_buffers()']")
    expect(flag.locator(".was")).to_have_text("✗ no")
    expect(flag).to_contain_text("✓ yes")
    matrix = page.locator("#matrix tr[data-name='buffer1'] td.changed")
    expect(matrix.first).to_be_visible()
    assert matrix.count() >= 2  # in named_buffers(), moves with .to(), cast by .half() ...
    announce = page.locator("#announce")
    expect(announce).to_contain_text("buffer1: plain_tensor → non_persistent_buffer.")
    expect(announce).to_contain_text("buffer1: now in named_buffers(); now on meta.")


def test_pointing_at_a_member_highlights_it_everywhere(page: Page) -> None:
    page.goto("/?preset=layer_list&style.blocks=module_list")
    page.hover("#members-table tr[data-name='blocks'] .why")
    for where in (
        "#named-parameters tr[data-name='blocks.0.weight']",
        "#state-dict tr[data-name='blocks.1.bias']",
        "#matrix tr[data-name='blocks']",
        "#code-text span[data-member='blocks']",
    ):
        expect(page.locator(where).first).to_have_class(re.compile("linked"))
    head = page.locator("#named-parameters tr[data-name='head.weight']")
    expect(head).not_to_have_class(re.compile("linked"))
    # Focus does it too: tab onto the member's control.
    page.goto("/?preset=testmodel")
    page.focus("#style-buffer2")
    expect(page.locator("#state-dict tr[data-name='buffer2']")).to_have_class(re.compile("linked"))
    expect(page.locator("#state-dict tr[data-name='parameter1']")).not_to_have_class(re.compile("linked"))


def test_each_style_says_why_beside_its_choice_and_links_the_glossary(page: Page) -> None:
    page.goto("/?preset=testmodel")
    why = page.locator("#" + page.get_attribute("#style-buffer1", "aria-describedby"))
    expect(why).to_contain_text("torch does not track it")
    page.select_option("#style-buffer1", "buffer")
    expect(why).to_contain_text("A buffer")
    why.locator("a.term").click()
    assert page.url.endswith("#g-buffer")
    expect(page.locator("#g-buffer")).to_be_in_viewport()
    for header in ("named_parameters()", "named_buffers()", "state_dict()"):
        link = page.locator("#members-table thead a.term", has_text=header)
        assert page.locator(link.get_attribute("href")).count() == 1


def test_an_experiment_result_comes_into_view_with_focus(page: Page) -> None:
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto("/?preset=testmodel")
    page.click("label[for='experiment-step']")
    result = page.locator("#experiment-result")
    expect(result).to_be_focused()
    expect(result).to_be_in_viewport()
    expect(result.locator(".facts")).to_contain_text("Handed to the optimizer")


def test_choosing_another_module_changes_its_description(page: Page) -> None:
    page.goto("/?preset=testmodel")
    for preset in ("batchnorm", "positional_encoding", "custom"):
        page.select_option("#preset", preset)
        expect(page.locator("#results .description")).to_have_text(PRESETS[preset].description["en"])


def test_a_custom_module_with_a_member_can_become_mymodule(page: Page) -> None:
    page.goto("/?preset=custom")
    page.fill("#new-name", "w")
    page.fill("#new-shape", "2x3")
    page.press("#new-name", "Enter")
    expect(page.locator("#named-parameters tr[data-name='w']")).to_have_count(1)
    mark_page(page)
    page.select_option("#preset", "mymodule")
    expect(page.locator("#style-weight")).to_have_value("register_parameter")
    assert still_same_page(page)
    assert_tables_match_torch(page, "mymodule", TUTORIAL_DEFAULTS["mymodule"], "cpu")
    assert "shape.w" not in page.url and "preset=mymodule" in page.url


def test_enter_in_the_new_member_name_adds_without_javascript(no_js_page: Page) -> None:
    page = no_js_page
    page.goto("/?preset=custom&style.keep=buffer")
    page.fill("#new-name", "w")
    page.press("#new-name", "Enter")
    page.wait_for_url(lambda url: "style.w=parameter" in url)
    assert "style.keep=buffer" in page.url  # the first member is still there


def test_embedded_lab_has_no_header_and_keeps_embedding(page: Page) -> None:
    page.goto("/?preset=testmodel&embed=1")
    expect(page.locator("header.top")).to_have_count(0)
    expect(page.locator("footer")).to_have_count(0)
    page.select_option("#device", "meta")
    page.wait_for_url(lambda url: "embed=1" in url and "device=meta" in url)
    expect(page.locator("#state-dict tr[data-name='buffer2']")).to_have_attribute("data-device", "meta")
