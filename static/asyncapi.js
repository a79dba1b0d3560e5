// Renders /asyncapi.yaml with the vendored AsyncAPI React component (see asyncapi.html).
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("asyncapi");
  AsyncApiStandalone.render(
    {
      schema: { url: "/asyncapi.yaml", options: { method: "GET" } },
      config: { show: { sidebar: true, errors: true } },
    },
    root,
  );
});
