/* The attendee's photos page: copy the private link; the "undo" of "not me" goes after a few seconds. */
(function () {
  "use strict";
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    if (!navigator.clipboard) return;  /* without it, the link is there to select */
    button.hidden = false;
    var label = button.textContent;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(button.dataset.copy).then(function () {
        button.textContent = button.dataset.copied;
        setTimeout(function () { button.textContent = label; }, 2500);
      });
    });
  });
  var undo = document.querySelector("[data-undo]");
  if (undo) setTimeout(function () { undo.hidden = true; }, 8000);
})();
