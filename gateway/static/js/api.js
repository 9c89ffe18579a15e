// The client API (/api/v1) with the signed-in user's bearer token. The page uses
// nothing else of the gateway.

export const API_BASE = '/api/v1';
const TOKEN_KEY = 'optmsg.token';

/** A problem+json answer (RFC 9457) as an Error: status, type, detail and the body. */
export class ApiError extends Error {
  constructor(status, body, retryAfter = null) {
    const detail = (body && body.detail) || (body && body.title) || `HTTP ${status}`;
    super(detail);
    this.name = 'ApiError';
    this.status = status;
    this.type = (body && body.type) || '';
    this.detail = detail;
    this.body = body;
    // Seconds, from Retry-After, for 429 and 503 answers.
    this.retryAfter = retryAfter;
  }
}

/** What to tell the user about a failed call (an ApiError's detail, else the message). */
export function errorText(err) {
  if (err instanceof ApiError) return err.detail;
  return (err && err.message) || String(err);
}

export function getToken() {
  try {
    return window.localStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setToken(token) {
  window.localStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  try {
    window.localStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage unavailable: there is nothing to clear.
  }
}

function signedOut() {
  clearToken();
  window.dispatchEvent(new CustomEvent('optmsg:signed-out'));
}

async function errorFrom(response) {
  let body = null;
  try {
    const type = response.headers.get('Content-Type') || '';
    if (type.includes('json')) body = await response.json();
  } catch {
    body = null;
  }
  const retry = Number.parseInt(response.headers.get('Retry-After') || '', 10);
  return new ApiError(response.status, body, Number.isNaN(retry) ? null : retry);
}

/**
 * Call the API. `path` is relative to /api/v1 ('/messages?folder=inbox'). `json` is
 * sent as a JSON body; `body` as is (a File or Blob, with its own Content-Type
 * header). Returns the parsed JSON (null for 204), or the Response when `raw`.
 * A 401 clears the token and dispatches `optmsg:signed-out` on window; every
 * error status throws an ApiError.
 */
export async function api(path, { method = 'GET', json, body, headers, raw = false } = {}) {
  const sent = new Headers(headers || {});
  const token = getToken();
  if (token) sent.set('Authorization', `Bearer ${token}`);
  if (json !== undefined) {
    sent.set('Content-Type', 'application/json');
    body = JSON.stringify(json);
  }
  if (!sent.has('Accept')) sent.set('Accept', 'application/json, application/problem+json');
  let response;
  try {
    response = await fetch(API_BASE + path, { method, headers: sent, body, cache: 'no-store' });
  } catch {
    throw new ApiError(0, { detail: 'the gateway cannot be reached; check your connection' });
  }
  if (response.status === 401 && token) signedOut();
  if (!response.ok && response.status !== 304) throw await errorFrom(response);
  if (raw) return response;
  if (response.status === 204 || response.status === 304) return null;
  const type = response.headers.get('Content-Type') || '';
  return type.includes('json') ? response.json() : response.text();
}

/** Fetch `path` with the token and save it as `filename` through a blob: URL. */
export async function download(path, filename) {
  const response = await api(path, { raw: true, headers: { Accept: '*/*' } });
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  try {
    const link = document.createElement('a');
    link.href = url;
    link.download = filename || filenameOf(response) || 'download';
    link.className = 'visually-hidden';
    document.body.appendChild(link);
    link.click();
    link.remove();
  } finally {
    // Give the browser time to start the download before the URL goes.
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }
}

function filenameOf(response) {
  const disposition = response.headers.get('Content-Disposition') || '';
  const match = /filename="([^"]+)"/.exec(disposition);
  return match ? match[1] : null;
}
