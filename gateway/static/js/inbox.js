// #/inbox: the conversations (newest activity first) or the received / sent messages
// as flat lists, newest first, paged with "Load more". #/conversation/<key>: one
// conversation, newest first like every list here, with a reply box for SMS.
// Both follow the live events: new messages appear without a reload, read state and
// deletions are reflected at once. Unread items are bold AND carry a text badge, so
// the state never depends on colour or weight alone.

import { ApiError } from './api.js';
import { h, clear, timeEl } from './dom.js';
import { conversationHash, counterpartOf, render as renderMessage, statusLine } from './message.js';

const PAGE = 50;
const MAX_PAGE = 200;
const PREVIEW_CHARS = 140;

const VIEWS = {
  conversations: { label: 'Conversations', empty: 'No conversations yet.' },
  inbox: { label: 'Received', empty: 'No messages yet.' },
  sent: { label: 'Sent', empty: 'Nothing sent yet.' },
};

function messageHash(id) {
  return `#/inbox/${encodeURIComponent(id)}`;
}

function preview(text) {
  const flat = (text || '').split(/\s+/).join(' ').trim();
  return flat.length <= PREVIEW_CHARS ? flat : `${flat.slice(0, PREVIEW_CHARS - 1)}…`;
}

function unreadBadge(text) {
  return h('span', { class: 'badge unread-badge' }, text);
}

function errorText(err) {
  return err instanceof ApiError ? err.detail : err.message;
}

/**
 * Run `load` again whenever asked, but never two at once and never out of order:
 * asks made while one runs are merged into one more run after it.
 */
function serialised(load) {
  let running = null;
  let again = false;
  const run = async () => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        try {
          await load();
        } catch (err) {
          // A failed refresh leaves the list as it was; the next event retries.
          if (!(err instanceof ApiError)) throw err;
        }
      } while (again);
    })();
    try {
      await running;
    } finally {
      running = null;
    }
    return undefined;
  };
  return run;
}

// --- #/inbox ----------------------------------------------------------------------------

function conversationItem(conversation) {
  const latest = conversation.latest;
  const unread = conversation.unread > 0;
  const title = conversation.kind === 'email' && conversation.subject
    ? conversation.subject
    : conversation.counterpart;
  const link = h(
    'a',
    { href: conversationHash(conversation.key), class: 'item-link' },
    h('span', { class: 'item-head' },
      h('span', { class: 'who' }, title),
      unread ? unreadBadge(`${conversation.unread} unread`) : null,
      h('span', { class: 'when' }, timeEl(latest.at))),
    conversation.kind === 'email' && conversation.subject
      ? h('span', { class: 'item-sub muted' }, conversation.counterpart)
      : null,
    h('span', { class: 'preview' },
      latest.direction === 'outbound' ? 'You: ' : '',
      latest.preview || '(no text)'),
  );
  return h('li', { class: ['inbox-item', unread && 'unread'], 'data-key': conversation.key }, link);
}

function messageItem(message) {
  const unread = !message.read && message.direction !== 'outbound';
  const who = message.direction === 'outbound' ? `To ${message.recipient}` : message.sender;
  return h(
    'li',
    { class: ['inbox-item', unread && 'unread'], 'data-id': message.id },
    h('a', { href: messageHash(message.id), class: 'item-link' },
      h('span', { class: 'item-head' },
        h('span', { class: 'who' }, who),
        unread ? unreadBadge('Unread') : null,
        h('span', { class: 'when' }, timeEl(message.received_at))),
      message.subject ? h('span', { class: 'item-sub' }, message.subject) : null,
      h('span', { class: 'preview' }, preview(message.text) || '(no text)'),
      message.attachments.length ? h('span', { class: 'muted attached' }, `${message.attachments.length} attached`) : null,
      message.direction === 'outbound' && message.status ? statusLine(message) : null),
  );
}

async function renderInbox(root, ctx) {
  let view = 'conversations';
  let next = null;
  let loaded = 0;
  const list = h('ul', { class: 'list inbox-list', 'aria-labelledby': 'inbox-title' });
  const empty = h('p', { class: 'muted' });
  const error = h('p', { class: 'error', role: 'alert' });
  const more = h('button', { type: 'button', class: 'secondary' }, 'Load more');
  const switches = {};
  const group = h('div', { class: 'actions view-switch', role: 'group', 'aria-label': 'Show' });
  for (const [name, { label }] of Object.entries(VIEWS)) {
    switches[name] = h('button', {
      type: 'button',
      class: 'secondary',
      'aria-pressed': String(name === view),
      onclick: () => show(name),
    }, label);
    group.append(switches[name]);
  }
  root.append(
    h('h1', { id: 'inbox-title' }, 'Inbox'),
    group,
    error,
    list,
    empty,
    h('div', { class: 'actions' }, more),
  );

  function path(limit, cursor) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (cursor) query.set('cursor', cursor);
    return view === 'conversations'
      ? `/conversations?${query}`
      : `/messages?folder=${view}&${query}`;
  }

  function itemFor(entry) {
    return view === 'conversations' ? conversationItem(entry) : messageItem(entry);
  }

  function settle() {
    more.hidden = !next;
    empty.textContent = list.children.length ? '' : VIEWS[view].empty;
  }

  // The first page again, as long as what is shown (at most MAX_PAGE): what a live
  // event changed is somewhere in it, and the order of conversations may change.
  const refresh = serialised(async () => {
    const shownView = view;
    let page;
    try {
      page = await ctx.api(path(Math.min(MAX_PAGE, Math.max(PAGE, loaded))));
    } catch (err) {
      if (shownView === view) {
        error.textContent = `Could not load the list: ${errorText(err)}`;
        empty.textContent = '';
      }
      throw err;
    }
    if (shownView !== view) return;
    clear(list);
    for (const entry of page.items) list.append(itemFor(entry));
    loaded = page.items.length;
    next = page.next;
    error.textContent = '';
    settle();
  });

  async function loadMore() {
    more.disabled = true;
    try {
      const shownView = view;
      const page = await ctx.api(path(PAGE, next));
      if (shownView !== view) return;
      const seen = new Set([...list.children].map((li) => li.dataset.id || li.dataset.key));
      for (const entry of page.items) {
        if (!seen.has(entry.id || entry.key)) list.append(itemFor(entry));
      }
      loaded += page.items.length;
      next = page.next;
      settle();
    } catch (err) {
      error.textContent = `Could not load more: ${errorText(err)}`;
    } finally {
      more.disabled = false;
    }
  }

  function show(name) {
    view = name;
    for (const [other, button] of Object.entries(switches)) button.setAttribute('aria-pressed', String(other === name));
    clear(list);
    loaded = 0;
    next = null;
    more.hidden = true;
    empty.textContent = 'Loading…';
    refresh();
  }

  // A new message: in the flat lists it is fetched and put at the top; in the
  // conversation list the first page is read again (its conversation moves up).
  async function onCreated(event) {
    const { message_id: id, folder } = event.detail || {};
    if (view === 'conversations') {
      if (folder === 'inbox' || folder === 'sent') await refresh();
      return;
    }
    if (folder !== view || list.querySelector(`[data-id="${CSS.escape(id)}"]`)) return;
    let message;
    try {
      message = await ctx.api(`/messages/${encodeURIComponent(id)}`);
    } catch (err) {
      if (err instanceof ApiError) return; // deleted or moved meanwhile
      throw err;
    }
    if (message.folder !== view || list.querySelector(`[data-id="${CSS.escape(id)}"]`)) return;
    list.prepend(messageItem(message));
    loaded += 1;
    settle();
  }

  async function onChanged(event) {
    const id = event.detail && event.detail.message_id;
    if (view === 'conversations') {
      // A delivery status is not shown in the conversation list.
      if (event.type !== 'message.status') await refresh();
      return;
    }
    const item = id && list.querySelector(`[data-id="${CSS.escape(id)}"]`);
    if (!item) return;
    if (event.type === 'message.deleted') {
      item.remove();
      loaded = Math.max(0, loaded - 1);
      settle();
      return;
    }
    try {
      item.replaceWith(messageItem(await ctx.api(`/messages/${encodeURIComponent(id)}`)));
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      item.remove();
    }
  }

  const onReset = () => refresh();
  more.addEventListener('click', loadMore);
  ctx.live.addEventListener('message.created', onCreated);
  for (const kind of ['message.updated', 'message.deleted', 'message.status']) ctx.live.addEventListener(kind, onChanged);
  ctx.live.addEventListener('screener.changed', onReset);
  ctx.live.addEventListener('reset', onReset);
  show(view);
  return () => {
    ctx.live.removeEventListener('message.created', onCreated);
    for (const kind of ['message.updated', 'message.deleted', 'message.status']) ctx.live.removeEventListener(kind, onChanged);
    ctx.live.removeEventListener('screener.changed', onReset);
    ctx.live.removeEventListener('reset', onReset);
  };
}

// --- #/conversation/<key> ---------------------------------------------------------------

function bubble(message) {
  const outbound = message.direction === 'outbound';
  const unread = !message.read && !outbound;
  return h(
    'li',
    { class: ['bubble', outbound ? 'outbound' : 'inbound', unread && 'unread'], 'data-id': message.id },
    h('p', { class: 'item-head' },
      h('span', { class: 'who' }, outbound ? 'You' : message.sender),
      unread ? unreadBadge('Unread') : null,
      h('span', { class: 'when' }, timeEl(message.received_at))),
    message.subject ? h('p', { class: 'item-sub' }, message.subject) : null,
    h('p', { class: 'message-text' }, message.text || '(no text)'),
    message.attachments.length ? h('p', { class: 'muted' }, `${message.attachments.length} attached`) : null,
    outbound && message.status ? statusLine(message) : null,
    h('a', { href: messageHash(message.id), class: 'open-link' }, 'Open message'),
  );
}

function replyForm(ctx, key, onSent) {
  const text = h('textarea', { id: 'reply-text', name: 'text', rows: '3', required: true, 'aria-describedby': 'reply-error' });
  const error = h('p', { class: 'error', id: 'reply-error', role: 'alert' });
  const send = h('button', { type: 'submit' }, 'Send');
  const form = h('form', { class: 'reply card' },
    h('div', { class: 'field' }, h('label', { for: 'reply-text' }, 'Reply'), text),
    error,
    h('div', { class: 'actions' }, send));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!text.value.trim()) {
      error.textContent = 'Write a message first.';
      text.setAttribute('aria-invalid', 'true');
      text.focus();
      return;
    }
    send.disabled = true;
    error.textContent = '';
    text.removeAttribute('aria-invalid');
    try {
      const message = await ctx.api('/messages', { method: 'POST', json: { to: key, text: text.value } });
      text.value = '';
      onSent(message);
    } catch (err) {
      error.textContent = `Not sent: ${errorText(err)}`;
      text.setAttribute('aria-invalid', 'true');
    } finally {
      send.disabled = false;
    }
  });
  return form;
}

async function replyByEmail(ctx, latest, error) {
  const to = latest.direction === 'outbound' ? latest.recipient.split(',') : [latest.sender];
  const subject = latest.subject && /^re:/i.test(latest.subject) ? latest.subject : `Re: ${latest.subject || ''}`.trim();
  try {
    const draft = await ctx.api('/drafts', { method: 'POST', json: { channel: 'email', to, subject } });
    ctx.navigate(`#/compose/${encodeURIComponent(draft.id)}`);
  } catch (err) {
    error.textContent = `Could not start a reply: ${errorText(err)}`;
  }
}

async function renderConversation(root, ctx, key) {
  const base = `/conversations/${encodeURIComponent(key)}/messages`;
  const first = await ctx.api(`${base}?limit=${PAGE}`);
  const email = key.startsWith('email:');
  const latest = first.items[0];
  const title = email ? (latest && latest.subject) || 'Email conversation' : key;
  const list = h('ul', { class: 'list conversation', 'aria-label': 'Messages, newest first' });
  const more = h('button', { type: 'button', class: 'secondary' }, 'Load older messages');
  const error = h('p', { class: 'error', role: 'alert' });
  let next = first.next;

  root.append(h('p', { class: 'back' }, h('a', { href: '#/inbox' }, '← Inbox')), h('h1', {}, title));
  if (email && latest) {
    root.append(h('p', { class: 'muted' }, `With ${counterpartOf(latest)}`),
      h('div', { class: 'actions' }, h('button', { type: 'button', onclick: () => replyByEmail(ctx, latest, error) }, 'Reply by email')));
  } else if (!email) {
    root.append(replyForm(ctx, key, (message) => addNewest([message])));
  }
  root.append(error, list, h('div', { class: 'actions' }, more));
  if (!first.items.length) list.after(h('p', { class: 'muted' }, 'No messages in this conversation.'));

  const shown = (id) => list.querySelector(`[data-id="${CSS.escape(id)}"]`);

  // The user is looking at them: unread received messages become read.
  async function markRead(messages) {
    for (const message of messages) {
      if (message.read || message.direction === 'outbound') continue;
      try {
        const updated = await ctx.api(`/messages/${encodeURIComponent(message.id)}`, { method: 'PATCH', json: { read: true } });
        const item = shown(message.id);
        if (item) item.replaceWith(bubble(updated));
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
      }
    }
  }

  function addNewest(messages) {
    // `messages` is newest first; prepend oldest first so the newest ends on top.
    const fresh = messages.filter((m) => !shown(m.id));
    for (const message of [...fresh].reverse()) list.prepend(bubble(message));
    markRead(fresh);
  }

  function append(messages) {
    for (const message of messages) if (!shown(message.id)) list.append(bubble(message));
    markRead(messages);
  }

  append(first.items);
  more.hidden = !next;
  more.addEventListener('click', async () => {
    more.disabled = true;
    try {
      const page = await ctx.api(`${base}?limit=${PAGE}&cursor=${encodeURIComponent(next)}`);
      next = page.next;
      append(page.items);
      more.hidden = !next;
    } catch (err) {
      error.textContent = `Could not load older messages: ${errorText(err)}`;
    } finally {
      more.disabled = false;
    }
  });

  // Which conversation a new message belongs to is the server's to say (an email
  // thread key is not in the message): read this conversation's first page again.
  const refreshNewest = serialised(async () => {
    const page = await ctx.api(`${base}?limit=${PAGE}`);
    addNewest(page.items);
  });
  const onCreated = () => refreshNewest();
  const onChanged = async (event) => {
    const id = event.detail && event.detail.message_id;
    const item = id && shown(id);
    if (!item) return;
    if (event.type === 'message.deleted') {
      item.remove();
      return;
    }
    try {
      item.replaceWith(bubble(await ctx.api(`/messages/${encodeURIComponent(id)}`)));
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      item.remove();
    }
  };
  ctx.live.addEventListener('message.created', onCreated);
  ctx.live.addEventListener('screener.changed', onCreated);
  ctx.live.addEventListener('reset', onCreated);
  for (const kind of ['message.updated', 'message.deleted', 'message.status']) ctx.live.addEventListener(kind, onChanged);
  return () => {
    ctx.live.removeEventListener('message.created', onCreated);
    ctx.live.removeEventListener('screener.changed', onCreated);
    ctx.live.removeEventListener('reset', onCreated);
    for (const kind of ['message.updated', 'message.deleted', 'message.status']) ctx.live.removeEventListener(kind, onChanged);
  };
}

/**
 * The router calls this for #/inbox (no params), #/inbox/<messageId> (handed to
 * message.js) and #/conversation/<key> (params: 'conversation', the key).
 */
export async function render(root, ctx, params) {
  if (params[0] === 'conversation') return renderConversation(root, ctx, params[1] || '');
  if (params[0]) return renderMessage(root, ctx, params);
  return renderInbox(root, ctx);
}
