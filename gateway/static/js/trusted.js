// #/trusted: the trust list and the address book.
//
// Adding: the user types a sender in any spelling; while they type, the page asks the
// server how it reads (GET /addresses/normalize, the parser POST /trusted-senders
// uses) and shows the address it will save, or why it is not one. The page never
// parses phone numbers itself. A sender is trusted or blocked by the entry's verdict
// (POST /trusted-senders with "verdict"); removing the entry makes them unknown again,
// so their next messages go to the screener.
//
// Address book: a vCard, CSV or JSON file is uploaded as is (POST /contacts); its
// contacts are listed with checkboxes, and "Trust selected" opts them in (POST
// /contacts/opt-in), which never overrides a block. Deleting the address book asks
// for confirmation first.

import { ApiError } from './api.js';
import { clear, h, timeEl } from './dom.js';

const PAGE = 100;
const PREVIEW_DELAY_MS = 250;

const SOURCES = {
  manual: 'added by you',
  contacts: 'from your address book',
  sent_to: 'you wrote to them',
  sms_command: 'by SMS command',
  release: 'allowed in the screener',
};

function errorText(err) {
  return err instanceof ApiError ? err.detail : (err && err.message) || String(err);
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

/** Every item of a paged list, following `next`. */
async function allItems(ctx, path) {
  let items = [];
  let cursor = null;
  const sep = path.includes('?') ? '&' : '?';
  do {
    const page = await ctx.api(`${path}${sep}limit=${PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    items = items.concat(page.items);
    cursor = page.next;
  } while (cursor);
  return items;
}

export async function render(root, ctx) {
  let closed = false;
  root.append(h('h1', {}, 'Trusted senders'));
  root.append(
    h(
      'p',
      { class: 'muted' },
      'Messages from trusted senders go straight to your inbox. Blocked senders are ' +
        'kept out. Everyone else waits in the screener.',
    ),
  );

  // --- add a sender -------------------------------------------------------------------

  const input = h('input', {
    type: 'text',
    id: 'trust-address',
    name: 'address',
    autocomplete: 'off',
    spellcheck: 'false',
    'aria-describedby': 'trust-address-hint trust-address-reading',
  });
  const reading = h('p', { id: 'trust-address-reading', class: 'trust-reading', 'aria-live': 'polite' });
  const addError = h('p', { class: 'error', role: 'alert' });
  let readingTurn = 0;
  let readingTimer = null;

  function showReading(result) {
    clear(reading);
    reading.classList.remove('ok', 'error');
    if (!result) return;
    if (result.valid) {
      reading.classList.add('ok');
      reading.append('Will be saved as ', h('strong', { class: 'trust-canonical' }, result.display));
      if (result.display !== result.address) reading.append(` (${result.address})`);
    } else {
      reading.classList.add('error');
      reading.append(`Not an address: ${result.reason}`);
    }
    input.setAttribute('aria-invalid', result.valid ? 'false' : 'true');
  }

  async function readAddress() {
    const value = input.value;
    const turn = ++readingTurn;
    if (!value.trim()) {
      showReading(null);
      input.removeAttribute('aria-invalid');
      return;
    }
    try {
      const result = await ctx.api(`/addresses/normalize?value=${encodeURIComponent(value)}`);
      if (turn === readingTurn && !closed) showReading(result);
    } catch (err) {
      if (turn === readingTurn && !closed) {
        clear(reading);
        reading.append(errorText(err));
      }
    }
  }

  input.addEventListener('input', () => {
    addError.textContent = '';
    clearTimeout(readingTimer);
    readingTimer = setTimeout(readAddress, PREVIEW_DELAY_MS);
  });

  async function addEntry(verdict) {
    clearTimeout(readingTimer);
    addError.textContent = '';
    const typed = input.value;
    if (!typed.trim()) {
      addError.textContent = 'Type a phone number or an email address first.';
      input.focus();
      return;
    }
    try {
      const entry = await ctx.api('/trusted-senders', { method: 'POST', json: { address: typed, verdict } });
      input.value = '';
      readingTurn += 1;
      showReading(null);
      input.removeAttribute('aria-invalid');
      ctx.toast(`${verdict === 'blocked' ? 'Blocked' : 'Trusted'} ${entry.address}.`);
      await loadEntries();
      input.focus();
    } catch (err) {
      addError.textContent = `Not saved: ${errorText(err)}`;
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    }
  }

  const form = h(
    'form',
    {
      class: 'trust-add',
      'aria-labelledby': 'trust-add-title',
      novalidate: true,
      onsubmit: (event) => {
        event.preventDefault();
        addEntry('trusted');
      },
    },
    h('h2', { id: 'trust-add-title' }, 'Add a sender'),
    h(
      'div',
      { class: 'field' },
      h('label', { for: input.id }, 'Phone number or email address'),
      input,
      h(
        'p',
        { class: 'hint', id: 'trust-address-hint' },
        'Any spelling: (415) 555-0100, +44 20 7946 0018, ann@example.com, or @example.com for a whole domain.',
      ),
      reading,
      addError,
    ),
    h(
      'div',
      { class: 'actions' },
      h('button', { type: 'submit' }, 'Trust'),
      h('button', { type: 'button', class: 'danger', onclick: () => addEntry('blocked') }, 'Block'),
    ),
  );
  root.append(form);

  // --- the lists ----------------------------------------------------------------------

  const listsError = h('p', { class: 'error', role: 'alert' });
  const trustedList = h('ul', { class: 'list trust-list', 'aria-labelledby': 'trusted-title' });
  const blockedList = h('ul', { class: 'list trust-list', 'aria-labelledby': 'blocked-title' });
  const trustedEmpty = h('p', { class: 'muted', hidden: true }, 'Nobody yet.');
  const blockedEmpty = h('p', { class: 'muted', hidden: true }, 'Nobody is blocked.');
  root.append(
    listsError,
    h(
      'section',
      { 'aria-labelledby': 'trusted-title' },
      h('h2', { id: 'trusted-title' }, 'Trusted'),
      trustedEmpty,
      trustedList,
    ),
    h(
      'section',
      { 'aria-labelledby': 'blocked-title' },
      h('h2', { id: 'blocked-title' }, 'Blocked'),
      blockedEmpty,
      blockedList,
    ),
  );

  async function setVerdict(entry, verdict) {
    try {
      await ctx.api('/trusted-senders', { method: 'POST', json: { address: entry.address, verdict } });
      ctx.toast(`${verdict === 'blocked' ? 'Blocked' : 'Trusted'} ${entry.address}.`);
      await loadEntries();
    } catch (err) {
      listsError.textContent = errorText(err);
    }
  }

  async function removeEntry(entry, row) {
    const next = row.nextElementSibling || row.previousElementSibling;
    try {
      await ctx.api(`/trusted-senders/${encodeURIComponent(entry.address)}`, { method: 'DELETE' });
    } catch (err) {
      // 404: removed meanwhile (another device); the reload below shows that.
      if (!(err instanceof ApiError && err.status === 404)) {
        listsError.textContent = errorText(err);
        return;
      }
    }
    ctx.toast(`Removed ${entry.address}: their next messages go to the screener.`);
    await loadEntries();
    // Keep the keyboard user near where they were.
    const target = next && next.isConnected ? next.querySelector('button') : input;
    if (target) target.focus();
  }

  function entryRow(entry) {
    const blocked = entry.verdict === 'blocked';
    return h(
      'li',
      { class: 'row trust-entry', 'data-address': entry.address },
      h(
        'span',
        { class: 'grow' },
        h('span', { class: 'trust-address' }, entry.address),
        ' ',
        h('span', { class: 'muted' }, `${SOURCES[entry.source] || entry.source}, `, timeEl(entry.created_at)),
      ),
      h(
        'span',
        { class: 'trust-entry-actions' },
        blocked
          ? h('button', { type: 'button', class: 'secondary', 'aria-label': `Trust ${entry.address}`, onclick: () => setVerdict(entry, 'trusted') }, 'Trust')
          : h('button', { type: 'button', class: 'secondary', 'aria-label': `Block ${entry.address}`, onclick: () => setVerdict(entry, 'blocked') }, 'Block'),
        h('button', { type: 'button', class: 'secondary', 'aria-label': `Remove ${entry.address}`, onclick: (event) => removeEntry(entry, event.target.closest('li')) }, 'Remove'),
      ),
    );
  }

  async function loadEntries() {
    try {
      const [trusted, blocked] = await Promise.all([
        allItems(ctx, '/trusted-senders?verdict=trusted'),
        allItems(ctx, '/trusted-senders?verdict=blocked'),
      ]);
      if (closed) return;
      listsError.textContent = '';
      clear(trustedList).append(...trusted.map(entryRow));
      clear(blockedList).append(...blocked.map(entryRow));
      trustedEmpty.hidden = trusted.length > 0;
      blockedEmpty.hidden = blocked.length > 0;
    } catch (err) {
      listsError.textContent = errorText(err);
    }
  }

  // --- the address book ---------------------------------------------------------------

  let contacts = [];
  const picked = new Set();
  const fileInput = h('input', {
    type: 'file',
    id: 'contacts-file',
    accept: '.vcf,.vcard,.csv,.json,text/vcard,text/x-vcard,text/csv,application/json',
    'aria-describedby': 'contacts-file-hint',
  });
  const uploadButton = h('button', { type: 'submit' }, 'Upload');
  const uploadResult = h('div', { class: 'contacts-result', 'aria-live': 'polite' });
  const bookError = h('p', { class: 'error', role: 'alert' });
  const contactsBody = h('tbody');
  const contactsTable = h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'stack contacts-table' },
      h('caption', { class: 'visually-hidden' }, 'Your address book'),
      h(
        'thead',
        {},
        h('tr', {}, h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Selected')), h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'Phone numbers'), h('th', { scope: 'col' }, 'Email addresses')),
      ),
      contactsBody,
    ),
  );
  const contactsEmpty = h('p', { class: 'muted' }, 'No address book uploaded.');
  const pickAll = h('input', {
    type: 'checkbox',
    id: 'contacts-pick-all',
    onchange: () => {
      picked.clear();
      if (pickAll.checked) for (const c of contacts) picked.add(c.id);
      syncPicked();
    },
  });
  const pickedCount = h('span', { class: 'muted', 'aria-live': 'polite' });
  const trustPicked = h('button', { type: 'button', onclick: () => optIn([...picked]) }, 'Trust selected');
  const deleteBook = h('button', { type: 'button', class: 'danger', onclick: () => askDelete() }, 'Delete address book');
  const contactsTools = h(
    'div',
    { class: 'actions contacts-tools' },
    h('span', { class: 'contacts-pick-all' }, pickAll, h('label', { for: pickAll.id }, 'Select all')),
    pickedCount,
    trustPicked,
    deleteBook,
  );
  const untrustBox = h('input', { type: 'checkbox', id: 'contacts-untrust' });
  const confirmText = h('p', { id: 'contacts-confirm-text' });
  const confirmDelete = h('button', { type: 'button', class: 'danger', onclick: () => doDelete() }, 'Delete');
  const confirmPanel = h(
    'div',
    { class: 'card contacts-confirm', role: 'group', 'aria-labelledby': 'contacts-confirm-text', hidden: true },
    confirmText,
    h('div', { class: 'field trust-check' }, untrustBox, h('label', { for: untrustBox.id }, 'Also remove the senders trusted because of it')),
    h(
      'div',
      { class: 'actions' },
      confirmDelete,
      h('button', { type: 'button', class: 'secondary', onclick: () => closeConfirm() }, 'Cancel'),
    ),
  );

  root.append(
    h(
      'section',
      { 'aria-labelledby': 'book-title', class: 'address-book' },
      h('h2', { id: 'book-title' }, 'Address book'),
      h(
        'form',
        { class: 'contacts-upload', onsubmit: (event) => { event.preventDefault(); upload(); } },
        h(
          'div',
          { class: 'field' },
          h('label', { for: fileInput.id }, 'Address book file'),
          fileInput,
          h(
            'p',
            { class: 'hint', id: 'contacts-file-hint' },
            'A vCard (.vcf), CSV or JSON export of your contacts. Uploading trusts nobody: pick the contacts to trust below.',
          ),
        ),
        h('div', { class: 'actions' }, uploadButton),
      ),
      uploadResult,
      bookError,
      contactsEmpty,
      contactsTools,
      confirmPanel,
      contactsTable,
    ),
  );

  function syncPicked() {
    for (const row of contactsBody.children) {
      const box = row.querySelector('input[type="checkbox"]');
      box.checked = picked.has(row.dataset.id);
    }
    const n = picked.size;
    pickedCount.textContent = n ? `${n} selected` : '';
    trustPicked.disabled = n === 0;
    pickAll.checked = contacts.length > 0 && n === contacts.length;
    pickAll.indeterminate = n > 0 && n < contacts.length;
  }

  function contactRow(contact) {
    const name = contact.name || contact.phones[0] || contact.emails[0] || 'Unnamed';
    const box = h('input', {
      type: 'checkbox',
      id: `pick-${contact.id}`,
      onchange: () => {
        if (box.checked) picked.add(contact.id);
        else picked.delete(contact.id);
        syncPicked();
      },
    });
    return h(
      'tr',
      { 'data-id': contact.id },
      h('td', {}, box, h('label', { for: box.id, class: 'visually-hidden' }, `Select ${name}`)),
      h('td', {}, contact.name || h('span', { class: 'muted' }, '(no name)')),
      h('td', {}, contact.phones.join(', ')),
      h('td', {}, contact.emails.join(', ')),
    );
  }

  async function loadContacts() {
    try {
      contacts = await allItems(ctx, '/contacts');
      if (closed) return;
      const present = new Set(contacts.map((c) => c.id));
      for (const id of [...picked]) if (!present.has(id)) picked.delete(id);
      clear(contactsBody).append(...contacts.map(contactRow));
      const none = contacts.length === 0;
      contactsEmpty.hidden = !none;
      contactsTools.hidden = none;
      contactsTable.hidden = none;
      if (none) closeConfirm();
      syncPicked();
    } catch (err) {
      bookError.textContent = errorText(err);
    }
  }

  async function upload() {
    bookError.textContent = '';
    clear(uploadResult);
    const file = fileInput.files && fileInput.files[0];
    if (!file) {
      bookError.textContent = 'Choose a file first.';
      fileInput.focus();
      return;
    }
    uploadButton.disabled = true;
    try {
      const result = await ctx.api(`/contacts?filename=${encodeURIComponent(file.name.slice(0, 255))}`, {
        method: 'POST',
        body: file,
        headers: { 'Content-Type': file.type || 'application/octet-stream' },
      });
      uploadResult.append(h('p', { class: 'ok' }, `Imported ${plural(result.imported, 'contact', 'contacts')} from ${file.name}.`));
      if (result.rejected.length) {
        uploadResult.append(
          h('p', {}, `${plural(result.rejected.length, 'entry was', 'entries were')} left out:`),
          h(
            'ul',
            { class: 'contacts-rejected' },
            result.rejected.map((r) =>
              h('li', {}, `${result.format === 'json' ? 'Entry' : 'Line'} ${r.position}: ${[r.name, r.value].filter(Boolean).join(', ') || 'a contact'}: ${r.reason}`),
            ),
          ),
        );
      }
      fileInput.value = '';
      await loadContacts();
    } catch (err) {
      bookError.textContent = `Not imported: ${errorText(err)}`;
    } finally {
      uploadButton.disabled = false;
    }
  }

  async function optIn(ids) {
    if (!ids.length) return;
    bookError.textContent = '';
    try {
      const result = await ctx.api('/contacts/opt-in', { method: 'POST', json: { ids } });
      picked.clear();
      syncPicked();
      ctx.toast(
        result.added
          ? `Trusted ${plural(result.added, 'new number or address', 'new numbers and addresses')}.`
          : 'They were all on your list already (a blocked sender stays blocked).',
      );
      await loadEntries();
    } catch (err) {
      bookError.textContent = errorText(err);
    }
  }

  function askDelete() {
    confirmText.textContent = `Delete all ${plural(contacts.length, 'contact', 'contacts')} of your address book? This cannot be undone.`;
    untrustBox.checked = false;
    confirmPanel.hidden = false;
    deleteBook.setAttribute('aria-expanded', 'true');
    confirmDelete.focus();
  }

  function closeConfirm() {
    const wasOpen = !confirmPanel.hidden;
    confirmPanel.hidden = true;
    deleteBook.setAttribute('aria-expanded', 'false');
    if (wasOpen && deleteBook.isConnected && !contactsTools.hidden) deleteBook.focus();
  }

  async function doDelete() {
    bookError.textContent = '';
    try {
      const result = await ctx.api(`/contacts?untrust=${untrustBox.checked ? 'true' : 'false'}`, { method: 'DELETE' });
      confirmPanel.hidden = true;
      const extra = result.trusted_senders ? ` and ${plural(result.trusted_senders, 'trusted sender', 'trusted senders')}` : '';
      ctx.toast(`Deleted ${plural(result.contacts, 'contact', 'contacts')}${extra}.`);
      clear(uploadResult);
      await Promise.all([loadContacts(), loadEntries()]);
      fileInput.focus();
    } catch (err) {
      bookError.textContent = errorText(err);
    }
  }

  const onEntriesChanged = () => loadEntries();
  // An allow or block in the screener (here or on another device) changes the lists.
  ctx.live.addEventListener('screener.changed', onEntriesChanged);

  await Promise.all([loadEntries(), loadContacts()]);

  return () => {
    closed = true;
    clearTimeout(readingTimer);
    ctx.live.removeEventListener('screener.changed', onEntriesChanged);
  };
}
