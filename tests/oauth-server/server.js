// Test-only OAuth 2.0 authorization server (oidc-provider 9) for tokenwarden's
// integration tests. Never deploy it: every client secret is public and
// /test/* mints tokens for anyone.
//
// Started by tests/it/oauth_server.rs. Contract with the Rust side:
//   - stdout carries exactly ONE JSON line, printed once the port listens:
//       {"issuer","port","token_url","introspection_url","revocation_url","authorization_url",
//        "device_authorization_url"}
//     Everything else (oidc-provider warnings and notices, debug logs) goes to stderr.
//   - it exits when its stdin reaches EOF (so a killed test never leaves it
//     behind), on SIGTERM and on SIGINT. Set OAUTH_SERVER_IGNORE_STDIN=1 to run it by hand
//     with stdin at /dev/null.
//
// Environment (durations in whole seconds):
//   PORT             listen port on 127.0.0.1 (default 0 = ephemeral)
//   AT_TTL           access-token, client-credentials-token and jwt-bearer-token lifetime
//                    (default 120)
//   RT_GRACE         refresh-token grace window (default 0 = off): a refresh token consumed
//                    by a rotation at most RT_GRACE s ago is accepted again (a fresh rotation)
//                    instead of being treated as reuse; later presentations are reuse
//   DEVICE_CODE_TTL  device_code / user_code lifetime (default 600)
//   DEVICE_INTERVAL  device-flow polling interval announced as `interval` (default 5); a poll
//                    sooner than that after the previous poll of the same device_code gets
//                    slow_down, and the code's interval grows by 5 s (RFC 8628 §3.5)
//   OAUTH_SERVER_DEBUG=1   log every token-endpoint outcome to stderr
//
// Grants: authorization_code, refresh_token (rotating), client_credentials,
// urn:ietf:params:oauth:grant-type:device_code (RFC 8628; user pages at /device),
// urn:ietf:params:oauth:grant-type:jwt-bearer (RFC 7523 §2.1; access token only).
//
// Test routes (mounted in front of the provider's routes, same port):
//   POST /test/mint         {"client_id","scope"?,"account_id"?} -> {"refresh_token","access_token",...}
//   GET  /test/stats        -> {"refresh_ok","refresh_reuse","refresh_grace","refresh_repeated","refresh_failed",
//                               "grants_revoked","token_requests","jwt_bearer_ok",
//                               "jwt_bearer_failed","held"}
//   POST /test/reset-stats  -> zeroes the counters (not `held`, a live gauge)
//   POST /test/hold         {"seconds"} -> refresh_token grants are still processed (rotated),
//                              but their HTTP answers wait until /test/release or `seconds` pass
//   POST /test/release      -> answers every held response now; {"released": n}
//   POST /test/revoke-access-token {"token"} -> that access token alone is destroyed (introspection
//                              says inactive); unlike /token/revocation, which oidc-provider makes
//                              revoke every token of the grant, the refresh token stays valid:
//                              {"revoked": true|false}

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createPublicKey, randomBytes, verify as verifySignature } from 'node:crypto';
import * as querystring from 'node:querystring';

// oidc-provider prints its NOTICEs with console.info, i.e. to stdout. stdout
// belongs to the single ready line, so send every console channel to stderr
// before the library is loaded (hence the dynamic import below).
const writeStdout = (line) => process.stdout.write(`${line}\n`);
console.log = (...args) => console.error(...args);
console.info = (...args) => console.error(...args);
console.debug = (...args) => console.error(...args);

const { default: Provider, errors } = await import('oidc-provider');

const HOST = '127.0.0.1';
const DEBUG = process.env.OAUTH_SERVER_DEBUG === '1';

function envSeconds(name, fallback, { min = 1 } = {}) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) {
    const what = min === 0 ? 'a non-negative' : 'a positive';
    console.error(`${name} must be ${what} integer number of seconds, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return value;
}

const AT_TTL = envSeconds('AT_TTL', 120);
const RT_GRACE = envSeconds('RT_GRACE', 0, { min: 0 });
const DEVICE_CODE_TTL = envSeconds('DEVICE_CODE_TTL', 600);
const DEVICE_INTERVAL = envSeconds('DEVICE_INTERVAL', 5);
const RT_TTL = 14 * 24 * 60 * 60;
const PORT = (() => {
  const raw = process.env.PORT ?? '';
  const value = raw === '' ? 0 : Number(raw);
  if (!Number.isInteger(value) || value < 0 || value > 65535) {
    console.error(`PORT must be 0..65535, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return value;
})();

const SCOPES = ['openid', 'offline_access', 'api:read', 'api:write'];
const ALL_SCOPES = SCOPES.join(' ');
// The second is the invitation pages' (`[enroll] public_url = "http://127.0.0.1:PORT/enroll"`).
const REDIRECT_URIS = ['http://127.0.0.1/callback', 'http://127.0.0.1/enroll/callback'];
const DEFAULT_MINT_SCOPE = 'openid offline_access api:read';
const DEFAULT_ACCOUNT_ID = 'test-account';
const REFRESH_TOKEN_REUSED = 'refresh token already used'; // oidc-provider's error_detail wording
const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
// RFC 8628 §3.5: after slow_down the client adds 5 s to its interval; so does the server.
const SLOW_DOWN_STEP = 5;
// An expired device code stays stored this long, so a poll gets expired_token, not "not found".
const EXPIRED_DEVICE_CODE_KEPT = 600;
// jwt-bearer assertions: exp at most this far ahead (and the jti is remembered until exp).
const JWT_BEARER_MAX_LIFETIME = 300;
// The request-body limit oidc-provider applies to the token endpoint.
const TOKEN_BODY_LIMIT = 56 * 1024;

const epochTime = () => Math.floor(Date.now() / 1000);

// ---------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------

// refresh_ok        refresh_token grants answered 200 (grace acceptances included)
// refresh_reuse     refresh_token grants presenting a refresh token that another request
//                   had already consumed (rotated), earlier or concurrently, OUTSIDE the
//                   RT_GRACE window; any outcome
// refresh_grace     refresh_token grants presenting an already consumed refresh token
//                   inside the RT_GRACE window, accepted (answered 200)
// refresh_repeated  refresh_token grants presenting a refresh token that an earlier
//                   refresh_token grant already presented, whatever either's outcome, inside the
//                   RT_GRACE window or not: "refresh tokens presented twice" (a request whose
//                   answer was lost counts as presented)
// refresh_failed    refresh_token grants answered with an error (reuses included)
// grants_revoked    grants revoked: reuse detection, revocation endpoint
// token_requests    every POST /token, any grant type, any outcome
// jwt_bearer_ok     jwt-bearer grants answered 200
// jwt_bearer_failed jwt-bearer grants answered with an error (client errors included)
// held              (live, not reset) token responses being held back by /test/hold now
function zeroStats() {
  return {
    refresh_ok: 0,
    refresh_reuse: 0,
    refresh_grace: 0,
    refresh_repeated: 0,
    refresh_failed: 0,
    grants_revoked: 0,
    token_requests: 0,
    jwt_bearer_ok: 0,
    jwt_bearer_failed: 0,
  };
}
let stats = zeroStats();
// Every refresh token presented by a refresh_token grant so far (for refresh_repeated; not reset
// with the counters).
const presentedRefreshTokens = new Set();

// ---------------------------------------------------------------------------
// Adapter: plain Maps, nothing evicted before it expires.
// (oidc-provider's built-in memory adapter is an LRU capped at 1000 entries
// and silently drops live tokens under load.)
// ---------------------------------------------------------------------------

const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
]);

class Store {
  constructor() {
    this.entries = new Map(); // "Model:id" -> { payload, expiresAt (ms) | Infinity }
    this.byUid = new Map(); // Session uid -> id
    this.byUserCode = new Map(); // userCode -> "Model:id"
    this.byGrant = new Map(); // grantId -> Set<"Model:id">
    // Every refresh token ever consumed (rotated), kept after the token itself
    // is deleted (e.g. by a grant revocation) until it would have expired:
    // id -> { by: sequence number of the request that consumed it, at: when (ms), grantId,
    //         expiresAt }.
    this.consumedRefreshTokens = new Map();
    // Device-code polls: id -> { last: ms of the previous poll, interval: s, expiresAt }.
    this.devicePolls = new Map();
    // jwt-bearer assertions accepted: "iss jti" -> expiresAt (ms, the assertion's exp).
    this.seenJtis = new Map();
  }

  get(key) {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      this.delete(key);
      return undefined;
    }
    return entry;
  }

  set(key, payload, expiresIn) {
    const previous = this.entries.get(key);
    if (previous) this.unindex(key, previous.payload);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    const stored = structuredClone(payload);
    this.entries.set(key, { payload: stored, expiresAt });
    const [model, id] = splitKey(key);
    if (model === 'Session' && stored.uid) this.byUid.set(stored.uid, id);
    if (stored.userCode) this.byUserCode.set(stored.userCode, key);
    if (GRANTABLE.has(model) && stored.grantId) {
      let members = this.byGrant.get(stored.grantId);
      if (!members) {
        members = new Set();
        this.byGrant.set(stored.grantId, members);
      }
      members.add(key);
    }
  }

  delete(key) {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    this.unindex(key, entry.payload);
  }

  unindex(key, payload) {
    const [, id] = splitKey(key);
    if (payload.uid && this.byUid.get(payload.uid) === id) this.byUid.delete(payload.uid);
    if (payload.userCode && this.byUserCode.get(payload.userCode) === key) {
      this.byUserCode.delete(payload.userCode);
    }
    if (payload.grantId) {
      const members = this.byGrant.get(payload.grantId);
      if (members) {
        members.delete(key);
        if (members.size === 0) this.byGrant.delete(payload.grantId);
      }
    }
  }

  revokeByGrantId(model, grantId) {
    for (const key of [...(this.byGrant.get(grantId) ?? [])]) {
      if (splitKey(key)[0] === model) this.delete(key);
    }
  }

  // Deletes a grant and every token issued under it; true if the grant existed.
  revokeGrant(grantId) {
    for (const key of [...(this.byGrant.get(grantId) ?? [])]) this.delete(key);
    const existed = this.entries.has(`Grant:${grantId}`);
    this.delete(`Grant:${grantId}`);
    return existed;
  }

  sweep() {
    const now = Date.now();
    for (const [key, entry] of this.entries) {
      if (entry.expiresAt <= now) this.delete(key);
    }
    for (const map of [this.consumedRefreshTokens, this.devicePolls]) {
      for (const [id, { expiresAt }] of map) {
        if (expiresAt <= now) map.delete(id);
      }
    }
    for (const [key, expiresAt] of this.seenJtis) {
      if (expiresAt <= now) this.seenJtis.delete(key);
    }
  }
}

function splitKey(key) {
  const at = key.indexOf(':');
  return [key.slice(0, at), key.slice(at + 1)];
}

const store = new Store();
setInterval(() => store.sweep(), 60_000).unref();

// Sequence number of the HTTP request being served. oidc-provider keeps the
// Koa ctx in AsyncLocalStorage (Provider.ctx); the front middleware numbers it.
function currentRequestSeq() {
  return Provider.ctx?.state.requestSeq;
}

// The grant_type of the token request being served, if this is one.
function currentGrantType() {
  const ctx = Provider.ctx;
  if (!ctx || ctx.method !== 'POST' || ctx.path !== TOKEN_PATH) return undefined;
  return ctx.oidc?.params?.grant_type;
}

// RT_GRACE: was this consumed refresh token consumed recently enough to be accepted again?
function withinGraceWindow(consumed) {
  return RT_GRACE > 0 && consumed !== undefined && Date.now() - consumed.at <= RT_GRACE * 1000;
}

// RFC 8628 §3.5 rate limit, checked when the device_code grant loads its code: a poll sooner
// than the code's interval after the previous poll gets slow_down and a 5 s longer interval.
// The first poll is never too soon. Every poll, slow or not, restarts the clock.
function checkDevicePollRate(id, expiresAt) {
  const now = Date.now();
  const poll = store.devicePolls.get(id);
  if (!poll) {
    store.devicePolls.set(id, { last: now, interval: DEVICE_INTERVAL, expiresAt });
    return;
  }
  const elapsed = now - poll.last;
  poll.last = now;
  if (elapsed < poll.interval * 1000) {
    poll.interval += SLOW_DOWN_STEP;
    throw new errors.SlowDown(`polled after ${elapsed} ms; interval is now ${poll.interval} s`);
  }
}

class MapAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    // The provider checks a device code's own `exp`; keeping the record a while longer
    // turns a late poll into expired_token rather than "device code not found".
    const keep = this.model === 'DeviceCode' && typeof expiresIn === 'number'
      ? expiresIn + EXPIRED_DEVICE_CODE_KEPT : expiresIn;
    store.set(this.key(id), payload, keep);
  }

  async find(id) {
    const entry = store.get(this.key(id));
    if (!entry) return undefined;
    const payload = structuredClone(entry.payload);
    const grantType = currentGrantType();
    if (this.model === 'RefreshToken' && payload.consumed && grantType === 'refresh_token'
      && withinGraceWindow(store.consumedRefreshTokens.get(id))) {
      // Inside the grace window the refresh_token grant must not see the token as used
      // (it would revoke the grant itself); consume() below decides, atomically.
      delete payload.consumed;
    }
    // An expired code gets expired_token however fast it is polled.
    if (this.model === 'DeviceCode' && grantType === DEVICE_CODE_GRANT && !(payload.exp <= epochTime())) {
      checkDevicePollRate(id, entry.expiresAt);
    }
    return payload;
  }

  async findByUserCode(userCode) {
    const key = store.byUserCode.get(userCode);
    const entry = key && store.get(key);
    return entry ? structuredClone(entry.payload) : undefined;
  }

  async findByUid(uid) {
    const id = store.byUid.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const key = this.key(id);
    const entry = store.get(key);
    if (this.model !== 'RefreshToken') {
      if (entry) entry.payload.consumed = epochTime();
      return;
    }
    // oidc-provider checks "already consumed?" on the copy it found at the
    // start of the request and consumes near the end; two requests carrying
    // the same refresh token can interleave in between (it happens as soon
    // as the store is slow). Make the consume itself the atomic
    // check-and-set: the loser is treated exactly like a sequential reuse
    // (invalid_grant, whole grant revoked).
    // RT_GRACE: a token consumed at most RT_GRACE s ago is accepted again; the provider
    // then rotates once more (new refresh + access token, same grant). The window counts
    // from the first consumption; the successor issued then stays valid too.
    if (entry?.payload.consumed && withinGraceWindow(store.consumedRefreshTokens.get(id))) {
      if (Provider.ctx) Provider.ctx.state.refreshGrace = true;
      return;
    }
    if (!entry || entry.payload.consumed) {
      const grantId = entry?.payload.grantId ?? store.consumedRefreshTokens.get(id)?.grantId;
      store.delete(key);
      if (grantId && store.revokeGrant(grantId)) stats.grants_revoked += 1;
      if (store.consumedRefreshTokens.has(id)) throw new errors.InvalidGrant(REFRESH_TOKEN_REUSED);
      throw new errors.InvalidGrant('refresh token not found');
    }
    entry.payload.consumed = epochTime();
    store.consumedRefreshTokens.set(id, {
      by: currentRequestSeq(), at: Date.now(), grantId: entry.payload.grantId, expiresAt: entry.expiresAt,
    });
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    store.revokeByGrantId(this.model, grantId);
  }
}

// True when the refresh token this request presented has been consumed by a
// different request (earlier, or concurrently while this one was in flight).
function presentedRefreshTokenConsumedElsewhere(ctx) {
  const presented = ctx.oidc?.params?.refresh_token;
  if (typeof presented !== 'string') return false;
  const consumed = store.consumedRefreshTokens.get(presented);
  return consumed !== undefined && consumed.by !== ctx.state.requestSeq;
}

// ---------------------------------------------------------------------------
// Provider configuration
// ---------------------------------------------------------------------------

const jwtClientJwks = JSON.parse(
  readFileSync(new URL('../fixtures/jwt-client.jwks.json', import.meta.url), 'utf8'),
);

// Native clients (RFC 8252 §7.3): a loopback redirect URI matches on any port, so
// `tokenwarden authorize` can listen on an ephemeral one.
const userClient = (extra) => ({
  application_type: 'native',
  grant_types: ['authorization_code', 'refresh_token'],
  redirect_uris: REDIRECT_URIS,
  response_types: ['code'],
  scope: ALL_SCOPES,
  ...extra,
});

const clients = [
  userClient({
    client_id: 'basic-client',
    client_secret: 'basic-secret',
    token_endpoint_auth_method: 'client_secret_basic',
  }),
  userClient({
    client_id: 'post-client',
    client_secret: 'post-secret',
    token_endpoint_auth_method: 'client_secret_post',
  }),
  userClient({
    client_id: 'jwt-client',
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'RS256',
    jwks: jwtClientJwks,
  }),
  {
    client_id: 'cc-client',
    client_secret: 'cc-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'api:read api:write',
  },
  // Device authorization grant (RFC 8628), confidential and public.
  {
    client_id: 'device-client',
    client_secret: 'device-secret',
    grant_types: [DEVICE_CODE_GRANT, 'refresh_token'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: ALL_SCOPES,
  },
  {
    client_id: 'device-public',
    grant_types: [DEVICE_CODE_GRANT, 'refresh_token'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'none',
    scope: ALL_SCOPES,
  },
  // JWT bearer grant (RFC 7523 §2.1). `bearer-client` sends the assertion alone, as
  // Salesforce's and Google's server-to-server flows do (the front middleware takes its
  // client_id from the assertion's iss); `bearer-secret-client` also authenticates with
  // client_secret_basic. Both verify assertions with jwt-client's public key (kid jwt-client-1).
  {
    client_id: 'bearer-client',
    grant_types: [JWT_BEARER_GRANT],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'none',
    scope: 'api:read api:write',
  },
  {
    client_id: 'bearer-secret-client',
    client_secret: 'bearer-secret',
    grant_types: [JWT_BEARER_GRANT],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'api:read api:write',
  },
  {
    client_id: 'introspector',
    client_secret: 'introspector-secret',
    grant_types: [],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
  },
];

// Public keys that verify each jwt-bearer client's assertions: client_id -> Map(kid -> KeyObject).
// Imported from the fixture, never generated (see the Node 20 note in the configuration).
const jwtBearerKeys = (() => {
  const keys = new Map(jwtClientJwks.keys.map((jwk) => [jwk.kid, createPublicKey({ key: jwk, format: 'jwk' })]));
  return new Map([['bearer-client', keys], ['bearer-secret-client', keys]]);
})();

const htmlEscape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${htmlEscape(title)}</title></head>
<body><h1>${htmlEscape(title)}</h1>
${body}
</body></html>`;

// The device flow's user pages, plain: the forms are oidc-provider's own. Markers for the
// Rust harness: id="op.deviceInputForm" / id="op.deviceConfirmForm" (the forms),
// id="device-error" data-error="<ReRenderError name>" (e.g. AbortedError after a denial,
// NotFoundError, ExpiredError, AlreadyUsedError), id="device-success".
const deviceFlowPages = {
  async userCodeInputSource(ctx, form, out, err) {
    const error = err
      ? `<p id="device-error" data-error="${htmlEscape(err.name)}">${htmlEscape(err.message)}</p>`
      : '<p>Enter the code displayed on your device</p>';
    ctx.body = page('Device sign-in', `${error}\n${form}\n<button type="submit" form="op.deviceInputForm">Continue</button>`);
  },
  async userCodeConfirmSource(ctx, form, client, deviceInfo, userCode) {
    ctx.body = page('Confirm device', `<p>${htmlEscape(client.clientId)} shows the code <code>${htmlEscape(userCode)}</code></p>
${form}
<button type="submit" form="op.deviceConfirmForm">Continue</button>
<button type="submit" form="op.deviceConfirmForm" value="yes" name="abort">Abort</button>`);
  },
  async successSource(ctx) {
    ctx.body = page('Device sign-in', '<p id="device-success">Sign-in successful, you can close this page.</p>');
  },
};

const configuration = {
  adapter: MapAdapter,
  clients,
  // No `jwks`: oidc-provider signs ID tokens with its built-in development keys
  // (it warns on stderr). Do NOT generate a key here: on Node 20,
  // generateKeyPairSync() followed by keyObject.export({ format: 'jwk' }) can
  // deadlock the main thread when a GC runs during the export (seen here in
  // ~1 of 150 starts: KeyGenJob's destructor takes the mutex ExportJWK holds).
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  scopes: SCOPES,
  claims: { openid: ['sub'] },
  features: {
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // Any authenticated client may introspect any token.
      allowedPolicy: async () => true,
    },
    revocation: {
      enabled: true,
      allowedPolicy: async (ctx, client, token) => token.clientId === client.clientId,
    },
    devInteractions: { enabled: true },
    deviceFlow: {
      enabled: true,
      charset: 'base-20',
      mask: '****-****',
      ...deviceFlowPages,
    },
    // Plain OAuth scopes (api:read, ...) travel in the grant's OIDC scope
    // list; no resource-server audiences to worry about.
    resourceIndicators: { enabled: false },
  },
  // Any account id exists.
  findAccount: async (ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub }),
  }),
  rotateRefreshToken: () => true,
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  // Refresh tokens live offline in the daemon: never bind them to a browser session.
  expiresWithSession: async () => false,
  ttl: {
    AccessToken: AT_TTL,
    ClientCredentials: AT_TTL,
    RefreshToken: RT_TTL,
    Grant: RT_TTL,
    AuthorizationCode: 60,
    DeviceCode: DEVICE_CODE_TTL,
    IdToken: 3600,
    Interaction: 3600,
    Session: RT_TTL,
  },
};

// ---------------------------------------------------------------------------
// HTTP: listen first (the issuer needs the real port), then build the provider.
// ---------------------------------------------------------------------------

const server = createServer();
server.on('error', (err) => {
  console.error(`oauth-server: ${err.message}`);
  process.exit(1);
});
await new Promise((resolve) => server.listen(PORT, HOST, resolve));
const { port } = server.address();
const issuer = `http://${HOST}:${port}`;

const provider = new Provider(issuer, configuration);

provider.on('grant.revoked', () => {
  stats.grants_revoked += 1;
});
// invalid_grant responses all say "grant request is invalid"; the precise
// reason ("refresh token already used", "refresh token not found", ...) is
// only on the error object as error_detail.
provider.on('grant.error', (ctx, err) => {
  ctx.state.grantErrorDetail = err.error_detail ?? err.error_description ?? err.message;
});
provider.on('server_error', (ctx, err) => {
  console.error(`oauth-server: server_error on ${ctx.method} ${ctx.path}:`, err);
});
// oidc-provider's device authorization response has no `interval` (RFC 8628 §3.2 then means 5 s).
provider.on('device_authorization.success', (ctx) => {
  ctx.body.interval = DEVICE_INTERVAL;
});

const TOKEN_PATH = '/token';

// ---------------------------------------------------------------------------
// JWT bearer grant (RFC 7523 §2.1)
// ---------------------------------------------------------------------------

const bearerError = (description) => new errors.CustomOIDCProviderError('invalid_grant', description);

const RSA_HASH = { RS256: 'sha256', RS384: 'sha384', RS512: 'sha512' };

function decodeJwtPart(part, what) {
  try {
    const value = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error('not an object');
    return value;
  } catch {
    throw bearerError(`assertion ${what} is not base64url JSON`);
  }
}

// The unverified `iss` of an assertion, or undefined.
function assertionIssuer(assertion) {
  if (typeof assertion !== 'string') return undefined;
  try {
    const { iss } = decodeJwtPart(assertion.split('.')[1] ?? '', 'payload');
    return typeof iss === 'string' ? iss : undefined;
  } catch {
    return undefined;
  }
}

// Every check of RFC 7523 §3 this server makes, in order; the first that fails names itself.
// Returns the verified claims; the jti is recorded only once every other check passed.
function verifyBearerAssertion(assertion, clientId) {
  const parts = assertion.split('.');
  if (parts.length !== 3) throw bearerError('assertion is not a JWS compact serialization (3 parts)');
  const header = decodeJwtPart(parts[0], 'header');
  const claims = decodeJwtPart(parts[1], 'payload');
  const hash = RSA_HASH[header.alg];
  if (!hash) throw bearerError(`assertion alg ${JSON.stringify(header.alg)} is not one of ${Object.keys(RSA_HASH).join(', ')}`);
  const keys = jwtBearerKeys.get(clientId) ?? new Map();
  let key;
  if (header.kid !== undefined) {
    key = keys.get(header.kid);
    if (!key) throw bearerError(`assertion kid ${JSON.stringify(header.kid)} is not a key of client ${clientId}`);
  } else if (keys.size === 1) {
    [key] = keys.values();
  } else {
    throw bearerError(`assertion has no kid and client ${clientId} has ${keys.size} keys`);
  }
  const signed = Buffer.from(`${parts[0]}.${parts[1]}`);
  if (!verifySignature(hash, signed, key, Buffer.from(parts[2], 'base64url'))) {
    throw bearerError('assertion signature is invalid');
  }
  if (claims.iss !== clientId) {
    throw bearerError(`assertion iss ${JSON.stringify(claims.iss)} is not the client ${clientId}`);
  }
  if (typeof claims.sub !== 'string' || claims.sub === '') throw bearerError('assertion sub is missing');
  const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  const accepted = [issuer, `${issuer}${TOKEN_PATH}`];
  if (!audiences.some((aud) => accepted.includes(aud))) {
    throw bearerError(`assertion aud ${JSON.stringify(claims.aud)} is neither the issuer nor the token endpoint`);
  }
  const now = epochTime();
  if (typeof claims.exp !== 'number') throw bearerError('assertion exp is missing');
  if (claims.exp <= now) throw bearerError(`assertion expired ${now - claims.exp} s ago`);
  if (claims.exp > now + JWT_BEARER_MAX_LIFETIME) {
    throw bearerError(`assertion exp is ${claims.exp - now} s ahead, more than ${JWT_BEARER_MAX_LIFETIME} s`);
  }
  if (claims.nbf !== undefined && (typeof claims.nbf !== 'number' || claims.nbf > now)) {
    throw bearerError('assertion nbf is in the future');
  }
  if (typeof claims.jti !== 'string' || claims.jti === '') throw bearerError('assertion jti is missing');
  const seen = `${clientId} ${claims.jti}`;
  if (store.seenJtis.has(seen)) throw bearerError('assertion jti was already used');
  store.seenJtis.set(seen, claims.exp * 1000);
  return claims;
}

async function jwtBearerHandler(ctx) {
  const { client } = ctx.oidc;
  const { assertion } = ctx.oidc.params;
  if (typeof assertion !== 'string' || assertion === '') {
    throw new errors.InvalidRequest('missing required parameter \'assertion\'');
  }
  const claims = verifyBearerAssertion(assertion, client.clientId);

  const allowed = client.scope.split(' ');
  const requested = ctx.oidc.params.scope ? [...ctx.oidc.requestParamScopes] : allowed;
  const bad = requested.filter((scope) => !allowed.includes(scope));
  if (bad.length) throw new errors.InvalidScope(`scope not allowed for ${client.clientId}`, bad.join(' '));
  const scope = requested.join(' ');

  // A grant per assertion, so the token introspects and revokes like the others.
  const grant = new provider.Grant({ accountId: claims.sub, clientId: client.clientId });
  grant.addOIDCScope(scope);
  const grantId = await grant.save();
  const at = new provider.AccessToken({
    accountId: claims.sub, client, grantId, gty: JWT_BEARER_GRANT, scope,
  });
  ctx.oidc.entity('AccessToken', at);
  const accessToken = await at.save();
  ctx.body = {
    access_token: accessToken,
    token_type: at.tokenType,
    expires_in: at.expiration,
    scope,
  };
}

provider.registerGrantType(JWT_BEARER_GRANT, jwtBearerHandler, ['assertion', 'scope']);

// bearer-client sends no client authentication (RFC 7523 §3.1 makes it optional), but
// oidc-provider's token endpoint needs a client_id: take it from the assertion's iss. The
// signature is then checked against that client's key. To do that the front middleware reads
// the form body itself and hands it on as req.body, which oidc-provider accepts (with one
// "already parsed request body detected" warning on stderr).
async function prepareTokenBody(ctx) {
  if (!ctx.is('application/x-www-form-urlencoded')) return true;
  const chunks = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += chunk.length;
    if (size > TOKEN_BODY_LIMIT) {
      reply(ctx, 413, { error: 'invalid_request', error_description: 'request entity too large' });
      return false;
    }
    chunks.push(chunk);
  }
  let body = Buffer.concat(chunks).toString('utf8');
  const params = querystring.parse(body);
  if (params.grant_type === JWT_BEARER_GRANT && params.client_id === undefined
    && params.client_secret === undefined && params.client_assertion === undefined
    && ctx.headers.authorization === undefined) {
    const iss = assertionIssuer(params.assertion);
    if (iss !== undefined) body = `${body}&${querystring.stringify({ client_id: iss })}`;
  }
  ctx.req.body = body;
  return true;
}

// ---------------------------------------------------------------------------
// /test/hold: refresh_token answers wait (after the rotation happened) until released
// ---------------------------------------------------------------------------

const hold = { until: 0, timer: undefined, waiters: new Set() };

function releaseHeld() {
  hold.until = 0;
  clearTimeout(hold.timer);
  hold.timer = undefined;
  const released = hold.waiters.size;
  for (const wake of [...hold.waiters]) wake();
  return released;
}

function startHold(seconds) {
  hold.until = Date.now() + seconds * 1000;
  clearTimeout(hold.timer);
  hold.timer = setTimeout(releaseHeld, seconds * 1000);
  hold.timer.unref();
}

// Waits while a hold is on. A client that disconnects meanwhile stops counting as held; its
// answer is then dropped by Koa (the response is no longer writable).
async function holdResponse(ctx) {
  if (Date.now() >= hold.until) return;
  await new Promise((resolve) => {
    const wake = () => {
      hold.waiters.delete(wake);
      ctx.res.off('close', wake);
      resolve();
    };
    hold.waiters.add(wake);
    ctx.res.once('close', wake);
  });
}

function recordTokenRequest(ctx) {
  stats.token_requests += 1;
  const grantType = ctx.oidc?.params?.grant_type;
  const ok = ctx.status === 200;
  if (grantType === 'refresh_token') {
    const presented = ctx.oidc?.params?.refresh_token;
    if (typeof presented === 'string') {
      if (presentedRefreshTokens.has(presented)) stats.refresh_repeated += 1;
      presentedRefreshTokens.add(presented);
    }
    if (ok) {
      stats.refresh_ok += 1;
    } else {
      stats.refresh_failed += 1;
    }
    // Counted whatever the outcome: with the atomic consume above a reuse
    // always fails, but the counter must not depend on that. A presentation inside the
    // grace window is never reuse.
    if (ctx.state.refreshGrace) {
      if (ok) stats.refresh_grace += 1;
    } else if (presentedRefreshTokenConsumedElsewhere(ctx) || ctx.state.grantErrorDetail === REFRESH_TOKEN_REUSED) {
      stats.refresh_reuse += 1;
    }
  } else if (grantType === JWT_BEARER_GRANT) {
    if (ok) {
      stats.jwt_bearer_ok += 1;
    } else {
      stats.jwt_bearer_failed += 1;
    }
  }
  if (DEBUG) {
    const detail = ok ? 'ok' : `${ctx.body?.error}: ${ctx.state.grantErrorDetail ?? ctx.body?.error_description}`;
    console.error(`oauth-server: token ${grantType ?? '?'} client=${ctx.oidc?.client?.clientId ?? '?'} -> ${ctx.status} ${detail}`);
  }
}

async function readJson(ctx) {
  const chunks = [];
  for await (const chunk of ctx.req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  return JSON.parse(text);
}

function reply(ctx, status, body) {
  ctx.status = status;
  ctx.body = body;
}

async function mint(ctx) {
  let body;
  try {
    body = await readJson(ctx);
  } catch {
    return reply(ctx, 400, { error: 'invalid_request', error_description: 'body must be JSON' });
  }
  const clientId = body.client_id;
  const scope = body.scope ?? DEFAULT_MINT_SCOPE;
  const accountId = body.account_id ?? DEFAULT_ACCOUNT_ID;
  if (typeof clientId !== 'string' || typeof scope !== 'string' || typeof accountId !== 'string') {
    return reply(ctx, 400, { error: 'invalid_request', error_description: 'client_id (string) required; scope, account_id must be strings' });
  }
  const client = await provider.Client.find(clientId);
  if (!client) return reply(ctx, 400, { error: 'invalid_client', error_description: `unknown client ${clientId}` });
  if (!client.grantTypeAllowed('refresh_token')) {
    return reply(ctx, 400, { error: 'unauthorized_client', error_description: `${clientId} may not use refresh tokens` });
  }
  const requested = scope.split(' ').filter(Boolean);
  const allowed = new Set(client.scope.split(' '));
  const bad = requested.filter((s) => !allowed.has(s));
  if (requested.length === 0 || bad.length) {
    return reply(ctx, 400, { error: 'invalid_scope', error_description: `scope not allowed for ${clientId}: ${bad.join(' ') || '(empty)'}` });
  }
  const scopeString = requested.join(' ');

  // What the authorization-code flow would have produced after login+consent.
  const grant = new provider.Grant({ accountId, clientId });
  grant.addOIDCScope(scopeString);
  const grantId = await grant.save();

  const common = {
    accountId, client, grantId, gty: 'authorization_code', scope: scopeString,
  };
  const refreshToken = new provider.RefreshToken({
    ...common, authTime: epochTime(), expiresWithSession: false, rotations: 0,
  });
  const accessToken = new provider.AccessToken(common);

  return reply(ctx, 200, {
    refresh_token: await refreshToken.save(),
    access_token: await accessToken.save(),
    token_type: 'Bearer',
    expires_in: accessToken.expiration,
    scope: scopeString,
    grant_id: grantId,
    account_id: accountId,
  });
}

// One access token invalidated while its grant and refresh token live on (an upstream that stops
// accepting a token early): oidc-provider's revocation endpoint would revoke the whole grant.
async function revokeAccessToken(ctx) {
  let body;
  try {
    body = await readJson(ctx);
  } catch {
    return reply(ctx, 400, { error: 'invalid_request', error_description: 'body must be JSON' });
  }
  if (typeof body.token !== 'string') {
    return reply(ctx, 400, { error: 'invalid_request', error_description: 'token (string) required' });
  }
  const token = await provider.AccessToken.find(body.token);
  if (token) await token.destroy();
  return reply(ctx, 200, { revoked: Boolean(token) });
}

async function holdRoute(ctx) {
  let body;
  try {
    body = await readJson(ctx);
  } catch {
    return reply(ctx, 400, { error: 'invalid_request', error_description: 'body must be JSON' });
  }
  const { seconds } = body;
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > 3600) {
    return reply(ctx, 400, { error: 'invalid_request', error_description: 'seconds must be an integer 1..3600' });
  }
  startHold(seconds);
  return reply(ctx, 200, { held_for: seconds, held: hold.waiters.size });
}

const currentStats = () => ({ ...stats, held: hold.waiters.size });

async function testRoutes(ctx) {
  const route = `${ctx.method} ${ctx.path}`;
  switch (route) {
    case 'POST /test/mint':
      return mint(ctx);
    case 'GET /test/stats':
      return reply(ctx, 200, currentStats());
    case 'POST /test/reset-stats':
      stats = zeroStats();
      return reply(ctx, 200, currentStats());
    case 'POST /test/hold':
      return holdRoute(ctx);
    case 'POST /test/release':
      return reply(ctx, 200, { released: releaseHeld() });
    case 'POST /test/revoke-access-token':
      return revokeAccessToken(ctx);
    default:
      return reply(ctx, 404, { error: 'not_found', error_description: `no test route ${route}` });
  }
}

let requestSeq = 0;

// provider.use() puts middleware in front of the provider's own router.
provider.use(async (ctx, next) => {
  if (ctx.path.startsWith('/test/')) {
    await testRoutes(ctx);
    return;
  }
  const isTokenRequest = ctx.method === 'POST' && ctx.path === TOKEN_PATH;
  requestSeq += 1;
  ctx.state.requestSeq = requestSeq;
  if (isTokenRequest && !(await prepareTokenBody(ctx))) return;
  await next();
  if (!isTokenRequest) return;
  recordTokenRequest(ctx);
  if (ctx.oidc?.params?.grant_type === 'refresh_token') await holdResponse(ctx);
});

server.on('request', provider.callback());

// ---------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------

function shutdown() {
  server.closeAllConnections();
  server.close();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (process.env.OAUTH_SERVER_IGNORE_STDIN !== '1') {
  process.stdin.on('end', shutdown);
  process.stdin.on('close', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}

writeStdout(JSON.stringify({
  issuer,
  port,
  token_url: `${issuer}${TOKEN_PATH}`,
  introspection_url: `${issuer}/token/introspection`,
  revocation_url: `${issuer}/token/revocation`,
  authorization_url: `${issuer}/auth`,
  device_authorization_url: `${issuer}/device/auth`,
}));
