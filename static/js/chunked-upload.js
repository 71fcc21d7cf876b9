// Photo uploads in chunks, off the request path: each file (photo or zip) is sent in
// chunks the server stores and acknowledges one by one; a job then assembles,
// unpacks and imports it. A dropped connection is retried from the first chunk
// the server lacks; picking the same files again after a reload resumes them
// (their upload ids are kept in localStorage). Without JavaScript the form
// posts the files in one request, as before.
// Loaded in the page head (admin Media): starts once the page is parsed.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form || !window.fetch || !window.File) { return; }
  var createUrl = form.getAttribute("data-create-url");
  var csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  var panel = document.getElementById("upload-progress");
  var bar = panel.querySelector("progress");
  var summary = panel.querySelector("[data-summary]");
  var list = panel.querySelector("ul");
  var storeKey = "trouvaille-uploads:" + createUrl;

  function remembered() {
    try { return JSON.parse(window.localStorage.getItem(storeKey) || "{}"); } catch (e) { return {}; }
  }
  function remember(key, id) {
    var all = remembered();
    if (id === null) { delete all[key]; } else { all[key] = id; }
    try { window.localStorage.setItem(storeKey, JSON.stringify(all)); } catch (e) { /* private mode */ }
  }
  function fileKey(file) {
    return (file.webkitRelativePath || file.name) + ":" + file.size + ":" + file.lastModified;
  }
  function sleep(ms) { return new Promise(function (resolve) { window.setTimeout(resolve, ms); }); }

  function request(method, url, body, headers) {
    var options = { method: method, credentials: "same-origin", headers: Object.assign({ "X-CSRFToken": csrf }, headers || {}) };
    if (body !== undefined) { options.body = body; }
    return fetch(url, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          var error = new Error(data.error || ("HTTP " + response.status));
          error.status = response.status;
          throw error;
        }
        return data;
      });
    });
  }

  // Retries network failures and server errors with a growing pause; a 4xx is final.
  function patiently(attempt) {
    var pause = 1000;
    function again() {
      return attempt().catch(function (error) {
        if (error.status && error.status < 500) { throw error; }
        pause = Math.min(pause * 2, 30000);
        return sleep(pause).then(again);
      });
    }
    return again();
  }

  function digest(blob) {
    if (!window.crypto || !window.crypto.subtle) { return Promise.resolve(null); }
    return blob.arrayBuffer().then(function (data) { return window.crypto.subtle.digest("SHA-256", data); })
      .then(function (hash) {
        return Array.prototype.map.call(new Uint8Array(hash), function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
      });
  }

  var total = 0, sent = 0;
  function progress(bytes) {
    sent += bytes;
    bar.max = Math.max(total, 1);
    bar.value = sent;
    summary.textContent = Math.round(100 * sent / Math.max(total, 1)) + " %";
  }

  // After the last chunk the job imports the file: its line follows until it is done.
  function follow(status, file, line) {
    line.textContent = file.name + ": " + status.message;
    line.setAttribute("data-state", status.state);
    if (status.state === "done" || status.state === "failed") { return Promise.resolve(); }
    return sleep(2000).then(function () {
      return patiently(function () { return request("GET", status.status_url); });
    }).then(function (next) { return follow(next, file, line); });
  }

  function start(file, line) {
    var key = fileKey(file);
    var known = remembered()[key];
    var opened = known
      ? request("GET", known).catch(function () { return null; })
      : Promise.resolve(null);
    return opened.then(function (status) {
      if (status && status.state === "receiving") { return status; }
      var body = JSON.stringify({ name: file.webkitRelativePath || file.name, size: file.size });
      return patiently(function () { return request("POST", createUrl, body, { "Content-Type": "application/json" }); });
    }).then(function (status) {
      remember(key, status.status_url);
      var have = {};
      status.received.forEach(function (index) { have[index] = true; });
      progress(status.received.length * status.chunk_size > file.size ? file.size : status.received.length * status.chunk_size);
      var index = 0;
      function next() {
        while (index < status.chunk_count && have[index]) { index += 1; }
        if (index >= status.chunk_count) {
          return patiently(function () { return request("POST", status.finish_url); });
        }
        var chunk = file.slice(index * status.chunk_size, Math.min(file.size, (index + 1) * status.chunk_size));
        var current = index;
        return digest(chunk).then(function (hash) {
          var headers = { "Content-Type": "application/octet-stream" };
          if (hash) { headers["X-Chunk-SHA256"] = hash; }
          return patiently(function () { return request("PUT", status.chunk_url + current + "/", chunk, headers); });
        }).then(function () {
          progress(chunk.size);
          have[current] = true;
          line.textContent = file.name + ": " + Math.round(100 * (current + 1) / status.chunk_count) + " %";
          return next();
        });
      }
      return next();
    }).then(function (status) {
      remember(key, null);
      return follow(status, file, line);
    });
  }

  form.addEventListener("submit", function (event) {
    var files = [];
    form.querySelectorAll("input[type=file]").forEach(function (input) {
      Array.prototype.push.apply(files, input.files);
    });
    if (!files.length) { return; }  // the server says what is missing
    event.preventDefault();
    form.querySelector("[type=submit]").disabled = true;
    panel.classList.remove("hidden");
    total = files.reduce(function (sum, file) { return sum + file.size; }, 0);
    sent = 0;
    var chain = Promise.resolve();
    files.forEach(function (file) {
      var line = document.createElement("li");
      line.textContent = file.name;
      list.appendChild(line);
      chain = chain.then(function () {
        return start(file, line).catch(function (error) {
          line.textContent = file.name + ": " + error.message;
          line.setAttribute("data-state", "failed");
        });
      });
    });
    chain.then(function () {
      panel.setAttribute("data-done", "yes");
      panel.querySelector("[data-finished]").classList.remove("hidden");
      form.querySelector("[type=submit]").disabled = false;
    });
  });
});
