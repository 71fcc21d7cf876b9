// The event dashboard's numbers refresh themselves while photos are indexed.
// Polls the event's status.json: every 2 s while indexing runs, every 15 s
// otherwise (new uploads start it again); nothing while the tab is hidden.
// Loaded in the page head (admin Media): starts once the page is parsed.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var board = document.getElementById("event-dashboard");
  if (!board) { return; }
  var url = board.getAttribute("data-status-url");
  var busy = 2000, idle = 15000;

  function show(status) {
    board.querySelectorAll("[data-count]").forEach(function (node) {
      var value = status[node.getAttribute("data-count")];
      if (value === undefined) { return; }
      if (node.tagName === "PROGRESS") {
        node.max = Math.max(status[node.getAttribute("data-max")], 1);
        node.value = value;
      } else {
        node.textContent = value;
      }
    });
    board.querySelectorAll("[data-running]").forEach(function (node) {
      node.classList.toggle("hidden", !status.running);
    });
    board.setAttribute("data-running", status.running ? "yes" : "no");
  }

  function poll() {
    if (document.hidden) { window.setTimeout(poll, idle); return; }
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { if (!response.ok) { throw new Error(response.status); } return response.json(); })
      .then(function (status) { show(status); window.setTimeout(poll, status.running ? busy : idle); })
      .catch(function () { window.setTimeout(poll, idle); });
  }

  board.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
  window.setTimeout(poll, board.querySelector("[data-running]:not(.hidden)") ? busy : idle);
});
