// A running run's page: fetch its tables again every few seconds (the /runs/<id>/live fragment) and swap
// them in place, without reloading the page; stop once the run has closed. The fetch carries the page's
// own login (the Airflow UI's cookie), like every request to this app.
(function () {
  "use strict";
  const script = document.currentScript;
  const url = script.dataset.url;
  const period = Math.max(2, Number(script.dataset.seconds) || 10) * 1000;
  const note = document.getElementById("live-note");
  // What the page has done so far, for whoever watches it (the browser test reads it).
  const state = (window.erfnetLive = { refreshes: 0, status: "running", failures: 0 });

  function say(text) {
    if (note) note.textContent = text;
  }

  function showStatus(status) {
    const badge = document.getElementById("run-status");
    if (badge) {
      badge.textContent = status;
      badge.className = "badge " + status;
    }
  }

  async function refresh() {
    if (document.hidden) {
      // Nobody is looking: ask again later rather than every few seconds for hours.
      setTimeout(refresh, period);
      return;
    }
    let response;
    try {
      response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
    } catch (error) {
      return retry("the results could not be fetched (" + error.message + ")");
    }
    if (response.status === 401 || response.status === 403) {
      say("Stopped refreshing: the login has expired. Reload the page to log in again.");
      return;
    }
    if (response.status === 404) {
      say("Stopped refreshing: this run is no longer in the results database.");
      return;
    }
    if (!response.ok) return retry("the results answered HTTP " + response.status);
    const holder = document.createElement("template");
    holder.innerHTML = await response.text();
    const fresh = holder.content.getElementById("live");
    const current = document.getElementById("live");
    if (!fresh || !current) return retry("the answer held no tables");
    current.replaceWith(fresh);
    state.refreshes += 1;
    state.status = fresh.dataset.status;
    showStatus(state.status);
    if (state.status !== "running") {
      say("The run has closed (" + state.status + "). Reload the page for its findings, where each cell ran and its compiled models.");
      return;
    }
    say("Refreshed at " + new Date().toLocaleTimeString() + ".");
    setTimeout(refresh, period);
  }

  function retry(why) {
    state.failures += 1;
    say("Not refreshed: " + why + "; trying again in " + period / 1000 + " s.");
    setTimeout(refresh, period);
  }

  setTimeout(refresh, period);
})();
