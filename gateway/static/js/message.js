// #/inbox/<messageId>: one message. Opening it marks it read. An email's HTML (already
// sanitised by the gateway) is shown in an <iframe sandbox> without allow-scripts or
// allow-same-origin, through srcdoc, so it inherits this page's CSP: it can run nothing,
// reach nothing of ours and load nothing remote. Image attachments are fetched with the
// bearer token and shown through blob: URLs; other files are download buttons.

import { ApiError, download } from './api.js';
import { h, clear, timeEl } from './dom.js';

// Outbound delivery states as a person reads them (the API's `status`).
const STATUS_LABELS = {
  draft: 'Draft',
  pending: 'Waiting to send',
  queued: 'Queued',
  accepted: 'Queued',
  scheduled: 'Scheduled',
  sending: 'Sending',
  sent: 'Sent',
  delivered: 'Delivered',
  read: 'Read',
  undelivered: 'Not delivered',
  failed: 'Failed',
  canceled: 'Canceled',
};

// Raster types a browser shows in <img>; anything else is offered as a download.
const INLINE_IMAGE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/bmp']);

export function statusLabel(status) {
  return STATUS_LABELS[status] || status;
}

/** The other party of a message: who wrote it, or whom it was sent to. */
export function counterpartOf(message) {
  return message.direction === 'outbound' ? message.recipient : message.sender;
}

/** The hash of an SMS conversation with `number` (its key is the canonical number). */
export function conversationHash(key) {
  return `#/conversation/${encodeURIComponent(key)}`;
}

export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

/** An outbound message's delivery status, as one line. */
export function statusLine(message) {
  const failed = message.status === 'failed' || message.status === 'undelivered';
  return h(
    'span',
    { class: `delivery status-${message.status}`, 'data-status': message.status },
    'Status: ',
    h('strong', {}, statusLabel(message.status)),
    failed && message.reason ? ` (${message.reason})` : '',
  );
}

function attachmentPath(message, attachment) {
  return `/messages/${encodeURIComponent(message.id)}/attachments/${encodeURIComponent(attachment.id)}`;
}

// The iframe's document: the sanitised HTML, links opening in a new tab, and our own
// small stylesheet (allowed by the inherited style-src 'self'). The meta CSP only
// narrows what the inherited page CSP already allows.
function frameDocument(html) {
  const origin = window.location.origin;
  return (
    '<!doctype html><html><head><meta charset="utf-8">' +
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; ` +
    `style-src ${origin}/static/email-frame.css; img-src data:">` +
    '<base target="_blank">' +
    `<link rel="stylesheet" href="${origin}/static/email-frame.css">` +
    `</head><body>${html}</body></html>`
  );
}

function emailFrame(html) {
  const frame = h('iframe', {
    class: 'email-frame',
    title: 'Message content',
    sandbox: 'allow-popups allow-popups-to-escape-sandbox',
    referrerpolicy: 'no-referrer',
  });
  // Set as a property: the sanitised HTML is data, never parsed into our document.
  frame.srcdoc = frameDocument(html);
  return frame;
}

function authSummary(auth) {
  const parts = ['spf', 'dkim', 'dmarc']
    .filter((name) => auth[name] !== undefined && auth[name] !== null)
    .map((name) => `${name.toUpperCase()} ${auth[name]}`);
  if (auth.aligned !== undefined) parts.push(auth.aligned ? 'aligned' : 'not aligned');
  return parts.join(', ');
}

function details(message) {
  const rows = [
    ['From', message.sender],
    ['To', message.recipient],
    [message.direction === 'outbound' ? 'Sent' : 'Received', timeEl(message.received_at)],
    ['Channel', message.channel.toUpperCase()],
  ];
  if (message.folder === 'quarantine') rows.push(['Held', message.reason || 'in the screener']);
  if (message.channel === 'email' && message.auth) rows.push(['Sender checks', authSummary(message.auth)]);
  const list = h('dl', { class: 'profile message-details' });
  for (const [name, value] of rows) list.append(h('dt', {}, name), h('dd', {}, value || '—'));
  return list;
}

function body(message) {
  const box = h('section', { class: 'message-body', 'aria-label': 'Message' });
  const plain = h('div', { class: 'message-text' }, message.text || '(no text)');
  if (!message.html) {
    box.append(plain);
    return box;
  }
  const frame = emailFrame(message.html);
  plain.hidden = true;
  const toggle = h('button', { type: 'button', class: 'link', 'aria-pressed': 'false' }, 'Show plain text');
  toggle.addEventListener('click', () => {
    const showPlain = plain.hidden;
    plain.hidden = !showPlain;
    frame.hidden = showPlain;
    toggle.setAttribute('aria-pressed', String(showPlain));
  });
  box.append(frame, plain, h('p', {}, toggle));
  return box;
}

async function inlineImage(ctx, message, attachment, urls) {
  const response = await ctx.api(attachmentPath(message, attachment), { raw: true, headers: { Accept: '*/*' } });
  const url = URL.createObjectURL(await response.blob());
  urls.push(url);
  return h('img', { class: 'attachment-image', src: url, alt: attachment.filename || 'Attached image' });
}

function downloadButton(message, attachment, toast) {
  const name = attachment.filename || 'attachment';
  const button = h('button', { type: 'button', class: 'secondary' }, `Download ${name} (${formatSize(attachment.size)})`);
  button.addEventListener('click', async () => {
    try {
      await download(attachmentPath(message, attachment), name);
    } catch (err) {
      toast(`Could not download ${name}: ${err.detail || err.message}`);
    }
  });
  return button;
}

function attachmentsSection(ctx, message, urls) {
  const list = h('ul', { class: 'attachments' });
  for (const attachment of message.attachments) {
    const item = h('li', {});
    list.append(item);
    const name = attachment.filename || 'attachment';
    if (attachment.status !== 'stored') {
      const state = attachment.status === 'failed' ? `could not be fetched: ${attachment.error || 'unknown error'}` : 'still being fetched';
      item.append(`${name}: ${state}`);
    } else if (INLINE_IMAGE_TYPES.has(attachment.content_type)) {
      item.append(h('figure', {}, h('figcaption', {}, `${name} (${formatSize(attachment.size)})`)));
      inlineImage(ctx, message, attachment, urls)
        .then((img) => item.firstChild.prepend(img))
        .catch((err) => item.append(h('p', { class: 'error' }, err.message)));
      item.append(downloadButton(message, attachment, ctx.toast));
    } else {
      item.append(downloadButton(message, attachment, ctx.toast));
    }
  }
  return h('section', { class: 'message-attachments', 'aria-labelledby': 'attachments-title' },
    h('h2', { id: 'attachments-title' }, 'Attachments'), list);
}

function deleteControls(ctx, message, backHash, state) {
  const box = h('div', { class: 'actions delete-box' });
  const start = h('button', { type: 'button', class: 'danger' }, 'Delete');
  const confirm = h('div', { class: 'confirm card', role: 'group', 'aria-label': 'Confirm delete' });
  confirm.hidden = true;
  const provider = h('input', { type: 'checkbox', id: 'delete-provider' });
  const error = h('p', { class: 'error', role: 'alert' });
  const yes = h('button', { type: 'button', class: 'danger' }, 'Delete for good');
  const no = h('button', { type: 'button', class: 'secondary' }, 'Cancel');
  confirm.append(h('p', {}, 'Delete this message and its attachments? This cannot be undone.'));
  if ((message.channel === 'sms' || message.channel === 'mms') && message.bridge === 'twilio') {
    confirm.append(h('div', { class: 'check' }, provider,
      h('label', { for: 'delete-provider' }, "Also delete the carrier's copy")));
  }
  confirm.append(h('div', { class: 'actions' }, yes, no), error);
  start.addEventListener('click', () => {
    start.hidden = true;
    confirm.hidden = false;
    yes.focus();
  });
  no.addEventListener('click', () => {
    confirm.hidden = true;
    start.hidden = false;
    start.focus();
  });
  yes.addEventListener('click', async () => {
    yes.disabled = true;
    state.deleting = true;
    const query = provider.checked ? '?provider=true' : '';
    try {
      await ctx.api(`/messages/${encodeURIComponent(message.id)}${query}`, { method: 'DELETE' });
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) {
        error.textContent = `Could not delete: ${err.detail || err.message}`;
        yes.disabled = false;
        state.deleting = false;
        return;
      }
    }
    ctx.toast('Message deleted');
    ctx.navigate(backHash);
  });
  box.append(start, confirm);
  return box;
}

export async function render(root, ctx, params) {
  const id = params[0] || '';
  const urls = [];
  let message;
  try {
    message = await ctx.api(`/messages/${encodeURIComponent(id)}`);
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 404) throw err;
    root.append(h('h1', {}, 'Message not found'),
      h('p', {}, 'It may have been deleted. '), h('p', {}, h('a', { href: '#/inbox' }, 'Back to the inbox')));
    return undefined;
  }
  if (message.folder === 'drafts') {
    ctx.navigate(`#/compose/${encodeURIComponent(message.id)}`);
    return undefined;
  }
  const counterpart = counterpartOf(message);
  const backHash = message.channel === 'email' ? '#/inbox' : conversationHash(counterpart);
  const title = message.subject || (message.direction === 'outbound' ? `To ${counterpart}` : `From ${counterpart}`);
  const readState = h('p', { class: 'read-state muted' });
  // A live region that exists before its content changes, so changes are announced.
  const statusBox = h('div', { class: 'status-box', role: 'status' });
  if (message.direction === 'outbound' && message.status) statusBox.append(statusLine(message));

  const nav = h('p', { class: 'back' }, h('a', { href: '#/inbox' }, '← Inbox'));
  if (message.channel !== 'email') nav.append(' · ', h('a', { href: backHash }, `Conversation with ${counterpart}`));
  root.append(nav, h('h1', {}, title), details(message));
  root.append(statusBox, readState, body(message));
  if (message.attachments.length) root.append(attachmentsSection(ctx, message, urls));
  // Set while this page deletes the message, so its own event does not navigate twice.
  const state = { deleting: false };
  root.append(deleteControls(ctx, message, backHash, state));

  if (!message.read) {
    try {
      message = await ctx.api(`/messages/${encodeURIComponent(message.id)}`, { method: 'PATCH', json: { read: true } });
    } catch (err) {
      readState.textContent = `Could not mark it read: ${err.detail || err.message}`;
    }
  }
  const markUnread = h('button', { type: 'button', class: 'link' }, 'Mark as unread');
  markUnread.addEventListener('click', async () => {
    try {
      await ctx.api(`/messages/${encodeURIComponent(message.id)}`, { method: 'PATCH', json: { read: false } });
      ctx.navigate(backHash);
    } catch (err) {
      ctx.toast(`Could not mark it unread: ${err.detail || err.message}`);
    }
  });
  if (message.direction !== 'outbound') readState.append(markUnread);

  const onStatus = async (event) => {
    if (event.detail.message_id !== message.id) return;
    try {
      message = await ctx.api(`/messages/${encodeURIComponent(message.id)}`);
    } catch {
      return; // deleted meanwhile: message.deleted follows
    }
    clear(statusBox);
    statusBox.append(statusLine(message));
  };
  const onDeleted = (event) => {
    if (state.deleting || event.detail.message_id !== message.id) return;
    ctx.toast('This message was deleted');
    ctx.navigate(backHash);
  };
  ctx.live.addEventListener('message.status', onStatus);
  ctx.live.addEventListener('message.deleted', onDeleted);
  return () => {
    ctx.live.removeEventListener('message.status', onStatus);
    ctx.live.removeEventListener('message.deleted', onDeleted);
    for (const url of urls) URL.revokeObjectURL(url);
  };
}
