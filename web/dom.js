// The DOM helpers every page module shares: an element builder and the two regions of
// `index.html` (`#app`, the page's content, and `#status`, one line of status). Imports nothing,
// so app.js (the entry module), gaze.js and researcher.js can all depend on it.

const root = document.getElementById('app');
const statusLine = document.getElementById('status');

/** Tiny element builder: h('p', {class: 'x'}, 'text', child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces the page's content with `children` and moves focus there (screen readers follow). */
export function show(...children) {
  root.replaceChildren(...children);
  root.focus({ preventScroll: true });
}

/** Sets the status line (empty text clears it). */
export function status(text) {
  statusLine.textContent = text || '';
}
