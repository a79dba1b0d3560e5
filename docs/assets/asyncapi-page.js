// Renders the AsyncAPI document named by #asyncapi's data-document with the vendored AsyncAPI
// React component (docgen/hooks.py adds the bundle and this script to the AsyncAPI page only).
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("asyncapi");
  AsyncApiStandalone.render(
    {
      schema: { url: root.dataset.document, options: { method: "GET" } },
      config: { show: { sidebar: false, errors: true } },
    },
    root,
  );
});
