// #/compose (a new message) and #/compose/<draftId> (a saved draft): an SMS/MMS or an
// email with a text body and attachments, saved as a draft (POST/PATCH /drafts) and
// sent (POST /drafts/{id}/send). After sending, the sent message's own page shows its
// delivery status as it changes. The user's drafts are listed under the form.
// An error from the API is shown next to the field it is about.

import { ApiError } from './api.js';
import { h, clear, timeEl } from './dom.js';
import { formatSize } from './message.js';

const DRAFT_PAGE = 50;
// How long typing must pause before the number is read by the server.
const READING_DELAY_MS = 300;

const FIELDS = ['to', 'subject', 'text', 'files'];

// Which field a problem's detail is about (the API names it in words, e.g.
// "to[0]: not a phone number", "+1… texted STOP to your number").
function fieldOf(detail) {
  const text = (detail || '').toLowerCase();
  if (/^to\b|^to\[|recipient|texted stop/.test(text)) return 'to';
  if (/subject/.test(text)) return 'subject';
  if (/attach|media/.test(text)) return 'files';
  if (/text|message is empty|characters/.test(text)) return 'text';
  return null;
}

// Next to the To field, the API's "to[0]: " prefix (which member of the list) reads
// as "Address 1: " for email and goes without saying for an SMS's one number.
function toProblem(detail, channel) {
  return detail.replace(/^to(?:\[(\d+)\])?:\s*/, (_, index) =>
    channel === 'email' && index !== undefined ? `Address ${Number(index) + 1}: ` : '');
}

function recipients(channel, raw) {
  const value = raw.trim();
  if (!value) return [];
  // A phone number may be typed with spaces; email addresses are separated by them.
  return channel === 'sms' ? [value] : value.split(/[\s,;]+/).filter(Boolean);
}

function draftSummary(draft) {
  const to = draft.to.length ? draft.to.join(', ') : '(no recipient)';
  const about = draft.subject || draft.text.split(/\s+/).join(' ').trim().slice(0, 80) || '(empty)';
  return { to, about };
}

function draftsSection(ctx, currentId) {
  const state = { current: currentId };
  const list = h('ul', { class: 'list drafts-list', 'aria-labelledby': 'drafts-title' });
  const empty = h('p', { class: 'muted' }, 'Loading…');
  const more = h('button', { type: 'button', class: 'secondary' }, 'Load more drafts');
  const section = h('section', { class: 'drafts', 'aria-labelledby': 'drafts-title' },
    h('h2', { id: 'drafts-title' }, 'Drafts'), list, empty, h('div', { class: 'actions' }, more));
  let next = null;

  function item(draft) {
    const { to, about } = draftSummary(draft);
    const remove = h('button', { type: 'button', class: 'secondary' }, 'Delete');
    remove.setAttribute('aria-label', `Delete draft to ${to}`);
    remove.addEventListener('click', async () => {
      remove.disabled = true;
      try {
        await ctx.api(`/drafts/${encodeURIComponent(draft.id)}`, { method: 'DELETE' });
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 404)) {
          ctx.toast(`Could not delete the draft: ${err.detail || err.message}`);
          remove.disabled = false;
          return;
        }
      }
      ctx.toast('Draft deleted');
      if (draft.id === state.current) ctx.navigate('#/compose');
      else li.remove();
      settle();
    });
    const li = h('li', { class: ['draft-item', draft.id === state.current && 'current'], 'data-id': draft.id },
      h('div', { class: 'row' },
        h('a', { href: `#/compose/${encodeURIComponent(draft.id)}`, class: 'grow' },
          h('span', { class: 'channel-tag' }, draft.channel === 'email' ? 'Email' : 'SMS'),
          ` To ${to}: ${about}`),
        h('span', { class: 'muted' }, 'Saved ', timeEl(draft.updated_at)),
        remove));
    return li;
  }

  function settle() {
    empty.textContent = list.children.length ? '' : 'No drafts.';
    more.hidden = !next;
  }

  async function load(cursor) {
    const query = new URLSearchParams({ limit: String(DRAFT_PAGE) });
    if (cursor) query.set('cursor', cursor);
    const page = await ctx.api(`/drafts?${query}`);
    for (const draft of page.items) {
      if (!list.querySelector(`[data-id="${CSS.escape(draft.id)}"]`)) list.append(item(draft));
    }
    next = page.next;
    settle();
  }

  more.addEventListener('click', () => load(next).catch((err) => ctx.toast(err.detail || err.message)));
  // The first page again (after a save, the draft moves to the top).
  async function reload() {
    const query = new URLSearchParams({ limit: String(DRAFT_PAGE) });
    const page = await ctx.api(`/drafts?${query}`);
    clear(list);
    next = null;
    for (const draft of page.items) list.append(item(draft));
    next = page.next;
    settle();
  }

  state.section = section;
  state.reload = reload;
  return state;
}

export async function render(root, ctx, params) {
  let draft = null;
  if (params[0]) {
    try {
      draft = await ctx.api(`/drafts/${encodeURIComponent(params[0])}`);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 404) throw err;
      root.append(h('h1', {}, 'Draft not found'),
        h('p', {}, 'It was sent or deleted. ', h('a', { href: '#/compose' }, 'Write a new message')));
      return undefined;
    }
  }
  let channel = draft ? draft.channel : 'sms';

  const errors = {};
  const fieldError = (name) => {
    errors[name] = h('p', { class: 'error', id: `compose-${name}-error`, role: 'alert' });
    return errors[name];
  };
  const channelInputs = ['sms', 'email'].map((value) => h('input', {
    type: 'radio', name: 'channel', id: `compose-channel-${value}`, value, checked: value === channel, disabled: Boolean(draft),
  }));
  const to = h('input', { type: 'text', id: 'compose-to', name: 'to', autocomplete: 'off', 'aria-describedby': 'compose-to-hint compose-to-reading compose-to-error' });
  const toHint = h('p', { class: 'hint', id: 'compose-to-hint' });
  const reading = h('p', { class: 'hint to-reading', id: 'compose-to-reading', 'aria-live': 'polite' });
  const subject = h('input', { type: 'text', id: 'compose-subject', name: 'subject', 'aria-describedby': 'compose-subject-error' });
  const subjectField = h('div', { class: 'field' }, h('label', { for: 'compose-subject' }, 'Subject'), subject, fieldError('subject'));
  const text = h('textarea', { id: 'compose-text', name: 'text', rows: '6', 'aria-describedby': 'compose-text-error' });
  const files = h('input', { type: 'file', id: 'compose-files', multiple: true, 'aria-describedby': 'compose-files-hint compose-files-error' });
  const filesHint = h('p', { class: 'hint', id: 'compose-files-hint' });
  const attachments = h('ul', { class: 'list attachments-list', 'aria-label': 'Attached files' });
  const general = h('p', { class: 'error', role: 'alert' });
  const saved = h('p', { class: 'ok saved-note', role: 'status' });
  const save = h('button', { type: 'button', class: 'secondary' }, 'Save draft');
  const send = h('button', { type: 'submit' }, 'Send');
  const discard = h('button', { type: 'button', class: 'secondary danger-text' }, 'Delete draft');

  const form = h('form', { class: 'compose', novalidate: true, 'aria-labelledby': 'compose-title' },
    h('fieldset', { class: 'channel-choice' },
      h('legend', {}, 'Send as'),
      h('div', { class: 'row' },
        h('span', { class: 'choice' }, channelInputs[0], h('label', { for: 'compose-channel-sms' }, 'SMS')),
        h('span', { class: 'choice' }, channelInputs[1], h('label', { for: 'compose-channel-email' }, 'Email')))),
    h('div', { class: 'field' }, h('label', { for: 'compose-to' }, 'To'), to, toHint, reading, fieldError('to')),
    subjectField,
    h('div', { class: 'field' }, h('label', { for: 'compose-text' }, 'Message'), text, fieldError('text')),
    h('div', { class: 'field' }, h('label', { for: 'compose-files' }, 'Attach files'), files, filesHint, attachments, fieldError('files')),
    general,
    saved,
    h('div', { class: 'actions' }, send, save, discard));

  const drafts = draftsSection(ctx, draft && draft.id);
  const title = h('h1', { id: 'compose-title' }, draft ? 'Edit draft' : 'New message');
  root.append(title, form, drafts.section);

  function showChannel() {
    const sms = channel === 'sms';
    subjectField.hidden = sms;
    to.setAttribute('inputmode', sms ? 'tel' : 'email');
    to.setAttribute('autocomplete', sms ? 'tel' : 'email');
    toHint.textContent = sms
      ? 'A phone number, written any way (a number without a country code is read in your region).'
      : 'Email addresses, separated by commas (at most 10).';
    filesHint.textContent = sms
      ? 'Pictures, audio or video make it an MMS.'
      : 'Attachments go with the email.';
  }

  function showAttachments() {
    clear(attachments);
    for (const attachment of (draft && draft.attachments) || []) {
      const name = attachment.filename || 'attachment';
      const remove = h('button', { type: 'button', class: 'link' }, 'Remove');
      remove.setAttribute('aria-label', `Remove ${name}`);
      remove.addEventListener('click', async () => {
        try {
          await ctx.api(`/drafts/${encodeURIComponent(draft.id)}/attachments/${encodeURIComponent(attachment.id)}`, { method: 'DELETE' });
          draft.attachments = draft.attachments.filter((a) => a.id !== attachment.id);
          showAttachments();
        } catch (err) {
          showError(err);
        }
      });
      attachments.append(h('li', { class: 'row' },
        h('span', { class: 'grow' }, `${name} (${formatSize(attachment.size)})`), remove));
    }
  }

  function fill() {
    to.value = draft ? draft.to.join(', ') : '';
    subject.value = (draft && draft.subject) || '';
    text.value = (draft && draft.text) || '';
    showAttachments();
  }

  function clearErrors() {
    general.textContent = '';
    for (const name of FIELDS) {
      errors[name].textContent = '';
      const input = { to, subject, text, files }[name];
      input.removeAttribute('aria-invalid');
    }
  }

  function showError(err, field = null) {
    const detail = err instanceof ApiError ? err.detail : err.message;
    const name = field || err.field || (err instanceof ApiError && err.status < 500 ? fieldOf(detail) : null);
    if (name && !(name === 'subject' && channel === 'sms')) {
      const input = { to, subject, text, files }[name];
      errors[name].textContent = name === 'to' ? toProblem(detail, channel) : detail;
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    } else {
      general.textContent = detail;
    }
  }

  function body() {
    const json = { to: recipients(channel, to.value), text: text.value };
    if (channel === 'email') json.subject = subject.value.trim() || null;
    return json;
  }

  // Create the draft or update it; the answer carries the canonical recipients.
  async function store() {
    if (draft) {
      draft = await ctx.api(`/drafts/${encodeURIComponent(draft.id)}`, { method: 'PATCH', json: body() });
    } else {
      draft = await ctx.api('/drafts', { method: 'POST', json: { channel, ...body() } });
      // The address now names the draft (a reload reopens it) without a new render.
      window.history.replaceState(null, '', `#/compose/${encodeURIComponent(draft.id)}`);
      for (const input of channelInputs) input.disabled = true;
      discard.hidden = false;
      title.textContent = 'Edit draft';
      drafts.current = draft.id;
    }
    to.value = draft.to.join(', ');
    await drafts.reload();
    return draft;
  }

  async function busy(work) {
    save.disabled = true;
    send.disabled = true;
    clearErrors();
    try {
      await work();
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      showError(err);
    } finally {
      save.disabled = false;
      send.disabled = false;
    }
  }

  for (const input of channelInputs) {
    input.addEventListener('change', () => {
      if (input.checked) channel = input.value;
      clearErrors();
      showChannel();
      readNumber();
    });
  }
  save.addEventListener('click', () => busy(async () => {
    await store();
    saved.textContent = `Draft saved${draft.to.length ? `, to ${draft.to.join(', ')}` : ''}.`;
  }));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(async () => {
      await store();
      const message = await ctx.api(`/drafts/${encodeURIComponent(draft.id)}/send`, { method: 'POST' });
      ctx.toast(`Sending to ${draft.to.join(', ')}`);
      ctx.navigate(`#/inbox/${encodeURIComponent(message.id)}`);
    });
  });
  discard.hidden = !draft;
  discard.addEventListener('click', async () => {
    try {
      await ctx.api(`/drafts/${encodeURIComponent(draft.id)}`, { method: 'DELETE' });
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) {
        showError(err);
        return;
      }
    }
    ctx.toast('Draft deleted');
    ctx.navigate('#/compose');
  });
  files.addEventListener('change', () => busy(async () => {
    const chosen = [...files.files];
    if (!chosen.length) return;
    // A file belongs to a draft: the first one saves the message as a draft.
    if (!draft) await store();
    try {
      for (const file of chosen) {
        draft = await ctx.api(`/drafts/${encodeURIComponent(draft.id)}/attachments?filename=${encodeURIComponent(file.name)}`, {
          method: 'POST',
          body: file,
          headers: { 'Content-Type': file.type || 'application/octet-stream' },
        });
      }
    } catch (err) {
      err.field = 'files'; // whatever the detail says, it is about this upload
      throw err;
    } finally {
      files.value = '';
      showAttachments();
    }
  }));

  // How the server reads the number as it is typed (SMS only; the draft's answer is
  // the final word): "Will be sent to +1 415-555-0177", or why it is no number.
  let readingTimer = null;
  async function readNumber() {
    const typed = to.value.trim();
    if (channel !== 'sms' || !typed) {
      reading.textContent = '';
      return;
    }
    try {
      const answer = await ctx.api(`/addresses/normalize?purpose=send&value=${encodeURIComponent(typed)}`);
      if (to.value.trim() !== typed || channel !== 'sms') return; // typed on meanwhile
      if (answer.valid && answer.kind === 'phone') reading.textContent = `Will be sent to ${answer.display}`;
      else reading.textContent = answer.valid ? 'This is not a phone number.' : `Not a number yet: ${answer.reason}`;
    } catch {
      reading.textContent = ''; // only a hint: saving reports any real problem
    }
  }
  to.addEventListener('input', () => {
    clearTimeout(readingTimer);
    readingTimer = setTimeout(readNumber, READING_DELAY_MS);
  });

  showChannel();
  fill();
  await drafts.reload();
  return () => clearTimeout(readingTimer);
}
