// Calls to this desk's API. The session cookie travels by itself; every unsafe call carries the
// session's CSRF token in X-CSRF-Token. A 401 anywhere means the session ended: the app signs out.

let csrf = null;
let onSignedOut = () => {};

export function setCsrf(token) { csrf = token; }
export function whenSignedOut(callback) { onSignedOut = callback; }

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

export async function api(method, path, body, { raw = false, contentType = null } = {}) {
  const headers = { Accept: 'application/json' };
  const options = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    if (contentType) {
      headers['Content-Type'] = contentType;
      options.body = body;
    } else {
      headers['Content-Type'] = 'application/json';
      options.body = JSON.stringify(body);
    }
  }
  if (method !== 'GET' && method !== 'HEAD' && csrf) headers['X-CSRF-Token'] = csrf;
  let response;
  try {
    response = await fetch(`/api/v1${path}`, options);
  } catch (e) {
    throw new ApiError(0, 'network', String(e));
  }
  if (raw && response.ok) return response;
  const isJson = (response.headers.get('Content-Type') || '').includes('json');
  const data = isJson ? await response.json().catch(() => null) : await response.text().catch(() => '');
  if (!response.ok) {
    const error = (data && data.error) || {};
    if (response.status === 401 && path !== '/session') onSignedOut('expired');
    throw new ApiError(response.status, error.code || `http_${response.status}`, error.message || '', data);
  }
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body);
