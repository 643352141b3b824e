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
      const selects = document.querySelectorAll("#members select");
      cycle(selects[Number(event.code.slice(5)) - 1], step);
    } else {
      return;
    }
    event.preventDefault();
  });

  // The new member's fields go with the Add button, not with every change of the form; Enter adds.
  document.addEventListener("change", function (event) {
    if (event.target.closest && event.target.closest("#add-member")) event.stopPropagation();
  }, true);
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Enter" || !event.target.closest || !event.target.closest("#add-member input")) return;
    event.preventDefault();
    document.querySelector("#add-member button.add").click();
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
