// The draft editor: line numbers beside the textarea, kept in step as the text changes and
// scrolls; error markers (in the gutter and in the list above) move the caret to their line.
// Plain JavaScript, no build step; the page works without it (the markers are links).
(function () {
  "use strict";
  var box = document.getElementById("code-editor");
  if (!box) { return; }
  var area = document.getElementById("content");
  var gutter = document.getElementById("gutter");
  var backdrop = document.getElementById("backdrop");
  var note = document.getElementById("stale-note");
  var original = area.value;

  function lineHeight() {
    return parseFloat(getComputedStyle(area).lineHeight) || 21;
  }

  function syncLines() {
    var count = area.value.split("\n").length;
    while (gutter.children.length < count) {
      gutter.appendChild(document.createElement("li"));
    }
    while (gutter.children.length > count && !gutter.lastElementChild.classList.contains("bad")) {
      gutter.removeChild(gutter.lastElementChild);
    }
    var stale = area.value !== original;
    box.classList.toggle("stale", stale);
    if (note) { note.hidden = !stale; }
  }

  function syncScroll() {
    gutter.scrollTop = area.scrollTop;
    backdrop.scrollTop = area.scrollTop;
    backdrop.scrollLeft = area.scrollLeft;
  }

  function jumpTo(line) {
    var lines = area.value.split("\n");
    var n = Math.max(1, Math.min(line, lines.length));
    var start = 0;
    for (var i = 0; i < n - 1; i++) { start += lines[i].length + 1; }
    area.focus();
    area.setSelectionRange(start, start + lines[n - 1].length);
    area.scrollTop = Math.max(0, (n - 1) * lineHeight() - area.clientHeight / 3);
    syncScroll();
    var row = backdrop.querySelector('.bl[data-line="' + n + '"]');
    if (row) {
      row.classList.add("flash");
      setTimeout(function () { row.classList.remove("flash"); }, 1200);
    }
    box.setAttribute("data-current-line", String(n));
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest("[data-jump]");
    if (!link) { return; }
    event.preventDefault();
    jumpTo(parseInt(link.getAttribute("data-jump"), 10));
    history.replaceState(null, "", "#L" + link.getAttribute("data-jump"));
  });
  area.addEventListener("input", syncLines);
  area.addEventListener("scroll", syncScroll);
  syncLines();
  var hash = /^#L(\d+)$/.exec(location.hash);
  if (hash) { jumpTo(parseInt(hash[1], 10)); }
}());
