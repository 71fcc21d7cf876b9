/* The selfie form's niceties: a preview of the chosen selfie, stale errors cleared, a "choose from your
   device" choice next to the camera, and a busy button while it uploads. The form works without.
   Texts come from data- attributes, translated by the page. */
(function () {
  "use strict";
  var form = document.querySelector("[data-selfie-form]");
  if (!form) return;
  var text = form.dataset;
  var input = form.querySelector("input[type=file]");
  var preview = form.querySelector("[data-preview]");
  var image = preview.querySelector("img");
  var cameraLabel = form.querySelector("[data-camera-label]");
  var fileName = form.querySelector("[data-file-name]");
  var choose = form.querySelector("[data-choose]");
  var submit = form.querySelector("[data-submit]");
  var url = null;

  function show() {
    var file = input.files && input.files[0];
    if (url) { URL.revokeObjectURL(url); url = null; }
    preview.hidden = true;
    form.classList.toggle("has-file", !!file);
    cameraLabel.textContent = file ? text.labelRetake : text.labelTake;
    fileName.hidden = !file;
    fileName.textContent = file ? text.labelChosen + " " + file.name : "";
    if (file && window.URL && URL.createObjectURL) {
      url = URL.createObjectURL(file);
      image.onload = function () { preview.hidden = false; };
      image.onerror = function () { preview.hidden = true; };  /* e.g. HEIC in a browser that cannot show it */
      image.src = url;
    }
  }
  input.addEventListener("change", show);
  show();

  /* Once the attendee fixes a field, its message from the server no longer applies. */
  form.addEventListener("change", function (event) {
    var field = event.target.closest(".field");
    if (!field) return;
    field.classList.remove("has-error");
    field.querySelectorAll(".error, .again").forEach(function (message) { message.hidden = true; });
    event.target.removeAttribute("aria-invalid");
  });

  form.querySelector("[data-camera]").addEventListener("click", function () { input.setAttribute("capture", "user"); });
  choose.hidden = false;
  choose.addEventListener("click", function () { input.removeAttribute("capture"); input.click(); });

  form.addEventListener("submit", function () {
    submit.disabled = true;
    submit.textContent = text.labelBusy;
    form.setAttribute("aria-busy", "true");
  });
  window.addEventListener("pageshow", function () {  /* coming back with the Back button */
    submit.disabled = false;
    submit.textContent = text.labelSubmit;
    form.removeAttribute("aria-busy");
  });
})();
