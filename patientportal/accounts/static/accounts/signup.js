// Fills the hidden time-zone field of the sign-up form from the device (the server validates it).
(function () {
  "use strict";
  var field = document.getElementById("id_time_zone");
  if (!field || field.value) { return; }
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone) { field.value = zone; }
  } catch (e) { /* leave it empty: the server uses UTC */ }
})();
