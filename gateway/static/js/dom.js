// Building the page without innerHTML: every string becomes a text node, so no API
// data is ever parsed as HTML.

/**
 * Make an element. attrs: `class`, `for`, `aria-*`, `data-*` and any other
 * attribute (false/null/undefined leave it out, true sets it empty); `on<event>`
 * keys add listeners. Children: nodes, strings (as text), arrays of either;
 * null/undefined/false are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'class') {
      el.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : String(value);
    } else if (key === 'for') {
      el.htmlFor = String(value);
    } else if (key === 'style') {
      throw new Error('style attributes are blocked by the page CSP: use a class');
    } else if (key === 'value' && 'value' in el) {
      el.value = String(value);
    } else if (key === 'checked' || key === 'disabled' || key === 'selected') {
      el[key] = Boolean(value);
      if (value === true) el.setAttribute(key, '');
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Remove every child of `el`; returns `el`. */
export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

const sameDay = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const otherDay = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});

/** A time from the API (ISO 8601) for people: the time today, else date and time. */
export function formatTime(iso) {
  if (!iso) return '';
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return String(iso);
  const now = new Date();
  return when.toDateString() === now.toDateString() ? sameDay.format(when) : otherDay.format(when);
}

/** A `<time>` element showing formatTime(iso), with the exact value as its datetime. */
export function timeEl(iso) {
  return h('time', { datetime: iso || '' }, formatTime(iso));
}
