/* The photo viewer: arrow keys and swipes follow the previous/next links (which work without this). */
(function () {
  "use strict";
  var viewer = document.querySelector("[data-viewer]");
  if (!viewer) return;
  var previous = viewer.dataset.previous, next = viewer.dataset.next;
  function go(url) { if (url) window.location.assign(url); }

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    if (event.target.closest("input, textarea, select")) return;
    if (event.key === "ArrowLeft") go(previous);
    else if (event.key === "ArrowRight") go(next);
  });

  var startX = null, startY = 0;
  viewer.addEventListener("touchstart", function (event) {
    if (event.touches.length !== 1) { startX = null; return; }
    startX = event.touches[0].clientX; startY = event.touches[0].clientY;
  }, { passive: true });
  viewer.addEventListener("touchend", function (event) {
    if (startX === null) return;
    var dx = event.changedTouches[0].clientX - startX, dy = event.changedTouches[0].clientY - startY;
    startX = null;
    if (Math.abs(dx) > 50 && Math.abs(dx) > 1.5 * Math.abs(dy)) go(dx < 0 ? next : previous);
  }, { passive: true });

  /* The next photo is likely wanted: fetch it while this one is looked at. */
  if (next) {
    var link = document.createElement("link");
    link.rel = "prefetch"; link.href = next;
    document.head.appendChild(link);
  }
})();
