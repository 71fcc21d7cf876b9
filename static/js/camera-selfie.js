/* Camera-only events: the selfie comes from the front camera, in two pictures (facing, then head
   turned), posted as the form's `image` and `turned` files; the selfie job checks the pose
   (matching/pose.py). No file can be chosen: without a camera the page says the event needs one.
   Texts come from data- attributes, translated by the page. */
(function () {
  "use strict";
  var form = document.querySelector("[data-camera-form]");
  if (!form) return;
  var text = form.dataset;
  var box = form.querySelector("[data-camera-box]");
  var missing = form.querySelector("[data-camera-missing]");
  var video = form.querySelector("[data-video]");
  var instruction = form.querySelector("[data-instruction]");
  var start = form.querySelector("[data-start]");
  var shoot = form.querySelector("[data-shoot]");
  var restart = form.querySelector("[data-restart]");
  var shots = form.querySelectorAll("[data-shot]");
  var submit = form.querySelector("[data-submit]");
  var stream = null;
  var frames = [];

  function stop() {
    if (stream) stream.getTracks().forEach(function (track) { track.stop(); });
    stream = null;
    video.srcObject = null;
    video.hidden = true;
  }

  function unavailable() {
    stop();
    box.hidden = true;
    missing.hidden = false;
    submit.disabled = true;
  }

  function update() {
    var done = frames.length === 2;
    instruction.textContent = done ? text.labelDone : frames.length === 1 ? text.labelTurn : text.labelFront;
    start.hidden = !!stream || done;
    shoot.hidden = !stream || done;
    restart.hidden = frames.length === 0;
    submit.disabled = !done;
    shots.forEach(function (shot, index) { shot.hidden = index >= frames.length; });
  }

  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.DataTransfer) {
    unavailable();
    return;
  }
  box.hidden = false;
  submit.disabled = true;

  start.addEventListener("click", function () {
    navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" }, audio: false }).then(function (camera) {
      stream = camera;
      video.srcObject = camera;
      video.hidden = false;
      update();
      instruction.textContent = text.labelFront;
    }, unavailable);
  });

  shoot.addEventListener("click", function () {
    if (!video.videoWidth) return;  /* the camera has not sent a picture yet */
    var canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    shoot.disabled = true;
    canvas.toBlob(function (blob) {
      shoot.disabled = false;
      if (!blob) return;
      shots[frames.length].src = URL.createObjectURL(blob);
      frames.push(blob);
      if (frames.length === 2) stop();
      update();
    }, "image/jpeg", 0.92);
  });

  restart.addEventListener("click", function () {
    frames = [];
    update();
    if (!stream) start.click();
  });

  function attach(name, blob) {
    var input = document.createElement("input");
    input.type = "file";
    input.name = name;
    input.hidden = true;
    var files = new DataTransfer();
    files.items.add(new File([blob], name + ".jpg", { type: "image/jpeg" }));
    input.files = files.files;
    form.appendChild(input);
  }

  form.addEventListener("submit", function (event) {
    if (frames.length !== 2) {
      event.preventDefault();
      return;
    }
    form.querySelectorAll("input[type=file]").forEach(function (old) { old.remove(); });
    attach("image", frames[0]);
    attach("turned", frames[1]);
    submit.disabled = true;
    submit.textContent = text.labelBusy;
    form.setAttribute("aria-busy", "true");
  });
  window.addEventListener("pageshow", function () {  /* coming back with the Back button */
    submit.textContent = text.labelSubmit;
    form.removeAttribute("aria-busy");
    update();
  });
})();
