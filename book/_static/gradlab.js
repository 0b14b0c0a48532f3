// gradlab book: mark boxes whose content is wider than the column (wide formulas, tables) so that
// the reader sees they scroll. Runs after MathJax has typeset the page and again on every resize.
(function () {
  "use strict";
  const SELECTOR = "div.math, div.cell_output table, article table.table";

  function markScrollable() {
    // An inline formula wider than its paragraph becomes its own scrolling box.
    document.querySelectorAll('mjx-container:not([display="true"])').forEach(function (formula) {
      const block = formula.parentElement && formula.parentElement.closest("p, li, dd, td, div");
      if (!block) return;
      formula.classList.remove("gl-wide-inline");
      if (formula.getBoundingClientRect().width > block.clientWidth + 1) {
        formula.classList.add("gl-wide-inline");
      }
    });
    document.querySelectorAll(SELECTOR).forEach(function (box) {
      // A display formula scrolls inside its MathJax container; tables scroll themselves.
      const inner = box.querySelector('mjx-container[display="true"]');
      const scroller = inner && inner.scrollWidth > inner.clientWidth + 1 ? inner : box;
      const wide = scroller.scrollWidth > scroller.clientWidth + 1;
      box.classList.remove("gl-scrolls");
      if (inner) inner.classList.remove("gl-scrolls");
      scroller.classList.toggle("gl-scrolls", wide);
      let hint = box.nextElementSibling;
      const hasHint = hint && hint.classList.contains("gl-scroll-hint");
      if (wide && !hasHint) {
        hint = document.createElement("span");
        hint.className = "gl-scroll-hint";
        hint.textContent = "\u2194 scroll sideways to see all of it";
        box.insertAdjacentElement("afterend", hint);
      } else if (!wide && hasHint) {
        hint.remove();
      }
    });
  }

  function afterMathJax() {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
      MathJax.startup.promise.then(markScrollable);
    } else {
      markScrollable();
    }
  }

  window.addEventListener("load", afterMathJax);
  let timer = null;
  window.addEventListener("resize", function () {
    clearTimeout(timer);
    timer = setTimeout(markScrollable, 150);
  });
})();

// Search results: a snippet is cut from the page's HTML before MathJax runs, so a formula would show
// as raw TeX ("\\(\\nabla_\\theta ...\\)"). Formulas are dropped from the text snippets are made of.
(function () {
  "use strict";
  function patchSearch() {
    // searchtools.js declares `const Search` (a global binding, not a property of window).
    if (typeof Search === "undefined" || !Search.htmlToText || Search.htmlToText.gradlab) return;
    const original = Search.htmlToText;
    Search.htmlToText = function (htmlString, anchor) {
      const doc = new DOMParser().parseFromString(htmlString, "text/html");
      doc.querySelectorAll("span.math, div.math, mjx-container, .gl-scroll-hint").forEach(function (el) {
        el.replaceWith(doc.createTextNode("\u2026"));
      });
      return original(doc.documentElement.outerHTML, anchor);
    };
    Search.htmlToText.gradlab = true;
  }
  patchSearch();
  document.addEventListener("DOMContentLoaded", patchSearch);
})();

