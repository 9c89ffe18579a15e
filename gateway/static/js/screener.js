// #/screener: one card per sender the user has not trusted yet (GET /screener), each
// decided with one click: Allow (trusted; their held messages move to the inbox),
// Block (blocked; their held messages are discarded) or Later (the card leaves the
// view for this browser session, until that sender writes again: the API has no
// snooze, and Later decides nothing). Several cards can be selected and decided
// together. Every decision can be undone from the toast (POST /screener/undo takes
// back the latest decision, within the server's undo window).
//
// Keyboard: each card is a focusable group; on a focused card A allows, B blocks,
// L is Later, X selects, and the arrow keys move between cards; U anywhere in the view
// undoes the latest decision (the toast's Undo button is far down the tab order).
// After a decision the focus goes to the next card, so a keyboard user never lands
// on <body>.

import { ApiError } from './api.js';
import { clear, h, timeEl } from './dom.js';

const PAGE = 50;
const LATER_KEY = 'optmsg.screener.later';

function errorText(err) {
  return err instanceof ApiError ? err.detail : (err && err.message) || String(err);
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

// Later is remembered per sender with the id of their newest held message, so that a
// new message from them brings the card back.
function laterMap() {
  try {
    const raw = window.sessionStorage.getItem(LATER_KEY);
    const parsed = raw ? JSON.parse(raw) : {};
    return parsed && typeof parsed === 'object' ? parsed : {};
  } catch {
    return {};
  }
}

function saveLater(map) {
  try {
    window.sessionStorage.setItem(LATER_KEY, JSON.stringify(map));
  } catch {
    // Storage unavailable: Later lasts until the view is left.
  }
}

const CHANNELS = { sms: 'SMS', mms: 'MMS', email: 'Email' };

export async function render(root, ctx) {
  let items = []; // every card loaded so far, in the API's order
  let next = null;
  let showLater = false;
  const selected = new Set();
  const later = laterMap();
  const cards = new Map(); // sender -> { el, key }
  let serial = 0;
  let closed = false;
  // The sender whose card takes the focus once drawn (after an undo, the card may
  // come back through a list read other than the undo's own).
  let focusWanted = null;

  const heading = h('h1', {}, 'Screener');
  const intro = h(
    'p',
    { class: 'muted' },
    'People not on your trusted list yet. Allow lets them into your inbox; Block ' +
      'discards their messages and keeps them out.',
  );
  const keysHint = h(
    'p',
    { class: 'hint screener-keys', id: 'screener-keys' },
    'Keyboard: on a sender, press A to allow, B to block, L for later, X to select; ' +
      'the arrow keys move between senders; U undoes the latest decision.',
  );
  const status = h('p', { class: 'muted', id: 'screener-status', 'aria-live': 'polite' });
  const error = h('p', { class: 'error', role: 'alert' });

  const selectAll = h('input', {
    type: 'checkbox',
    id: 'screener-select-all',
    onchange: () => {
      for (const item of visibleItems()) {
        if (selectAll.checked) selected.add(item.sender);
        else selected.delete(item.sender);
      }
      syncSelection();
    },
  });
  const selectedCount = h('span', { class: 'muted', 'aria-live': 'polite' });
  const allowSelected = h(
    'button',
    { type: 'button', onclick: () => decide('allow', [...selected]) },
    'Allow selected',
  );
  const blockSelected = h(
    'button',
    { type: 'button', class: 'danger', onclick: () => decide('block', [...selected]) },
    'Block selected',
  );
  const bulk = h(
    'div',
    { class: 'actions screener-bulk', role: 'group', 'aria-label': 'Selected senders' },
    h('span', { class: 'screener-select-all' }, selectAll, h('label', { for: selectAll.id }, 'Select all')),
    selectedCount,
    allowSelected,
    blockSelected,
  );
  const list = h('ul', { class: 'screener-cards', 'aria-label': 'Senders waiting' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true, onclick: loadMore }, 'Show more senders');
  const laterToggle = h('button', {
    type: 'button',
    class: 'link',
    hidden: true,
    onclick: () => {
      showLater = !showLater;
      draw();
    },
  });
  const empty = h(
    'p',
    { class: 'screener-empty', hidden: true },
    'Nobody is waiting. Messages from senders you have not trusted yet will appear here.',
  );

  root.append(heading, intro, keysHint, error, bulk, status, empty, list, h('div', { class: 'actions' }, more, laterToggle));

  function isLater(item) {
    return later[item.sender] === item.latest.message_id;
  }

  function visibleItems() {
    return items.filter((item) => showLater || !isLater(item));
  }

  function syncSelection() {
    // Forget selections of cards that are gone.
    const present = new Set(visibleItems().map((i) => i.sender));
    for (const sender of [...selected]) if (!present.has(sender)) selected.delete(sender);
    for (const [sender, card] of cards) {
      const box = card.el.querySelector('input[type="checkbox"]');
      if (box) box.checked = selected.has(sender);
      card.el.firstElementChild.classList.toggle('selected', selected.has(sender));
    }
    const n = selected.size;
    selectedCount.textContent = n ? `${n} selected` : '';
    // The bulk buttons show only with a selection: on a phone they would otherwise
    // take a screenful of the space the cards need.
    allowSelected.hidden = n === 0;
    blockSelected.hidden = n === 0;
    const visible = visibleItems().length;
    selectAll.checked = visible > 0 && n === visible;
    selectAll.indeterminate = n > 0 && n < visible;
    bulk.hidden = visible === 0;
    if (focusWanted && cards.has(focusWanted)) {
      focusOn(cards.get(focusWanted).el);
      focusWanted = null;
    }
  }

  function cardKey(item) {
    return `${item.latest.message_id}|${item.count}|${isLater(item) ? 'later' : ''}`;
  }

  function buildCard(item) {
    const id = `card-${item.latest.message_id}`;
    const name = item.display;
    const box = h('input', {
      type: 'checkbox',
      id: `${id}-select`,
      onchange: () => {
        if (box.checked) selected.add(item.sender);
        else selected.delete(item.sender);
        syncSelection();
      },
    });
    const latest = item.latest;
    // The <li> keeps the list's semantics; the group inside is what takes the focus.
    const el = h('li', { 'data-sender': item.sender });
    const group = h(
      'div',
      {
        class: ['card', 'screener-card', isLater(item) && 'later'],
        tabindex: '0',
        role: 'group',
        'aria-labelledby': `${id}-name`,
        'aria-describedby': `${id}-summary`,
        'aria-keyshortcuts': 'A B L X',
        onkeydown: (event) => onCardKey(event, item, el, group),
      },
      h(
        'div',
        { class: 'screener-head' },
        h('span', { class: 'screener-check' }, box, h('label', { for: box.id }, h('span', { class: 'visually-hidden' }, `Select ${name}`))),
        h('h2', { id: `${id}-name`, class: 'screener-name' }, name),
        h('span', { class: 'muted screener-kind' }, CHANNELS[item.channel] || item.channel),
      ),
      h(
        'p',
        { id: `${id}-summary`, class: 'screener-summary' },
        plural(item.count, 'message', 'messages'),
        ', latest ',
        timeEl(latest.received_at),
        isLater(item) ? ' (for later)' : '',
      ),
      latest.subject ? h('p', { class: 'screener-subject' }, latest.subject) : null,
      h('p', { class: 'screener-preview' }, latest.preview || h('span', { class: 'muted' }, '(no text)')),
      h(
        'p',
        { class: 'hint' },
        `Reason: ${item.reason}. Deleted if still undecided on `,
        timeEl(item.expires_at),
        '.',
      ),
      h(
        'div',
        { class: 'actions screener-actions' },
        h('button', { type: 'button', 'aria-label': `Allow ${name}`, onclick: () => decide('allow', [item.sender], el) }, 'Allow'),
        h('button', { type: 'button', class: 'danger', 'aria-label': `Block ${name}`, onclick: () => decide('block', [item.sender], el) }, 'Block'),
        isLater(item)
          ? null
          : h('button', { type: 'button', class: 'secondary', 'aria-label': `Later ${name}`, onclick: () => putOff(item, el) }, 'Later'),
      ),
    );
    el.appendChild(group);
    return el;
  }

  function focusOn(target) {
    if (!target || !target.isConnected) return;
    if (target.tagName === 'LI') target.firstElementChild.focus();
    else target.focus();
  }

  function onCardKey(event, item, el, group) {
    if (event.target !== group || event.altKey || event.ctrlKey || event.metaKey) return;
    // A held key repeats: one press, one decision (focus moves on to the next card).
    if (event.repeat) return;
    const key = event.key.toLowerCase();
    if (key === 'a') decide('allow', [item.sender], el);
    else if (key === 'b') decide('block', [item.sender], el);
    else if (key === 'l' && !isLater(item)) putOff(item, el);
    else if (key === 'x') {
      if (selected.has(item.sender)) selected.delete(item.sender);
      else selected.add(item.sender);
      syncSelection();
    } else if (key === 'arrowdown' || key === 'arrowup') {
      const all = [...list.children];
      const at = all.indexOf(el) + (key === 'arrowdown' ? 1 : -1);
      if (at >= 0 && at < all.length) focusOn(all[at]);
    } else return;
    event.preventDefault();
  }

  // Bring the list in line with `items` touching only what changed, so that a
  // refresh (live event, undo) keeps the focus and checkboxes of cards that stay.
  function draw() {
    const visible = visibleItems();
    const wanted = new Set(visible.map((i) => i.sender));
    for (const [sender, card] of cards) {
      if (!wanted.has(sender)) {
        card.el.remove();
        cards.delete(sender);
      }
    }
    let position = list.firstElementChild;
    for (const item of visible) {
      const key = cardKey(item);
      let card = cards.get(item.sender);
      if (card && card.key !== key) {
        const fresh = buildCard(item);
        const hadFocus = card.el.contains(document.activeElement);
        if (position === card.el) position = fresh;
        card.el.replaceWith(fresh);
        card = { el: fresh, key };
        cards.set(item.sender, card);
        if (hadFocus) focusOn(fresh);
      } else if (!card) {
        card = { el: buildCard(item), key };
        cards.set(item.sender, card);
      }
      if (card.el !== position) list.insertBefore(card.el, position);
      else position = position.nextElementSibling;
    }
    const hiddenLater = items.filter(isLater).length;
    laterToggle.hidden = hiddenLater === 0;
    laterToggle.textContent = showLater
      ? 'Hide the senders put off for later'
      : `Show ${plural(hiddenLater, 'sender', 'senders')} put off for later`;
    empty.hidden = visible.length > 0 || next !== null;
    more.hidden = next === null;
    const total = items.length;
    status.textContent = total
      ? `${plural(total, 'sender', 'senders')}${next ? ' or more' : ''} waiting${hiddenLater && !showLater ? `, ${hiddenLater} of them put off for later` : ''}.`
      : '';
    syncSelection();
  }

  async function load() {
    const turn = ++serial;
    // Reload as many cards as were shown, so that "Show more" is not undone.
    const limit = Math.min(200, Math.max(PAGE, items.length));
    const page = await ctx.api(`/screener?limit=${limit}`);
    if (turn !== serial || closed) return;
    items = page.items;
    next = page.next;
    // A sender whose newest message changed is no longer "later".
    for (const sender of Object.keys(later)) {
      const item = items.find((i) => i.sender === sender);
      if (!item || later[sender] !== item.latest.message_id) delete later[sender];
    }
    saveLater(later);
    draw();
  }

  async function refresh() {
    try {
      error.textContent = '';
      await load();
    } catch (err) {
      error.textContent = errorText(err);
    }
  }

  async function loadMore() {
    if (!next) return;
    try {
      const page = await ctx.api(`/screener?limit=${PAGE}&cursor=${encodeURIComponent(next)}`);
      const known = new Set(items.map((i) => i.sender));
      items = items.concat(page.items.filter((i) => !known.has(i.sender)));
      next = page.next;
      draw();
    } catch (err) {
      error.textContent = errorText(err);
    }
  }

  // Where the focus goes when `el` leaves: the next card, else the previous, else
  // the heading.
  function focusAfter(els) {
    const all = [...list.children];
    const gone = new Set(els);
    const last = all.findIndex((c) => gone.has(c));
    if (last < 0) return null;
    return all.slice(last).find((c) => !gone.has(c)) || all.slice(0, last).reverse().find((c) => !gone.has(c)) || heading;
  }

  function labelOf(senders) {
    if (senders.length !== 1) return plural(senders.length, 'sender', 'senders');
    const item = items.find((i) => i.sender === senders[0]);
    return item ? item.display : senders[0];
  }

  async function decide(action, senders, el = null) {
    if (!senders.length) return;
    const els = senders.map((s) => cards.get(s)).filter(Boolean).map((c) => c.el);
    if (els.some((c) => c.hasAttribute('aria-busy'))) return; // a double click
    const hadFocus = el !== null || els.some((c) => c.contains(document.activeElement));
    const focusTarget = hadFocus ? focusAfter(els) : null;
    for (const c of els) c.setAttribute('aria-busy', 'true');
    error.textContent = '';
    let result;
    try {
      result = await ctx.api(`/screener/${action}`, { method: 'POST', json: { senders } });
    } catch (err) {
      for (const c of els) c.removeAttribute('aria-busy');
      error.textContent = errorText(err);
      refresh(); // a 404 means the card is gone already (decided on another device)
      return;
    }
    const who = labelOf(senders);
    serial += 1; // a list read before the decision must not bring its cards back
    items = items.filter((i) => !senders.includes(i.sender));
    for (const s of senders) {
      selected.delete(s);
      delete later[s];
    }
    saveLater(later);
    draw();
    focusOn(focusTarget);
    ctx.refreshCounts();
    const moved = plural(result.messages, 'message', 'messages');
    const text = action === 'allow' ? `Allowed ${who}: ${moved} moved to your inbox.` : `Blocked ${who}: ${moved} discarded.`;
    ctx.toast(text, { undo: () => undo() });
  }

  async function undo() {
    const result = await ctx.api('/screener/undo', { method: 'POST' });
    focusWanted = result.senders.length ? result.senders[0] : null;
    await refresh();
    ctx.refreshCounts();
    const who = labelOf(result.senders);
    ctx.toast(`Undone: ${who} ${result.senders.length === 1 ? 'is' : 'are'} back in the screener.`);
  }

  function putOff(item, el) {
    const focusTarget = focusAfter([el]);
    later[item.sender] = item.latest.message_id;
    saveLater(later);
    selected.delete(item.sender);
    draw();
    focusOn(focusTarget);
    ctx.toast(`${item.display} put off for later.`);
  }

  let undoing = false;
  const onUndoKey = async (event) => {
    if (event.key.toLowerCase() !== 'u' || event.altKey || event.ctrlKey || event.metaKey) return;
    const target = event.target instanceof Element ? event.target : null;
    if (target && target.closest('input, textarea, select, [contenteditable]')) return;
    event.preventDefault();
    // Each undo takes back one more decision: never several from one held key.
    if (event.repeat || undoing) return;
    undoing = true;
    try {
      await undo();
    } catch (err) {
      ctx.toast(errorText(err));
    } finally {
      undoing = false;
    }
  };
  document.addEventListener('keydown', onUndoKey);

  const onChange = () => refresh();
  ctx.live.addEventListener('message.created', onChange);
  ctx.live.addEventListener('screener.changed', onChange);
  ctx.live.addEventListener('reset', onChange);

  try {
    await load();
  } catch (err) {
    clear(list);
    error.textContent = errorText(err);
  }

  return () => {
    closed = true;
    document.removeEventListener('keydown', onUndoKey);
    ctx.live.removeEventListener('message.created', onChange);
    ctx.live.removeEventListener('screener.changed', onChange);
    ctx.live.removeEventListener('reset', onChange);
  };
}
