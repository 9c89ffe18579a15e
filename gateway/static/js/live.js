// Live updates: GET /api/v1/events (Server-Sent Events) read with fetch(), since
// EventSource cannot send the Authorization header. Each event is dispatched as a
// CustomEvent named after its kind, with its JSON data as `detail`.

import { API_BASE, getToken } from './api.js';

const KINDS = new Set([
  'message.created', 'message.status', 'message.updated', 'message.deleted',
  'screener.changed', 'reset',
]);
const MIN_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;
// The server writes at least a keep-alive comment every events.keepalive_s (at most
// 300 s, 15 by default); a stream silent for longer is a dead connection (NAT
// timeout, network switch) that would otherwise wait forever.
const IDLE_MS = 75000;

export class Live extends EventTarget {
  constructor() {
    super();
    this.lastEventId = '';
    this.retryMs = 3000;
    this.running = false;
    this.controller = null;
    this.timer = null;
    this.failures = 0;
  }

  /** Open the stream (once); it reconnects by itself until stop(). */
  start() {
    if (this.running) return;
    this.running = true;
    this.connect();
  }

  /** Close the stream and stop reconnecting. */
  stop() {
    this.running = false;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.controller) this.controller.abort();
    this.controller = null;
    this.lastEventId = '';
    this.failures = 0;
  }

  async connect() {
    const token = getToken();
    if (!this.running) return;
    if (!token) {
      // Signed out meanwhile (perhaps in another tab): stop, so that the next
      // start() after signing in opens a stream again.
      this.running = false;
      return;
    }
    const controller = new AbortController();
    this.controller = controller;
    const headers = { Authorization: `Bearer ${token}`, Accept: 'text/event-stream' };
    if (this.lastEventId) headers['Last-Event-ID'] = this.lastEventId;
    let status = 0;
    try {
      const response = await fetch(`${API_BASE}/events`, {
        headers, signal: controller.signal, cache: 'no-store',
      });
      status = response.status;
      if (response.ok && response.body) {
        this.failures = 0;
        this.dispatchEvent(new CustomEvent('open'));
        await this.read(response.body, controller);
      } else if (response.body) {
        await response.body.cancel();
      }
    } catch {
      // A network error or abort: reconnect below unless stopped.
    }
    if (this.controller === controller) this.controller = null;
    if (!this.running) return;
    if (status === 401) {
      // The token was revoked (another device, the operator) or the account is
      // gone: end the session now rather than at the page's next API call.
      this.running = false;
      window.dispatchEvent(new CustomEvent('optmsg:signed-out'));
      return;
    }
    this.failures += 1;
    const backoff = Math.min(MAX_DELAY_MS, Math.max(MIN_DELAY_MS, this.retryMs) * 2 ** (this.failures - 1));
    // A stream that ended normally (server restart) reconnects at the server's pace.
    const delay = status === 200 && this.failures === 1
      ? Math.max(MIN_DELAY_MS, this.retryMs) // never a tight loop, whatever `retry:` says
      : backoff;
    this.timer = setTimeout(() => this.connect(), delay);
  }

  async read(body, controller) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let event = { id: null, kind: '', data: [] };
    let idle = null;
    const watch = () => {
      clearTimeout(idle);
      idle = setTimeout(() => controller.abort(), IDLE_MS);
    };
    watch();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        watch();
        buffer += value;
        let end;
        while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
          const line = buffer.slice(0, end);
          buffer = buffer.slice(end + (buffer.startsWith('\r\n', end) ? 2 : 1));
          if (line === '') {
            this.deliver(event);
            event = { id: null, kind: '', data: [] };
            continue;
          }
          if (line.startsWith(':')) continue; // a keep-alive comment
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let value2 = colon < 0 ? '' : line.slice(colon + 1);
          if (value2.startsWith(' ')) value2 = value2.slice(1);
          if (field === 'event') event.kind = value2;
          else if (field === 'data') event.data.push(value2);
          else if (field === 'id') event.id = value2;
          else if (field === 'retry' && /^\d+$/.test(value2)) this.retryMs = Number(value2);
        }
      }
    } finally {
      clearTimeout(idle);
    }
  }

  deliver(event) {
    if (event.id !== null) this.lastEventId = event.id;
    if (!event.kind || !KINDS.has(event.kind)) return;
    let detail = null;
    if (event.data.length) {
      try {
        detail = JSON.parse(event.data.join('\n'));
      } catch {
        return; // not ours to guess at
      }
    }
    this.dispatchEvent(new CustomEvent(event.kind, { detail }));
  }
}
