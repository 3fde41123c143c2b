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

  // Forms that check their fields in the browser first say what is wrong the way the
  // server does: the app's own message (not the browser's bubble, in the browser's
  // language), a focused summary linking each field, and each field marked invalid and
  // described by its message. Forms marked novalidate leave all judging to the server.
  const messages = document.body.dataset;

  function labelOf(field) {
    const group = field.type === "radio" || field.type === "checkbox" ? field.closest("fieldset") : null;
    const legend = group && group.querySelector("legend");
    if (legend) { return legend.textContent.trim(); }
    const label = field.labels && field.labels[0];
    if (!label) { return ""; }
    // The label's own words, not the text of the control it wraps (a select's options).
    return Array.from(label.childNodes)
      .filter((node) => node.nodeType === Node.TEXT_NODE)
      .map((node) => node.textContent).join(" ").trim();
  }

  function clearChecks(form) {
    const previous = form.previousElementSibling;
    if (previous && "clientCheck" in previous.dataset) { previous.remove(); }
    form.querySelectorAll("[data-client-check]").forEach((node) => node.remove());
    form.querySelectorAll("[data-client-invalid]").forEach((field) => {
      field.removeAttribute("aria-invalid");
      field.removeAttribute("data-client-invalid");
      const described = (field.getAttribute("aria-describedby") || "").split(" ")
        .filter((id) => id && id !== field.id + "-error");
      if (described.length) { field.setAttribute("aria-describedby", described.join(" ")); }
      else { field.removeAttribute("aria-describedby"); }
    });
  }

  function wrongFields(form) {
    const seen = new Set();
    return Array.from(form.elements).filter((field) => {
      if (!field.willValidate || field.checkValidity()) { return false; }
      const key = field.type === "radio" ? "radio:" + field.name : field;
      if (seen.has(key)) { return false; }
      seen.add(key);
      return true;
    });
  }

  function showChecks(form, fields) {
    const summary = document.createElement("div");
    summary.className = "error-summary";
    summary.setAttribute("role", "alert");
    summary.tabIndex = -1;
    summary.dataset.clientCheck = "";
    const heading = document.createElement("h2");
    heading.textContent = messages.msgSummary;
    summary.appendChild(heading);
    const list = document.createElement("ul");
    fields.forEach((field, index) => {
      if (!field.id) { field.id = "field-" + (field.name || "input-" + index).replace(/\./g, "-"); }
      const message = field.validity.valueMissing ? messages.msgRequired : messages.msgInvalid;
      const note = document.createElement("p");
      note.className = "field-errors";
      note.id = field.id + "-error";
      note.dataset.clientCheck = "";
      note.appendChild(document.createElement("span")).textContent = message;
      const grouped = (field.type === "radio" || field.type === "checkbox") && field.closest("fieldset");
      const anchor = grouped || field.closest("label") || field;
      anchor.insertAdjacentElement("afterend", note);
      field.setAttribute("aria-invalid", "true");
      field.dataset.clientInvalid = "";
      const described = (field.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
      field.setAttribute("aria-describedby", [note.id, ...described].join(" "));
      const link = document.createElement("a");
      link.href = "#" + field.id;
      const label = labelOf(field);
      link.textContent = label ? label + ": " + message : message;
      list.appendChild(document.createElement("li")).appendChild(link);
    });
    summary.appendChild(list);
    form.insertAdjacentElement("beforebegin", summary);
    summary.focus();
  }

  document.querySelectorAll("form").forEach((form) => {
    if (form.noValidate) { return; }
    form.noValidate = true;
    form.addEventListener("submit", (event) => {
      clearChecks(form);
      const fields = wrongFields(form);
      if (!fields.length) { return; }
      event.preventDefault();
      showChecks(form, fields);
    });
  });
})();
