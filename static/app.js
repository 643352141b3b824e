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
      // Projected, the conclusion is above the tables and the buttons in view: nothing scrolls.
      if (!document.documentElement.classList.contains("present")) result.scrollIntoView({ block: "nearest" });
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
  // The fixed checkpoint's button is a plain form submit (its formaction answers with a file to
  // save): stopped here, before htmx, which would put the file's bytes into the page.
  document.addEventListener("submit", function (event) {
    if (event.submitter && event.submitter.hasAttribute("data-download")) event.stopPropagation();
  }, true);

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

  // A class. Students and the teacher's console listen to the room's events (Server-Sent Events);
  // the stream sends the whole state first on every connection, and a refused or broken stream is
  // opened again after a pause, growing to 15 s. A student's page fetches what the new state shows
  // from one URL the whole class shares (/follow?room=<code>&state=...), retried until it arrives; the
  // console updates its tally and counts in place and fetches itself only when the state changed.
  const CLASS = "mre-class", TEACH = "mre-teach";
  function live() { return document.querySelector("#follow[data-events], #console[data-events]"); }
  function voteKey(code, step) { return "mre-vote:" + code + ":" + step; }
  function markVote(el) {
    if (!el || el.id !== "follow" || !el.dataset.step) return;
    const chosen = sessionStorage.getItem(voteKey(el.dataset.code, el.dataset.step));
    el.querySelectorAll(".choice[data-choice]").forEach(function (li) {
      const on = li.dataset.choice === chosen;
      li.classList.toggle("chosen", on);
      const button = li.querySelector("button");
      if (button) button.setAttribute("aria-pressed", on ? "true" : "false");
    });
    const verdict = el.querySelector(".verdict[data-answer]");
    if (verdict && chosen !== null) {
      verdict.textContent = chosen === verdict.dataset.answer ? verdict.dataset.right : verdict.dataset.wrong;
      verdict.hidden = false;
    }
  }
  function bannerState(el) {
    const banner = el && el.querySelector("details.class-banner");
    if (!banner) return;
    const kept = sessionStorage.getItem("mre-banner:" + banner.dataset.code);
    if (kept) banner.open = kept === "open";
    // The teacher's own choice only: a click (or Enter) on its summary. A "toggle" event also fires
    // for a banner parsed open and for the fold below, which are no choice.
    banner.querySelector("summary").addEventListener("click", function () {
      sessionStorage.setItem("mre-banner:" + banner.dataset.code, banner.open ? "closed" : "open");
    });
  }
  function listen() {
    const first = live();
    if (!first) return;
    const code = first.dataset.code, teacher = first.id === "console";
    if (!teacher) sessionStorage.setItem(CLASS, code);
    markVote(first);
    bannerState(first);
    let pause = 1000, wait = 1000, source = null, wanted = null, fetching = false, timer = null, ended = false;
    function status(text) {
      const el = live() && live().querySelector(".live");
      if (el) el.textContent = text === true ? el.dataset.offline : (text || "");
    }
    function swap(html, version) {
      const el = live();
      if (!el) return;
      const box = document.createElement("div");
      box.innerHTML = html;
      const next = box.firstElementChild;
      if (!next || next.id !== el.id) return;
      // htmx's own swap: the picture's elements settle from where they stood, so the class sees
      // the chips move as the teacher's lab does (app.css).
      htmx.swap(el, html, { swapStyle: "outerHTML", swapDelay: 0, settleDelay: 0 });
      const now = document.getElementById(next.id);
      if (!now) return;
      now.dataset.version = String(version);
      markVote(now);
      bannerState(now);
    }
    // The newest state wanted, fetched until it arrives; a newer one replaces it on the way.
    function fetchState() {
      const el = live();
      if (!el || fetching || !wanted || Number(el.dataset.version) >= wanted.version) return;
      fetching = true;
      const want = wanted;
      let url = el.dataset.view;
      if (!teacher) {
        const query = new URLSearchParams({ room: el.dataset.code, state: want.state, lang: el.dataset.lang });
        if (el.dataset.present) query.set("present", "1");
        if (el.dataset.state) query.set("from", el.dataset.state);  // what moved is marked
        url += "?" + query.toString();
      } else if (el.dataset.state) {
        url += (url.indexOf("?") < 0 ? "?" : "&") + "from=" + encodeURIComponent(el.dataset.state);
      }
      fetch(url, { headers: { "HX-Request": "true" }, credentials: "same-origin" }).then(function (r) {
        if (!r.ok) throw new Error(String(r.status));
        return r.text();
      }).then(function (html) {
        fetching = false;
        wait = 1000;
        swap(html, want.version);
        status(false);
        fetchState();
      }).catch(function () {
        fetching = false;
        status(true);
        clearTimeout(timer);
        timer = setTimeout(fetchState, wait);
        wait = Math.min(wait * 2, 15000);
      });
    }
    function connect() {
      source = new EventSource(first.dataset.events);
      source.addEventListener("state", function (event) {
        pause = 1000;
        status(false);
        const data = JSON.parse(event.data);
        if (!wanted || data.version > wanted.version) wanted = data;
        fetchState();
      });
      source.addEventListener("tally", function (event) {
        const data = JSON.parse(event.data), el = live();
        if (!teacher || !el || data.step !== el.dataset.step) return;
        el.querySelectorAll(".choice[data-choice] .count").forEach(function (count) {
          const n = data.counts[Number(count.closest(".choice").dataset.choice)] || 0;
          count.textContent = String(n);
          count.dataset.count = String(n);
        });
        const total = el.querySelector(".tally .n-votes");
        if (total) total.textContent = String(data.votes);
      });
      source.addEventListener("students", function (event) {
        const data = JSON.parse(event.data), el = live();
        if (!el) return;
        const joined = el.querySelector(".n-joined"), here = el.querySelector(".n-live");
        if (joined) joined.textContent = String(data.students);
        if (here) here.textContent = String(data.live);
        // The first student in: the banner gives its room to the step (unless the teacher chose).
        const banner = el.querySelector("details.class-banner");
        if (banner && banner.open && data.students > 0 && !sessionStorage.getItem("mre-banner:" + code)) {
          banner.open = false;
        }
      });
      source.addEventListener("ended", function () {
        ended = true;
        source.close();
        const el = live();
        if (el && el.dataset.ended) status(el.dataset.ended);
        sessionStorage.removeItem(CLASS);
        el && el.querySelectorAll("form.vote button").forEach(function (b) { b.disabled = true; });
      });
      source.addEventListener("unavailable", function () { source.close(); retry(); });
      source.onerror = function () {
        if (ended) return;
        status(true);
        if (source.readyState === EventSource.CLOSED) retry();
      };
    }
    let reconnect = null;
    function retry() {
      status(true);
      clearTimeout(reconnect);
      reconnect = setTimeout(connect, pause);
      pause = Math.min(pause * 2, 15000);
    }
    // Back online: try at once rather than at the end of a long pause.
    window.addEventListener("online", function () {
      if (ended) return;
      wait = 1000;
      pause = 1000;
      if (source.readyState === EventSource.CLOSED) { clearTimeout(reconnect); connect(); }
      fetchState();
    });
    connect();
  }
  document.addEventListener("DOMContentLoaded", listen);

  // A vote: the page marks the choice itself (the server answers 204); a refusal is said.
  document.addEventListener("htmx:afterRequest", function (event) {
    const form = event.detail.elt && event.detail.elt.closest && event.detail.elt.closest("form.vote");
    const el = live();
    if (!form || !el) return;
    const xhr = event.detail.xhr;
    if (event.detail.successful) {
      const choice = form.querySelector("button").value;
      sessionStorage.setItem(voteKey(el.dataset.code, el.dataset.step), choice);
      markVote(el);
    } else {
      const status = el.querySelector(".live");
      if (status) status.textContent = refusal(xhr) || status.dataset.offline;
    }
  });

  // What a refused request said: the error page's own words (in the page's language).
  function refusal(xhr) {
    if (!xhr || !xhr.responseText) return "";
    const doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
    const said = doc.querySelector("[role=alert] code, .error code");
    return said ? said.textContent : "";
  }
  // The console: a change the server refused (or never got) is said on the console.
  function consoleError(event) {
    const el = document.getElementById("console");
    if (!el || !el.contains(event.detail.elt)) return;
    const box = el.querySelector(".console-error");
    box.textContent = refusal(event.detail.xhr) || box.dataset.unreachable;
    box.hidden = false;
  }
  document.addEventListener("htmx:responseError", consoleError);
  document.addEventListener("htmx:sendError", consoleError);
  document.addEventListener("submit", function (event) {
    const form = event.target.closest && event.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
  }, true);

  // Away from the class page in a tab that is in a class: a way back (a student exploring), or,
  // for the teacher driving from the lab, every change of the lab sent to the room, Back and
  // Forward included.
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
    if (link.dataset.as === "teacher") drive(code, bar);
  }
  function drive(code, bar) {
    const said = bar.querySelector(".drive-error");
    let sent = null;
    function send() {
      const state = location.pathname + location.search;
      if (state === sent) return;
      sent = state;
      const body = new URLSearchParams({ state: state });
      fetch("/rooms/" + code + "/state", { method: "POST", body: body, headers: { "HX-Request": "true" } })
        .then(function (r) {
          if (r.ok) { said.hidden = true; return; }
          sent = null;
          return r.text().then(function (text) {
            said.textContent = refusal({ responseText: text }) || said.dataset.unreachable;
            said.hidden = false;
          });
        }, function () { sent = null; said.textContent = said.dataset.unreachable; said.hidden = false; });
    }
    send();
    document.addEventListener("htmx:pushedIntoHistory", send);
    document.addEventListener("htmx:historyRestore", send);
    window.addEventListener("popstate", function () { setTimeout(send, 0); });
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
      const names = [];  // the tensors that match, by their real names
      document.querySelectorAll(".tensor-tables details.group").forEach(function (group) {
        let shown = 0;
        group.querySelectorAll("tr[data-name]").forEach(function (row) {
          // A row of identical blocks (layers.{0..31}) stands for one name per block.
          const own = row.dataset.names ? row.dataset.names.split(" ") : [row.dataset.name];
          const hits = own.filter(function (n) { return n.includes(q); });
          row.hidden = hits.length === 0;
          if (hits.length) shown += 1;
          if (q !== "") hits.forEach(function (n) { names.push(n); });
        });
        group.hidden = shown === 0;
        group.open = q !== "" && shown > 0;
        group.querySelector(".count").textContent = String(shown);
      });
      // The module tree opens down to every module holding a matching tensor; in a run of
      // identical blocks, shown once as its first, a tensor of any block opens the same place.
      const repeats = Array.from(document.querySelectorAll(".module-tree details.repeat"));
      const placed = names.map(function (n) {
        repeats.forEach(function (r) {
          const stem = r.dataset.stem;
          if (!n.startsWith(stem)) return;
          const rest = n.slice(stem.length);
          const dot = rest.indexOf(".");
          const k = Number(rest.slice(0, dot));
          if (dot > 0 && k >= Number(r.dataset.first) && k <= Number(r.dataset.last)) {
            n = stem + r.dataset.first + rest.slice(dot);
          }
        });
        return n;
      });
      document.querySelectorAll(".module-tree details[data-path]").forEach(function (node) {
        const repeat = node.classList.contains("repeat");
        const prefix = repeat ? node.dataset.stem + node.dataset.first + "." : node.dataset.path ? node.dataset.path + "." : "";
        const holds = q !== "" && placed.some(function (n) { return n.startsWith(prefix); });
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
