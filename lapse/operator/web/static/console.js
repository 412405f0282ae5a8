// Live refresh with a pause toggle: htmx polls each page's #live block every
// few seconds unless the operator paused it (remembered in localStorage).
function lapsePaused() {
  return window.localStorage.getItem("lapse-paused") === "1";
}
function lapseShowPause() {
  var button = document.getElementById("pause");
  if (button) {
    button.textContent = lapsePaused() ? "Resume live refresh" : "Pause live refresh";
    button.setAttribute("aria-pressed", lapsePaused() ? "true" : "false");
  }
}
document.addEventListener("DOMContentLoaded", function () {
  var button = document.getElementById("pause");
  if (button) {
    button.addEventListener("click", function () {
      window.localStorage.setItem("lapse-paused", lapsePaused() ? "0" : "1");
      lapseShowPause();
    });
  }
  lapseShowPause();
});
