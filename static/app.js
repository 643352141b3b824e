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
      help().showModal();
    } else if (event.code === "KeyP") {
      cycle(document.getElementById("preset"), step);
    } else if (event.code === "KeyD") {
      cycle(document.getElementById("device"), step);
    } else if (event.code === "KeyT") {
      const toggle = document.querySelector("a[aria-keyshortcuts='t']");
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
  // its matrix row, its code line) lights that member up everywhere.
  function link(member, on) {
    document.querySelectorAll("[data-member]").forEach(function (el) {
      el.classList.toggle("linked", on && el.dataset.member === member);
    });
  }
  function memberOf(target) {
    const el = target.closest && target.closest("[data-member]");
    return el ? el.dataset.member : null;
  }
  ["mouseover", "focusin"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      const member = memberOf(event.target);
      if (member !== null) link(member, true);
    });
  });
  ["mouseout", "focusout"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      const member = memberOf(event.target);
      const next = event.relatedTarget && memberOf(event.relatedTarget);
      if (member !== null && next !== member) link(member, false);
    });
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
    if (target.classList.contains("help-open")) help().showModal();
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
