// oomlens: adds new kills to the list as they are stored. The browser's
// EventSource resumes the stream with Last-Event-ID after a reconnect; the
// rows are rendered (and escaped) by the server.
"use strict";
(function () {
  const body = document.getElementById("kills");
  const status = document.getElementById("live");
  if (!body || !body.dataset.stream || !window.EventSource) {
    return;
  }
  const say = (text) => {
    if (status) {
      status.textContent = text;
    }
  };
  const source = new EventSource(body.dataset.stream);
  source.onopen = () => say("live: new kills appear here");
  source.onerror = () => say("reconnecting…");
  source.addEventListener("oom", async (message) => {
    let id;
    try {
      id = JSON.parse(message.data).id;
    } catch (error) {
      return;
    }
    if (!id || document.getElementById("kill-" + id)) {
      return;
    }
    const response = await fetch("/kills/" + encodeURIComponent(id) + "/row", { credentials: "same-origin" });
    if (!response.ok) {
      return;
    }
    const template = document.createElement("template");
    template.innerHTML = (await response.text()).trim();
    const row = template.content.firstElementChild;
    if (row && !document.getElementById(row.id)) {
      row.classList.add("new");
      body.prepend(row);
      const empty = document.querySelector(".empty");
      if (empty) {
        empty.remove();
      }
    }
  });
})();
