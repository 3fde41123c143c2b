// Shared browser helpers. Served as a static file: the CSP forbids inline scripts.
"use strict";
(function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrfToken = meta ? meta.getAttribute("content") : "";

  // fetch() for the JSON API with the session cookie: state changes carry the CSRF header.
  function apiFetch(url, options) {
    const opts = Object.assign({ credentials: "same-origin" }, options || {});
    opts.headers = Object.assign({ "X-CSRF-Token": csrfToken, Accept: "application/json" }, opts.headers || {});
    return fetch(url, opts);
  }

  window.vault = { csrfToken: csrfToken, apiFetch: apiFetch };

  // A form sent back with errors opens on its summary, so the reader (and a screen reader)
  // learns first what to correct; each entry links to its field.
  const errorSummary = document.querySelector(".error-summary");
  if (errorSummary) {
    errorSummary.focus();
  }
})();
