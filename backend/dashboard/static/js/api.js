// The service's API, with the token kept in this tab's sessionStorage only: it is
// gone when the tab closes, and never written to localStorage or a cookie.

const KEY = "dbhealth.session";

export function session() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY));
  } catch {
    return null;
  }
}

function remember(token, role, user) {
  sessionStorage.setItem(KEY, JSON.stringify({ token, role, user }));
}

export function forget() {
  sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.error || body.message)) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
    this.body = body;
  }
}

// One call: resolves to the envelope ({success, data, ...}) whatever the status,
// so a 503 health answer still shows its data; throws ApiError only when the
// answer is not our JSON envelope (the service is down, a proxy error page...).
export async function call(path, { method = "GET", body, token } = {}) {
  const headers = { Accept: "application/json" };
  const bearer = token || (session() || {}).token;
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
      redirect: "error",
    });
  } catch (error) {
    throw new ApiError(0, { error: "The service did not answer", code: "network_error" });
  }
  let envelope = null;
  try {
    envelope = await response.json();
  } catch {
    throw new ApiError(response.status, { error: `Unexpected answer (HTTP ${response.status})` });
  }
  return { status: response.status, ...envelope };
}

export async function login(username, password) {
  const answer = await call("/api/auth/login", { method: "POST", body: { username, password } });
  if (!answer.success) throw new ApiError(answer.status, answer);
  remember(answer.data.access_token, answer.data.role, username);
  return session();
}

// A pasted token: its role and subject are read from its payload for the page's
// own use (which panels to show); the server checks the signature on every call.
export async function useToken(token) {
  const claims = decodeClaims(token);
  if (!claims) throw new ApiError(400, { error: "That does not look like a token (three base64url parts)" });
  const answer = await call("/api/database/health", { token });
  if (answer.status === 401 || answer.status === 403) throw new ApiError(answer.status, answer);
  remember(token, claims.role === "admin" ? "admin" : "viewer", claims.sub || "token");
  return session();
}

export async function logout() {
  try {
    await call("/api/auth/logout", { method: "POST" });
  } finally {
    forget();
  }
}

function decodeClaims(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, "="));
    const claims = JSON.parse(json);
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}
