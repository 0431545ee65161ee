// Talking to the admin API. The session lives in an HttpOnly cookie the browser sends by
// itself; scripts only ever hold the CSRF token (in this module's memory, never in storage).

let csrf = null;
let onSignedOut = () => {};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Called whenever the server says the session is gone (401). */
export function whenSignedOut(callback) {
  onSignedOut = callback;
}

/** One admin call; resolves to the parsed JSON answer, rejects with an ApiError. */
export async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['x-csrf-token'] = csrf;
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
    cache: 'no-store',
  });
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!res.ok) {
    if (res.status === 401 && path !== '/admin/login') {
      csrf = null;
      onSignedOut();
    }
    const message = (data && data.error && data.error.message) || `${res.status} ${res.statusText}`;
    throw new ApiError(res.status, message);
  }
  return data;
}

/** Signs in with {key} or {user, password}; the server sets the cookie. */
export async function login(credentials) {
  const answer = await api('POST', '/admin/login', credentials);
  csrf = answer.csrf;
}

/** Picks up an existing session after a page reload. */
export async function resume() {
  try {
    const answer = await api('GET', '/admin/session');
    csrf = answer.csrf;
    return true;
  } catch {
    return false;
  }
}

export async function logout() {
  try {
    await api('POST', '/admin/logout');
  } finally {
    csrf = null;
  }
}

/** `?a=1&b=2` from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}
