// The page's shell: a hash router that loads one view module per route, the toast,
// the screener count in the navigation, live updates and signing out.
//
// A view module exports `async function render(root, ctx, params)`: `root` is an
// empty container of its own inside <main id="view">, `params` the path parts after the route
// name, and it may return a cleanup function, called before the next view renders.

import { api, ApiError, clearToken, errorText, getToken } from './api.js';
import { clear, h } from './dom.js';
import { Live } from './live.js';

const ROUTES = {
  signin: './signin.js',
  inbox: './inbox.js',
  conversation: './inbox.js',
  screener: './screener.js',
  compose: './compose.js',
  trusted: './trusted.js',
  account: './account.js',
};
// Routes whose module serves more than one name get the name as their first param.
const NAMED = new Set(['conversation']);
const DEFAULT_ROUTE = '#/inbox';
const SIGNIN_ROUTE = '#/signin';
const TOAST_MS = 6000;
const UNDO_TOAST_MS = 10000;
// The screener count reads one page of cards; more than this shows as "N+".
const COUNT_PAGE = 200;

const view = document.getElementById('view');
const nav = document.getElementById('nav');
const toastBox = document.getElementById('toast');
const countBadge = document.getElementById('screener-count');
const live = new Live();

let cleanup = null;
let toastTimer = null;
let rendering = 0;

function navigate(hash) {
  if (window.location.hash === hash) route();
  else window.location.hash = hash;
}

/** Show `message` in the toast; with `undo`, an Undo button calls it once. */
function toast(message, { undo } = {}) {
  clearTimeout(toastTimer);
  clear(toastBox);
  toastBox.appendChild(h('span', {}, message));
  if (undo) {
    const button = h('button', {
      type: 'button',
      onclick: async () => {
        clear(toastBox);
        try {
          await undo();
        } catch (err) {
          toast(errorText(err));
        }
      },
    }, 'Undo');
    toastBox.appendChild(button);
  }
  toastTimer = setTimeout(() => clear(toastBox), undo ? UNDO_TOAST_MS : TOAST_MS);
}

async function refreshCounts() {
  if (!getToken()) return;
  try {
    const page = await api(`/screener?limit=${COUNT_PAGE}`);
    const waiting = page.items.length;
    countBadge.textContent = page.next ? `${waiting}+` : String(waiting);
    countBadge.classList.toggle('empty', waiting === 0);
    countBadge.title = `${countBadge.textContent} sender(s) waiting in the screener`;
  } catch {
    // The count is a hint; the next navigation or event tries again.
  }
}

const ctx = { api, live, toast, navigate, refreshCounts };

function parseHash() {
  const raw = window.location.hash.replace(/^#\/?/, '');
  const parts = raw.split('/').filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  return { name: parts[0] || '', params: parts.slice(1) };
}

function markCurrent(name) {
  const section = name === 'conversation' ? 'inbox' : name;
  for (const link of nav.querySelectorAll('a[href^="#/"]')) {
    if (link.getAttribute('href') === `#/${section}`) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

async function route() {
  const signedIn = Boolean(getToken());
  let { name, params } = parseHash();
  if (!signedIn && name !== 'signin') {
    window.location.replace(SIGNIN_ROUTE);
    return;
  }
  if (signedIn && (name === 'signin' || !ROUTES[name])) {
    window.location.replace(DEFAULT_ROUTE);
    return;
  }
  nav.hidden = !signedIn;
  if (signedIn) live.start();
  const turn = ++rendering;
  if (cleanup) {
    try {
      cleanup();
    } catch (err) {
      console.warn('view cleanup failed', err);
    }
    cleanup = null;
  }
  markCurrent(name);
  if (NAMED.has(name)) params = [name, ...params];
  clear(view);
  // Each render gets a container of its own: a render that is overtaken while it
  // awaits the API keeps writing into its own detached container, never into the
  // view of the render that replaced it.
  const root = h('div', { class: 'view-body' });
  view.appendChild(root);
  view.setAttribute('aria-busy', 'true');
  try {
    const module = await import(ROUTES[name]);
    if (turn !== rendering) return; // the user moved on meanwhile
    const result = await module.render(root, ctx, params);
    if (turn !== rendering) {
      if (typeof result === 'function') result();
      return;
    }
    cleanup = typeof result === 'function' ? result : null;
  } catch (err) {
    if (turn !== rendering) return;
    clear(view);
    view.appendChild(h('h1', {}, 'Something went wrong'));
    view.appendChild(h('p', { class: 'error' }, errorText(err)));
  } finally {
    if (turn === rendering) view.removeAttribute('aria-busy');
  }
  if (turn !== rendering) return;
  const heading = view.querySelector('h1');
  if (heading) {
    heading.setAttribute('tabindex', '-1');
    heading.focus();
  } else {
    view.focus();
  }
  document.title = heading ? `${heading.textContent} – OptMsg` : 'OptMsg';
  refreshCounts();
}

/** Forget the session on this page (the token is already gone or revoked). */
function endSession() {
  clearToken();
  live.stop();
  countBadge.textContent = '0';
  navigate(SIGNIN_ROUTE);
}

async function signOut() {
  let problem = null;
  try {
    await api('/tokens/current', { method: 'DELETE' });
  } catch (err) {
    // A 401 means the token was already revoked; anything else means the server
    // may still honour it, which the user must hear about.
    if (!(err instanceof ApiError && err.status === 401)) problem = err;
  }
  endSession();
  toast(problem
    ? `Signed out on this page, but the server could not end the session (${errorText(problem)}); revoke it under Account from another device.`
    : 'You are signed out.');
}

document.getElementById('sign-out').addEventListener('click', signOut);
// The skip link must not change the hash (that is the router's).
document.querySelector('.skip-link').addEventListener('click', (event) => {
  event.preventDefault();
  view.focus();
});
// Dispatched by api.js on a 401 (the token was revoked elsewhere or the account is
// gone) and by views that end the session themselves (detail.message says why).
window.addEventListener('optmsg:signed-out', (event) => {
  const message = event.detail && event.detail.message;
  if (message || window.location.hash !== SIGNIN_ROUTE) {
    endSession();
    toast(message || 'Your session has ended; please sign in again.');
  }
});
window.addEventListener('optmsg:signed-in', () => navigate(DEFAULT_ROUTE));
live.addEventListener('message.created', () => refreshCounts());
live.addEventListener('screener.changed', () => refreshCounts());
live.addEventListener('reset', () => refreshCounts());
window.addEventListener('hashchange', route);
route();
