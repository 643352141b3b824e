// Module Registration Explorer: keyboard shortcuts, help dialog, copy button. No inline scripts
// anywhere, so a strict Content-Security-Policy holds; the page works without this file.
"use strict";

(function () {
  function cycle(select, step) {
    if (!select) return;
    const n = select.options.length;
    select.selectedIndex = (select.selectedIndex + step + n) % n;
    select.dispatchEvent(new Event("change", { bubbles: true }));
  }

  function help() {
    return document.getElementById("help");
  }

  function typing(target) {
    return target.closest && target.closest("input, select, textarea, [contenteditable], dialog[open]");
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    const step = event.shiftKey ? -1 : 1;
    if (event.key === "?") {
      if (!help()) return;  // only the lab has the shortcuts' help
      help().showModal();
    } else if (event.code === "KeyP") {
      cycle(document.getElementById("preset"), step);
    } else if (event.code === "KeyD") {
      cycle(document.getElementById("device"), step);
    } else if (event.code === "KeyT" || event.code === "KeyG") {
      const toggle = document.querySelector("a[aria-keyshortcuts='" + event.code.slice(3).toLowerCase() + "']");
      if (toggle) window.location.href = toggle.href;
    } else if (/^Digit[1-9]$/.test(event.code)) {
      const selects = document.querySelectorAll("#members-table select");
      cycle(selects[Number(event.code.slice(5)) - 1], step);
    } else {
      return;
    }
    event.preventDefault();
  });

  // The member controls live in the swapped table: a choice made while a request is in flight
  // would be overwritten by that request's answer (and lost to the queued one). Such choices are
  // kept and put back into the new table before the queued request reads the form.
  let inFlight = false;
  let pending = {};
  document.addEventListener("htmx:beforeRequest", function () { inFlight = true; pending = {}; });
  document.addEventListener("change", function (event) {
    const el = event.target;
    if (inFlight && el.id && el.closest && el.closest("#results")) pending[el.id] = el.value;
  }, true);
  document.addEventListener("htmx:afterSwap", function () {
    Object.keys(pending).forEach(function (id) {
      const el = document.getElementById(id);
      if (el) el.value = pending[id];
    });
  });
  document.addEventListener("htmx:afterRequest", function () { inFlight = false; });

  // The new member's fields go with the Add button (the form's submit), not with every change.
  document.addEventListener("change", function (event) {
    if (event.target.closest && event.target.closest("#add-member")) event.stopPropagation();
  }, true);

  // Linked views: pointing at or focusing anything of a member (its control, a row of any table,
  // its matrix row, its code line, its chip in the picture) lights that member up everywhere. A chip
  // of a layer's tensor (no member) and that tensor's rows in the three tables light each other;
  // a chip drawn once for alike blocks stands for each block's members and tensors.
  const LINKED = "[data-member], [data-members], svg.diagram .chip, .tables tr[data-name]";
  function keysOf(el) {
    const keys = [];
    if (el.dataset.member !== undefined) keys.push("m:" + el.dataset.member);
    if (el.dataset.members) JSON.parse(el.dataset.members).forEach(function (m) { keys.push("m:" + m); });
    if (el.dataset.tensors) JSON.parse(el.dataset.tensors).forEach(function (t) { keys.push("t:" + t); });
    if (el.matches(".tables tr[data-name]")) keys.push("t:" + el.dataset.name);
    return keys;
  }
  function link(keys, on) {
    document.querySelectorAll(LINKED).forEach(function (el) {
      el.classList.toggle("linked", on && keysOf(el).some(function (k) { return keys.indexOf(k) >= 0; }));
    });
  }
  function linkedOf(target) {
    const el = target && target.closest && target.closest(LINKED);
    return el ? keysOf(el) : null;
  }
  ["mouseover", "focusin"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      const keys = linkedOf(event.target);
      if (keys !== null) link(keys, true);
    });
  });
  ["mouseout", "focusout"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      const keys = linkedOf(event.target);
      const next = linkedOf(event.relatedTarget);
      if (keys !== null && (next === null || next.join("\n") !== keys.join("\n"))) link(keys, false);
    });
  });

  // The picture moves across a swap: each of its elements keeps its id, htmx puts back the old
  // position (the attributes it settles) before the new one, and a CSS transition draws the way
  // between, once the browser has seen the old one (a style read here, right after the swap).
  document.addEventListener("DOMContentLoaded", function () {
    if (!window.htmx) return;
    const settled = htmx.config.attributesToSettle;
    ["transform", "x", "y"].forEach(function (name) { if (settled.indexOf(name) < 0) settled.push(name); });
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    const svg = event.target.querySelector && event.target.querySelector("svg.diagram");
    if (svg) getComputedStyle(svg).getPropertyValue("transform");
  });

  // An experiment chosen (or its option changed): its result comes into view and takes focus.
  let showResult = false;
  document.addEventListener("change", function (event) {
    if (event.target.closest && event.target.closest("#experiment-controls")) showResult = true;
  });
  document.addEventListener("htmx:afterSettle", function () {
    const result = document.getElementById("experiment-result");
    if (showResult && result) {
      result.scrollIntoView({ block: "nearest" });
      result.focus({ preventScroll: true });
    }
    showResult = false;
  });

  function copy(button) {
    const text = document.getElementById(button.dataset.copy).textContent;
    const status = button.parentElement.querySelector(".copy-status");
    const done = function () { status.textContent = button.dataset.copied || "✓"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { status.textContent = "✗"; });
    } else {
      // Plain http on a classroom network is not a secure context: select the code instead.
      const range = document.createRange();
      range.selectNodeContents(document.getElementById(button.dataset.copy));
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
      if (document.execCommand("copy")) done();
    }
  }

  document.addEventListener("click", function (event) {
    const target = event.target.closest("button");
    if (!target) return;
    if (target.classList.contains("copy")) copy(target);
    if (target.classList.contains("help-open") && help()) help().showModal();
  });

  // The checkpoint form: a file dropped anywhere on the drop zone is sent at once; a bar shows
  // the upload's progress (a 1 GB file takes a while on a classroom network).
  document.addEventListener("dragover", function (event) {
    const zone = event.target.closest && event.target.closest("#drop-zone");
    if (!zone) return;
    event.preventDefault();
    zone.classList.add("over");
  });
  document.addEventListener("dragleave", function (event) {
    const zone = event.target.closest && event.target.closest("#drop-zone");
    if (zone) zone.classList.remove("over");
  });
  document.addEventListener("drop", function (event) {
    const zone = event.target.closest && event.target.closest("#drop-zone");
    if (!zone || !event.dataTransfer.files.length) return;
    event.preventDefault();
    zone.classList.remove("over");
    const input = document.getElementById("checkpoint-file");
    input.files = event.dataTransfer.files;
    input.form.requestSubmit();
  });
  document.addEventListener("htmx:xhr:progress", function (event) {
    const bar = document.getElementById("upload-progress");
    if (!bar || !event.detail.lengthComputable) return;
    bar.hidden = false;
    bar.value = Math.round((event.detail.loaded / event.detail.total) * 100);
  });
  document.addEventListener("htmx:afterRequest", function () {
    const bar = document.getElementById("upload-progress");
    if (bar) bar.hidden = true;
  });

  // Lessons: the arrow keys step, r reveals (the links and the console's buttons do the same).
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.shiftKey || typing(event.target)) return;
    const key = { ArrowLeft: "ArrowLeft", ArrowRight: "ArrowRight", KeyR: "r" }[event.code];
    if (!key) return;
    const target = document.querySelector("#lesson [aria-keyshortcuts='" + key + "'], #console [data-key='" + key + "']");
    if (!target) return;
    event.preventDefault();
    target.click();
  });

  // A class. Students and the teacher's console listen to the room's events (Server-Sent Events)
  // and fetch their view again when it changed; the stream sends the whole state first on every
  // connection, and a refused or broken stream is opened again after a pause, growing to 15 s.
  const CLASS = "mre-class", TEACH = "mre-teach";
  function live() { return document.querySelector("#follow[data-events], #console[data-events]"); }
  function listen() {
    const first = live();
    if (!first) return;
    if (first.id === "follow") sessionStorage.setItem(CLASS, first.dataset.code);
    let pause = 1000, fetching = false, again = false, source = null;
    function refresh() {
      const el = live();
      if (!el) return;
      if (fetching) { again = true; return; }
      fetching = true;
      htmx.ajax("GET", el.dataset.view, { target: "#" + el.id, swap: "outerHTML" }).finally(function () {
        fetching = false;
        if (again) { again = false; refresh(); }
      });
    }
    function status(text) {
      const el = live() && live().querySelector(".live");
      if (el) el.textContent = text ? el.dataset.offline : "";
    }
    function connect() {
      source = new EventSource(first.dataset.events);
      source.addEventListener("state", function (event) {
        pause = 1000;
        status(false);
        const el = live();
        if (el && JSON.parse(event.data).version !== Number(el.dataset.version)) refresh();
      });
      ["tally", "students"].forEach(function (kind) {
        source.addEventListener(kind, function () { if (first.id === "console") refresh(); });
      });
      source.addEventListener("unavailable", function () { source.close(); retry(); });
      source.onerror = function () {
        status(true);
        if (source.readyState === EventSource.CLOSED) retry();
      };
    }
    function retry() {
      status(true);
      setTimeout(connect, pause);
      pause = Math.min(pause * 2, 15000);
    }
    connect();
  }
  document.addEventListener("DOMContentLoaded", listen);

  // Away from the class page in a tab that is in a class: a way back (a student exploring), or,
  // for the teacher driving from the lab, every change of the lab sent to the room.
  function classBar() {
    const bar = document.getElementById("class-bar");
    if (!bar || live()) return;
    const hash = /^#teach=([A-Z0-9]{8})$/.exec(location.hash);
    if (hash) {
      sessionStorage.setItem(TEACH, hash[1]);
      history.replaceState(null, "", location.pathname + location.search);
    }
    const teach = sessionStorage.getItem(TEACH), student = sessionStorage.getItem(CLASS);
    const link = bar.querySelector(teach && location.pathname === "/" ? "[data-as=teacher]" : "[data-as=student]");
    const code = link.dataset.as === "teacher" ? teach : student;
    if (!code) return;
    link.href = "/rooms/" + code + (link.dataset.as === "teacher" ? "/teach" : "");
    link.hidden = false;
    bar.hidden = false;
    if (link.dataset.as === "teacher") drive(code);
  }
  function drive(code) {
    function send() {
      const body = new URLSearchParams({ state: location.pathname + location.search });
      fetch("/rooms/" + code + "/state", { method: "POST", body: body, headers: { "HX-Request": "true" } });
    }
    send();
    document.addEventListener("htmx:pushedIntoHistory", send);
  }
  document.addEventListener("DOMContentLoaded", classBar);

  // Controls that need this script stay hidden without it.
  function reveal() {
    document.querySelectorAll("button.copy, button.help-open").forEach(function (b) { b.hidden = false; });
  }
  document.addEventListener("DOMContentLoaded", reveal);
  document.addEventListener("htmx:afterSettle", reveal);
})();

// Architectures page: the filter box narrows the grouped tensor tables as you type (without
// JavaScript the same box is a GET form the server filters by); expand or collapse the module tree.
(function () {
  const filter = document.getElementById("tensor-filter");
  if (filter) {
    filter.addEventListener("input", function () {
      const q = filter.value;
      document.querySelectorAll(".tensor-tables details.group").forEach(function (group) {
        let shown = 0;
        group.querySelectorAll("tr[data-name]").forEach(function (row) {
          const match = row.dataset.name.includes(q);
          row.hidden = !match;
          if (match) shown += 1;
        });
        group.hidden = shown === 0;
        group.open = q !== "" && shown > 0;
        group.querySelector(".count").textContent = String(shown);
      });
      // The module tree opens down to every module holding a matching tensor.
      const names = [];
      document.querySelectorAll(".tensor-tables tr[data-name]:not([hidden])").forEach(function (row) {
        names.push(row.dataset.name);
      });
      document.querySelectorAll(".module-tree details[data-path]").forEach(function (node) {
        const prefix = node.dataset.path ? node.dataset.path + "." : "";
        const holds = q !== "" && names.some(function (n) { return n.startsWith(prefix); });
        if (q === "") node.open = node.dataset.path === "";
        else node.open = holds;
      });
    });
  }
  const tools = document.querySelector(".tree-tools");
  if (tools) {
    tools.hidden = false;
    tools.addEventListener("click", function (event) {
      const button = event.target.closest("button[data-tree]");
      if (!button) return;
      const open = button.dataset.tree === "open";
      document.querySelectorAll(".module-tree details").forEach(function (d) {
        d.open = open;
      });
    });
  }
})();
